"""The voice engine's session: audio and commands in, engine events out. No protocol knows about this module's
internals, and this module knows no protocol.

Create one `Session` per call or connection, feed it with `append_audio()` (cheap, synchronous, per frame) and the
command methods, and read `events()`. In `transcribe` mode each participant's turns become transcripts; in
`converse` mode a finished turn also gets a spoken reply, which the caller can interrupt by speaking.

Latency comes from overlap, not from speed alone: when a caller pauses, the audio is transcribed at once
(speculation) and, in converse mode, the reply starts generating before the pause is long enough to end the turn.
If the caller goes on speaking, the speculation is dropped; if the turn ends, the reply that is already being
synthesized is released at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, check_rate
from koe.engines.base import EngineError, Transcript
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig
from koe.voice.conversation import Conversation, ConversationError, Item, audio_part, new_id
from koe.voice.endpointing import end_wait_for, is_only_fillers
from koe.voice.input import ParticipantInput, Signal
from koe.voice.planning import plan_response
from koe.voice.playback import PlaybackClock
from koe.voice.response import ResponseRun
from koe.voice.speculation import Speculation
from koe.voice.turns import Reply, ReplyAction, ReplyInput, ReplyMachine, Turn, TurnAction, TurnInput, TurnMachine

log = logging.getLogger("koe.voice")

MIN_COMMIT_MS = 100
"""A manual commit of less audio than this is an error (`input_audio_buffer_commit_empty`)."""
PARTIAL_INTERVAL_MS = 700
MAX_PARTICIPANTS = 16
OUTPUT_LEAD_MS = 400
"""How far reply audio may run ahead of the listener's playback: enough to ride out network jitter, short enough
that a barge-in leaves little already-sent audio behind."""
STALL_S = 0.3
"""No audio for this long during a turn: treat the gap as silence."""
STALL_CHECK_S = 0.1
MAX_STALL_FILL_S = 2.0
FILLER_CONFIRM_MS = 600
"""With `remove_filler_words`, speech over a reply interrupts only once it lasts this long or says more than fillers."""


@dataclass
class _TurnTiming:
    """Loop times of a committed turn's milestones, for the reply's `ResponseTiming`."""

    voice_end_at: float | None
    turn_end_at: float
    stt_ms: int | None = None


class SessionClosed(RuntimeError):
    """The session was closed; create a new one."""


class _Participant:
    def __init__(self, source: ParticipantInput) -> None:
        self.input = source
        self.turn = TurnMachine()
        self.speculation: Speculation | None = None
        self.pending_barge_in = False
        self.partial_text = ""
        self.partial_at_ms = 0
        self.partial_busy = False
        self.turn_start_ms = 0
        self.voice_end_at: float | None = None
        self.last_audio_at = 0.0


class Session:
    def __init__(
        self,
        engines: Engines,
        config: SessionConfig | None = None,
        *,
        default_instructions: str = "",
        clock: Callable[[], float] = time.monotonic,
        session_id: str | None = None,
        observer: Callable[[ev.Event], None] | None = None,
    ) -> None:
        self.id = session_id or new_id("sess")
        self._observer = observer
        """Sees every event as it is emitted (the server's metrics); it must not raise or block."""
        self.engines = engines
        self.config = config or SessionConfig()
        self.default_instructions = default_instructions
        self.conversation = Conversation()
        self.playback = PlaybackClock(clock, keep_reference=self.config.echo_cancellation)
        self._participants: dict[str | None, _Participant] = {}
        self._queue: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self._reply = ReplyMachine()
        self._run: ResponseRun | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._pending_options: ResponseOptions | None = None
        self._transcripts: dict[str, asyncio.Future[Transcript | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._adoptable: Speculation | None = None
        self._last_turn: _TurnTiming | None = None
        self._timing_for: tuple[ResponseRun, _TurnTiming | None] | None = None
        self._watchdog: asyncio.Task[Any] | None = None
        self._closed = False
        self.created_at = clock()
        self.cause: str | None = None
        """Set by a door around a command call: errors the command raises carry it (`events.Error.cause`)."""

    # --- output --------------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ev.Event]:
        """Every event, in order, until the session ends (`end_input()` drained, or `close()`)."""
        while (event := await self._queue.get()) is not None:
            yield event

    def _emit(self, event: ev.Event) -> None:
        if self._observer is not None:
            self._observer(event)
        if isinstance(event, ev.ResponseAudioDelta):
            self.playback.sent(event.response_id, event.item_id, event.pcm, event.rate)
            self._queue.put_nowait(event)
            self._report_timing(event.response_id)
            return
        if isinstance(event, ev.ResponseTextDelta) and not event.audio:
            self._queue.put_nowait(event)
            self._report_timing(event.response_id)
            return
        elif isinstance(event, ev.OutputItemAdded | ev.OutputItemDone) and self._in_conversation(event.response_id):
            if isinstance(event, ev.OutputItemAdded):
                self.conversation.add(event.item)
            else:
                self.conversation.replace(event.item)
        self._queue.put_nowait(event)

    def _report_timing(self, response_id: str) -> None:
        if self._timing_for is None or self._timing_for[0].response_id != response_id:
            return
        run, turn = self._timing_for
        self._timing_for = None
        now = asyncio.get_running_loop().time()

        def span(start: float | None, end: float | None) -> int | None:
            return None if start is None or end is None else max(0, round((end - start) * 1000))

        self._emit(
            ev.ResponseTiming(
                response_id,
                total_ms=span(turn.voice_end_at if turn else None, now),
                turn_end_ms=span(turn.voice_end_at, turn.turn_end_at) if turn else None,
                stt_ms=turn.stt_ms if turn else None,
                llm_first_token_ms=span(run.llm_started_at, run.first_token_at),
                tts_first_audio_ms=span(run.first_clause_at, run.first_audio_at),
            )
        )

    def _in_conversation(self, response_id: str) -> bool:
        return self._run is not None and self._run.response_id == response_id and self._run.plan.in_conversation

    def _error(self, code: str, message: str, param: str | None = None) -> None:
        self._emit(ev.Error(code, message, param, self.cause))

    # --- input ---------------------------------------------------------------------------------------------

    def append_audio(self, pcm: Pcm, rate: int, participant: str | None = None) -> None:
        """Feed audio as it arrives. Raises `AudioFormatError` for an unsupported rate (nothing else is raised)."""
        if self._closed:
            raise SessionClosed("the session is closed")
        check_rate(rate)
        who = self._participant(participant)
        who.last_audio_at = asyncio.get_running_loop().time()
        if self._watchdog is None:
            self._watchdog = self._spawn(self._watch_stalls())
        self._push(who, who.input.to_engine_rate(pcm, rate))

    def _push(self, who: _Participant, pcm16k: Pcm) -> None:
        source = who.input
        far = self.playback.far_end(pcm16k.size) if source.echo is not None else None
        idle_allowed = self._reply.state is Reply.IDLE and not self.playback.is_playing()
        for signal in source.push(pcm16k, far, idle_allowed):
            self._on_signal(who, signal)
        speaking_ms = source.now_ms - source.detector.onset_ms
        if who.pending_barge_in and who.turn.state is not Turn.SILENCE and speaking_ms >= FILLER_CONFIRM_MS:
            self._barge_in(who)
        if self.config.partial_results and who.turn.state is Turn.SPEECH:
            self._maybe_partial(who)

    async def _watch_stalls(self) -> None:
        """Audio that stops arriving mid-turn counts as silence, so the turn still ends (e.g. a sender that goes
        quiet with DTX, or a client that stops streaming after speaking)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(STALL_CHECK_S)
            now = loop.time()
            for who in list(self._participants.values()):
                gap = now - who.last_audio_at
                if who.turn.state is Turn.SILENCE or gap < STALL_S or self.config.turn_detection is None:
                    continue
                who.last_audio_at = now
                self._push(who, np.zeros(int(min(gap, MAX_STALL_FILL_S) * ENGINE_RATE), dtype=np.int16))

    def _participant(self, participant: str | None) -> _Participant:
        who = self._participants.get(participant)
        if who is None:
            if len(self._participants) >= MAX_PARTICIPANTS:
                self._evict_idle_participant()
            vad = self.engines.require("vad").stream()
            who = _Participant(ParticipantInput(participant, vad, self.config.turn_detection))
            self._configure_input(who)
            self._participants[participant] = who
        return who

    def _evict_idle_participant(self) -> None:
        """Make room for a new speaker by dropping the one silent the longest (a long call's speakers change)."""
        idle = [
            (who.last_audio_at, key)
            for key, who in self._participants.items()
            if who.turn.state is Turn.SILENCE and who.speculation is None
        ]
        if not idle:
            raise ValueError(f"a session takes at most {MAX_PARTICIPANTS} speakers at once")
        del self._participants[min(idle, key=lambda entry: entry[0])[1]]

    def _configure_input(self, who: _Participant) -> None:
        source = who.input
        source.configure(self.config.turn_detection)
        source.detector.end_wait_ms = end_wait_for(self.config.turn_detection, lambda: who.speculation)
        source.echo = _make_echo(self.config) if self.config.mode == "converse" else None
        source.denoise = _make_denoise(self.config)

    def _on_signal(self, who: _Participant, signal: Signal) -> None:
        if signal.input is TurnInput.VOICE_END:
            lag_s = (who.input.now_ms - signal.at_ms) / 1000
            who.voice_end_at = asyncio.get_running_loop().time() - lag_s
        for action in who.turn.feed(signal.input):
            self._turn_action(who, action, signal)

    def _turn_action(self, who: _Participant, action: TurnAction, signal: Signal) -> None:
        source = who.input
        td = self.config.turn_detection
        if action is TurnAction.SPEECH_STARTED:
            source.item_id = new_id("item")
            who.turn_start_ms = source.start_turn_at(signal.at_ms, td.prefix_padding_ms if td else 0)
            who.partial_text, who.partial_at_ms = "", who.turn_start_ms
            self._emit(ev.SpeechStarted(source.participant, source.item_id, who.turn_start_ms))
        elif action is TurnAction.BARGE_IN:
            if self.config.mode == "converse" and td is not None and td.interrupt_response:
                if td.remove_filler_words and (self._run is not None or self.playback.is_playing()):
                    who.pending_barge_in = True
                else:
                    self._barge_in(who)
        elif action is TurnAction.SPECULATE:
            self._speculate(who)
        elif action is TurnAction.DISCARD_SPECULATION:
            self._discard(who)
        elif action is TurnAction.SPEECH_STOPPED:
            end_ms = source.detector.last_voice_ms if signal.input is TurnInput.TURN_END else signal.at_ms
            self._emit(ev.SpeechStopped(source.participant, source.item_id or "", max(end_ms, who.turn_start_ms)))
        elif action is TurnAction.COMMIT:
            self._commit(who, manual=signal.input is TurnInput.COMMIT and td is None)
        elif action is TurnAction.AUTO_RESPOND:
            if self.config.mode == "converse" and td is not None and td.create_response:
                self._reply_input(ReplyInput.AUTO)
        elif action is TurnAction.CLEAR:
            self._discard(who)
            source.clear()
            self._emit(ev.InputCleared(source.participant))
        elif action is TurnAction.TIMEOUT:
            item_id = new_id("item")
            self._emit(ev.InputTimeout(source.participant, item_id, who.turn_start_ms, signal.at_ms))

    def _barge_in(self, who: _Participant) -> None:
        who.pending_barge_in = False
        self._reply_input(ReplyInput.BARGE_IN)

    # --- speculation and transcription ---------------------------------------------------------------------

    def _speculate(self, who: _Participant) -> None:
        self._discard(who)
        respond = (
            self.config.mode == "converse"
            and self.config.turn_detection is not None
            and self.config.turn_detection.create_response
            and self._reply.state is Reply.IDLE
            and not who.pending_barge_in
        )
        who.speculation = Speculation(self, who.input.peek().copy(), respond=respond)
        self._spawn(who.speculation.run())

    def _discard(self, who: _Participant) -> None:
        if who.speculation is not None:
            who.speculation.discard()
            who.speculation = None

    def _commit(self, who: _Participant, manual: bool) -> None:
        source = who.input
        if manual and source.buffered_ms() < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {source.buffered_ms():.2f}ms of audio.",
            )
            return
        audio, start_ms, end_ms = source.take()
        voice_end_at, who.voice_end_at = who.voice_end_at, None
        timing = self._last_turn = _TurnTiming(voice_end_at, asyncio.get_running_loop().time())
        item_id = source.item_id or new_id("item")
        source.item_id = None
        speculation, who.speculation = who.speculation, None
        if who.pending_barge_in:
            who.pending_barge_in = False
            self._spawn(self._filler_or_turn(who, audio, item_id, start_ms, end_ms, speculation))
            return
        self._finish_turn(who, audio, item_id, start_ms, end_ms, speculation, timing)

    def _finish_turn(
        self,
        who: _Participant,
        audio: Pcm,
        item_id: str,
        start_ms: int,
        end_ms: int,
        speculation: Speculation | None,
        timing: _TurnTiming | None = None,
    ) -> None:
        participant = who.input.participant
        if speculation is not None and not speculation.covers(audio):
            speculation.discard()
            speculation = None
        if self.config.mode == "converse":
            item = Item(item_id, "message", "user", (audio_part(audio, ENGINE_RATE),), participant=participant)
            previous = self.conversation.add(item)
            self._emit(ev.InputCommitted(participant, item_id, previous))
            self._emit(ev.ItemAdded(item, previous))
        future: asyncio.Future[Transcript | None] = asyncio.get_running_loop().create_future()
        self._transcripts[item_id] = future
        self._spawn(self._transcribe(who, audio, item_id, start_ms, end_ms, speculation, future, timing))
        if speculation is not None and speculation.responding:
            self._adoptable = speculation  # AUTO_RESPOND, next in the same action list, takes it

    async def _transcribe(
        self,
        who: _Participant,
        audio: Pcm,
        item_id: str,
        start_ms: int,
        end_ms: int,
        speculation: Speculation | None,
        future: asyncio.Future[Transcript | None],
        timing: _TurnTiming | None,
    ) -> None:
        participant = who.input.participant
        result: Transcript | None = None
        loop = asyncio.get_running_loop()
        try:
            if speculation is not None:
                result = await speculation.transcript()
                if timing is not None:
                    timing.stt_ms = speculation.stt_ms
            if result is None:
                started = loop.time()
                result = await self._stt(audio)
                if timing is not None:
                    timing.stt_ms = round((loop.time() - started) * 1000)
        except EngineError as exc:
            if self.config.transcription:
                self._emit(ev.TranscriptFailed(participant, item_id, str(exc)))
        else:
            self._apply_transcript(participant, item_id, result, start_ms, end_ms)
        finally:
            if not future.done():
                future.set_result(result)
            self._transcripts.pop(item_id, None)

    async def _stt(self, audio: Pcm) -> Transcript:
        stt = self.engines.require("stt")
        result: Transcript = await stt.transcribe(
            audio, language=self.config.language, prompt=self.config.transcription_prompt
        )
        return result

    def _apply_transcript(
        self, participant: str | None, item_id: str, result: Transcript, start_ms: int, end_ms: int
    ) -> None:
        if self.config.mode == "converse":
            with contextlib.suppress(ConversationError):
                item = self.conversation.get(item_id)
                part = replace(item.content[0], transcript=result.text)
                updated = replace(item, content=(part,))
                self.conversation.replace(updated)
                self._emit(ev.ItemUpdated(updated))
        if self.config.transcription:
            self._emit(
                ev.TranscriptCompleted(
                    participant, item_id, result.text, start_ms, end_ms, result.language, result.duration_s
                )
            )

    async def _filler_or_turn(
        self,
        who: _Participant,
        audio: Pcm,
        item_id: str,
        start_ms: int,
        end_ms: int,
        speculation: Speculation | None,
    ) -> None:
        """Speech over a reply with `remove_filler_words`: drop it if it was only fillers, else barge in now."""
        result = await speculation.transcript() if speculation is not None else None
        if result is None:
            with contextlib.suppress(EngineError):
                result = await self._stt(audio)
        if result is not None and is_only_fillers(result.text):
            return
        self._reply_input(ReplyInput.BARGE_IN)
        self._finish_turn(who, audio, item_id, start_ms, end_ms, None)
        td = self.config.turn_detection
        if td is not None and td.create_response:
            self._reply_input(ReplyInput.AUTO)

    def _maybe_partial(self, who: _Participant) -> None:
        source = who.input
        if who.partial_busy or source.now_ms - who.partial_at_ms < PARTIAL_INTERVAL_MS:
            return
        stt = self.engines.stt
        pool = getattr(stt, "pool", None)
        if pool is not None and (pool.depth > 0 or pool.active >= pool.workers):
            return  # partials are best effort: never queue them behind final transcripts
        who.partial_busy, who.partial_at_ms = True, source.now_ms
        self._spawn(self._partial(who, source.item_id or "", source.peek().copy()))

    async def _partial(self, who: _Participant, item_id: str, audio: Pcm) -> None:
        try:
            result = await self._stt(audio)
        except EngineError:
            return
        finally:
            who.partial_busy = False
        if who.input.item_id != item_id or not result.text:
            return  # the turn ended meanwhile: its final transcript supersedes this
        previous, who.partial_text = who.partial_text.rstrip(" .?!…"), result.text
        delta = result.text[len(previous) :] if result.text.startswith(previous) else ""
        self._emit(ev.TranscriptDelta(who.input.participant, item_id, delta.strip(), result.text))

    # --- responses -----------------------------------------------------------------------------------------

    def _reply_input(self, event: ReplyInput) -> None:
        for action in self._reply.feed(event):
            if action is ReplyAction.START:
                options, self._pending_options = self._pending_options, None
                self._start_response(options, adopt_speculation=event is ReplyInput.AUTO)
            elif action is ReplyAction.REJECT_ACTIVE:
                active = self._run.response_id if self._run else "unknown"
                self._pending_options = None
                self._error(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {active}. Wait until the response "
                    "is finished before creating a new one.",
                )
            elif action is ReplyAction.CANCEL_CLIENT:
                self._cancel_run("client_cancelled")
            elif action is ReplyAction.CANCEL_TURN:
                self._cancel_run("turn_detected")
            elif action is ReplyAction.INTERRUPT_PLAYBACK:
                self._interrupt_playback()
            elif action is ReplyAction.ERROR_NOT_ACTIVE:
                self._error("response_cancel_not_active", "Cancellation failed: no active response found")

    def _start_response(self, options: ResponseOptions | None, adopt_speculation: bool) -> None:
        speculation, self._adoptable = self._adoptable, None
        turn, self._last_turn = (self._last_turn if adopt_speculation else None), None
        if speculation is not None and not adopt_speculation:
            speculation.discard()
            speculation = None
        self._run = None
        self._run_task = self._spawn(self._respond(options, speculation, turn))

    async def _respond(
        self, options: ResponseOptions | None, speculation: Speculation | None, turn: _TurnTiming | None
    ) -> None:
        # The reply needs the transcripts of every turn committed so far.
        pending = [future for future in self._transcripts.values() if not future.done()]
        if pending:
            await asyncio.gather(*pending)
        run = speculation.take_run() if speculation is not None else None
        if run is not None and speculation is not None:
            self._run = run
            self._timing_for = (run, turn)
            run.pace = self._pace
            speculation.release(self._emit)
            await speculation.finish()
        else:
            if speculation is not None:
                speculation.discard()
            plan = plan_response(self, options)
            tts = self.engines.tts if plan.output_audio else None
            run = ResponseRun(plan, self.engines.require("llm"), tts, self._emit)
            run.pace = self._pace
            self._run = run
            self._timing_for = (run, turn)
            await run.run()
        if self._run is run:
            self._reply_input(ReplyInput.FINISHED)

    async def _pace(self) -> None:
        await self.playback.wait_below(OUTPUT_LEAD_MS)

    def _cancel_run(self, reason: str) -> None:
        run, task = self._run, self._run_task
        if run is not None and not run.done:
            run.cancel(reason)
        if task is not None and not task.done():
            task.cancel()
        self._run_task = None

    def _interrupt_playback(self) -> None:
        if not self.playback.is_playing():
            return
        response_id, item_id, played, dropped = self.playback.interrupt()
        if item_id is None:
            return
        self._emit(ev.AudioInterrupted(response_id, item_id, played, dropped))
        td = self.config.turn_detection
        if td is not None and td.auto_truncate:
            self.truncate(item_id, 0, played)

    # --- commands ------------------------------------------------------------------------------------------

    def update(self, config: SessionConfig) -> None:
        self.config = config
        self.playback._keep_reference = config.echo_cancellation
        for who in self._participants.values():
            self._configure_input(who)

    def commit(self, participant: str | None = None) -> None:
        who = self._participant(participant)
        if who.input.buffered_ms() < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {who.input.buffered_ms():.2f}ms of audio.",
            )
            return
        who.input.detector.reset()  # speech that goes on after a manual commit is a new turn, with its own onset
        self._on_signal(who, Signal(TurnInput.COMMIT, who.input.now_ms))

    def clear(self, participant: str | None = None) -> None:
        self._on_signal(self._participant(participant), Signal(TurnInput.CLEAR, 0))

    def create_response(self, options: ResponseOptions | None = None, replace_active: bool = False) -> None:
        self._pending_options = options
        self._reply_input(ReplyInput.CREATE_REPLACING if replace_active else ReplyInput.CREATE)

    def cancel_response(self) -> None:
        self._reply_input(ReplyInput.CANCEL)

    def clear_output(self) -> None:
        """Flush audio the listener has not heard (Azure `output_audio_buffer.clear`)."""
        self._interrupt_playback()

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        try:
            item = self.conversation.truncate(item_id, content_index, audio_end_ms)
        except ConversationError as exc:
            self._error("invalid_value", str(exc), exc.param)
            return
        self._emit(ev.ItemTruncated(item_id, content_index, audio_end_ms))
        self._emit(ev.ItemUpdated(item))

    def create_item(self, item: Item, previous_item_id: str | None = None) -> None:
        try:
            previous = self.conversation.add(item, previous_item_id)
        except ConversationError as exc:
            self._error("invalid_value", str(exc), exc.param)
            return
        self._emit(ev.ItemAdded(item, previous))

    def delete_item(self, item_id: str) -> None:
        try:
            self.conversation.delete(item_id)
        except ConversationError as exc:
            self._error("invalid_value", str(exc), exc.param)
            return
        self._emit(ev.ItemDeleted(item_id))

    def retrieve_item(self, item_id: str) -> Item | None:
        try:
            return self.conversation.get(item_id)
        except ConversationError as exc:
            self._error("invalid_value", str(exc), exc.param)
            return None

    async def end_input(self) -> None:
        """The input stream ended: finish every turn in progress, wait for its results, then end `events()`."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        for who in list(self._participants.values()):
            # Mid-speech the stream's end ends the turn (a commit); in a pause it is the pause that ended it.
            ending = {Turn.SPEECH: TurnInput.COMMIT, Turn.PAUSE: TurnInput.TURN_END}.get(who.turn.state)
            if ending is not None:
                self._on_signal(who, Signal(ending, who.input.now_ms))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._closed = True
        self._queue.put_nowait(None)

    async def close(self) -> None:
        """Abandon everything at once and end `events()`."""
        if self._closed and not self._tasks:
            return
        self._closed = True
        self._cancel_run("client_cancelled")
        for who in self._participants.values():
            self._discard(who)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._queue.put_nowait(None)

    # --- helpers -------------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("voice session task failed", exc_info=task.exception())
            self._error("server_error", f"internal error: {task.exception()}")


def _make_echo(config: SessionConfig) -> object | None:
    if not config.echo_cancellation:
        return None
    try:
        from koe.audio.echo import EchoCanceller

        return EchoCanceller(ENGINE_RATE)
    except (ImportError, RuntimeError) as exc:  # the library is missing: run without, and say so once
        log.warning("echo cancellation unavailable: %s", exc)
        return None


def _make_denoise(config: SessionConfig) -> object | None:
    if not config.noise_suppression:
        return None
    from koe.audio.denoise import NoiseSuppressor

    return NoiseSuppressor(ENGINE_RATE)
