"""While a caller speaks, koe hears the turn so far and has the LLM evaluate the reply's prompt up to its settled
words (`Replies.prehear`), so that the end of the turn leaves only its last words to evaluate. The LLM here is a
stand-in on a real `WorkerPool` that records what it is asked to warm and to answer; STT and the VAD are the real
ones, on real speech fed at real-time pace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from koe.engines.base import ChatRequest, Finished, LLMEvent, TextDelta
from koe.engines.pool import WorkerPool
from koe.engines.registry import Engines
from koe.languages import CLAUSE_END
from koe.voice import events as ev
from koe.voice.config import SessionConfig, TurnDetection
from koe.voice.session import Session
from koe.voice.transcripts import settled_words
from tests.voice.test_session import Recorder, feed, speech


class WarmRecordingLLM:
    name = "warm-recording-llm"

    def __init__(self, pool: WorkerPool | None) -> None:
        self._pool = pool
        self.warmed: list[tuple[ChatRequest, bool]] = []
        self.answered: list[ChatRequest] = []

    @property
    def pool(self) -> WorkerPool | None:
        return self._pool

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        self.answered.append(request)
        yield TextDelta("Fine, thanks.")
        yield Finished("stop", 1, 1)

    async def warm(self, request: ChatRequest, *, unfinished: bool = False) -> None:
        self.warmed.append((request, unfinished))

    async def aclose(self) -> None:
        return None

    async def check(self) -> str | None:
        return None


def _session(engines: Engines, llm: WarmRecordingLLM, mode: str = "converse", create_response: bool = True) -> Session:
    td = TurnDetection(silence_duration_ms=300, create_response=create_response)
    settings = SessionConfig(mode=mode, turn_detection=td, output_audio=False)  # type: ignore[arg-type]
    return Session(replace(engines, llm=llm, tts=None), settings)


async def test_the_reply_prompt_is_warmed_with_the_words_heard_while_the_caller_speaks(engines: Engines) -> None:
    llm = WarmRecordingLLM(WorkerPool("llm", 1, 8))
    session = _session(engines, llm)
    recorder = Recorder(session)
    await feed(session, speech("utterance_16k.wav", tail_s=0.6), pace_s=0.02)  # real time: partials come as it speaks
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    heard = [request for request, unfinished in llm.warmed if unfinished]
    assert heard, f"nothing was warmed while the caller spoke: {llm.warmed}"
    # The client asked for no partial transcripts: it gets none.
    assert not recorder.of(ev.TranscriptDelta)
    reply = llm.answered[-1]
    for request in heard:
        *before, last = request.messages
        assert last.role == "user" and last.content and last.content == last.content.rstrip(" " + CLAUSE_END)
        # Everything before the caller's words is exactly what the reply's prompt has before them.
        assert list(before) == list(reply.messages[:-1])
        assert request.tools == reply.tools
    await recorder.close()


@pytest.mark.parametrize("why", ["remote llm", "transcription only", "no automatic reply"])
async def test_nothing_is_heard_early_when_no_embedded_llm_will_answer(engines: Engines, why: str) -> None:
    llm = WarmRecordingLLM(None if why == "remote llm" else WorkerPool("llm", 1, 8))
    mode = "transcribe" if why == "transcription only" else "converse"
    session = _session(engines, llm, mode, create_response=why != "no automatic reply")
    recorder = Recorder(session)
    await feed(session, speech("utterance_16k.wav", tail_s=0.6), pace_s=0.02)
    await recorder.wait_for(lambda e: isinstance(e, ev.TranscriptCompleted | ev.ItemUpdated))
    await asyncio.sleep(0.2)
    assert not [request for request, unfinished in llm.warmed if unfinished]
    await recorder.close()


@pytest.mark.parametrize(
    ("partial", "settled"),
    [
        ("What is the weather like in", "What is the weather like"),
        ("What is the weather like in.", "What is the weather like"),
        ("Hello,", ""),
        ("", ""),
        ("東京の天気はどうですか。", "東京の天気はどう"),
    ],
)
def test_settled_words_leave_out_the_word_the_audio_may_have_cut(partial: str, settled: str) -> None:
    assert settled_words(partial) == settled
