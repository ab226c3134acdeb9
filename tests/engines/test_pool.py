"""Worker pools: queue depth and active jobs are observable, a full queue sheds work with `EngineBusy`, and a
consumer that stops listening stops the producer on its worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from koe.engines.base import EngineError
from koe.engines.pool import Cancelled, EngineBusy, WorkerPool

WAIT_S = 10.0


async def _until(condition: object, what: str) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_depth_active_and_busy() -> None:
    pool = WorkerPool("test", workers=1, queue_limit=2)
    release = threading.Event()

    def job(value: int) -> int:
        release.wait(WAIT_S)
        return value * 2

    first = asyncio.ensure_future(pool.run(job, 1))
    await _until(lambda: pool.active == 1, "the first job to start")
    queued = [asyncio.ensure_future(pool.run(job, n)) for n in (2, 3)]
    await asyncio.sleep(0)
    assert (pool.depth, pool.active) == (2, 1)
    with pytest.raises(EngineBusy, match="the test engine is overloaded \\(2 jobs waiting\\)"):
        await pool.run(job, 4)
    release.set()
    assert await asyncio.gather(first, *queued) == [2, 4, 6]
    assert (pool.depth, pool.active, pool.completed) == (0, 0, 3)
    pool.shutdown()


async def test_exceptions_reach_the_caller() -> None:
    pool = WorkerPool("test", 1, 4)

    def fail() -> None:
        raise EngineError("model exploded")

    def produce(_cancelled: Cancelled) -> Iterator[int]:
        yield 1
        raise EngineError("stream exploded")

    with pytest.raises(EngineError, match="model exploded"):
        await pool.run(fail)
    got: list[int] = []

    async def consume() -> None:
        async for item in pool.stream(produce):
            got.append(item)

    with pytest.raises(EngineError, match="stream exploded"):
        await consume()
    assert got == [1]
    assert pool.active == 0
    pool.shutdown()


async def test_closing_a_stream_stops_its_producer() -> None:
    pool = WorkerPool("test", 1, 4)
    produced: list[int] = []
    stopped = threading.Event()
    saw_cancel = threading.Event()

    def produce(cancelled: Cancelled) -> Iterator[int]:
        try:
            for n in range(1_000_000):
                if cancelled():
                    saw_cancel.set()
                    return
                produced.append(n)
                yield n
                threading.Event().wait(0.002)  # a token's worth of work
        finally:
            stopped.set()

    stream = pool.stream(produce)
    assert [await anext(stream) for _ in range(3)] == [0, 1, 2]
    await stream.aclose()
    await _until(stopped.is_set, "the producer to stop")
    assert len(produced) < 1000
    await _until(lambda: pool.active == 0, "the worker to be free")
    assert [n async for n in pool.stream(lambda _c: iter(range(3)))] == [0, 1, 2]
    pool.shutdown()


async def test_a_cancelled_consumer_task_stops_the_producer() -> None:
    pool = WorkerPool("test", 1, 4)
    stopped = threading.Event()

    def produce(cancelled: Cancelled) -> Iterator[int]:
        try:
            n = 0
            while not cancelled():
                yield n
                n += 1
                threading.Event().wait(0.002)
        finally:
            stopped.set()

    async def consume() -> None:
        async for _item in pool.stream(produce):
            pass

    task = asyncio.ensure_future(consume())
    await _until(lambda: pool.active == 1, "the producer to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(stopped.is_set, "the producer to stop")
    pool.shutdown()


async def test_shutdown_fails_queued_streams_instead_of_hanging() -> None:
    pool = WorkerPool("test", 1, 4)
    release = threading.Event()
    running = asyncio.ensure_future(pool.run(release.wait, WAIT_S))
    await _until(lambda: pool.active == 1, "the blocking job to start")
    stream = pool.stream(lambda _c: iter([1, 2]))
    pending = asyncio.ensure_future(anext(stream))
    await _until(lambda: pool.depth == 1, "the stream to queue")
    pool.shutdown()
    with pytest.raises(EngineError, match="shut down before this request ran"):
        await pending
    assert pool.depth == 0
    release.set()
    assert await running is True


def test_a_pool_needs_a_worker_and_a_queue() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool("x", 0, 1)
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool("x", 1, 0)
