"""`/v1/chat/completions` through the official `openai` SDK against a live koe server on the embedded SmolLM2:
streamed and whole answers with usage and the token limit, a streamed tool call forced by `tool_choice` and its
result fed back, requests koe refuses with OpenAI's error body, and the whole-answer shape of tool calls as the
SDK's own model reads it. What the model answers is its own (it changes with the CPU and the llama.cpp build): the
tests check the answer's shape, counts and limits, and of a forced call the tool's name and the arguments' schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from koe.engines.base import Finished, LLMEvent, ToolCall
from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines, EngineStatus
from koe.server.openai.chat import _complete
from tests.engines.openai_standin import StandIn
from tests.forced_call import CALL_TOKENS, WEATHER_PARAMETERS, assert_city_arguments
from tests.server.acs.support import koe_server
from tests.server.openai.support import API_KEY, api_settings, client

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
QUESTION: Any = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather like in Paris?"},
]


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    async with koe_server(api_settings(), engines) as (base, _app):
        yield base


async def test_a_whole_answer_stops_at_max_tokens_and_reports_usage(base_url: str) -> None:
    async with client(base_url) as api:
        answer = await api.chat.completions.create(
            model="koe", messages=[{"role": "user", "content": "Tell me a long story about a dragon."}], max_tokens=8
        )
    choice = answer.choices[0]
    assert answer.object == "chat.completion"
    assert choice.message.role == "assistant" and choice.message.content
    assert answer.usage is not None
    used = answer.usage.completion_tokens
    # Never past the limit, and "length" exactly when the limit ended it (a story this short stopped by itself).
    assert 0 < used <= 8
    assert choice.finish_reason == ("length" if used == 8 else "stop"), (choice.finish_reason, used)
    assert answer.usage.prompt_tokens > 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + used


async def test_a_streamed_answer_arrives_in_chunks_then_done(base_url: str) -> None:
    async with client(base_url) as api:
        stream = await api.chat.completions.create(
            model="koe",
            messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
            max_completion_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(deltas).strip()  # type: ignore[arg-type]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    used = chunks[-1].usage.completion_tokens
    assert len(deltas) == used, "the answer did not come one chunk per generated token"
    assert 0 < used <= 12
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == (["length"] if used == 12 else ["stop"]), (finishes, used)
    assert len({chunk.id for chunk in chunks}) == 1


async def test_tool_choice_forces_the_named_call(base_url: str) -> None:
    async with client(base_url) as api:
        stream = await api.chat.completions.create(
            model="koe",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=CALL_TOKENS,
            stream=True,
        )
        fragments: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for piece in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                entry = fragments.setdefault(piece.index, {"name": "", "arguments": "", "id": ""})
                entry["id"] = piece.id or entry["id"]
                entry["name"] += (piece.function.name or "") if piece.function else ""
                entry["arguments"] += (piece.function.arguments or "") if piece.function else ""
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
        assert finish == "tool_calls"
        assert fragments[0]["name"] == "get_weather" and fragments[0]["id"]
        assert_city_arguments(fragments[0]["arguments"])
        call = {"id": fragments[0]["id"], "type": "function"}
        call["function"] = {"name": fragments[0]["name"], "arguments": fragments[0]["arguments"]}

        # The call's result goes back as a tool message; the model answers in text.
        followup = await api.chat.completions.create(
            model="koe",
            messages=[
                *QUESTION,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 18, "sky": "sunny"}'},
            ],
            tools=[WEATHER],
            tool_choice="none",
            max_tokens=8,
        )
    assert followup.choices[0].message.content
    assert not followup.choices[0].message.tool_calls


async def test_bad_requests_name_the_field(base_url: str) -> None:
    async with client(base_url) as api:
        with pytest.raises(openai.BadRequestError) as empty:
            await api.chat.completions.create(model="koe", messages=[])
        with pytest.raises(openai.BadRequestError) as role:
            await api.chat.completions.create(model="koe", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item, misc]
        with pytest.raises(openai.BadRequestError) as choice:
            await api.chat.completions.create(
                model="koe",
                messages=QUESTION,
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "nope"}},
            )
        with pytest.raises(openai.BadRequestError) as many:
            await api.chat.completions.create(model="koe", messages=QUESTION, n=2)
        with pytest.raises(openai.AuthenticationError):
            await client(base_url, api_key="wrong").chat.completions.create(model="koe", messages=QUESTION)
    assert empty.value.body["param"] == "messages"  # type: ignore[index]
    assert role.value.body["param"] == "messages[0].role"  # type: ignore[index]
    assert choice.value.body["param"] == "tool_choice"  # type: ignore[index]
    assert many.value.body["param"] == "n"  # type: ignore[index]
    async with httpx.AsyncClient() as http:
        headers = {"api-key": API_KEY, "content-type": "application/json"}
        garbage = await http.post(f"{base_url}/v1/chat/completions", content=b"{not json", headers=headers)
        untyped = await http.post(f"{base_url}/v1/chat/completions", content=b"{}", headers={"api-key": API_KEY})
    assert garbage.status_code == 400
    assert set(garbage.json()["error"]) == {"message", "type", "param", "code"}
    assert (untyped.status_code, untyped.json()["error"]["code"]) == (415, "unsupported_media_type")


async def test_a_missing_llm_is_a_503(engines: Engines) -> None:
    without_llm = Engines(vad=engines.vad, stt=engines.stt, tts=engines.tts, status=dict(engines.status))
    async with koe_server(api_settings(), without_llm) as (base, _app), client(base) as api:
        with pytest.raises(openai.InternalServerError) as missing:
            await api.chat.completions.create(model="koe", messages=QUESTION)
    assert missing.value.status_code == 503


async def test_a_stalled_remote_llm_is_a_504_and_healthz_says_so() -> None:
    """Before issue 14 this was a 400 invalid_request_error after 30 s, and /healthz went on saying the LLM was fine."""
    async with StandIn(stalled=True) as remote:
        llm = OpenAICompatibleLLM(remote.base_url, "m", timeout_s=0.5)
        engines = Engines(llm=llm, status={"llm": EngineStatus("llm", loaded=True, name=llm.name)})
        async with koe_server(api_settings(), engines) as (base, _app), client(base) as api:
            with pytest.raises(openai.APIStatusError) as stalled:
                await api.chat.completions.create(model="koe", messages=QUESTION)
            async with httpx.AsyncClient(base_url=base) as http:
                health = (await http.get("/healthz")).json()
        await llm.aclose()
    assert stalled.value.status_code == 504
    assert stalled.value.body["code"] == "engine_timeout"  # type: ignore[index]
    assert "did not answer within 0.5 s (llm.timeout_s)" in stalled.value.body["message"]  # type: ignore[index]
    assert health["status"] == "degraded"
    assert health["engines"]["llm"]["loaded"] and not health["engines"]["llm"]["ready"]
    assert "did not answer" in health["engines"]["llm"]["error"]


async def test_a_whole_answer_with_tool_calls_is_a_valid_chat_completion() -> None:
    # The non-streamed shape of tool calls, rendered from engine events and read by the SDK's own model.
    async def events() -> AsyncIterator[LLMEvent]:
        yield ToolCall("call_2", "get_time", "{}")
        yield Finished("tool_calls", 40, 12)

    first = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    body = await _complete("chatcmpl-test", "koe-model", first, events())
    completion = ChatCompletion.model_validate(body)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()] == [
        ("call_1", "get_weather", '{"city": "Oslo"}'),
        ("call_2", "get_time", "{}"),
    ]
    assert completion.usage is not None and completion.usage.total_tokens == 52
