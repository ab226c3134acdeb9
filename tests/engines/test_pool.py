"""Worker pools: queue depth and active jobs are observable, a full queue sheds work with `EngineBusy`, and a
consumer that stops listening stops the producer on its worker thread, a queued job whose caller left never runs, and
owners take turns: one flooding owner is refused past its share and never delays another by more than the running
job."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from koe.engines.base import EngineError
from koe.engines.pool import Cancelled, EngineBusy, WorkerPool, owned_by

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


# --- a gone consumer's queued jobs, and fair shares between owners ---------------------------------------------


async def test_a_queued_job_whose_caller_is_cancelled_leaves_the_queue_and_never_runs() -> None:
    pool = WorkerPool("test", 1, 8)
    release = threading.Event()
    ran: list[str] = []
    blocker = asyncio.ensure_future(pool.run(release.wait, WAIT_S))
    await _until(lambda: pool.active == 1, "the blocking job to start")
    queued_run = asyncio.ensure_future(pool.run(ran.append, "run"))
    stream = pool.stream(lambda _c: iter(["stream"]))
    queued_stream = asyncio.ensure_future(anext(stream))
    await _until(lambda: pool.depth == 2, "both jobs to queue")
    queued_run.cancel()
    queued_stream.cancel()
    for task in (queued_run, queued_stream):
        with pytest.raises(asyncio.CancelledError):
            await task
    # Gone from the queue at once, not when a worker gets to them.
    assert pool.depth == 0
    release.set()
    assert await blocker is True
    await _until(lambda: pool.active == 0, "the worker to be free")
    assert ran == []
    assert pool.completed == 1
    pool.shutdown()


async def test_a_stream_closed_before_it_started_never_produces() -> None:
    pool = WorkerPool("test", 1, 8)
    release = threading.Event()
    produced = threading.Event()

    def produce(_cancelled: Cancelled) -> Iterator[int]:
        produced.set()
        yield 1

    blocker = asyncio.ensure_future(pool.run(release.wait, WAIT_S))
    await _until(lambda: pool.active == 1, "the blocking job to start")
    stream = pool.stream(produce)
    first = asyncio.ensure_future(anext(stream))
    await _until(lambda: pool.depth == 1, "the stream to queue")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    assert pool.depth == 0
    release.set()
    await blocker
    await _until(lambda: pool.active == 0, "the worker to be free")
    assert not produced.is_set()
    pool.shutdown()


async def test_one_owner_is_refused_past_its_share_and_others_are_not() -> None:
    pool = WorkerPool("test", 1, 16, owner_limit=2)
    release = threading.Event()
    blocker = asyncio.ensure_future(pool.run(release.wait, WAIT_S))
    await _until(lambda: pool.active == 1, "the blocking job to start")

    async def submit(owner: str) -> bool:
        with owned_by(owner):
            return await pool.run(release.wait, WAIT_S)

    flood = [asyncio.ensure_future(submit("flood")) for _ in range(2)]
    await _until(lambda: pool.waiting_for("flood") == 2, "the flood to queue")
    with pytest.raises(EngineBusy, match="already has 2 jobs of this session waiting"):
        await submit("flood")
    neighbour = asyncio.ensure_future(submit("neighbour"))
    await _until(lambda: pool.waiting_for("neighbour") == 1, "the neighbour's job to queue")
    release.set()
    assert await asyncio.gather(blocker, *flood, neighbour) == [True] * 4
    pool.shutdown()


async def test_a_flood_from_one_owner_delays_another_owners_job_by_at_most_the_running_job() -> None:
    """One worker; owner A keeps its queue full with jobs of a fixed length; B submits one job now and then. Each
    of B's jobs must be the next to start after it is submitted: A's backlog never runs before it. (Counted in
    starts, not seconds, so a busy machine cannot make the test pass or fail.)"""
    pool = WorkerPool("test", 1, 64, owner_limit=8)
    starts: list[str] = []
    marks: list[int] = []
    stop = asyncio.Event()

    def job(owner: str) -> None:
        starts.append(owner)
        threading.Event().wait(0.01)  # a fixed-length job

    async def flood() -> None:
        with owned_by("A"):
            pending: set[asyncio.Future[None]] = set()
            while not stop.is_set():
                while len(pending) < 8:
                    pending.add(asyncio.ensure_future(pool.run(job, "A")))
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*pending)

    async def neighbour() -> None:
        with owned_by("B"):
            for _ in range(5):
                await asyncio.sleep(0.03)
                marks.append(len(starts))
                await pool.run(job, "B")

    flooding = asyncio.ensure_future(flood())
    await _until(lambda: pool.depth >= 7, "the flood to fill its queue")
    await neighbour()
    stop.set()
    await flooding
    for mark in marks:
        # Starts from B's submission on: at most the A job that was already starting, then B's.
        after = starts[mark:]
        assert "B" in after[:2], (mark, starts)
    pool.shutdown()


async def test_owners_take_turns_in_order_of_least_recent_service() -> None:
    pool = WorkerPool("test", 1, 64, owner_limit=8)
    release = threading.Event()
    starts: list[str] = []

    def job(owner: str) -> None:
        starts.append(owner)

    blocker = asyncio.ensure_future(pool.run(release.wait, WAIT_S))
    await _until(lambda: pool.active == 1, "the blocking job to start")
    jobs: list[asyncio.Future[None]] = []
    for owner, count in (("A", 4), ("B", 2), ("C", 1)):
        with owned_by(owner):
            jobs += [asyncio.ensure_future(pool.run(job, owner)) for _ in range(count)]
    await _until(lambda: pool.depth == 7, "every job to queue")
    release.set()
    await asyncio.gather(blocker, *jobs)
    assert starts == ["A", "B", "C", "A", "B", "A", "A"]
    pool.shutdown()
