"""Bounded worker pools that run blocking inference off the event loop, shared fairly between sessions.

Each backend owns one `WorkerPool` sized to what its model can do at once (one llama.cpp context, N Whisper
workers). `run()` awaits one blocking call; `stream()` turns a blocking generator (tokens, audio chunks) into an
async iterator that stops the producer as soon as the consumer goes away.

Every job belongs to an *owner*: the session whose task submitted it (`owned_by(session_id)`, which the voice engine
sets for every task of a session), or else the submitting task itself. Waiting jobs are queued per owner and
workers take them round-robin, least recently served owner first, so one session's backlog delays another
session's next job by at most the job that is running. The queues are bounded twice: more than `queue_limit` jobs
waiting in all, or more than `owner_limit` of one owner, fail the new job at once with `EngineBusy` rather than
pile up latency. A job whose caller goes away before it starts (its task cancelled, its stream closed) leaves the
queue at once and never runs. `depth` and `active` are what /healthz and /metrics report.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from koe.engines.base import EngineError

T = TypeVar("T")
P = ParamSpec("P")

_DONE = object()

LOOKAHEAD_POLL_S = 0.05
"""How often a paused producer checks whether its consumer has gone away."""
DEFAULT_OWNER_LIMIT = 4
"""Jobs one owner may have waiting in one pool: a voice session needs at most a transcription, a held reply and a
reply at once; a session that queues more is flooding, and only it is refused."""

_owner: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar("koe_pool_owner", default=None)


@contextlib.contextmanager
def owned_by(owner: Hashable) -> Iterator[None]:
    """Jobs submitted inside this block (and by tasks created in it) belong to `owner`, e.g. a session id."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def owner_context(owner: Hashable) -> contextvars.Context:
    """A copy of the current context in which jobs belong to `owner`: `owner_context(id).run(create_task, coro)`
    gives a task (and the tasks it creates) that owner."""
    context = contextvars.copy_context()
    context.run(_owner.set, owner)
    return context


def current_owner() -> Hashable:
    """The owner the next job would have: the one set by `owned_by()`, or else the running task (or thread)."""
    owner = _owner.get()
    if owner is not None:
        return owner
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a plain thread
        task = None
    return ("task", id(task)) if task is not None else ("thread", threading.get_ident())


class EngineBusy(EngineError):
    """A pool's queue is full (in all, or for this owner). The caller should shed the request, not wait."""


