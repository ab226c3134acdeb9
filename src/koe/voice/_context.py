"""What the session's helpers may use of it: `VoiceContext`, one per session, and the views its helpers have of each
other (`Replying`, `Transcribing`).

`Session` builds one `VoiceContext` first and hands it to every helper (`Transcripts`, `Replies`, `plan_response`);
the helpers depend on this module, never on `koe.voice.session`. Through it they read the session's settings,
engines, conversation and playback clock, and they act only through three calls: `emit()` an event, `spawn()` a
task that must end with the session, and `fail()` with an error the caller should see (`koe.voice.errors`).
Helpers that call each other do so through `context.replies` and `context.transcripts`, which the session sets once
both exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from koe.engines.pool import owner_context
from koe.engines.registry import Engines
from koe.tasks import TaskSet
from koe.voice import events as ev
from koe.voice.config import Limits, SessionConfig
from koe.voice.conversation import Conversation
from koe.voice.errors import InternalError, VoiceError
from koe.voice.participant import TurnTiming
from koe.voice.playback import PlaybackClock
from koe.voice.speculation import Speculation
from koe.voice.turns import ReplyInput

log = logging.getLogger("koe.voice")


class Replying(Protocol):
    """What the transcripts helper needs of the replies: feed the reply machine, offer a held reply, and tell what a
    caller still speaking has said so far."""

    def input(self, event: ReplyInput) -> None: ...

    def adopt(self, speculation: Speculation) -> None:
        """A committed turn's speculation whose held reply the next automatic response may take over."""
        ...

    def prehear(self, user_text: str) -> None:
        """The caller, still speaking, has said `user_text` so far: prepare the reply's prompt up to there."""
        ...


class Transcribing(Protocol):
    """What the replies helper needs of the transcripts: wait for them, and the last committed turn's timing."""

    async def pending(self) -> None:
        """Wait until every committed turn has its transcript (or has failed)."""
        ...

    def take_last_turn(self) -> TurnTiming | None:
        """The most recent committed turn's timing, once: the reply that follows reports it."""
        ...


class VoiceContext:
    """One session's shared state and its three actions, as its helpers see them."""

    replies: Replying
    """Set by the session once its helpers exist."""
    transcripts: Transcribing
    """Set by the session once its helpers exist."""

    def __init__(
        self,
        engines: Engines,
        config: SessionConfig,
        *,
        session_id: str,
        default_instructions: str,
        playback: PlaybackClock,
        limits: Limits,
        observer: Callable[[ev.Event], None] | None = None,
        turn_tokens: int | None = None,
    ) -> None:
        self.id = session_id
        self.engines = engines
        self.config = config
        """The session's settings as they are now (`Session.update()` replaces them)."""
        self.default_instructions = default_instructions
        self.turn_tokens = turn_tokens
        """koe's own cap on a reply's length (`koe.voice.turn_cap`); None: only the LLM's own limit."""
        self.limits = limits
        """What the session may keep and send to its LLM."""
        self.conversation = Conversation(limits.conversation_audio_ms)
        self.playback = playback
        self.cause: str | None = None
        """Set by a door around a command call: errors the command raises carry it (`events.Error.cause`)."""
        self._observer = observer
        """Sees every event as it is emitted (the server's metrics); it must not raise or block."""
        self._queue: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self._tasks = TaskSet(log, "voice session task", on_failure=self._task_failed)

    # --- the three actions ---------------------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        """Report `event` to the session's reader (`Session.events()`), after the observer."""
        if self._observer is not None:
            self._observer(event)
        self._queue.put_nowait(event)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as one of the session's tasks: `end_input()` waits for it, `close()` cancels it, and if
        it fails the caller gets an `InternalError`. Engine work it (or any task it starts) submits is the
        session's in the engines' pools, which share their workers fairly between sessions."""
        # Run in a copy of the context with the owner set: the task (and every task it creates) inherits it.
        return owner_context(self.id).run(self._tasks.spawn, coroutine)

    def fail(self, error: VoiceError) -> None:
        """Tell the caller a command could not be done (attributed to the door's `cause`); the session goes on."""
        self.emit(ev.Error(error, self.cause))

    # --- the session's ends --------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ev.Event]:
        while (event := await self._queue.get()) is not None:
            yield event

    def end_events(self) -> None:
        """Let `events()` end once the reader has taken everything before this."""
        self._queue.put_nowait(None)

    @property
    def busy(self) -> bool:
        """Whether any of the session's tasks is still running."""
        return bool(self._tasks)

    async def wait_tasks(self) -> None:
        """Wait for every task, those they spawn meanwhile included."""
        await self._tasks.wait()

    async def cancel_tasks(self) -> None:
        """Cancel every running task and wait until they have stopped."""
        await self._tasks.cancel_and_wait()

    def _task_failed(self, failure: BaseException) -> None:
        log.error("voice session task failed", exc_info=failure)
        self.fail(InternalError(f"internal error: {failure}"))
