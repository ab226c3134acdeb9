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
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, check_rate
from koe.engines.base import ChatRequest
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig
from koe.voice.conversation import Conversation, ConversationError, Item, new_id
from koe.voice.endpointing import end_wait_for
from koe.voice.input import ParticipantInput, Signal
from koe.voice.participant import Participant
from koe.voice.playback import PlaybackClock
from koe.voice.replies import Replies
from koe.voice.speculation import Speculation
from koe.voice.transcripts import Transcripts
from koe.voice.turns import ReplyInput, Turn, TurnAction, TurnInput

log = logging.getLogger("koe.voice")

MIN_COMMIT_MS = 100
"""A manual commit of less audio than this is an error (`input_audio_buffer_commit_empty`)."""
MAX_PARTICIPANTS = 16
STALL_S = 0.3
STALL_MARGIN_S = 0.5
"""No audio during a turn for `STALL_S`, and for as long as the silence that ends a turn plus `STALL_MARGIN_S`:
treat the gap as silence. Shorter gaps are jitter (a late network, a busy machine): filling them would put invented
silence before the audio that then arrives, and split the turn where the caller never paused."""
STALL_CHECK_S = 0.1
MAX_STALL_FILL_S = 2.0
FILLER_CONFIRM_MS = 600
"""With `remove_filler_words`, speech over a reply interrupts only once it lasts this long or says more than fillers."""


