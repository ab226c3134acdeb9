"""koe's remote LLM backend (`OpenAICompatibleLLM`) against a real OpenAI-compatible server: koe's own
`/v1/chat/completions` on a live koe, serving the embedded SmolLM2. Streaming text, a tool call forced by
`tool_choice`, an error status with the server's message, and an endpoint that is down. The model's words are its
own: the tests check the stream's shape and counts, and of a forced call the tool's name and the arguments' schema."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from koe.engines.base import (
    ChatMessage,
    ChatRequest,
    EngineError,
    EngineUnavailable,
    Finished,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines
from tests.forced_call import CALL_TOKENS, WEATHER_PARAMETERS, assert_city_arguments
from tests.server.acs.support import koe_server
from tests.server.openai.support import API_KEY, api_settings

WEATHER = ToolSpec("get_weather", "Current weather for a city", WEATHER_PARAMETERS)
QUESTION = (ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "What is the weather in Oslo?"))


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    async with koe_server(api_settings(), engines) as (base, _app):
        yield f"{base}/v1"


async def _collect(llm: OpenAICompatibleLLM, request: ChatRequest) -> list[LLMEvent]:
    try:
        return [event async for event in llm.stream(request)]
    finally:
        await llm.aclose()


async def test_text_streams_from_koe(base_url: str) -> None:
    llm = OpenAICompatibleLLM(base_url, "SmolLM2-135M-Instruct", api_key=API_KEY, max_tokens=10)
    events = await _collect(llm, ChatRequest(QUESTION, temperature=0))
    *deltas, done = events
    assert all(isinstance(d, TextDelta) and d.text for d in deltas), events
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)).strip()
    assert isinstance(done, Finished)
    # One chunk per generated token on koe's side, one delta per chunk here: streamed, and the usage agrees.
    assert len(deltas) == done.completion_tokens
    assert 0 < done.completion_tokens <= 10 and done.prompt_tokens > 10
    assert done.reason == ("length" if done.completion_tokens == 10 else "stop"), done


async def test_a_forced_tool_call_comes_back_whole(base_url: str) -> None:
    llm = OpenAICompatibleLLM(base_url, "SmolLM2-135M-Instruct", api_key=API_KEY, max_tokens=CALL_TOKENS)
    events = await _collect(llm, ChatRequest(QUESTION, tools=(WEATHER,), tool_choice="get_weather"))
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert len(calls) == 1
    assert calls[0].name == "get_weather" and calls[0].call_id
    assert_city_arguments(calls[0].arguments)
    assert isinstance(events[-1], Finished) and events[-1].reason == "tool_calls"


async def test_error_statuses_carry_koes_message(base_url: str) -> None:
    wrong_key = OpenAICompatibleLLM(base_url, "SmolLM2-135M-Instruct", api_key="not-the-key")
    with pytest.raises(EngineError, match=r"answered 401: the API key is not valid"):
        await _collect(wrong_key, ChatRequest(QUESTION))
    # koe checks the request before generating: a tool_choice naming no offered tool is a 400 with its reason.
    bad_choice = OpenAICompatibleLLM(base_url, "SmolLM2-135M-Instruct", api_key=API_KEY)
    with pytest.raises(EngineError, match=r"answered 400: tool_choice names 'nope'"):
        await _collect(bad_choice, ChatRequest(QUESTION, tools=(WEATHER,), tool_choice="nope"))


async def test_koe_down_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "SmolLM2-135M-Instruct", api_key=API_KEY)
    with pytest.raises(EngineUnavailable, match=r"cannot reach the LLM endpoint .*is the server running"):
        await _collect(llm, ChatRequest(QUESTION))
