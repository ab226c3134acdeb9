"""Reply pacing (issue 13, must hold 1): every reply leaves at the speed it is played, never more than
`OUTPUT_LEAD_MS` ahead of the playback clock from its first chunk on, whether it was held by a speculation while the
turn was still ending or planned when a client asked for it; and a barge-in reports what the listener really heard.

The reply is the stand-in's fixed text (`scripted_engines`), so its length is known; the real Piper speaks it. The
assertions are guarantees with a wide margin, never speed targets: koe may be slower than real time on a busy
machine (which only makes the audio arrive later), but never faster than the listener plays it plus the lead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from koe.engines.base import ChatRequest, LLMEvent
from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import SessionConfig, TurnDetection
from koe.voice.conversation import Item, Part
from koe.voice.playback import HOLD_FLOOR_MS, OUTPUT_LEAD_MS
from koe.voice.session import Session
from tests.engines.openai_standin import STORY, StandIn, pieces
from tests.voice.test_session import FRAME, INSTRUCTIONS, speech

FIRST_SENTENCES = STORY[: STORY.index(".", STORY.index(".") + 1) + 1]
"""Two sentences, about ten seconds of Piper's speech: far longer than the lead, and than any hold."""
SLACK_MS = 60
"""Timer and rounding slack on the lead: the loop wakes a little late, never early."""
REAL_TIME_SHARE = 0.6
"""The least share of the audio's duration (minus the lead) over which it must arrive."""


@dataclass
class Timeline:
    """When each event left the session (its observer sees them as they are emitted)."""

    events: list[tuple[float, ev.Event]] = field(default_factory=list)

    def __call__(self, event: ev.Event) -> None:
        self.events.append((asyncio.get_running_loop().time(), event))

    def first(self, kind: type[ev.Event]) -> tuple[float, ev.Event]:
        return next((at, event) for at, event in self.events if isinstance(event, kind))

    def audio(self) -> list[tuple[float, float]]:
        """(arrival time, audio ms sent up to and including that delta) for every audio delta."""
        sent, out = 0.0, []
        for at, event in self.events:
            if isinstance(event, ev.ResponseAudioDelta):
                sent += event.pcm.size * 1000 / event.rate
                out.append((at, sent))
        return out

    async def wait_for(self, kind: type[ev.Event], within_s: float = 60.0) -> ev.Event:
        async def scan() -> ev.Event:
            while True:
                for _at, event in self.events:
                    if isinstance(event, kind):
                        return event
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(scan(), within_s)


class TimedLLM(OpenAICompatibleLLM):
    """The stand-in's client, noting when each reply was asked for."""

    started: list[float]

    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        self.started.append(asyncio.get_running_loop().time())
        return super().stream(request)


def assert_paced(timeline: Timeline) -> None:
    arrivals = timeline.audio()
    assert len(arrivals) > 10, "the reply is too short to show its pace"
    start = arrivals[0][0]
    for at, sent_ms in arrivals:
        ahead_ms = sent_ms - (at - start) * 1000
        assert ahead_ms <= OUTPUT_LEAD_MS + SLACK_MS, f"{sent_ms:.0f} ms sent after {(at - start) * 1000:.0f} ms"
    span_ms = (arrivals[-1][0] - start) * 1000
    total_ms = arrivals[-1][1]
    assert span_ms >= REAL_TIME_SHARE * (total_ms - OUTPUT_LEAD_MS), (span_ms, total_ms)


async def test_a_reply_the_client_asks_for_is_paced_from_its_first_chunk(engines: Engines) -> None:
    async with StandIn(reply=pieces(FIRST_SENTENCES)) as server:
        llm = TimedLLM(server.base_url, "standin-model", api_key="sk-test")
        llm.started = []
        timeline = Timeline()
        session = Session(
            replace(engines, llm=llm),
            SessionConfig(turn_detection=None),
            default_instructions=INSTRUCTIONS,
            observer=timeline,
        )
        reader = asyncio.ensure_future(_drain(session))
        session.create_item(Item("item_q", "message", "user", (Part("input_text", text="Tell me a story."),)))
        session.create_response()
        done = await timeline.wait_for(ev.ResponseDone)
        assert isinstance(done, ev.ResponseDone) and done.status == "completed"
        assert_paced(timeline)
        await session.close()
        await reader
        await llm.aclose()


async def test_a_held_reply_ready_before_the_turn_ends_is_paced_from_its_first_chunk(engines: Engines) -> None:
    # A long silence window: the speculation's reply is wholly synthesized while the turn is still ending, and
    # before the fix all of it left in one burst at the commit.
    async with StandIn(reply=pieces(FIRST_SENTENCES)) as server:
        llm = TimedLLM(server.base_url, "standin-model", api_key="sk-test")
        llm.started = []
        timeline = Timeline()
        td = TurnDetection(silence_duration_ms=1500)
        session = Session(
            replace(engines, llm=llm),
            SessionConfig(turn_detection=td),
            default_instructions=INSTRUCTIONS,
            observer=timeline,
        )
        reader = asyncio.ensure_future(_drain(session))
        audio = speech("short_16k.wav", tail_s=2.5)
        for start in range(0, audio.size, FRAME):  # at real time, as a caller speaks
            session.append_audio(audio[start : start + FRAME], 16000)
            await asyncio.sleep(0.02)
        done = await timeline.wait_for(ev.ResponseDone)
        assert isinstance(done, ev.ResponseDone) and done.status == "completed"
        committed_at, _ = timeline.first(ev.InputCommitted)
        assert len(llm.started) == 1 and llm.started[0] < committed_at - 0.5, "the reply was not the held one"
        assert_paced(timeline)
        await session.close()
        await reader
        await llm.aclose()


