"""The voice session end to end on the real models: turns, transcripts, replies, barge-in and the commands.

What the embedded model answers is its own (it changes with the CPU and the llama.cpp build): replies are checked
for their events, statuses and audio, never their words. Where a test needs a reply still playing when the caller
speaks, koe's LLM is a stand-in telling a fixed story (`scripted_engines`), whatever the embedded model would say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from koe.audio.pcm import Pcm
from koe.audio.resample import resample
from koe.engines.base import ToolSpec
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig, TurnDetection
from koe.voice.conversation import Item, Part
from koe.voice.endpointing import is_only_fillers
from koe.voice.errors import CommitTooShort, NoResponseToCancel, ResponseInProgress
from koe.voice.session import MIN_COMMIT_MS, Session
from tests.conftest import load_wav
from tests.engines.openai_standin import STORY, pieces, scripted_engines
from tests.forced_call import CALL_TOKENS, WEATHER_PARAMETERS, assert_city_arguments
from tests.wer import wer

FRAME = 320  # 20 ms at 16 kHz
INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence."
FIRST_SENTENCE = STORY[: STORY.index(".") + 1]
"""About five seconds of speech: still playing while a filler word is heard and transcribed, and soon done."""


class Recorder:
    """Reads a session's events in the background and lets a test wait for one."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[ev.Event] = []
        self._changed = asyncio.Event()
        self.on_event: Callable[[ev.Event], None] | None = None
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for event in self.session.events():
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
            self._changed.set()

    async def wait_for(self, predicate: Callable[[ev.Event], bool], within_s: float = 30.0) -> ev.Event:
        async def scan() -> ev.Event:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), within_s)

    def of(self, kind: type[ev.Event]) -> list[ev.Event]:
        return [event for event in self.events if isinstance(event, kind)]

    async def close(self) -> None:
        await self.session.close()
        await self._task


async def feed(session: Session, pcm: Pcm, participant: str | None = None, pace_s: float = 0.0) -> None:
    for start in range(0, pcm.size, FRAME):
        session.append_audio(pcm[start : start + FRAME], 16000, participant)
        await asyncio.sleep(pace_s)


def speech(name: str = "short_16k.wav", lead_s: float = 0.5, tail_s: float = 1.0) -> Pcm:
    pcm, rate = load_wav(name)
    assert rate == 16000
    return np.concatenate((np.zeros(int(lead_s * 16000), np.int16), pcm, np.zeros(int(tail_s * 16000), np.int16)))


def converse(engines: Engines, **turn: object) -> Session:
    td = TurnDetection(silence_duration_ms=300, **turn)  # type: ignore[arg-type]
    config = SessionConfig(mode="converse", turn_detection=td, max_output_tokens=24)
    return Session(engines, config, default_instructions=INSTRUCTIONS)


async def test_transcribe_mode_reports_the_turn(engines: Engines, texts: dict[str, str]) -> None:
    session = Session(engines, SessionConfig(mode="transcribe"))
    recorder = Recorder(session)
    await feed(session, speech())
    await session.end_input()
    await recorder._task
    kinds = [type(event) for event in recorder.events]
    assert kinds == [ev.SpeechStarted, ev.SpeechStopped, ev.TranscriptCompleted]
    started, _stopped, done = recorder.events
    assert isinstance(done, ev.TranscriptCompleted) and isinstance(started, ev.SpeechStarted)
    assert wer(texts["short"], done.text) <= 0.1
    assert done.item_id == started.item_id
    assert 150 <= done.audio_start_ms <= 600 and done.audio_end_ms > 3000


async def test_unmixed_participants_get_their_own_turns(engines: Engines, texts: dict[str, str]) -> None:
    session = Session(engines, SessionConfig(mode="transcribe"))
    recorder = Recorder(session)
    first, second = speech("short_16k.wav"), speech("reply_16k.wav", lead_s=1.5)
    length = max(first.size, second.size)
    first = np.concatenate((first, np.zeros(length - first.size, np.int16)))
    second = np.concatenate((second, np.zeros(length - second.size, np.int16)))
    for start in range(0, length, FRAME):
        session.append_audio(first[start : start + FRAME], 16000, "4:+15551230001")
        session.append_audio(second[start : start + FRAME], 16000, "8:acs:caller-2")
        await asyncio.sleep(0)
    await session.end_input()
    await recorder._task
    done = {e.participant: e.text for e in recorder.of(ev.TranscriptCompleted)}  # type: ignore[attr-defined]
    assert wer(texts["short"], done["4:+15551230001"]) <= 0.1
    assert wer(texts["reply"], done["8:acs:caller-2"]) <= 0.1


