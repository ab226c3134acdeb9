"""Speculation: transcribing, and maybe answering, a turn during the pause that may end it.

When a caller stops speaking, `Speculation.run()` transcribes what was said so far at once. In converse mode it
then starts the reply as a *held* response: the LLM and TTS run, but their events are kept back. If the pause ends
the turn, the session takes the held response (`take_run()`, `release()`) and its first audio goes out at the
same moment the turn is committed. If the caller goes on speaking, `discard()` stops everything and nothing was
ever sent. A held response is paced from its first chunk: it keeps at most `hold_ms` of audio (the output lead),
then waits for its release, and from then on goes at the pace `release()` gives it, so a reply that was ready
long before the turn ended still reaches the listener at the speed it is played.

A speculation knows nothing of the session: it gets a way to transcribe (`Heard.transcribe`, which reuses what
earlier pauses of the turn heard), a way to start a reply to a given text (`Replies.prepare`) and one to start a
task of the session's (`VoiceContext.spawn`), and the session's `Participant` keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from koe.audio.pcm import Pcm
from koe.engines.base import EngineError, Transcript
from koe.voice import events as ev
from koe.voice.response import ResponseRun

Transcribe = Callable[[Pcm], Awaitable[Transcript]]
PrepareReply = Callable[[str, Callable[[ev.Event], None]], ResponseRun]
"""A response answering the given user text (a turn not committed yet), emitting through the given callback."""
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]
"""Starts one of the session's tasks (`VoiceContext.spawn`)."""
Pace = Callable[[float], Awaitable[None]]
"""Awaited with an audio chunk's length (ms) before it is sent (`ResponseRun.pace`)."""


class Speculation:
    def __init__(
        self,
        audio: Pcm,
        respond: bool,
        transcribe: Transcribe,
        prepare_reply: PrepareReply,
        hold_ms: int,
        spawn: Spawn,
    ) -> None:
        self._stt = transcribe
        self._spawn = spawn
        self._prepare_reply = prepare_reply
        self.audio = audio
        self._respond = respond
        self._transcript: asyncio.Future[Transcript | None] = asyncio.get_running_loop().create_future()
        self._held: list[ev.Event] = []
        self._emit: Callable[[ev.Event], None] | None = None
        self.run_: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None
        self.discarded = False
        self.stt_ms: int | None = None
        self.started_at = asyncio.get_running_loop().time()
        self.heard_at: float | None = None
        """Loop times: the speculation began (the VAD called the voice ended), its transcript was ready."""
        self._hold_ms = hold_ms
        self._held_ms = 0.0
        self._released = asyncio.Event()
        self._pace_live: Pace | None = None

    @property
    def text(self) -> str | None:
        """The speculative transcript, once it is ready (None before)."""
        if not self._transcript.done():
            return None
        result = self._transcript.result()
        return result.text if result is not None else ""

    @property
    def responding(self) -> bool:
        """Whether this speculation answers the turn too (its reply may already be running, held back)."""
        return self._respond and not self.discarded

    async def run(self) -> None:
        result: Transcript | None = None
        loop = asyncio.get_running_loop()
        try:
            result = await self._stt(self.audio)
            self.heard_at = loop.time()
            # From the speculation's start (`started_at`, where `endpoint_ms` ends), not this task's: on a busy loop
            # the task starts some ms later, and the reply's chain must still add up to its total.
            self.stt_ms = round((self.heard_at - self.started_at) * 1000)
        except EngineError:
            pass  # the turn will be transcribed again when it is committed, and fail there visibly
        finally:
            if not self._transcript.done():
                self._transcript.set_result(result)
        if self.discarded or not self._respond or result is None or not result.text.strip():
            return
        self.run_ = self._prepare_reply(result.text, self._hold)
        self.run_.pace = self._pace
        # One of the session's tasks: its close cancels the reply and waits for it, released or not.
        self._task = self._spawn(self.run_.run())

    async def transcript(self) -> Transcript | None:
        return await asyncio.shield(self._transcript)

    def covers(self, audio: Pcm) -> bool:
        """Whether `audio` (a committed turn) is this speculation's audio followed only by the pause."""
        n = self.audio.size
        return audio.size >= n and np.array_equal(audio[:n], self.audio)

    def _hold(self, event: ev.Event) -> None:
        if self._emit is not None:
            self._emit(event)
        else:
            self._held.append(event)
            if isinstance(event, ev.ResponseAudioDelta):
                self._held_ms += event.pcm.size * 1000.0 / event.rate

    async def _pace(self, chunk_ms: float) -> None:
        """Held: let audio accumulate up to `hold_ms` (the first chunk always), then wait for the release.
        Released: the live pace."""
        if not self._released.is_set() and self._held_ms > 0 and self._held_ms + chunk_ms > self._hold_ms:
            await self._released.wait()
        if self._pace_live is not None:
            await self._pace_live(chunk_ms)

    def take_run(self) -> ResponseRun | None:
        """The held response, if it is still worth keeping (not failed)."""
        run = self.run_
        if run is None or self.discarded:
            return None
        if any(isinstance(event, ev.ResponseDone) and event.status == "failed" for event in self._held):
            self.discard()
            return None
        return run

    def release(self, emit: Callable[[ev.Event], None], pace: Pace) -> None:
        """Send everything held so far through `emit` (at most `hold_ms` of audio), and let the response go on
        live at `pace`."""
        held, self._held = self._held, []
        for event in held:
            emit(event)
        self._emit, self._pace_live = emit, pace
        self._released.set()

    async def finish(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def discard(self) -> None:
        self.discarded = True
        if self._task is not None and not self._task.done() and self._emit is None:
            self._task.cancel()
