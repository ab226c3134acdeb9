"""The voice engine's session: audio and commands in, engine events out. No protocol knows about this module's
internals, and this module knows no protocol.

Create one `Session` per call or connection, feed it with `append_audio()` (cheap, synchronous, per frame) and the
command methods, and read `events()`. In `transcribe` mode each participant's turns become transcripts; in
`converse` mode a finished turn also gets a spoken reply, which the caller can interrupt by speaking.

Latency comes from overlap, not from speed alone: when a caller pauses, the audio is transcribed at once
(speculation) and, in converse mode, the reply starts generating before the pause is long enough to end the turn.
If the caller goes on speaking, the speculation is dropped; if the turn ends, the reply that is already being
synthesized is released at that moment.

The session is the engine's one entry point. Its helpers (`Transcripts`, `Replies`, `Speculation`, `plan_response`)
see it only through the `VoiceContext` it builds (`koe.voice._context`), and the errors it reports are koe's own
(`koe.voice.errors`), which each door maps onto its protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, check_rate
from koe.engines.base import ChatRequest
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice._context import VoiceContext
from koe.voice.config import Limits, ResponseOptions, SessionConfig
from koe.voice.conversation import Conversation, ConversationError, Item, item_chars, new_id
from koe.voice.errors import CommitTooShort, InvalidItem, LimitExceeded
from koe.voice.incremental import Heard
from koe.voice.input import Signal
from koe.voice.participant import Participant, Participants
from koe.voice.planning import plan_response
from koe.voice.playback import OUTPUT_LEAD_MS, PlaybackClock
from koe.voice.replies import Replies
from koe.voice.speculation import Speculation
from koe.voice.transcripts import Transcripts
from koe.voice.turn_cap import DEFAULT_TURN_TOKENS
from koe.voice.turns import ReplyInput, Turn, TurnAction, TurnInput

MIN_COMMIT_MS = 100
"""A manual commit of less audio than this is an error (`errors.CommitTooShort`)."""
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
        limits: Limits | None = None,
        turn_tokens: int | None = DEFAULT_TURN_TOKENS,
    ) -> None:
        """`turn_tokens`: koe's own cap on a reply's length, past which it ends at the next sentence end and is
        still `completed` (`koe.voice.turn_cap`); None: none but the LLM's own limit."""
        config = config or SessionConfig()
        self.playback = PlaybackClock(clock, keep_reference=config.echo_cancellation)
        """What the listener has heard of the replies (doors ask it whether a reply is playing)."""
        self._context = context = VoiceContext(
            engines,
            config,
            session_id=session_id or new_id("sess"),
            default_instructions=default_instructions,
            playback=self.playback,
            limits=limits or Limits(),
            observer=observer,
            turn_tokens=turn_tokens,
        )
        self.id = context.id
        self.engines = engines
        self.conversation: Conversation = context.conversation
        self._participants = Participants(engines)
        self.transcripts = Transcripts(context)
        self.replies = Replies(context, self.truncate)
        context.transcripts, context.replies = self.transcripts, self.replies
        self._watchdog: asyncio.Task[Any] | None = None
        self._closed = False
        self._onsets_pending: set[str | None] = set()
        """Participants whose voice may be starting over a reply (`_hold_for_onset`)."""
        self.created_at = clock()

    @property
    def config(self) -> SessionConfig:
        """The settings now. Setting them changes only the settings; `update()` also applies them to the input."""
        return self._context.config

    @config.setter
    def config(self, config: SessionConfig) -> None:
        self._context.config = config

    @property
    def cause(self) -> str | None:
        """Set by a door around a command call: errors the command raises carry it (`events.Error.cause`)."""
        return self._context.cause

    @cause.setter
    def cause(self, cause: str | None) -> None:
        self._context.cause = cause

    # --- output --------------------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[ev.Event]:
        """Every event, in order, until the session ends (`end_input()` drained, or `close()`)."""
        return self._context.events()

    # --- input ---------------------------------------------------------------------------------------------

    def append_audio(self, pcm: Pcm, rate: int, participant: str | None = None) -> None:
        """Feed audio as it arrives. Raises `AudioFormatError` for an unsupported rate (nothing else is raised)."""
        if self._closed:
            raise SessionClosed("the session is closed")
        check_rate(rate)
        who = self._participant(participant)
        who.last_audio_at = asyncio.get_running_loop().time()
        if self._watchdog is None:
            self._watchdog = self._context.spawn(self._watch_stalls())
            self._warm_llm()
        self._push(who, who.input.to_engine_rate(pcm, rate))

    def _push(self, who: Participant, pcm16k: Pcm) -> None:
        source = who.input
        captured = source.clock.capture_end(self.playback.now(), pcm16k.size)
        far = self.playback.far_end(pcm16k.size, captured) if source.echo is not None else None
        idle_allowed = self.replies.idle and not self.playback.is_playing()
        for signal in source.push(pcm16k, far, idle_allowed):
            self._on_signal(who, signal)
        self._hold_for_onset(who)
        speaking_ms = source.now_ms - source.detector.onset_ms
        # Only while the voice is on: the pause that ends a short "um" must not count as speaking over the reply.
        if who.pending_barge_in and who.turn.state is Turn.SPEECH and speaking_ms >= FILLER_CONFIRM_MS:
            self._barge_in(who)
        if who.turn.state is Turn.SPEECH and (self.config.partial_results or self.replies.prehears()):
            self.transcripts.maybe_partial(who)

    def _hold_for_onset(self, who: Participant) -> None:
        """While a caller may be starting to speak over a reply that they can interrupt, the reply sends nothing
        more (`PlaybackClock.hold`): a barge-in then finds only what was sent before the first voiced window, not
        what went out while `speech_duration_ms` was being confirmed."""
        td = self.config.turn_detection
        pending = who.input.detector.onset_pending and td is not None and td.interrupt_response
        if pending and self.config.mode == "converse":
            self._onsets_pending.add(who.input.participant)
        else:
            self._onsets_pending.discard(who.input.participant)
        if self._onsets_pending:
            self.playback.hold()
        else:
            self.playback.resume()

    def _warm_llm(self) -> None:
        """Have the LLM evaluate this session's system prompt now, before the first reply needs it."""
        llm = self.engines.llm
        if self.config.mode != "converse" or llm is None:
            return
        messages = plan_response(self._context, None).messages[:1]
        if messages and messages[0].role == "system":
            self._context.spawn(llm.warm(ChatRequest(messages, self.config.tools)))

    async def _watch_stalls(self) -> None:
        """Audio that stops arriving mid-turn counts as silence, so the turn still ends (e.g. a sender that goes
        quiet with DTX, or a client that stops streaming after speaking)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(STALL_CHECK_S)
            now = loop.time()
            td = self.config.turn_detection
            stall_s = max(STALL_S, td.silence_duration_ms / 1000 + STALL_MARGIN_S) if td is not None else STALL_S
            for who in self._participants:
                gap = now - who.last_audio_at
                if who.turn.state is Turn.SILENCE or gap < stall_s or td is None:
                    continue
                who.last_audio_at = now
                self._push(who, np.zeros(int(min(gap, MAX_STALL_FILL_S) * ENGINE_RATE), dtype=np.int16))

    def _participant(self, participant: str | None) -> Participant:
        return self._participants.get(participant, self.config)

    def _on_signal(self, who: Participant, signal: Signal) -> None:
        if signal.input is TurnInput.VOICE_END:
            # When the voice ended as the caller sent it: before the input pipeline's own delays.
            who.voice_end_at = asyncio.get_running_loop().time() - who.input.lag_ms(signal.at_ms) / 1000
        for action in who.turn.feed(signal.input):
            self._turn_action(who, action, signal)

    def _turn_action(self, who: Participant, action: TurnAction, signal: Signal) -> None:
        source = who.input
        td = self.config.turn_detection
        if action is TurnAction.SPEECH_STARTED:
            source.item_id = new_id("item")
            self._heard(who).reset()
            who.turn_start_ms = source.start_turn_at(signal.at_ms, td.prefix_padding_ms if td else 0)
            who.partial_text, who.partial_at_ms = "", who.turn_start_ms
            self._context.emit(ev.SpeechStarted(source.participant, source.item_id, who.turn_start_ms))
        elif action is TurnAction.BARGE_IN:
            if self.config.mode == "converse" and td is not None and td.interrupt_response:
                if td.remove_filler_words and (not self.replies.idle or self.playback.is_playing()):
                    who.pending_barge_in = True
                else:
                    self._barge_in(who)
        elif action is TurnAction.SPECULATE:
            self._speculate(who)
        elif action is TurnAction.DISCARD_SPECULATION:
            if who.speculation is not None:  # the caller went on: what the pause heard need not be heard again
                self._heard(who).keep(who.speculation)
            self._discard(who)
        elif action is TurnAction.SPEECH_STOPPED:
            end_ms = source.detector.last_voice_ms if signal.input is TurnInput.TURN_END else signal.at_ms
            self._context.emit(
                ev.SpeechStopped(source.participant, source.item_id or "", max(end_ms, who.turn_start_ms))
            )
        elif action is TurnAction.COMMIT:
            self._heard(who).reset()
            self.transcripts.commit(who)
        elif action is TurnAction.AUTO_RESPOND:
            if self.config.mode == "converse" and td is not None and td.create_response:
                self.replies.input(ReplyInput.AUTO)
        elif action is TurnAction.CLEAR:
            self._heard(who).reset()
            self._discard(who)
            source.clear()
            self._context.emit(ev.InputCleared(source.participant))
        elif action is TurnAction.TIMEOUT:
            item_id = new_id("item")
            self._context.emit(ev.InputTimeout(source.participant, item_id, who.turn_start_ms, signal.at_ms))

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
        audio = who.input.peek().copy()
        heard = self._heard(who)
        who.speculation = Speculation(
            audio, respond, heard.transcribe, self.replies.prepare, OUTPUT_LEAD_MS, self._context.spawn
        )
        self._context.spawn(who.speculation.run())

    def _heard(self, who: Participant) -> Heard:
        if who.heard is None:
            who.heard = Heard(self.transcripts.stt)
        return who.heard

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
        self.playback.keep_reference = config.echo_cancellation
        self._participants.configure(config)

    def commit(self, participant: str | None = None) -> None:
        who = self._participant(participant)
        if who.input.buffered_ms() < MIN_COMMIT_MS:
            self._context.fail(CommitTooShort(who.input.buffered_ms(), MIN_COMMIT_MS))
            return
        who.input.detector.reset()  # speech that goes on after a manual commit is a new turn, with its own onset
        self._on_signal(who, Signal(TurnInput.COMMIT, who.input.now_ms))

    def clear(self, participant: str | None = None) -> None:
        self._on_signal(self._participant(participant), Signal(TurnInput.CLEAR, 0))

    def create_response(self, options: ResponseOptions | None = None, replace_active: bool = False) -> None:
        for item in options.extra_input if options is not None else ():
            if isinstance(item, Item) and (refusal := self._too_large(item, stored=False)) is not None:
                self._context.fail(refusal)
                return
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
            self._context.fail(InvalidItem(str(exc), exc.param))
            return
        self._context.emit(ev.ItemTruncated(item_id, content_index, audio_end_ms))
        self._context.emit(ev.ItemUpdated(item))

    def create_item(self, item: Item, previous_item_id: str | None = None) -> None:
        if (refusal := self._too_large(item)) is not None:
            self._context.fail(refusal)
            return
        try:
            previous = self.conversation.add(item, previous_item_id)
        except ConversationError as exc:
            self._context.fail(InvalidItem(str(exc), exc.param))
            return
        self._context.emit(ev.ItemAdded(item, previous))

    def _too_large(self, item: Item, stored: bool = True) -> LimitExceeded | None:
        """Why a client's item cannot be taken (`stored`: into the conversation), or None."""
        limits, size = self._context.limits, item_chars(item)
        if size > limits.item_chars:
            return LimitExceeded("item_chars", limits.item_chars, size)
        if not stored:
            return None
        count = len(self.conversation.items) + 1
        if count > limits.conversation_items:
            return LimitExceeded("items", limits.conversation_items, count)
        total = self.conversation.chars + size
        if total > limits.conversation_chars:
            return LimitExceeded("conversation_chars", limits.conversation_chars, total)
        return None

    def delete_item(self, item_id: str) -> None:
        try:
            self.conversation.delete(item_id)
        except ConversationError as exc:
            self._context.fail(InvalidItem(str(exc), exc.param))
            return
        self._context.emit(ev.ItemDeleted(item_id))

    def retrieve_item(self, item_id: str) -> Item | None:
        try:
            return self.conversation.get(item_id)
        except ConversationError as exc:
            self._context.fail(InvalidItem(str(exc), exc.param))
            return None

    async def end_input(self) -> None:
        """The input stream ended: finish every turn in progress, wait for its results, then end `events()`."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        for who in self._participants:
            # Mid-speech the stream's end ends the turn (a commit); in a pause it is the pause that ended it.
            ending = {Turn.SPEECH: TurnInput.COMMIT, Turn.PAUSE: TurnInput.TURN_END}.get(who.turn.state)
            if ending is not None:
                self._on_signal(who, Signal(ending, who.input.now_ms))
        await self._context.wait_tasks()
        self._closed = True
        self._context.end_events()

    async def close(self) -> None:
        """Abandon everything at once and end `events()`."""
        if self._closed and not self._context.busy:
            return
        self._closed = True
        self.replies.close()
        for who in self._participants:
            self._discard(who)
        await self._context.cancel_tasks()
        self._context.end_events()