async def test_partial_results_grow_while_speaking(engines: Engines) -> None:
    session = Session(engines, SessionConfig(mode="transcribe", partial_results=True))
    recorder = Recorder(session)
    await feed(session, speech("utterance_16k.wav"), pace_s=0.02)
    await session.end_input()
    await recorder._task
    partials = recorder.of(ev.TranscriptDelta)
    assert partials, "no partial transcript while speaking"
    final = recorder.of(ev.TranscriptCompleted)[0]
    assert all(p.item_id == final.item_id for p in partials)  # type: ignore[attr-defined]
    assert len(partials[-1].text) <= len(final.text) + 5  # type: ignore[attr-defined]


async def test_a_spoken_turn_gets_a_spoken_reply(engines: Engines, texts: dict[str, str]) -> None:
    session = converse(engines)
    recorder = Recorder(session)
    await feed(session, speech())
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone) and done.status in ("completed", "incomplete")
    transcript = recorder.of(ev.TranscriptCompleted)[0]
    assert wer(texts["short"], transcript.text) <= 0.1  # type: ignore[attr-defined]
    order = [type(e) for e in recorder.events]
    assert order.index(ev.TranscriptCompleted) < order.index(ev.ResponseCreated)
    audio = np.concatenate([e.pcm for e in recorder.of(ev.ResponseAudioDelta)])  # type: ignore[attr-defined]
    heard = engines.require("stt").transcribe_sync(resample(audio, 24000, 16000))
    said = done.output[0].text
    assert heard.text and wer(said, heard.text) <= 0.35
    # The conversation now holds the user turn (with its transcript) and the reply.
    roles = [(item.role, bool(item.text)) for item in session.conversation.items]
    assert roles == [("user", True), ("assistant", True)]
    timing = recorder.of(ev.ResponseTiming)[0]
    assert isinstance(timing, ev.ResponseTiming) and timing.response_id == done.response_id
    assert timing.total_ms is not None and timing.stt_ms is not None and timing.llm_first_token_ms is not None
    # The waterfall accounts for every millisecond: its chain adds up to the total, to rounding.
    start = timing.endpoint_ms if timing.endpoint_ms is not None else timing.turn_end_ms
    chain = [
        start,
        timing.stt_ms,
        timing.llm_wait_ms,
        timing.llm_first_token_ms,
        timing.first_clause_ms,
        timing.tts_first_audio_ms,
        timing.release_wait_ms,
    ]
    assert all(part is not None for part in chain), timing
    assert abs(sum(part for part in chain if part is not None) - timing.total_ms) <= len(chain), timing
    first_audio = next(e for e in recorder.events if isinstance(e, ev.ResponseAudioDelta))
    assert recorder.events.index(timing) == recorder.events.index(first_audio) + 1
    await recorder.close()


async def test_barge_in_during_the_first_audio_delta(engines: Engines) -> None:
    async with scripted_engines(engines) as scripted:
        await _barge_in_during_the_first_audio_delta(scripted)


async def _barge_in_during_the_first_audio_delta(engines: Engines) -> None:
    session = converse(engines, auto_truncate=True)
    recorder = Recorder(session)
    interruption = speech("short_16k.wav", lead_s=0.0, tail_s=0.0)[:16000]
    interrupted = asyncio.Event()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.ResponseAudioDelta) and not interrupted.is_set():
            interrupted.set()
            for start in range(0, interruption.size, FRAME):  # speech arrives right behind the first delta
                session.append_audio(interruption[start : start + FRAME], 16000)

    recorder.on_event = on_event
    session.create_item(Item("item_q", "message", "user", (Part("input_text", text="Tell me a long story."),)))
    session.create_response()
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone)
    assert (done.status, done.reason) == ("cancelled", "turn_detected")
    after = recorder.events[recorder.events.index(done) :]
    assert not [e for e in after if isinstance(e, ev.ResponseAudioDelta) and e.response_id == done.response_id]
    assert done.output and done.output[0].status == "incomplete"
    cut = await recorder.wait_for(lambda e: isinstance(e, ev.AudioInterrupted))
    assert isinstance(cut, ev.AudioInterrupted) and cut.played_ms < 1000
    truncated = await recorder.wait_for(lambda e: isinstance(e, ev.ItemTruncated))
    assert isinstance(truncated, ev.ItemTruncated) and truncated.audio_end_ms == cut.played_ms
    item = session.conversation.get(cut.item_id)
    assert item.content[0].audio_ms <= cut.played_ms + 1
    assert STORY.startswith(item.content[0].transcript or ""), item.content[0].transcript
    await recorder.close()


