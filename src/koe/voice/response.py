"""One response: the LLM's reply streamed through TTS clause by clause, as engine events.

`ResponseRun.run()` emits the whole sequence (created, output items, content parts, text and audio deltas, done).
The LLM keeps generating while the first clause is being synthesized, so the first audio leaves after one short
clause rather than after the whole reply. `cancel()` closes everything synchronously (open parts and items become
`incomplete`, then `ResponseDone(cancelled)`), so no delta of a cancelled response can follow it. A response whose
engine fails reports an `Error` (`ResponseFailed`, saying why), then `ResponseDone(failed)`. Audio leaves
paced to stay a little ahead of the listener's playback (`pace`), never far ahead: a caller who interrupts stops
the reply within that lead even on a client that cannot flush what it already received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from koe.audio.pcm import Pcm, samples_for_ms
from koe.audio.resample import Resampler
from koe.engines.base import (
    LLM,
    TTS,
    ChatMessage,
    ChatRequest,
    ContextTooLong,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    Finished,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from koe.engines.pool import EngineBusy
from koe.languages import script_language, soft_cut
from koe.tasks import stop
from koe.voice import events as ev
from koe.voice.conversation import Item, Part, new_id
from koe.voice.errors import FailureReason, ResponseFailed
from koe.voice.turn_cap import TurnCap

log = logging.getLogger("koe.voice")

AUDIO_CHUNK_MS = 100
"""Largest audio delta; keeps every frame far below the 1 MiB WebSocket limit and lets a flush cut in often. Paced
at `OUTPUT_LEAD_MS` (400), the listener then always has 300 ms or more unplayed when the next one leaves, so a hold
(`PlaybackClock.hold`) lasting Voice Live's 200 ms `speech_duration_ms` and its detection does not reach the
60 ms floor."""
FIRST_CLAUSE_CHARS = 12
FIRST_WORDS_CHARS = 5
FIRST_LATIN_CLAUSE_MAX_CHARS = 12
"""The first clause of Latin-script text is a few words ("Sure," or "The weather "): it ends at a comma once
`FIRST_WORDS_CHARS` long, or at a word boundary past this length even without punctuation. It gates first audio
twice: the LLM writes it (about 22 ms a token, 3-4 characters a token) and Piper's time grows with its length
(about 40 ms plus 4 ms a character on one thread). Cutting at 12 characters rather than 20 took the first clause
from 153 to 110 ms and Piper's first audio from 141 to 87 ms in `koe bench latency` (server_vad 200, p50), at
the cost of a seam after the first two or three words, which is never put before a short word
(`_past_short_words`). Later clauses are full ones."""
FIRST_CLAUSE_MAX_CHARS = 28
"""The same limit for Japanese and Chinese text (and the most any first clause is): their clauses end at their own
marks, and their phrases are found only roughly, so a first clause cut without punctuation is kept longer."""
SYNTH_AHEAD_MS = 2000
"""How much synthesized audio may wait to be sent: TTS works on the next clause while the current one plays, so
paced audio has no gap between clauses, and a barge-in wastes little synthesis."""
CLAUSE_CHARS = 40
MAX_CLAUSE_CHARS = 160
"""A clause's minimum lengths count a Japanese or Chinese character as two, since each takes about twice as long
to say; the maximums count characters, so that a cut without punctuation (which Japanese and Chinese have no
spaces to place) stays rare."""
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CLAUSE_BREAK = re.compile(
    r"[.!?…。！？]+[\"')\]」』）”’]*\s|[,;:—]\s"  # Latin marks end a clause before a space,
    rf"|[。！？]+[」』）”’]*|[、，；：]|[!?…]+(?=[{_CJK}])"  # Japanese and Chinese ones without
)
SHORT_WORD_CHARS = 3
_NEXT_WORD = re.compile(r"(\S+)(\s?)")
_CLAUSE_MARKS = ",;:—、，；："
_LATIN_MARKS = ",;:—"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_UNSPEAKABLE = re.compile(r"[*_#`~|<>\[\]{}]+")


def _width(text: str) -> int:
    return len(text) + len(_CJK_CHAR.findall(text))


def spaced(previous: str, clause: str) -> str:
    """`clause` as it follows `previous` in a transcript: after a space, except where Japanese or Chinese meet."""
    if (
        not previous
        or _CJK_CHAR.match(clause[:1])
        or previous[-1:] in "。！？、，；：」』）”"
        or _CJK_CHAR.match(previous[-1:])
    ):
        return clause
    return " " + clause


class ClauseSplitter:
    """Cuts streamed text into speakable clauses: the first one short (it sets the time to first audio). Japanese
    and Chinese clauses end at their own marks (。、！？，；：), which no space follows."""

    def __init__(self) -> None:
        self._text = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        self._text += delta
        clauses: list[str] = []
        while True:
            wanted = FIRST_CLAUSE_CHARS if self._first else CLAUSE_CHARS
            cut = None
            cjk = bool(_CJK_CHAR.search(self._text))
            for match in _CLAUSE_BREAK.finditer(self._text):
                mark = match.group(0)[0]
                sentence_end = mark not in _CLAUSE_MARKS
                width = _width(self._text[: match.end()])
                few_words = self._first and not cjk and mark in _LATIN_MARKS and width >= FIRST_WORDS_CHARS
                if width >= wanted or (sentence_end and width >= FIRST_CLAUSE_CHARS) or few_words:
                    cut = match.end()
                    break
            limit = MAX_CLAUSE_CHARS
            if self._first:
                limit = FIRST_CLAUSE_MAX_CHARS if cjk else FIRST_LATIN_CLAUSE_MAX_CHARS
            if cut is None and len(self._text) > limit:
                cut = soft_cut(self._text, limit)
                if self._first and not cjk:
                    cut = _past_short_words(self._text, cut)
            if cut is None:
                return clauses
            clause, self._text = self._text[:cut].strip(), self._text[cut:]
            if _speakable(clause):
                clauses.append(clause)
                self._first = False

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if _speakable(rest) else []


def _past_short_words(text: str, cut: int) -> int | None:
    """`cut` moved past the short words that follow it, or None while the word after it may still be one.

    A clause that begins with an unstressed word ("of France is Paris.", "you book a table") is one Piper says
    weakly, alone at the start of an utterance: Whisper heard "The capital, a Francis Paris." for "The capital" +
    "of France is Paris." in 2 of 8 syntheses, and never for "The capital of" + "France is Paris.". A word of
    `SHORT_WORD_CHARS` letters or fewer stands in for unstressed; the first clause keeps it, up to
    `FIRST_CLAUSE_MAX_CHARS`."""
    while cut < FIRST_CLAUSE_MAX_CHARS:
        if cut == len(text):
            return None  # the next word has not begun
        word = _NEXT_WORD.match(text, cut)
        if word is None or len(word.group(1)) > SHORT_WORD_CHARS or not word.group(1).isalpha():
            return cut
        if not word.group(2):
            return None  # the word may go on in the next delta
        cut = word.end()
    return cut


def _speakable(text: str) -> str:
    return _UNSPEAKABLE.sub(" ", text).strip()


@dataclass
class ResponsePlan:
    """A response's settings after the session defaults and the per-response overrides were combined."""

    response_id: str
    messages: list[ChatMessage]
    tools: tuple[ToolSpec, ...]
    temperature: float | None
    max_output_tokens: int | None
    """The client's cap: a reply that reaches it ends `incomplete` (`max_output_tokens`)."""
    output_audio: bool
    voice: str
    output_rate: int
    voice_by_text: bool = False
    """The session named no voice, and detects its language or names none: the first clause's script picks the
    reply's voice (Japanese or Chinese characters: the voice of that language), else `voice` speaks."""
    in_conversation: bool = True
    metadata: dict[str, str] | None = None
    cache_key: str | None = None
    tool_choice: str = "auto"
    request_id: str | None = None
    turn_tokens: int | None = None
    """koe's own spoken-turn cap (`TurnCap`): past it the reply ends at the next sentence end, `completed`."""


