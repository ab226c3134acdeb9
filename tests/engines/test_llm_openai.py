"""The remote LLM client against an OpenAI-format stand-in on loopback: text and tool-call streaming, error
statuses with OpenAI's error bodies, a connection dropped mid-stream, an endpoint that is not there or stalls, and
the health /healthz reads from it."""

from __future__ import annotations

import asyncio
import json
import socket

import openai
import pytest

from koe.engines import _remote
from koe.engines.base import (
    ChatMessage,
    ChatRequest,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    Finished,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from koe.engines.llm_openai import OpenAICompatibleLLM, SSEParser
from tests.engines.openai_standin import REPLY_WORDS, TOOL_CALLS, StandIn

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def _request(prompt: str, tools: tuple[ToolSpec, ...] = ()) -> ChatRequest:
    return ChatRequest([ChatMessage("system", "Be brief."), ChatMessage("user", prompt)], tools=tools)


async def _collect(llm: OpenAICompatibleLLM, request: ChatRequest) -> list[LLMEvent]:
    return [event async for event in llm.stream(request)]


async def _collect_into(llm: OpenAICompatibleLLM, request: ChatRequest, into: list[LLMEvent]) -> None:
    async for event in llm.stream(request):
        into.append(event)


async def test_the_official_sdk_accepts_the_stand_ins_stream() -> None:
    # The stand-in is only worth testing against if OpenAI's own client reads it as a real stream.
    async with StandIn() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "tools please"}], stream=True
        )
        calls: dict[int, list[str]] = {}
        async for chunk in stream:
            for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                calls.setdefault(delta_call.index, []).append(delta_call.function.arguments or "")
        await client.close()
    assert json.loads("".join(calls[0])) == {"city": "Paris", "unit": "celsius"}


async def test_text_streams_as_deltas() -> None:
    async with StandIn() as server:
        llm = OpenAICompatibleLLM(server.base_url, "standin-model", api_key="sk-test", max_tokens=50)
        events = await _collect(llm, _request("What is the capital of France?"))
        await llm.aclose()
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == REPLY_WORDS
    assert events[-1] == Finished("stop", 21, len(REPLY_WORDS))
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body["model"] == "standin-model"
    assert sent.body["stream"] is True
    assert sent.body["max_tokens"] == 50
    assert sent.body["messages"][1] == {"role": "user", "content": "What is the capital of France?"}


async def test_tool_calls_are_assembled_from_fragments() -> None:
    async with StandIn() as server:
        llm = OpenAICompatibleLLM(server.base_url, "m")
        events = await _collect(llm, _request("tools please", (WEATHER,)))
        await llm.aclose()
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name) for c in calls] == [(cid, name) for cid, name, _ in TOOL_CALLS]
    assert json.loads(calls[0].arguments) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(calls[1].arguments) == {"zone": "Europe/Paris"}
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "tool_calls"
    tools = server.requests[0].body["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": dict(WEATHER.parameters),
            },
        }
    ]
    assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize(("status", "message"), [(500, "The server had an error"), (401, "Incorrect API key")])
async def test_error_status_carries_the_servers_message(status: int, message: str) -> None:
    async with StandIn() as server:
        llm = OpenAICompatibleLLM(server.base_url, "m", api_key="sk-wrong")
        with pytest.raises(EngineError, match=f"answered {status}: {message}"):
            await _collect(llm, _request(f"fail {status}"))
        await llm.aclose()


async def test_connection_dropped_mid_stream() -> None:
    async with StandIn() as server:
        url = server.base_url
        llm = OpenAICompatibleLLM(url, "m")
        received: list[LLMEvent] = []
        with pytest.raises(EngineError, match="failed mid-stream: RemoteProtocolError") as caught:
            await _collect_into(llm, _request("drop"), received)
        await llm.aclose()
    assert [e.text for e in received if isinstance(e, TextDelta)] == REPLY_WORDS[:3]
    assert url in str(caught.value)


async def test_endpoint_down_is_engine_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5)
    with pytest.raises(EngineUnavailable, match=f"cannot reach the LLM endpoint http://127.0.0.1:{port}/v1"):
        await _collect(llm, _request("hello"))
    await llm.aclose()


async def test_a_stalled_endpoint_is_an_engine_timeout_within_the_setting() -> None:
    async with StandIn() as server:
        llm = OpenAICompatibleLLM(server.base_url, "m", timeout_s=0.5)
        with pytest.raises(EngineTimeout, match=r"did not answer within 0.5 s \(llm.timeout_s\)"):
            await asyncio.wait_for(_collect(llm, _request("stall")), 10)
        await llm.aclose()


async def test_health_comes_from_the_last_outcome_or_a_cached_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    async with StandIn() as server:
        url = server.base_url
        llm = OpenAICompatibleLLM(url, "m", timeout_s=0.5)
        # Nothing known yet: one probe (the stand-in answers GET /models with a 404, which is a live server)...
        assert await llm.check() is None
        assert [r.path for r in server.requests] == ["/v1/models"]
        # ...kept: asking again within HEALTH_TTL_S sends nothing.
        assert await llm.check() is None
        assert len(server.requests) == 1
        # A request that stalls makes the endpoint unhealthy at once, without a probe.
        with pytest.raises(EngineTimeout):
            await _collect(llm, _request("stall"))
        problem = await llm.check()
        assert problem is not None and "did not answer within 0.5 s" in problem
        # A request refused for its own content (a 4xx) says the server works; a 500 says it does not.
        with pytest.raises(EngineError):
            await _collect(llm, _request("fail 401"))
        assert await llm.check() is None
        with pytest.raises(EngineError):
            await _collect(llm, _request("fail 500"))
        assert "answered 500" in (await llm.check() or "")
        # Once the outcome is old, a probe decides again: a server that hangs fails it in PROBE_TIMEOUT_S.
        server.stalled = True
        monkeypatch.setattr(_remote, "HEALTH_TTL_S", 0.0)
        probed = await asyncio.wait_for(llm.check(), 10)
        assert probed is not None and "did not answer a probe" in probed
        await llm.aclose()
    down = OpenAICompatibleLLM(url, "m")  # the stand-in is gone
    assert "cannot reach the LLM endpoint" in (await down.check() or "")
    await down.aclose()


async def test_empty_request_is_refused() -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m")
    with pytest.raises(EngineError, match="at least one message"):
        await _collect(llm, ChatRequest([]))
    await llm.aclose()


def test_azure_base_url_gets_the_api_key_header_and_version() -> None:
    llm = OpenAICompatibleLLM("https://x.openai.azure.com/openai/deployments/d", "d", api_key="k", api_version="v1")
    assert llm._client.headers["api-key"] == "k"
    assert "authorization" not in llm._client.headers
    assert llm._params == {"api-version": "v1"}


def test_sse_parser_handles_any_split_comments_and_crlf() -> None:
    stream = ': keep-alive\r\n\r\ndata: {"a": 1}\r\n\r\ndata: line one\ndata: line two\n\nevent: x\ndata: [DONE]\n\n'
    for size in (1, 3, len(stream)):
        parser = SSEParser()
        found = [data for i in range(0, len(stream), size) for data in parser.feed(stream[i : i + size])]
        assert found == ['{"a": 1}', "line one\nline two", "[DONE]"]
