"""A Realtime session whose LLM fails (a 500, a stall past `llm.timeout_s`, a chunk that is not JSON, a connection
dropped mid-stream, a connection refused): the client gets an `error` event saying why and then `response.done` with
status `failed` (as OpenAI sends both), the session goes on to its next response, and another session is untouched.
Before issue 14 only the `response.done` came. The LLM is koe's remote client on the OpenAI-format stand-in, which
answers `fail 500` with a 500 and `stall` with nothing at all."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines, EngineStatus
from koe.protocols.realtime import Dialect
from tests.engines.openai_standin import REPLY_WORDS, StandIn
from tests.server.acs.support import koe_server
from tests.server.realtime.support import realtime_settings
from tests.server.realtime.test_door import Client, open_client

TIMEOUT_S = 3.0
"""`llm.timeout_s` here: what the stall waits for. Not much shorter: it also bounds connecting to the stand-in,
which on a loaded machine (this test process runs koe, the stand-in and the clients) took more than 0.5 s."""


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with StandIn() as remote:
        llm = OpenAICompatibleLLM(remote.base_url, "m", timeout_s=TIMEOUT_S)
        engines = Engines(llm=llm, status={"llm": EngineStatus("llm", loaded=True, name=llm.name)})
        async with koe_server(realtime_settings(), engines) as (base, _app):
            yield f"ws{base[4:]}"
        await llm.aclose()


async def _ask(client: Client, text: str) -> list[dict[str, object]]:
    await client.send(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    )
    await client.send("response.create", response={"output_modalities": ["text"]})
    start = len(client.seen)
    await client.until("response.done")
    return client.seen[start:]


@pytest.mark.parametrize(
    ("prompt", "code", "says"),
    [
        ("fail 500", "engine_error", "answered 500"),
        ("stall", "engine_timeout", f"did not answer within {TIMEOUT_S:g} s"),
        ("malformed", "engine_error", ""),
        ("drop", "engine_error", ""),
    ],
)
@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.AZURE])
async def test_a_failed_response_gets_an_error_event_then_response_done(
    base_url: str, dialect: Dialect, prompt: str, code: str, says: str
) -> None:
    client = await open_client(base_url, dialect)
    events = await _ask(client, prompt)
    kinds = [event["type"] for event in events]
    assert "error" in kinds and kinds.index("error") < kinds.index("response.done"), kinds
    error = next(event for event in events if event["type"] == "error")["error"]
    assert (error["type"], error["code"]) == ("server_error", code)  # type: ignore[index]
    assert says in error["message"]  # type: ignore[index]
    done = events[-1]["response"]
    assert done["status"] == "failed"  # type: ignore[index]
    assert done["status_details"]["error"]["code"] == code  # type: ignore[index]
    # The session goes on: the next response is served.
    again = await _ask(client, "hello")
    assert again[-1]["response"]["status"] == "completed"  # type: ignore[index]
    assert "error" not in [event["type"] for event in again]
    text = "".join(str(e.get("delta", "")) for e in again if str(e["type"]).endswith("text.delta"))
    assert text == "".join(REPLY_WORDS)
    await client.ws.close()


async def test_a_stalled_llm_leaves_another_session_untouched(base_url: str) -> None:
    """One session's LLM request hangs until its timeout; a second session's request, sent meanwhile, is answered in
    full and without an error."""
    stalled, healthy = await open_client(base_url, Dialect.GA), await open_client(base_url, Dialect.GA)
    results = await asyncio.gather(_ask(stalled, "stall"), _ask(healthy, "hello"))
    assert "error" in [event["type"] for event in results[0]]
    assert results[1][-1]["response"]["status"] == "completed"  # type: ignore[index]
    assert "error" not in [event["type"] for event in results[1]]
    text = "".join(str(e.get("delta", "")) for e in results[1] if str(e["type"]).endswith("text.delta"))
    assert text == "".join(REPLY_WORDS)
    await stalled.ws.close()
    await healthy.ws.close()


async def test_an_llm_that_refuses_the_connection_is_an_error_event_and_the_session_stays_open() -> None:
    with socket.socket() as sock:  # a port nothing listens on: every connect is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", timeout_s=0.5)
    engines = Engines(llm=llm, status={"llm": EngineStatus("llm", loaded=True, name=llm.name)})
    async with koe_server(realtime_settings(), engines) as (base, _app):
        client = await open_client(f"ws{base[4:]}", Dialect.GA)
        events = await asyncio.wait_for(_ask(client, "hello"), 5)
        error = next(event for event in events if event["type"] == "error")["error"]
        assert (error["type"], error["code"]) == ("server_error", "engine_unavailable")  # type: ignore[index]
        assert events[-1]["response"]["status"] == "failed"  # type: ignore[index]
        await client.send("session.update", session={"type": "realtime", "instructions": "Still here?"})
        await client.until("session.updated")  # the session is still served
        await client.ws.close()
    await llm.aclose()