@dataclass
class _Open:
    """The assistant message item being produced, with what has been said and sent so far."""

    item: Item
    output_index: int
    kind: Literal["audio", "text"]
    text: list[str] = field(default_factory=list)
    audio: list[Pcm] = field(default_factory=list)
    clauses: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Say:
    """A clause starts: its transcript delta leaves right before its first audio."""

    part: _Open
    delta: str


@dataclass(frozen=True, slots=True)
class _Sound:
    part: _Open
    pcm: Pcm


@dataclass(frozen=True, slots=True)
class _Said:
    """A clause's audio has all been queued: the item records how long it was."""

    part: _Open
    clause: str


class ResponseRun:
    def __init__(
        self,
        plan: ResponsePlan,
        llm: LLM | EngineError,
        tts: TTS | None,
        emit: Callable[[ev.Event], None],
    ) -> None:
        """`llm` may be why there is none (`EngineUnavailable`): the response then fails with it, reported like
        any engine failure, and the session goes on."""
        self.plan = plan
        self._llm = llm
        self._tts = tts
        self._emit_to = emit
        self.output: list[Item] = []
        self._open: _Open | None = None
        self._closed = False
        self._usage_in = 0
        self._usage_out = 0
        self._audio_ms = 0.0
        self.llm_started_at: float | None = None
        self.first_token_at: float | None = None
        self.first_clause_at: float | None = None
        self.first_audio_at: float | None = None
        """Loop times (seconds) of this run's milestones, for `ResponseTiming`."""
        self._spoke = asyncio.Event()
        self._queued_ms = 0.0
        """Audio synthesized and not sent yet."""
        self._room = asyncio.Event()
        self.pace: Callable[[float], Awaitable[None]] | None = None
        """Awaited with each audio chunk's length (ms) before it goes out: the session keeps the listener's buffer
        short with it, so an interruption finds little audio already sent. A held, speculative run is paced too
        (`Speculation` holds only a lead's worth). None sends as fast as TTS can (no door does that)."""

    @property
    def response_id(self) -> str:
        return self.plan.response_id

    @property
    def done(self) -> bool:
        return self._closed

    def _emit(self, event: ev.Event) -> None:
        if not self._closed:
            self._emit_to(event)

    async def run(self) -> None:
        plan = self.plan
        self._emit(
            ev.ResponseCreated(
                plan.response_id, plan.output_audio, plan.voice, plan.in_conversation, plan.metadata, plan.request_id
            )
        )
        try:
            finished = await self._generate()
        except Exception as exc:  # an engine that raises anything fails this response, not the session
            if isinstance(exc, EngineError):
                failure = ResponseFailed(str(exc), _failure_reason(exc), plan.response_id)
                log.warning("response %s failed (%s): %s", plan.response_id, failure.reason, exc)
            else:
                failure = ResponseFailed(f"an engine failed: {exc}", "engine", plan.response_id)
                log.error("response %s failed", plan.response_id, exc_info=exc)
            self._emit(ev.Error(failure))  # the caller hears of it as an error, then as the response's end
            self._close("failed", str(exc), failure)
            return
        if finished.reason == "length":
            self._close("incomplete", "max_output_tokens")
        else:
            self._close("completed", None)

    def cancel(self, reason: str) -> None:
        """Close the response now (status cancelled); the caller also cancels the task running `run()`."""
        self._close("cancelled", reason)

    async def _generate(self) -> Finished:
        plan = self.plan
        llm = self._llm
        if isinstance(llm, EngineError):
            raise llm
        request = ChatRequest(
            plan.messages, plan.tools, plan.temperature, plan.max_output_tokens, plan.cache_key, plan.tool_choice
        )
        if not plan.output_audio or self._tts is None:
            return await self._generate_text(llm, request)
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.ensure_future(self._speak(clauses))
        try:
            finished = await self._generate_text(llm, request, clauses)
            await clauses.put(None)
            await speaker
        finally:
            if not speaker.done():
                await stop(speaker)
        return finished

    async def _generate_text(
        self, llm: LLM, request: ChatRequest, clauses: asyncio.Queue[str | None] | None = None
    ) -> Finished:
        splitter = ClauseSplitter()
        cap = TurnCap(self.plan.turn_tokens)
        finished = Finished("stop")
        loop = asyncio.get_running_loop()
        self.llm_started_at = loop.time()
        deltas = 0
        stream = llm.stream(request)
        try:
            async for event in stream:
                if self.first_token_at is None and not isinstance(event, Finished):
                    self.first_token_at = loop.time()
                if isinstance(event, TextDelta):
                    deltas += 1
                    await self._say(cap.feed(event.text), splitter, clauses)
                    if cap.ended:  # koe's own cap: the reply ends with this sentence, complete
                        finished = Finished("stop", 0, deltas)
                        self._usage_out = deltas
                        break
                elif isinstance(event, ToolCall):
                    if clauses is not None:
                        for clause in splitter.flush():
                            await clauses.put(clause)
                    self._function_call(event)
                else:
                    finished = event
                    self._usage_in, self._usage_out = event.prompt_tokens, event.completion_tokens
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()  # a reply that ended early frees the LLM at once
        forced_call = self.plan.tools and self.plan.tool_choice not in ("auto", "none")
        if finished.reason == "length" and self.plan.max_output_tokens is None and not forced_call:
            # The LLM stopped at koe's own limit (`llm.max_tokens`), not the client's: end the words as a sentence.
            # (A forced call cut short stays `incomplete`: nothing of it could be said.)
            await self._say(cap.close(), splitter, clauses)
            finished = replace(finished, reason="stop")
        if clauses is not None:
            for clause in splitter.flush():
                await clauses.put(clause)
        return finished

    async def _say(self, text: str, splitter: ClauseSplitter, clauses: asyncio.Queue[str | None] | None) -> None:
        if not text:
            return
        if clauses is None:
            part = self._open_message("text")
            part.text.append(text)
            self._emit(ev.ResponseTextDelta(self.response_id, part.item.id, part.output_index, 0, text, audio=False))
            return
        for clause in splitter.feed(text):
            await clauses.put(clause)
            if not self._spoke.is_set():
                # The first clause decides when the listener hears anything: while TTS works on it, stop reading
                # the LLM (which then pauses) so the two do not share the CPU.
                await self._spoke.wait()

    async def _speak(self, clauses: asyncio.Queue[str | None]) -> None:
        try:
            await self._speak_clauses(clauses)
        finally:
            self._spoke.set()  # even if TTS failed or produced nothing: never leave the LLM reader waiting

    async def _speak_clauses(self, clauses: asyncio.Queue[str | None]) -> None:
        """Synthesize clause after clause into an outbox that `_send_outbox` empties at the listener's pace: TTS
        works on the next clause while this one plays (no gap between clauses), at most `SYNTH_AHEAD_MS` ahead."""
        assert self._tts is not None
        plan = self.plan
        resampler: Resampler | None = None
        outbox: asyncio.Queue[_Say | _Sound | _Said | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send_outbox(outbox))
        previous: tuple[_Open | None, str] = (None, "")
        voice = plan.voice
        try:
            while (clause := await clauses.get()) is not None:
                if self.first_clause_at is None:
                    self.first_clause_at = asyncio.get_running_loop().time()
                    written = script_language(clause) if plan.voice_by_text else None
                    voice = (self._tts.voice_for(written) if written else None) or voice
                while self._queued_ms >= SYNTH_AHEAD_MS and not sender.done():
                    self._room.clear()
                    await self._room.wait()
                part = self._open_message("audio")
                delta = spaced(previous[1] if previous[0] is part else "", clause)
                previous = (part, clause)
                outbox.put_nowait(_Say(part, delta))
                async for chunk in self._tts.synthesize(_speakable(clause), voice):
                    if resampler is None or resampler.src_rate != chunk.rate:
                        resampler = Resampler(chunk.rate, plan.output_rate)
                    self._queue_audio(outbox, part, resampler.process(chunk.pcm))
                outbox.put_nowait(_Said(part, clause))
            if resampler is not None and self._open is not None:
                self._queue_audio(outbox, self._open, resampler.flush())
            outbox.put_nowait(None)
            await sender
        except Exception:
            # TTS failed mid-reply: what it had already made is still spoken, then the response fails with it.
            if not sender.done():
                outbox.put_nowait(None)
                with contextlib.suppress(Exception):
                    await sender
            raise
        finally:
            if not sender.done():
                await stop(sender)

    def _queue_audio(self, outbox: asyncio.Queue[_Say | _Sound | _Said | None], part: _Open, pcm: Pcm) -> None:
        if pcm.size:
            self._queued_ms += pcm.size * 1000.0 / self.plan.output_rate
            outbox.put_nowait(_Sound(part, pcm))

    async def _send_outbox(self, outbox: asyncio.Queue[_Say | _Sound | _Said | None]) -> None:
        clause_ms = 0.0
        while (out := await outbox.get()) is not None:
            part = out.part
            if isinstance(out, _Say):
                part.text.append(out.delta)
                self._emit(
                    ev.ResponseTextDelta(self.response_id, part.item.id, part.output_index, 0, out.delta, audio=True)
                )
                clause_ms = 0.0
            elif isinstance(out, _Sound):
                sent = await self._send_audio(part, out.pcm)
                clause_ms += sent
                self._queued_ms -= sent
                if self._queued_ms < SYNTH_AHEAD_MS:
                    self._room.set()
            else:
                part.clauses.append((out.clause, clause_ms))
        self._room.set()

    async def _send_audio(self, part: _Open, pcm: Pcm) -> float:
        step = samples_for_ms(self.plan.output_rate, AUDIO_CHUNK_MS)
        for start in range(0, pcm.size, step):
            piece = pcm[start : start + step]
            if self.pace is not None:
                await self.pace(piece.size * 1000.0 / self.plan.output_rate)
            if self.first_audio_at is None:
                self.first_audio_at = asyncio.get_running_loop().time()
                self._spoke.set()
            part.audio.append(piece)
            self._emit(
                ev.ResponseAudioDelta(
                    self.response_id, part.item.id, part.output_index, 0, piece, self.plan.output_rate
                )
            )
        duration = pcm.size * 1000.0 / self.plan.output_rate
        self._audio_ms += duration
        return duration

    def _open_message(self, kind: Literal["audio", "text"]) -> _Open:
        if self._open is None:
            item = Item(new_id("item"), "message", "assistant", (), "in_progress")
            self._open = _Open(item, len(self.output), kind)
            self.output.append(item)
            self._emit(ev.OutputItemAdded(self.response_id, self._open.output_index, item))
            self._emit(
                ev.ContentPartAdded(
                    self.response_id, item.id, self._open.output_index, 0, "audio" if kind == "audio" else "text"
                )
            )
        return self._open

    def _close_message(self, status: str) -> None:
        part, self._open = self._open, None
        if part is None:
            return
        text = "".join(part.text)
        kind = part.kind
        if kind == "audio":
            audio = np.concatenate(part.audio) if part.audio else np.zeros(0, dtype=np.int16)
            content = Part(
                "audio",
                transcript=text,
                audio=audio,
                rate=self.plan.output_rate,
                clauses=tuple(part.clauses) or ((text, audio.size * 1000.0 / self.plan.output_rate),),
            )
        else:
            content = Part("text", text=text)
        item = replace(part.item, content=(content,), status=status)  # type: ignore[arg-type]  # status literal
        self.output[part.output_index] = item
        self._emit(ev.ContentPartDone(self.response_id, item.id, part.output_index, 0, kind, text))
        self._emit(ev.OutputItemDone(self.response_id, part.output_index, item))

    def _function_call(self, call: ToolCall) -> None:
        self._close_message("completed")
        index = len(self.output)
        item = Item(new_id("item"), "function_call", None, (), "in_progress", call_id=call.call_id, name=call.name)
        self.output.append(item)
        self._emit(ev.OutputItemAdded(self.response_id, index, item))
        self._emit(ev.FunctionCallArgumentsDelta(self.response_id, item.id, index, call.call_id, call.arguments))
        self._emit(
            ev.FunctionCallArgumentsDone(self.response_id, item.id, index, call.call_id, call.name, call.arguments)
        )
        done = replace(item, arguments=call.arguments, status="completed")
        self.output[index] = done
        self._emit(ev.OutputItemDone(self.response_id, index, done))

    def _close(self, status: ev.ResponseStatus, reason: str | None, failure: ResponseFailed | None = None) -> None:
        if self._closed:
            return
        self._close_message("completed" if status == "completed" else "incomplete")
        usage = ev.Usage(self._usage_in, self._usage_out, round(self._audio_ms))
        self._emit(
            ev.ResponseDone(
                self.response_id,
                status,
                reason,
                tuple(self.output),
                usage,
                self.plan.in_conversation,
                self.plan.metadata,
                failure,
            )
        )
        self._closed = True


def _failure_reason(exc: EngineError) -> FailureReason:
    if isinstance(exc, EngineBusy):
        return "busy"
    if isinstance(exc, EngineUnavailable):
        return "unavailable"
    if isinstance(exc, EngineTimeout):
        return "timeout"
    if isinstance(exc, ContextTooLong):
        return "context_length"
    return "engine"
