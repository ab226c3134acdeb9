"""TaskSet: background tasks kept, failures logged or handed on, cancelled and awaited together."""

from __future__ import annotations

import asyncio
import logging

import pytest

from koe.tasks import TaskSet

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