async def test_manual_commit_during_speech(engines: Engines) -> None:
    session = Session(engines, SessionConfig(mode="transcribe"))
    recorder = Recorder(session)
    audio = speech("utterance_16k.wav")
    await feed(session, audio[: 16000 * 2])
    session.commit()
    await feed(session, audio[16000 * 2 :])
    await session.end_input()
    await recorder._task
    commits = recorder.of(ev.TranscriptCompleted)
    started = recorder.of(ev.SpeechStarted)
    assert len(commits) == 2 and len(started) == 2
    assert commits[0].item_id != commits[1].item_id  # type: ignore[attr-defined]
    assert len(recorder.of(ev.SpeechStopped)) == 2


async def test_errors_for_empty_commit_idle_cancel_and_overlapping_create(engines: Engines) -> None:
    session = Session(
        engines, SessionConfig(turn_detection=None, max_output_tokens=16), default_instructions=INSTRUCTIONS
    )
    recorder = Recorder(session)
    session.commit()
    session.cancel_response()
    session.create_item(Item("item_hi", "message", "user", (Part("input_text", text="Say hello."),)))
    session.create_response()
    session.create_response()
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    errors = [e.error for e in recorder.of(ev.Error)]  # type: ignore[attr-defined]
    assert [type(error) for error in errors] == [CommitTooShort, NoResponseToCancel, ResponseInProgress]
    assert errors[0] == CommitTooShort(0.0, MIN_COMMIT_MS)
    assert len(recorder.of(ev.ResponseCreated)) == 1
    await recorder.close()


async def test_push_to_talk_commit_then_respond(engines: Engines, texts: dict[str, str]) -> None:
    session = Session(
        engines, SessionConfig(turn_detection=None, max_output_tokens=16), default_instructions=INSTRUCTIONS
    )
    recorder = Recorder(session)
    await feed(session, speech())
    assert not recorder.of(ev.SpeechStarted)  # no VAD turns
    session.commit()
    session.create_response(ResponseOptions(output_audio=False))
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    transcript = recorder.of(ev.TranscriptCompleted)[0]
    assert wer(texts["short"], transcript.text) <= 0.1  # type: ignore[attr-defined]
    assert isinstance(done, ev.ResponseDone) and done.output[0].text
    assert not recorder.of(ev.ResponseAudioDelta)
    assert all(not e.audio for e in recorder.of(ev.ResponseTextDelta))  # type: ignore[attr-defined]
    await recorder.close()


async def test_replacing_an_active_response_cancels_it_first(engines: Engines) -> None:
    session = Session(
        engines, SessionConfig(turn_detection=None, max_output_tokens=16), default_instructions=INSTRUCTIONS
    )
    recorder = Recorder(session)
    session.create_item(Item("item_a", "message", "user", (Part("input_text", text="Count to ten."),)))
    session.create_response()
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseCreated))
    session.create_response(ResponseOptions(output_audio=False), replace_active=True)
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone) and e.status != "cancelled")
    first = recorder.of(ev.ResponseDone)[0]
    assert isinstance(first, ev.ResponseDone) and (first.status, first.reason) == ("cancelled", "client_cancelled")
    assert len(recorder.of(ev.ResponseCreated)) == 2
    await recorder.close()


async def test_required_tool_call_and_its_output(engines: Engines) -> None:
    weather = ToolSpec("get_weather", "Current weather for a city", WEATHER_PARAMETERS)
    config = SessionConfig(turn_detection=None, tools=(weather,), tool_choice="required", max_output_tokens=CALL_TOKENS)
    session = Session(engines, config, default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    session.create_item(Item("item_w", "message", "user", (Part("input_text", text="Weather in Tokyo?"),)))
    session.create_response()
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    [call] = recorder.of(ev.FunctionCallArgumentsDone)
    assert isinstance(call, ev.FunctionCallArgumentsDone) and call.name == "get_weather"
    assert_city_arguments(call.arguments)
    assert isinstance(done, ev.ResponseDone) and done.status == "completed"
    assert [(i.type, i.call_id, i.name, i.arguments) for i in done.output] == [
        ("function_call", call.call_id, "get_weather", call.arguments)
    ]
    output = Item("item_o", "function_call_output", call_id=call.call_id, output='{"sky": "clear"}')
    session.create_item(output)
    session.update(SessionConfig(turn_detection=None, tools=(weather,), tool_choice="auto", max_output_tokens=24))
    session.create_response(ResponseOptions(output_audio=False))
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone) and e is not done)
    kinds = [item.type for item in session.conversation.items]
    assert kinds[:3] == ["message", "function_call", "function_call_output"]
    await recorder.close()