class SessionClosed(RuntimeError):
    """The session was closed; create a new one."""


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
        self._participants: dict[str | None, Participant] = {}
        self._queue: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self.transcripts = Transcripts(self)
        self.replies = Replies(self)
        self._tasks: set[asyncio.Task[Any]] = set()
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
        elif isinstance(event, ev.OutputItemAdded | ev.OutputItemDone) and self.replies.in_conversation(
            event.response_id
        ):
            if isinstance(event, ev.OutputItemAdded):
                self.conversation.add(event.item)
            else:
                self.conversation.replace(event.item)
        self._queue.put_nowait(event)
        if isinstance(event, ev.ResponseAudioDelta) or (isinstance(event, ev.ResponseTextDelta) and not event.audio):
            timing = self.replies.first_output(event.response_id)
            if timing is not None:
                self._emit(timing)

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
            self._warm_llm()
        self._push(who, who.input.to_engine_rate(pcm, rate))

    def _push(self, who: Participant, pcm16k: Pcm) -> None:
        source = who.input
        far = self.playback.far_end(pcm16k.size) if source.echo is not None else None
        idle_allowed = self.replies.idle and not self.playback.is_playing()
        for signal in source.push(pcm16k, far, idle_allowed):
            self._on_signal(who, signal)
        speaking_ms = source.now_ms - source.detector.onset_ms
        # Only while the voice is on: the pause that ends a short "um" must not count as speaking over the reply.
        if who.pending_barge_in and who.turn.state is Turn.SPEECH and speaking_ms >= FILLER_CONFIRM_MS:
            self._barge_in(who)
        if self.config.partial_results and who.turn.state is Turn.SPEECH:
            self.transcripts.maybe_partial(who)

    def _warm_llm(self) -> None:
        """Have the LLM evaluate this session's system prompt now, before the first reply needs it."""
        warm = getattr(self.engines.llm, "warm", None)
        if self.config.mode != "converse" or warm is None:
            return
        from koe.voice.planning import plan_response

        messages = plan_response(self, None).messages[:1]
        if messages and messages[0].role == "system":
            self._spawn(warm(ChatRequest(messages, self.config.tools)))

    async def _watch_stalls(self) -> None:
        """Audio that stops arriving mid-turn counts as silence, so the turn still ends (e.g. a sender that goes
        quiet with DTX, or a client that stops streaming after speaking)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(STALL_CHECK_S)
            now = loop.time()
            td = self.config.turn_detection
            stall_s = max(STALL_S, td.silence_duration_ms / 1000 + STALL_MARGIN_S) if td is not None else STALL_S
            for who in list(self._participants.values()):
                gap = now - who.last_audio_at
                if who.turn.state is Turn.SILENCE or gap < stall_s or td is None:
                    continue
                who.last_audio_at = now
                self._push(who, np.zeros(int(min(gap, MAX_STALL_FILL_S) * ENGINE_RATE), dtype=np.int16))

    def _participant(self, participant: str | None) -> Participant:
        who = self._participants.get(participant)
        if who is None:
            if len(self._participants) >= MAX_PARTICIPANTS:
                self._evict_idle_participant()
            vad = self.engines.require("vad").stream()
            who = Participant(ParticipantInput(participant, vad, self.config.turn_detection))
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

    def _configure_input(self, who: Participant) -> None:
        source = who.input
        source.configure(self.config.turn_detection)
        source.detector.end_wait_ms = end_wait_for(self.config.turn_detection, lambda: who.speculation)
        source.echo = _make_echo(self.config) if self.config.mode == "converse" else None
        source.denoise = _make_denoise(self.config)

    def _on_signal(self, who: Participant, signal: Signal) -> None:
        if signal.input is TurnInput.VOICE_END:
            lag_s = (who.input.now_ms - signal.at_ms) / 1000
            who.voice_end_at = asyncio.get_running_loop().time() - lag_s
        for action in who.turn.feed(signal.input):
            self._turn_action(who, action, signal)

    def _turn_action(self, who: Participant, action: TurnAction, signal: Signal) -> None:
        source = who.input
        td = self.config.turn_detection
        if action is TurnAction.SPEECH_STARTED:
            source.item_id = new_id("item")
            who.turn_start_ms = source.start_turn_at(signal.at_ms, td.prefix_padding_ms if td else 0)
            who.partial_text, who.partial_at_ms = "", who.turn_start_ms
            self._emit(ev.SpeechStarted(source.participant, source.item_id, who.turn_start_ms))
        elif action is TurnAction.BARGE_IN:
            if self.config.mode == "converse" and td is not None and td.interrupt_response:
                if td.remove_filler_words and (not self.replies.idle or self.playback.is_playing()):
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
            self.transcripts.commit(who)
        elif action is TurnAction.AUTO_RESPOND:
            if self.config.mode == "converse" and td is not None and td.create_response:
                self.replies.input(ReplyInput.AUTO)
        elif action is TurnAction.CLEAR:
            self._discard(who)
            source.clear()
            self._emit(ev.InputCleared(source.participant))
        elif action is TurnAction.TIMEOUT:
            item_id = new_id("item")
            self._emit(ev.InputTimeout(source.participant, item_id, who.turn_start_ms, signal.at_ms))

    def _barge_in(self, who: Participant) -> None:
        who.pending_barge_in = False
        self.replies.input(ReplyInput.BARGE_IN)

    # --- speculation and transcription ---------------------------------------------------------------------

    def _speculate(self, who: Participant) -> None:
        self._discard(who)
        respond = (
            self.config.mode == "converse"
            and self.config.turn_detection is not None
            and self.config.turn_detection.create_response
            and self.replies.idle
            and not who.pending_barge_in
        )
        who.speculation = Speculation(self, who.input.peek().copy(), respond=respond)
        self._spawn(who.speculation.run())

    def _discard(self, who: Participant) -> None:
        if who.speculation is not None:
            who.speculation.discard()
            who.speculation = None

    # --- commands ------------------------------------------------------------------------------------------

    def update(self, config: SessionConfig) -> None:
        instructions_changed = config.instructions != self.config.instructions or config.tools != self.config.tools
        self.config = config
        if instructions_changed and self._watchdog is not None:
            self._warm_llm()
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
        self.replies.request(options, replace_active)

    def cancel_response(self) -> None:
        self.replies.input(ReplyInput.CANCEL)

    def clear_output(self) -> None:
        """Flush audio the listener has not heard (Azure `output_audio_buffer.clear`)."""
        self.replies.interrupt_playback()

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
        self.replies.cancel("client_cancelled")
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