class Cancelled:
    """A flag a streaming producer polls between items; set when its consumer stops listening."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


class _Job:
    __slots__ = ("call", "future", "owner", "ticket")

    def __init__(self, owner: Hashable, call: Callable[[], Any], ticket: int) -> None:
        self.owner = owner
        self.call = call
        self.ticket = ticket
        self.future: Future[Any] = Future()


class WorkerPool:
    def __init__(self, name: str, workers: int, queue_limit: int, owner_limit: int | None = None) -> None:
        if workers < 1 or queue_limit < 1 or (owner_limit is not None and owner_limit < 1):
            raise ValueError("a pool needs at least one worker and room for one queued job")
        self.name = name
        self.workers = workers
        self.queue_limit = queue_limit
        self.owner_limit = owner_limit if owner_limit is not None else min(queue_limit, DEFAULT_OWNER_LIMIT)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"koe-{name}")
        self._lock = threading.Lock()
        self._queues: dict[Hashable, deque[_Job]] = {}
        self._served: dict[Hashable, int] = {}
        """Owner -> when it last got a worker (a dispatch number): the least recently served goes next."""
        self._running: dict[Hashable, int] = {}
        self._tickets = itertools.count()
        self._dispatches = itertools.count()
        self._idle = workers
        self._waiting = 0
        self._active = 0
        self._closed = False
        self.completed = 0

    @property
    def depth(self) -> int:
        """Jobs submitted but not yet started."""
        return self._waiting

    @property
    def active(self) -> int:
        """Jobs running right now."""
        return self._active

    def waiting_for(self, owner: Hashable) -> int:
        """Jobs of `owner` submitted but not yet started."""
        with self._lock:
            queue = self._queues.get(owner)
            return len(queue) if queue else 0

    # --- scheduling ----------------------------------------------------------------------------------------

    def _submit(self, call: Callable[[], Any]) -> Future[Any]:
        owner = current_owner()
        with self._lock:
            if self._closed:
                raise EngineError(f"the {self.name} engine has shut down")
            if self._waiting >= self.queue_limit:
                raise EngineBusy(
                    f"the {self.name} engine is overloaded ({self._waiting} jobs waiting); try again shortly"
                )
            queue = self._queues.setdefault(owner, deque())
            if len(queue) >= self.owner_limit:
                raise EngineBusy(
                    f"the {self.name} engine already has {len(queue)} jobs of this session waiting (the limit per "
                    "session); wait for them to finish before asking for more"
                )
            job = _Job(owner, call, next(self._tickets))
            queue.append(job)
            self._waiting += 1
            start = self._idle > 0
            if start:
                self._idle -= 1
        job.future.add_done_callback(lambda _done: self._drop(job))
        if start:
            self._executor.submit(self._work)
        return job.future

    def _drop(self, job: _Job) -> None:
        """A job's future is done; if it was cancelled while still queued, it leaves the queue now."""
        if not job.future.cancelled():
            return
        with self._lock:
            queue = self._queues.get(job.owner)
            if queue is not None and job in queue:
                queue.remove(job)
                self._waiting -= 1
                self._tidy(job.owner)

    def _next(self) -> _Job | None:
        """The oldest job of the least recently served owner that has one (under the lock)."""
        best: tuple[int, int] | None = None
        chosen: deque[_Job] | None = None
        for owner, queue in self._queues.items():
            if not queue:
                continue
            rank = (self._served.get(owner, -1), queue[0].ticket)
            if best is None or rank < best:
                best, chosen = rank, queue
        if chosen is None:
            return None
        job = chosen.popleft()
        self._waiting -= 1
        self._active += 1
        self._running[job.owner] = self._running.get(job.owner, 0) + 1
        self._served[job.owner] = next(self._dispatches)
        return job

    def _tidy(self, owner: Hashable) -> None:
        """Forget an owner with nothing queued and nothing running (under the lock)."""
        if not self._queues.get(owner) and not self._running.get(owner):
            self._queues.pop(owner, None)
            self._served.pop(owner, None)
            self._running.pop(owner, None)

    def _work(self) -> None:
        """One worker's loop: take jobs in fair order until none is left, then give the worker back."""
        while True:
            with self._lock:
                job = self._next()
                if job is None:
                    self._idle += 1
                    return
            ran = job.future.set_running_or_notify_cancel()
            result: Any = None
            failure: BaseException | None = None
            if ran:
                try:
                    result = job.call()
                except BaseException as exc:  # handed to the caller, which re-raises it
                    failure = exc
            with self._lock:
                # Before the result is set, so a caller that sees its job end also sees `active` drop.
                self._active -= 1
                self._running[job.owner] -= 1
                if ran:
                    self.completed += 1
                self._tidy(job.owner)
            if ran:
                if failure is None:
                    job.future.set_result(result)
                else:
                    job.future.set_exception(failure)

    # --- the two ways to run work --------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on a worker thread and return its result (or raise its exception). Cancelling the caller
        before the job starts takes it out of the queue."""
        future: Future[T] = self._submit(functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                # Nobody cancelled the caller: the pool shut down under the queued job.
                raise EngineError(f"the {self.name} engine shut down before this request ran") from None
            raise

    async def stream(
        self, produce: Callable[[Cancelled], Iterator[T]], lookahead: int | None = None
    ) -> AsyncIterator[T]:
        """Iterate, on a worker thread, the items `produce(cancelled)` yields, and hand them over as they come.

        `produce` should check `cancelled()` between items; closing this iterator sets it, and the worker
        also stops pulling from the generator at its next item. A stream closed before its job started is taken
        out of the queue and never produces. With `lookahead`, the worker pauses once that many items wait
        unread: a consumer that stops reading for a while (a reply waiting for its first audio) then also stops
        the work, and leaves the CPU to whatever it is waiting for.
        """
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
            if cancelled():
                return None  # the consumer left while this waited for a worker
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
            if done.cancelled():
                if not cancelled():  # nobody left on purpose: the pool shut down under a waiting stream
                    put(_Failure(EngineError(f"the {self.name} engine shut down before this request ran")))
                return
            failure = done.result()
            put(_DONE if failure is None else _Failure(failure))

        future: Future[BaseException | None] = self._submit(pump)
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
            # The worker sees this at its next item and stops; a job still queued leaves the queue now. The loop
            # never blocks waiting for either.
            cancelled.set()
            future.cancel()

    def shutdown(self) -> None:
        """Fail every queued job and stop taking new ones; running jobs finish (streams stop at their next item
        once their consumers go)."""
        with self._lock:
            self._closed = True
            queued = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
            self._waiting = 0
        for job in queued:
            job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
