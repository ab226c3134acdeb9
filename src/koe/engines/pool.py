"""Bounded worker pools that run blocking inference off the event loop.

Each backend owns one `WorkerPool` sized to what its model can do at once (one llama.cpp context, N Whisper
workers). `run()` awaits one blocking call; `stream()` turns a blocking generator (tokens, audio chunks) into an
async iterator that stops the producer as soon as the consumer goes away. The queue is bounded: when more than
`queue_limit` jobs are waiting, new work fails at once with `EngineBusy` rather than piling up latency.
`depth` and `active` are what /healthz and /metrics report.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from koe.engines.base import EngineError

T = TypeVar("T")
P = ParamSpec("P")

_DONE = object()


LOOKAHEAD_POLL_S = 0.05
"""How often a paused producer checks whether its consumer has gone away."""


class EngineBusy(EngineError):
    """A pool's queue is full. The caller should shed the request, not wait."""


class Cancelled:
    """A flag a streaming producer polls between items; set when its consumer stops listening."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


class WorkerPool:
    def __init__(self, name: str, workers: int, queue_limit: int) -> None:
        if workers < 1 or queue_limit < 1:
            raise ValueError("a pool needs at least one worker and room for one queued job")
        self.name = name
        self.workers = workers
        self.queue_limit = queue_limit
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"koe-{name}")
        self._lock = threading.Lock()
        self._waiting = 0
        self._active = 0
        self.completed = 0

    @property
    def depth(self) -> int:
        """Jobs submitted but not yet started."""
        return self._waiting

    @property
    def active(self) -> int:
        """Jobs running right now."""
        return self._active

    def _admit(self) -> None:
        with self._lock:
            if self._waiting >= self.queue_limit:
                raise EngineBusy(
                    f"the {self.name} engine is overloaded ({self._waiting} jobs waiting); try again shortly"
                )
            self._waiting += 1

    def _forget(self) -> None:
        """A queued job was cancelled (the pool shut down) before it started."""
        with self._lock:
            self._waiting -= 1

    def _wrap(self, fn: Callable[P, T]) -> Callable[P, T]:
        def job(*args: P.args, **kwargs: P.kwargs) -> T:
            with self._lock:
                self._waiting -= 1
                self._active += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._active -= 1
                    self.completed += 1

        return job

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on a worker thread and return its result (or raise its exception)."""
        self._admit()
        loop = asyncio.get_running_loop()
        future = self._executor.submit(self._wrap(fn), *args, **kwargs)
        future.add_done_callback(lambda done: self._forget() if done.cancelled() else None)
        return await asyncio.wrap_future(future, loop=loop)

    async def stream(
        self, produce: Callable[[Cancelled], Iterator[T]], lookahead: int | None = None
    ) -> AsyncIterator[T]:
        """Iterate, on a worker thread, the items `produce(cancelled)` yields, and hand them over as they come.

        `produce` should check `cancelled()` between items; closing this iterator sets it, and the worker
        also stops pulling from the generator at its next item. With `lookahead`, the worker pauses once that many
        items wait unread: a consumer that stops reading for a while (a reply waiting for its first audio) then
        also stops the work, and leaves the CPU to whatever it is waiting for.
        """
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = Cancelled()
        room = threading.Semaphore(lookahead) if lookahead else None

        def wait_for_room() -> None:
            while room is not None and not room.acquire(timeout=LOOKAHEAD_POLL_S):
                if cancelled():
                    return

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed under us: nobody is listening any more
                cancelled.set()

        def pump() -> BaseException | None:
            try:
                generator = produce(cancelled)
                try:
                    for item in generator:
                        wait_for_room()
                        if cancelled():
                            break
                        put(item)
                finally:
                    close = getattr(generator, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # handed to the consumer, which re-raises it
                return exc
            return None

        def finished(done: Future[BaseException | None]) -> None:
            # Runs after the job's bookkeeping, so a consumer that sees the end also sees `active` drop.
            if done.cancelled():
                self._forget()
                put(_Failure(EngineError(f"the {self.name} engine shut down before this request ran")))
                return
            failure = done.result()
            put(_DONE if failure is None else _Failure(failure))

        future = self._executor.submit(self._wrap(pump))
        future.add_done_callback(finished)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                if room is not None:
                    room.release()
                yield item  # type: ignore[misc]  # the queue only carries T besides the two markers
        finally:
            # The worker sees this at its next item and stops; the loop never blocks waiting for it.
            cancelled.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
