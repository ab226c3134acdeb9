"""Turning committed turns into user items and transcripts, and partial transcripts while a caller speaks.

`Transcripts.commit(who)` takes the turn's audio from a participant's pipeline, adds the user item (converse mode),
and transcribes it, reusing the speculative transcript of the pause when it covers the same audio. Replies wait for
`pending()` so they always answer the whole conversation. Speech over a reply with `remove_filler_words` goes
through `_filler_or_turn()`: only fillers are dropped, anything more interrupts. It sees the session only through
its `VoiceContext`, and the replies through `context.replies`.

Partial transcripts (`maybe_partial`, every `PARTIAL_INTERVAL_MS` of speech while the STT pool is idle) go to the
client when it asked for them (`partial_results`), and in converse mode their settled words go to
`context.replies.prehear()`: the reply's prompt is evaluated up to them while the caller is still speaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.engines.base import EngineError, Pool, Transcript
from koe.languages import AUTO, CLAUSE_END, has_cjk
from koe.voice import events as ev
from koe.voice._context import VoiceContext
from koe.voice.conversation import ConversationError, Item, audio_part, new_id
from koe.voice.endpointing import is_only_fillers
from koe.voice.participant import CommittedTurn, Participant, TurnTiming
from koe.voice.turns import ReplyInput

log = logging.getLogger("koe.voice")

PARTIAL_INTERVAL_MS = 700
UNSETTLED_CJK_CHARS = 3


class Transcripts:
    def __init__(self, context: VoiceContext) -> None:
        self._context = context
        self._pending: dict[str, asyncio.Future[Transcript | None]] = {}
        self._last_turn: TurnTiming | None = None
        """The most recent committed turn's timing, for the automatic reply that may follow it."""

    async def stt(self, audio: Pcm, heard_in: str | None = None) -> Transcript:
        """`audio` transcribed in the session's language; where that is detected (`auto`), in `heard_in` when
        given (the language the turn's earlier part was heard in)."""
        config = self._context.config
        stt = self._context.engines.require("stt")
        language = heard_in if heard_in and config.language == AUTO else config.language
        return await stt.transcribe(audio, language=language, prompt=config.transcription_prompt)

    def take_last_turn(self) -> TurnTiming | None:
        turn, self._last_turn = self._last_turn, None
        return turn

    async def pending(self) -> None:
        """Wait until every committed turn has its transcript (or has failed)."""
        waiting = [future for future in self._pending.values() if not future.done()]
        if waiting:
            # asyncio.wait, not gather: a reply cancelled while it waits must not cancel the shared futures (that
            # would end every other waiter with a spurious CancelledError).
            await asyncio.wait(waiting)

    def commit(self, who: Participant) -> None:
        source = who.input
        audio, start_ms, end_ms = source.take()
        voice_end_at, who.voice_end_at = who.voice_end_at, None
        timing = self._last_turn = TurnTiming(voice_end_at, asyncio.get_running_loop().time())
        item_id = source.item_id or new_id("item")
        source.item_id = None
        speculation, who.speculation = who.speculation, None
        turn = CommittedTurn(source.participant, item_id, audio, start_ms, end_ms, speculation, timing)
        if who.pending_barge_in:
            who.pending_barge_in = False
            self._context.spawn(self._filler_or_turn(turn))
            return
        self._finish(turn)

    def _finish(self, turn: CommittedTurn) -> None:
        context = self._context
        if turn.speculation is not None and not turn.speculation.covers(turn.audio):
            turn.speculation.discard()
            turn.speculation = None
        if context.config.mode == "converse":
            part = audio_part(turn.audio, ENGINE_RATE)
            item = Item(turn.item_id, "message", "user", (part,), participant=turn.participant)
            previous = context.conversation.add(item)
            context.emit(ev.InputCommitted(turn.participant, turn.item_id, previous))
            context.emit(ev.ItemAdded(item, previous))
        future: asyncio.Future[Transcript | None] = asyncio.get_running_loop().create_future()
        self._pending[turn.item_id] = future
        context.spawn(self._transcribe(turn, future))
        if turn.speculation is not None and turn.speculation.responding:
            context.replies.adopt(turn.speculation)  # AUTO_RESPOND, next in the same action list, takes it

    async def _transcribe(self, turn: CommittedTurn, future: asyncio.Future[Transcript | None]) -> None:
        loop = asyncio.get_running_loop()
        result: Transcript | None = None
        try:
            if turn.speculation is not None:
                result = await turn.speculation.transcript()
                if turn.timing is not None:
                    turn.timing.stt_ms = turn.speculation.stt_ms
                    turn.timing.speculated_at = turn.speculation.started_at
                    turn.timing.heard_at = turn.speculation.heard_at
            if result is None:
                started = loop.time()
                result = await self.stt(turn.audio)
                if turn.timing is not None:
                    turn.timing.heard_at = loop.time()
                    turn.timing.stt_ms = round((turn.timing.heard_at - started) * 1000)
                    turn.timing.speculated_at = None
        except (
            Exception
        ) as exc:  # any failure of the engine is this turn's: the client hears of it, the session goes on
            if not isinstance(exc, EngineError):
                log.error("transcribing turn %s failed", turn.item_id, exc_info=exc)
            if self._context.config.transcription:
                message = str(exc) if isinstance(exc, EngineError) else f"the STT engine failed: {exc}"
                self._context.emit(ev.TranscriptFailed(turn.participant, turn.item_id, message))
        else:
            self._apply(turn, result)
        finally:
            if not future.done():
                future.set_result(result)
            self._pending.pop(turn.item_id, None)

    def _apply(self, turn: CommittedTurn, result: Transcript) -> None:
        context = self._context
        if context.config.mode == "converse":
            with contextlib.suppress(ConversationError):  # the client may have deleted the item meanwhile
                item = context.conversation.get(turn.item_id)
                updated = replace(item, content=(replace(item.content[0], transcript=result.text),))
                context.conversation.replace(updated)
                context.emit(ev.ItemUpdated(updated))
        if context.config.transcription:
            context.emit(
                ev.TranscriptCompleted(
                    turn.participant,
                    turn.item_id,
                    result.text,
                    turn.start_ms,
                    turn.end_ms,
                    result.language,
                    result.duration_s,
                )
            )

    async def _filler_or_turn(self, turn: CommittedTurn) -> None:
        """Speech over a reply with `remove_filler_words`: drop it if it was only fillers, else barge in now."""
        result = await turn.speculation.transcript() if turn.speculation is not None else None
        if result is None:
            with contextlib.suppress(EngineError):
                result = await self.stt(turn.audio)
        if result is not None and is_only_fillers(result.text):
            return
        replies = self._context.replies
        replies.input(ReplyInput.BARGE_IN)
        if turn.speculation is not None:
            turn.speculation.discard()
        turn.speculation = None
        self._finish(turn)
        td = self._context.config.turn_detection
        if td is not None and td.create_response:
            replies.input(ReplyInput.AUTO)

    def maybe_partial(self, who: Participant) -> None:
        source = who.input
        if who.partial_busy or source.now_ms - who.partial_at_ms < PARTIAL_INTERVAL_MS:
            return
        stt = self._context.engines.stt
        if stt is not None and stt.pool is not None and not partial_may_start(stt.pool):
            return
        who.partial_busy, who.partial_at_ms = True, source.now_ms
        self._context.spawn(self._partial(who, source.item_id or "", source.peek().copy()))

    async def _partial(self, who: Participant, item_id: str, audio: Pcm) -> None:
        try:
            result = await self.stt(audio)
        except EngineError:
            return
        finally:
            who.partial_busy = False
        if who.input.item_id != item_id or not result.text:
            return  # the turn ended meanwhile: its final transcript supersedes this
        if self._context.config.partial_results:
            delta = appended(who.partial_text, result.text)
            who.partial_text = result.text
            self._context.emit(ev.TranscriptDelta(who.input.participant, item_id, delta, result.text))
        self._context.replies.prehear(settled_words(result.text))