async def test_out_of_band_response_stays_out_of_the_conversation(engines: Engines) -> None:
    session = Session(
        engines, SessionConfig(turn_detection=None, max_output_tokens=8), default_instructions=INSTRUCTIONS
    )
    recorder = Recorder(session)
    session.create_item(Item("item_x", "message", "user", (Part("input_text", text="Hi."),)))
    session.create_response(ResponseOptions(in_conversation=False, output_audio=False, metadata={"topic": "x"}))
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone) and not done.in_conversation and done.metadata == {"topic": "x"}
    assert [item.id for item in session.conversation.items] == ["item_x"]
    await recorder.close()


async def test_token_limit_ends_incomplete(engines: Engines) -> None:
    # One token: any answer at all reaches the limit, however briefly the model would have answered.
    session = Session(engines, SessionConfig(turn_detection=None), default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    session.create_item(Item("item_l", "message", "user", (Part("input_text", text="Describe Paris in detail."),)))
    session.create_response(ResponseOptions(output_audio=False, max_output_tokens=1))
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone) and (done.status, done.reason) == ("incomplete", "max_output_tokens")
    assert done.usage.output_tokens == 1
    [reply] = done.output
    assert reply.status == "incomplete" and reply.text
    await recorder.close()


@pytest.mark.parametrize("kind", ["server_vad", "semantic_vad"])
async def test_semantic_vad_waits_through_an_unfinished_sentence(engines: Engines, kind: str) -> None:
    tts = engines.require("tts")
    first = np.concatenate([c.pcm for c in tts.synthesize_sync("I would like to book a table for")])
    second = np.concatenate([c.pcm for c in tts.synthesize_sync("four people tonight.")])
    rate = tts.sample_rate()
    gap = np.zeros(int(0.9 * 16000), np.int16)
    audio = np.concatenate(
        (resample(first, rate, 16000), gap, resample(second, rate, 16000), np.zeros(3 * 16000, np.int16))
    )
    td = TurnDetection(type=kind, silence_duration_ms=500, eou_timeout_ms=2500)  # type: ignore[arg-type]
    session = Session(engines, SessionConfig(mode="transcribe", turn_detection=td))
    recorder = Recorder(session)
    for start in range(0, audio.size, FRAME):
        session.append_audio(audio[start : start + FRAME], 16000)
        await asyncio.sleep(0.001)  # give speculative transcription a chance to finish, as in real time
    await session.end_input()
    await recorder._task
    turns = recorder.of(ev.TranscriptCompleted)
    assert len(turns) == (2 if kind == "server_vad" else 1)


@dataclass
class HearingSTT:
    """The STT engine, keeping what it heard: the test of the filler rule reads what Whisper made of the filler."""

    inner: Any
    heard: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def transcribe(self, pcm: Any, **options: Any) -> Any:
        result = await self.inner.transcribe(pcm, **options)
        self.heard.append(result.text)
        return result


async def test_filler_words_do_not_interrupt_a_reply(engines: Engines) -> None:
    tts = engines.require("tts")
    filler = resample(np.concatenate([c.pcm for c in tts.synthesize_sync("Um.")]), tts.sample_rate(), 16000)
    async with scripted_engines(engines, pieces(FIRST_SENTENCE)) as scripted:
        stt = HearingSTT(scripted.stt)
        session = converse(replace(scripted, stt=stt), remove_filler_words=True)
        recorder = Recorder(session)
        session.create_item(Item("item_s", "message", "user", (Part("input_text", text="Tell me a story."),)))
        session.create_response()
        first = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseAudioDelta))
        await feed(session, np.concatenate((filler, np.zeros(16000, np.int16))), pace_s=0.005)
        done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone), within_s=60)
        seen = [type(e).__name__ for e in recorder.events if not isinstance(e, ev.ResponseAudioDelta)]
        # The filler was heard as speech over the reply.
        during = recorder.events[recorder.events.index(first) : recorder.events.index(done)]
        assert any(isinstance(e, ev.SpeechStarted) for e in during), seen
        assert stt.heard, "the filler was never transcribed"
        if is_only_fillers(stt.heard[-1]):  # Piper's "Um." is heard as "um": the reply goes on to its end
            assert isinstance(done, ev.ResponseDone) and done.status == "completed", (done, seen, stt.heard)
            assert not recorder.of(ev.AudioInterrupted)
            assert done.output[0].text == FIRST_SENTENCE
        else:  # Whisper made a word of it (the echo canceller works on it while the reply plays): that interrupts
            assert isinstance(done, ev.ResponseDone) and done.status == "cancelled", (done, seen, stt.heard)
        await recorder.close()