@contextlib.asynccontextmanager
async def _telling_a_story(engines: Engines, config: SessionConfig) -> AsyncIterator[tuple[Session, Timeline]]:
    """A session asked for the stand-in's long story, from its first audio delta on; closed afterwards."""
    async with StandIn(reply=pieces(STORY)) as server:
        llm = TimedLLM(server.base_url, "standin-model", api_key="sk-test")
        llm.started = []
        timeline = Timeline()
        session = Session(replace(engines, llm=llm), config, default_instructions=INSTRUCTIONS, observer=timeline)
        reader = asyncio.ensure_future(_drain(session))
        session.create_item(Item("item_q", "message", "user", (Part("input_text", text="Tell me a story."),)))
        session.create_response()
        await timeline.wait_for(ev.ResponseAudioDelta)
        yield session, timeline
        await session.close()
        await reader
        await llm.aclose()


async def test_a_barge_in_on_a_paced_reply_reports_what_was_heard(engines: Engines) -> None:
    td = TurnDetection(silence_duration_ms=300, auto_truncate=True)
    async with _telling_a_story(engines, SessionConfig(turn_detection=td)) as (session, timeline):
        silence = np.zeros(FRAME, np.int16)
        for _ in range(100):  # two seconds of the reply play while the caller listens
            session.append_audio(silence, 16000)
            await asyncio.sleep(0.02)
        interruption = speech("short_16k.wav", lead_s=0.0, tail_s=0.0)[:16000]
        for start in range(0, interruption.size, FRAME):
            session.append_audio(interruption[start : start + FRAME], 16000)
            await asyncio.sleep(0.02)
        cut = await timeline.wait_for(ev.AudioInterrupted)
        assert isinstance(cut, ev.AudioInterrupted)
        cut_at, _ = timeline.first(ev.AudioInterrupted)
        first_at, _ = timeline.first(ev.ResponseAudioDelta)
        elapsed_ms = (cut_at - first_at) * 1000
        sent_ms = timeline.audio()[-1][1]
        # Heard: what played since the first delta (less any underrun gap); never more than that.
        assert elapsed_ms - 1000 <= cut.played_ms <= elapsed_ms + SLACK_MS, (cut.played_ms, elapsed_ms)
        assert cut.dropped_ms <= OUTPUT_LEAD_MS + SLACK_MS
        assert sent_ms - cut.played_ms <= OUTPUT_LEAD_MS + SLACK_MS, (sent_ms, cut.played_ms)
        truncated = await timeline.wait_for(ev.ItemTruncated)
        assert isinstance(truncated, ev.ItemTruncated) and truncated.audio_end_ms == cut.played_ms


async def _drain(session: Session) -> None:
    async for _event in session.events():
        pass


@dataclass
class Pending:
    """When the caller's voice might be starting (the detector's `onset_pending`), as the feeding loop saw it."""

    since: float | None = None
    until: float | None = None


async def _speak_over(session: Session, pcm: np.ndarray, pending: Pending) -> None:
    detector = session._participant(None).input.detector
    for start in range(0, pcm.size, FRAME):
        session.append_audio(pcm[start : start + FRAME], 16000)
        now = asyncio.get_running_loop().time()
        if detector.onset_pending and pending.since is None:
            pending.since = now
        elif pending.since is not None and pending.until is None and not detector.onset_pending:
            pending.until = now
        await asyncio.sleep(0.02)


def _playing_ms(timeline: Timeline, before: float) -> float:
    """Of the audio sent before `before`, how much was still unplayed then (the playback clock's model)."""
    first = timeline.audio()[0][0]
    sent = max((ms for at, ms in timeline.audio() if at < before), default=0.0)
    return sent - (before - first) * 1000


@pytest.mark.parametrize("blip", [False, True], ids=["speech", "blip"])
async def test_a_reply_sends_nothing_while_the_caller_may_be_starting_to_speak(engines: Engines, blip: bool) -> None:
    """`speech_duration_ms` (Voice Live: 200) must pass before the caller's speech counts; meanwhile the reply holds
    (unless the listener's audio would run out), so a barge-in stops it at the first voiced window, and a blip that
    never becomes speech only delays it, within the lead."""
    # Longer than Voice Live's 200 ms, so that unheld, a 100 ms delta would surely leave while it is confirmed.
    td = TurnDetection(silence_duration_ms=300, speech_duration_ms=400)
    config = SessionConfig(turn_detection=td, echo_cancellation=False)
    async with _telling_a_story(engines, config) as (session, timeline):
        pending = Pending()
        voice = speech("short_16k.wav", lead_s=0.0, tail_s=0.0)
        # A blip: two 32 ms windows of voice, then silence; speech: a whole second of it.
        over = np.concatenate((voice[: 16000 // 10], np.zeros(16000, np.int16))) if blip else voice[:16000]
        await _speak_over(session, np.concatenate((np.zeros(16000, np.int16), over)), pending)
        assert pending.since is not None, "the caller's voice was never heard"
        if blip:
            assert pending.until is not None, "the blip never ended"
            assert not [e for _, e in timeline.events if isinstance(e, ev.AudioInterrupted)]
            # The hold let the lead run down, never out: the reply plays on without a gap.
            assert _playing_ms(timeline, pending.until) > 0
        else:
            await timeline.wait_for(ev.AudioInterrupted)
            cut_at, _ = timeline.first(ev.AudioInterrupted)
            held = [at for at, _ms in timeline.audio() if pending.since + SLACK_MS / 1000 < at < cut_at]
            # Only what the floor let through went out while held: the listener's audio about to run out.
            for at in held:
                assert _playing_ms(timeline, at) <= HOLD_FLOOR_MS + SLACK_MS, (at - pending.since, held)
