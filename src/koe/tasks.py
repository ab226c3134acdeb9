"""Background tasks that belong to one owner (a session, a listener, a call's webhook handler, the emulator).

`TaskSet(log, what)` keeps each task it `spawn()`s referenced until it ends (asyncio keeps only a weak one), logs a
task that fails (or hands the exception to `on_failure`), and can `cancel()` them together or `wait()` for them,
including the tasks they spawn meanwhile. One implementation for every owner, so a failure is never left for the
garbage collector's "Task exception was never retrieved".

`within(awaitable, timeout_s)` is koe's one time bound on an await (`TimeoutError` past it). Python 3.11's
`asyncio.wait_for` swallows a cancellation that arrives in the loop turn in which the awaited thing completes, and a
task cancelled at that moment runs on; `asyncio.timeout()`, which `within` is built on, does not. Ruff's banned-api
rule (TID251, pyproject.toml) keeps `asyncio.wait_for` out of `src/`.

`stop(task)` cancels a task and waits until it has ended. The usual `task.cancel()` then
`with suppress(CancelledError): await task` has a flaw: when the *caller* is cancelled while it waits, the suppress
swallows the caller's own cancellation too, and the caller runs on (a session close cancelled at shutdown, say).
`stop()` waits with `asyncio.wait`, which never raises the task's outcome, so the caller's cancellation goes through,
and the task's failure is raised (or, with `ignore_failure`, dropped) only after it has ended.

`describe_tasks()` is every task of the running loop with the chain of awaits it is suspended in: what `kill -USR1`
writes to the log of `koe serve`, to see what a session that does not end is waiting for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """`await awaitable`, or `TimeoutError` after `timeout_s` (None: no bound); a cancellation always goes through."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def stop(task: asyncio.Task[Any], *, ignore_failure: bool = False) -> None:
    """Cancel `task` and wait until it has ended. A failure of the task (an exception other than its cancellation)
    is raised here, unless `ignore_failure`; the caller's own cancellation always goes through."""
    if task is asyncio.current_task():
        raise RuntimeError("a task cannot stop itself and wait for it")
    task.add_done_callback(_retrieve)  # if the caller is cancelled first, the failure is still retrieved
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled() and (failure := task.exception()) is not None and not ignore_failure:
        raise failure


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def describe_tasks() -> str:
    """Every task of the running loop, each with its state and its chain of awaits, outermost first."""
    lines: list[str] = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        state = "cancelling" if task.cancelling() else "done" if task.done() else "pending"
        lines.append(f"task {task.get_name()} ({state})")
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            frame = frame or getattr(awaited, "gi_frame", None)
            if frame is not None:
                lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "\n".join(lines)


class TaskSet:
    def __init__(
        self, log: logging.Logger, what: str, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        self._log = log
        self._what = what
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self, timeout_s: float | None = None) -> None:
        """Until every task has ended, those spawned meanwhile included (or `timeout_s` passed: then cancel the
        rest and wait for them to stop)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._tasks:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(list(self._tasks), timeout=left)
            if pending and deadline is not None and loop.time() >= deadline:
                self.cancel()
                await asyncio.wait(list(self._tasks))
                return

    async def cancel_and_wait(self) -> None:
        self.cancel()
        await self.wait()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        failure = task.exception()
        assert failure is not None
        if self._on_failure is not None:
            self._on_failure(failure)
        else:
            self._log.error("%s failed", self._what, exc_info=failure)
