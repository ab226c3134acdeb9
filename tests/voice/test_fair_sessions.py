"""Sessions share the LLM fairly, end to end through the voice engine: a session that keeps starting replies and
cancelling them leaves nothing queued behind (its jobs leave the LLM's queue as each reply is cancelled, and all of
them when it closes), and another session's reply then starts right after the job that is running. The LLM is a
stand-in on a real `WorkerPool` whose jobs log their start; starts are counted, not timed, so a busy machine cannot
make the test pass or fail. A reply with no LLM at all fails in protocol and leaves the reply machine free."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

from koe.engines.base import ChatRequest, Finished, LLMEvent, TextDelta
from koe.engines.pool import Cancelled, WorkerPool
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig
from koe.voice.conversation import Item, Part, new_id
from koe.voice.session import Session

WAIT_S = 10.0


class LoggingLLM:
    """Each job logs whose it is (the session, from the request's cache key) when a worker starts it; a job for
    the text `block` runs until `release` is set."""

    name = "logging-llm"

    def __init__(self) -> None:
        self.pool = WorkerPool("llm", 1, 64)
        self.starts: list[str] = []
        self.release = threading.Event()

    def _produce(self, request: ChatRequest, cancelled: Cancelled) -> Iterator[LLMEvent]:
        self.starts.append(request.cache_key or "")
        if request.messages[-1].content == "block":
            self.release.wait(WAIT_S)
        for word in ("fine", " thanks"):
            if cancelled():
                yield Finished("cancelled")
                return
            yield TextDelta(word)
        yield Finished("stop", 1, 2)

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        async for event in self.pool.stream(lambda cancelled: self._produce(request, cancelled)):
            yield event

    async def warm(self, request: ChatRequest, *, unfinished: bool = False) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def check(self) -> str | None:
        return None


def _session(engines: Engines) -> Session:
    return Session(engines, SessionConfig(turn_detection=None, output_audio=False))


def _ask(session: Session, text: str) -> None:
    session.create_item(Item(new_id("item"), "message", "user", (Part("input_text", text=text),)))
    session.create_response(ResponseOptions(output_audio=False))


async def _until(condition: object, what: str) -> None:
    for _ in range(int(WAIT_S / 0.005)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_flooding_session_leaves_nothing_queued_and_delays_another_by_the_running_job_only() -> None:
    llm = LoggingLLM()
    engines = Engines(llm=llm)
    busy, flood, neighbour = _session(engines), _session(engines), _session(engines)
    _ask(busy, "block")  # one job holds the worker until released
    await _until(lambda: llm.pool.active == 1, "the blocking job to start")
    for _ in range(20):
        _ask(flood, "tell me everything")
        await _until(lambda: llm.pool.depth == 1, "the flooding session's job to queue")
        flood.cancel_response()
        await _until(lambda: llm.pool.depth == 0, "the cancelled reply's job to leave the queue")
    _ask(flood, "and again")
    await _until(lambda: llm.pool.depth == 1, "the flooding session's last job to queue")
    await flood.close()  # gone: its queued job goes with it
    assert llm.pool.depth == 0
    heard: list[ev.Event] = []
    reader = asyncio.ensure_future(_read(neighbour, heard))
    _ask(neighbour, "hello")
    await _until(lambda: llm.pool.depth == 1, "the neighbour's job to queue")
    llm.release.set()
    await _until(lambda: any(isinstance(e, ev.ResponseDone) for e in heard), "the neighbour's reply")
    assert llm.starts == [busy.id, neighbour.id]  # nothing of the flooding session ever ran
    assert [e.status for e in heard if isinstance(e, ev.ResponseDone)] == ["completed"]
    for session in (busy, neighbour):
        await session.close()
    await reader
    llm.pool.shutdown()


async def _read(session: Session, into: list[ev.Event]) -> None:
    async for event in session.events():
        into.append(event)


async def test_a_reply_without_an_llm_fails_in_protocol_and_the_next_one_is_served_the_same() -> None:
    """No LLM loaded (a node serving STT only): each reply fails with an error and `failed`, and the reply machine
    is free again for the next one (found by `koe bench fuzz` at volume: the reply task died, and every later
    request was refused as overlapping)."""
    session = _session(Engines())
    events = session.events()
    for _ in range(2):
        _ask(session, "hello")
        seen: list[ev.Event] = []
        while not any(isinstance(e, ev.ResponseDone) for e in seen):
            seen.append(await asyncio.wait_for(anext(events), WAIT_S))
        errors = [e for e in seen if isinstance(e, ev.Error)]
        assert errors and "llm" in str(errors[0].error), seen
        done = next(e for e in seen if isinstance(e, ev.ResponseDone))
        assert done.status == "failed", done
    await session.close()
