"""Committed turns' transcripts, as the replies that wait for them see them, and partial transcripts in every
language."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from koe.audio.files import read_audio
from koe.engines.pool import WorkerPool
from koe.engines.registry import Engines
from koe.languages import join_cjk
from koe.voice import events as ev
from koe.voice.config import SessionConfig
from koe.voice.session import Session
from koe.voice.transcripts import appended, partial_may_start
from tests.conftest import LANGUAGE_AUDIO
from tests.voice.test_session import Recorder, feed
from tests.wer import cer


async def test_a_reply_cancelled_while_waiting_for_transcripts_does_not_cancel_them(engines: Engines) -> None:
    session = Session(engines, SessionConfig(mode="converse"))
    transcript: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    session.transcripts._pending["item_1"] = transcript  # a committed turn still being transcribed
    first = asyncio.create_task(session.transcripts.pending())
    second = asyncio.create_task(session.transcripts.pending())
    await asyncio.sleep(0)
    first.cancel()  # that reply was interrupted
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not transcript.cancelled()
    transcript.set_result(None)
    await asyncio.wait_for(second, 1)  # the other reply goes on
    await session.close()


@pytest.mark.parametrize(
    ("previous", "text", "delta"),
    [
        ("", "Please book", "Please book"),
        ("Please book.", "Please book a table.", "a table."),
        ("What is the weather?", "What is the weather going to be", "going to be"),
        ("Please look", "Please book a table", ""),  # an earlier word was revised
        ("", "今天天气", "今天天气"),
        ("今天天气怎么样。", "今天天气怎么样？我们明天", "？我们明天"),
        ("明日の天気は、", "明日の天気はどうなりますか", "どうなりますか"),
        ("申し訳ありません", "申し訳ありませんが、担当者は", "が、担当者は"),
        ("東京から大阪", "東京から名古屋", ""),
    ],
)
def test_a_partial_adds_what_follows_the_previous_one(previous: str, text: str, delta: str) -> None:
    assert appended(previous, text) == delta


@pytest.mark.models
async def test_japanese_partials_grow_without_spaces(engines: Engines, language_texts: dict[str, str]) -> None:
    names = [name for name in language_texts if name.startswith("ja_")]
    gap = np.zeros(4800, dtype=np.int16)  # 0.3 s: a pause inside the turn, shorter than the turn's end
    pcm = np.concatenate(
        [piece for name in names for piece in (read_audio(LANGUAGE_AUDIO / f"{name}.wav", 16000), gap)]
    )
    session = Session(engines, SessionConfig(mode="transcribe", language="ja-JP", partial_results=True))
    recorder = Recorder(session)
    await feed(session, np.concatenate((gap, pcm, np.zeros(24000, dtype=np.int16))), pace_s=0.02)
    await session.end_input()
    await recorder._task
    partials = [e for e in recorder.of(ev.TranscriptDelta) if isinstance(e, ev.TranscriptDelta)]
    finals = [e for e in recorder.of(ev.TranscriptCompleted) if isinstance(e, ev.TranscriptCompleted)]
    assert partials and finals
    assert all(p.text == join_cjk(p.text) and p.delta == p.delta.strip() for p in partials)
    assert any(p.delta for p in partials[1:])  # later partials add to earlier ones
    final = "".join(f.text for f in finals)
    assert final == join_cjk(final) and all(f.language == "ja" for f in finals)
    assert cer("".join(language_texts[name] for name in names), final) <= 0.15


@pytest.mark.parametrize(
    ("workers", "running", "may"),
    [(1, 0, True), (1, 1, False), (2, 0, True), (2, 1, False), (3, 1, True), (3, 2, False)],
)
async def test_a_partial_never_takes_the_last_free_stt_worker(workers: int, running: int, may: bool) -> None:
    # The final transcript of a pause must not wait behind a partial: CTranslate2 cannot stop one once it runs.
    pool = WorkerPool("stt", workers, 8)
    release = threading.Event()
    jobs = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(running)]
    try:
        for _ in range(200):
            if pool.active == running:
                break
            await asyncio.sleep(0.01)
        assert pool.active == running
        assert partial_may_start(pool) is may
    finally:
        release.set()
        await asyncio.gather(*jobs)
        pool.shutdown()


async def test_a_partial_does_not_start_while_a_transcription_waits() -> None:
    pool = WorkerPool("stt", 1, 8)
    release = threading.Event()
    jobs = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(2)]
    try:
        for _ in range(200):
            if pool.depth == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.depth == 1 and not partial_may_start(pool)
    finally:
        release.set()
        await asyncio.gather(*jobs)
        pool.shutdown()
