"""TaskSet: background tasks kept, failures logged or handed on, cancelled and awaited together."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from koe.tasks import TaskSet, describe_tasks, stop, within

log = logging.getLogger("koe.test.tasks")


async def test_a_failing_task_is_logged_once_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(log, "test job")

    async def boom() -> None:
        raise RuntimeError("broken")

    with caplog.at_level(logging.ERROR, logger=log.name):
        task = tasks.spawn(boom())
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records] == ["test job failed"]
    assert len(tasks) == 0


async def test_a_failure_can_go_to_the_owner_instead() -> None:
    seen: list[BaseException] = []
    tasks = TaskSet(log, "test job", on_failure=seen.append)

    async def boom() -> None:
        raise ValueError("x")

    await asyncio.wait([tasks.spawn(boom())])
    await asyncio.sleep(0)
    assert [type(e) for e in seen] == [ValueError]


async def test_wait_includes_tasks_spawned_meanwhile() -> None:
    tasks = TaskSet(log, "test job")
    done: list[str] = []

    async def child() -> None:
        await asyncio.sleep(0.01)
        done.append("child")

    async def parent() -> None:
        tasks.spawn(child())
        done.append("parent")

    tasks.spawn(parent())
    await tasks.wait()
    assert done == ["parent", "child"] and len(tasks) == 0


async def test_wait_with_a_timeout_cancels_what_is_left() -> None:
    tasks = TaskSet(log, "test job")
    stuck = tasks.spawn(asyncio.sleep(60))
    quick = tasks.spawn(asyncio.sleep(0))
    await tasks.wait(timeout_s=0.05)
    assert stuck.cancelled() and quick.done() and not quick.cancelled()


async def test_cancel_and_wait_stops_everything_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(log, "test job")
    running = [tasks.spawn(asyncio.sleep(60)) for _ in range(3)]
    with caplog.at_level(logging.ERROR, logger=log.name):
        await tasks.cancel_and_wait()
    assert all(task.cancelled() for task in running) and not caplog.records


async def test_within_lets_a_cancellation_through_when_it_lands_as_the_await_completes() -> None:
    """What 3.11's `asyncio.wait_for` gets wrong: cancelled in the loop turn in which the awaited thing completes, it
    returns the result and the task runs on. Every loop turn around the completion is tried."""
    for turns in range(6):
        finished = asyncio.get_running_loop().create_future()

        async def inner(finished: asyncio.Future[None] = finished) -> None:
            await finished

        async def bounded() -> str:
            await within(inner(), 10.0)
            await asyncio.sleep(0.5)
            return "ran on after its cancellation"

        task = asyncio.ensure_future(bounded())
        for _ in range(2):
            await asyncio.sleep(0)
        finished.set_result(None)
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_within_times_out() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(5), 0.01)
    assert await within(asyncio.sleep(0, "done"), None) == "done"


async def test_describe_tasks_shows_where_a_task_waits() -> None:
    async def parked_here(event: asyncio.Event) -> None:
        await event.wait()

    event = asyncio.Event()
    task = asyncio.ensure_future(parked_here(event))
    task.set_name("parked-task")
    await asyncio.sleep(0)
    described = describe_tasks()
    lines = described.splitlines()
    at = lines.index("task parked-task (pending)")
    assert "in parked_here" in lines[at + 1]
    assert "in wait" in lines[at + 2]  # asyncio.Event.wait, the await it is suspended in
    event.set()
    await task


async def test_stop_cancels_and_waits_for_the_task() -> None:
    cleaned = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cleaned.set()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await stop(task)
    assert task.cancelled() and cleaned.is_set()


async def test_stop_lets_the_callers_own_cancellation_through() -> None:
    """The flaw of `with suppress(CancelledError): await task`: a caller cancelled while it waits runs on."""
    release = asyncio.Event()
    after_stop: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await release.wait()

    async def suppressing(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        after_stop.append("suppress")

    async def stopping(task: asyncio.Task[None]) -> None:
        await stop(task)
        after_stop.append("stop")

    for closer in (suppressing, stopping):
        release.clear()
        task = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        caller = asyncio.create_task(closer(task))
        await asyncio.sleep(0.01)
        caller.cancel()  # the caller is cancelled while it waits for the task to end
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait((caller, task))
        if closer is suppressing:
            assert not caller.cancelled()  # what stop() fixes: the cancellation was swallowed
    assert after_stop == ["suppress"]
    assert caller.cancelled()


async def test_stop_raises_the_tasks_failure_unless_told_to_ignore_it() -> None:
    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    task = asyncio.create_task(failing_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="cleanup failed"):
        await stop(task)
    task = asyncio.create_task(failing_on_cancel())
    await asyncio.sleep(0)
    await stop(task, ignore_failure=True)
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    await stop(finished)  # a task that already ended: nothing to do


async def test_a_task_cannot_stop_itself() -> None:
    async def itself() -> None:
        current = asyncio.current_task()
        assert current is not None
        await stop(current)

    with pytest.raises(RuntimeError, match="cannot stop itself"):
        await itself()