async def test_idle_timeout_prompts_a_reply(engines: Engines) -> None:
    session = converse(engines, idle_timeout_ms=800)
    session.update(replace(session.config, output_audio=False))
    recorder = Recorder(session)
    await feed(session, np.zeros(16000, np.int16))
    timeout = await recorder.wait_for(lambda e: isinstance(e, ev.InputTimeout))
    assert isinstance(timeout, ev.InputTimeout) and timeout.audio_end_ms >= 800
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseCreated))
    await recorder.close()


async def test_audio_that_stops_mid_turn_counts_as_silence(engines: Engines, texts: dict[str, str]) -> None:
    session = Session(engines, SessionConfig(mode="transcribe", turn_detection=TurnDetection(silence_duration_ms=300)))
    recorder = Recorder(session)
    await feed(session, speech(tail_s=0.0))  # the sender goes quiet right after the last word
    done = await recorder.wait_for(lambda e: isinstance(e, ev.TranscriptCompleted), within_s=10)
    assert isinstance(done, ev.TranscriptCompleted) and wer(texts["short"], done.text) <= 0.1
    await recorder.close()


async def test_audio_that_arrives_late_mid_turn_does_not_split_it(engines: Engines, texts: dict[str, str]) -> None:
    # Jitter (a late network, a busy machine): the stream stops for less than the silence that ends a turn, then the
    # rest arrives. Nothing may be invented in the gap: one turn, all of it.
    session = Session(engines, SessionConfig(mode="transcribe", turn_detection=TurnDetection(silence_duration_ms=500)))
    recorder = Recorder(session)
    audio = speech("utterance_16k.wav")
    await feed(session, audio[: 16000 * 3], pace_s=0.01)
    await asyncio.sleep(0.75)  # longer than the 500 ms that ends a turn, shorter than that plus the 500 ms margin
    await feed(session, audio[16000 * 3 :], pace_s=0.01)
    done = await recorder.wait_for(lambda e: isinstance(e, ev.TranscriptCompleted), within_s=20)
    assert isinstance(done, ev.TranscriptCompleted) and wer(texts["utterance"], done.text) <= 0.1
    await asyncio.sleep(0.5)
    assert len(recorder.of(ev.TranscriptCompleted)) == 1
    await recorder.close()


async def test_end_of_stream_mid_speech_finishes_the_turn(engines: Engines) -> None:
    session = Session(engines, SessionConfig(mode="transcribe"))
    recorder = Recorder(session)
    await feed(session, speech("utterance_16k.wav", tail_s=0.0)[: 16000 * 3])
    await session.end_input()
    await recorder._task
    assert len(recorder.of(ev.TranscriptCompleted)) == 1


async def test_a_new_speaker_replaces_the_one_silent_longest(engines: Engines, texts: dict[str, str]) -> None:
    session = Session(engines, SessionConfig(mode="transcribe"))
    recorder = Recorder(session)
    for index in range(16):  # a long call: sixteen people have spoken and gone quiet
        session.append_audio(np.zeros(FRAME, np.int16), 16000, f"8:acs:caller-{index}")
        await asyncio.sleep(0.001)
    await feed(session, speech(), participant="8:acs:newcomer")
    await session.end_input()
    await recorder._task
    done = recorder.of(ev.TranscriptCompleted)
    assert [e.participant for e in done] == ["8:acs:newcomer"]  # type: ignore[attr-defined]
    assert wer(texts["short"], done[0].text) <= 0.1  # type: ignore[attr-defined]


async def test_close_stops_a_held_reply_before_it_returns(engines: Engines) -> None:
    """A reply started during a pause (held, the turn not yet ended) is one of the session's tasks: `close()` has
    stopped it by the time it returns, rather than leaving it to end, or to be garbage-collected, later."""

    def held_replies() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if "ResponseRun.run" in repr(t.get_coro()) and not t.done()]

    td = TurnDetection(silence_duration_ms=5000)  # the pause never ends the turn here
    config = SessionConfig(mode="converse", turn_detection=td, max_output_tokens=24)
    session = Session(engines, config, default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    await feed(session, speech(tail_s=0.0))
    silence = np.zeros(FRAME, np.int16)
    for _ in range(1500):
        if held_replies():
            break
        session.append_audio(silence, 16000)
        await asyncio.sleep(0.02)
    running = held_replies()
    assert running, "no reply started during the pause"
    await recorder.close()
    assert all(task.done() for task in running)