def partial_may_start(pool: Pool) -> bool:
    """Partial transcripts are best effort: one starts only when nothing waits in the STT pool and, with several
    workers, one stays free, so that the final transcript of a pause never waits for a partial to finish (a
    partial cannot be stopped once CTranslate2 runs it)."""
    return pool.depth == 0 and pool.active < max(1, pool.workers - 1)


def settled_words(text: str) -> str:
    """The words of a partial transcript that more speech is unlikely to change: all but the last word (which the
    audio may have cut), without the closing punctuation Whisper writes at the cut. Japanese and Chinese, which
    have no spaces, lose their last `UNSETTLED_CJK_CHARS` characters instead."""
    text = text.strip().rstrip(" " + CLAUSE_END)
    if has_cjk(text[-1:]):
        return text[:-UNSETTLED_CJK_CHARS]
    words = text.split()
    return " ".join(words[:-1])


def appended(previous: str, text: str) -> str:
    """What the partial transcript `text` adds to the one before it; "" when it revised earlier words. The earlier
    partial's closing punctuation (`.`, `?`, `。`, `？`, `、`…), which Whisper writes at every pause, does not count,
    and nothing is spaced: Japanese and Chinese deltas come out as their characters."""
    stem = previous.rstrip(" " + CLAUSE_END)
    return text[len(stem) :].strip() if text.startswith(stem) else ""
