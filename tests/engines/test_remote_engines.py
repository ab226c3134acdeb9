"""The remote STT and TTS (`stt_remote`, `tts_remote`) against a real OpenAI-compatible server: a koe model node
with its doors off, serving the embedded Whisper and Piper. What is checked is koe's: the transcript comes back
within a WER margin with its language, duration and timings; speech comes back as streamed 24 kHz PCM that Whisper
hears as the text; the model node's voices are learned; a node that is down or refuses says so as the engine
errors the doors map."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from koe.audio.resample import resample
from koe.config import Settings
from koe.engines.base import EngineError, EngineUnavailable
from koe.engines.registry import Engines, load_engines
from koe.engines.stt_remote import RemoteSTT
from koe.engines.tts_remote import PCM_RATE, RemoteTTS
from tests.conftest import LANGUAGE_AUDIO, load_wav
from tests.engines.remote_support import MODEL_KEY, dead_url, door_engines, model_node
from tests.wer import cer, wer

VOICES = {"en": "en_US-joe-medium", "ja": "jf_alpha"}


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    async with model_node(engines) as base:
        yield base


def load_wav_file(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy(), handle.getframerate()


def _speech_16k(name: str) -> np.ndarray:
    pcm, rate = load_wav(name)
    return resample(pcm, rate, 16000)


async def test_a_transcription_goes_through_the_model_node(base_url: str, texts: dict[str, str]) -> None:
    stt = RemoteSTT(base_url, "whisper-1", api_key=MODEL_KEY)
    try:
        result = await stt.transcribe(_speech_16k("short_16k.wav"))
        assert wer(texts["short"], result.text) <= 0.1, result.text
        assert result.language == "en" and 2.0 < result.duration_s < 6.0 and result.elapsed_s > 0
        timed = await stt.transcribe(_speech_16k("short_16k.wav"), words=True)  # verbose_json, with timings
        assert len(timed.words) >= 8 and timed.words[0].end_s <= timed.words[-1].end_s and timed.segments
        assert await stt.check() is None
    finally:
        await stt.aclose()


async def test_auto_comes_back_with_the_language_heard(language_texts: dict[str, str]) -> None:
    # A request without a language is detected, as OpenAI's are, on a koe model node with stt.language = "auto".
    detecting = load_engines(Settings(stt={"language": "auto"}), ["stt"])
    pcm, rate = load_wav_file(LANGUAGE_AUDIO / "ja_booking.wav")
    try:
        async with model_node(detecting) as base:
            stt = RemoteSTT(base, "whisper-1", api_key=MODEL_KEY, language="auto")
            result = await stt.transcribe(resample(pcm, rate, 16000))
            await stt.aclose()
    finally:
        for pool in detecting.pools():
            pool.shutdown()
    assert result.language == "ja"  # verbose_json's "japanese", back to Whisper's code
    assert cer(language_texts["ja_booking"], result.text) <= 0.3, result.text


async def test_chinese_comes_back_in_the_script_asked_for(base_url: str) -> None:
    # The wire carries only "zh": traditional characters for zh-TW are made here, whatever the server wrote.
    stt = RemoteSTT(base_url, "whisper-1", api_key=MODEL_KEY)
    try:
        pcm, rate = load_wav_file(LANGUAGE_AUDIO / "zh_booking.wav")
        taiwan = await stt.transcribe(resample(pcm, rate, 16000), language="zh-TW")
    finally:
        await stt.aclose()
    assert taiwan.language == "zh" and taiwan.text and not set(taiwan.text) & set("这车个们")


async def test_transcriptions_in_flight_are_bounded_and_shown_as_a_pool(base_url: str) -> None:
    # stt.workers in flight at once, the rest waiting here: what partial transcripts read to stay best effort.
    stt = RemoteSTT(base_url, "whisper-1", api_key=MODEL_KEY, workers=1)
    pool = stt.pool
    assert pool is not None and pool.workers == 1
    seen: list[tuple[int, int]] = []
    try:
        calls = [asyncio.create_task(stt.transcribe(_speech_16k("short_16k.wav"))) for _ in range(3)]
        while not all(call.done() for call in calls):
            seen.append((pool.active, pool.depth))
            await asyncio.sleep(0.01)
        assert all(call.result().text for call in calls)
    finally:
        await stt.aclose()
    assert max(active for active, _ in seen) == 1 and (1, 2) in seen
    assert pool.completed == 3 and pool.active == pool.depth == 0


async def test_remote_stt_errors_name_the_endpoint_and_what_to_do(base_url: str) -> None:
    wrong_key = RemoteSTT(base_url, "whisper-1", api_key="not-the-key")
    # A short segment: the whole upload is sent before koe answers the key check (a longer one may still be on its
    # way when koe answers and closes, and is then a failed connection).
    with pytest.raises(EngineError, match=r"STT endpoint .* answered 401: the API key is not valid"):
        await wrong_key.transcribe(np.zeros(1600, np.int16))
    assert await wrong_key.check() is None  # refused for its key: the server itself is up
    await wrong_key.aclose()
    down = RemoteSTT(dead_url(), "whisper-1")
    with pytest.raises(EngineUnavailable, match=r"cannot reach the STT endpoint .*is the server running"):
        await down.transcribe(_speech_16k("short_16k.wav"))
    assert "cannot reach the STT endpoint" in (await down.check() or "")
    with pytest.raises(EngineError, match="koe cannot transcribe the language 'xx'"):
        await down.transcribe(_speech_16k("short_16k.wav"), language="xx")
    assert down.supports_language("ja-JP") and down.supports_language("auto") and not down.supports_language("xx")
    await down.aclose()


async def test_speech_streams_from_the_model_node(base_url: str, engines: Engines) -> None:
    tts = RemoteTTS(base_url, "tts-1", default_voice="en_US-joe-medium", voices=VOICES, api_key=MODEL_KEY)
    # Synchronous, as `koe serve` loads engines before its loop starts; here the model node shares this loop.
    assert await asyncio.to_thread(tts.learn_voices, MODEL_KEY) >= 1
    assert "en_US-joe-medium" in tts.voices() and tts.voice_for("ja-JP") == "jf_alpha"
    assert tts.voice_info("en_US-joe-medium").rate == PCM_RATE
    text = "The nearest pharmacy opens at nine tomorrow morning. It is next to the station."
    try:
        chunks = [chunk async for chunk in tts.synthesize(text)]
    finally:
        await tts.aclose()
    assert len(chunks) >= 2  # streamed: the first clause's audio came before the rest was synthesized
    assert chunks[0].text == text and all(not chunk.text for chunk in chunks[1:])
    pcm = np.concatenate([chunk.pcm for chunk in chunks])
    assert 2.0 < pcm.size / PCM_RATE < 10.0
    heard = engines.require("stt").transcribe_sync(resample(pcm, PCM_RATE, 16000)).text  # type: ignore[attr-defined]
    assert wer(text, heard) <= 0.3, heard


async def test_voices_of_a_server_down_at_start_are_learned_at_a_health_check(base_url: str) -> None:
    # As a door node that started before its model node: only the configured voices, until /healthz finds it up.
    tts = RemoteTTS(base_url, "tts-1", default_voice="en_US-joe-medium", voices=VOICES, api_key=MODEL_KEY)
    assert tts.voices() == sorted(VOICES.values())
    try:
        assert await tts.check() is None
        chinese = tts.voice_for("zh")  # none configured: one of the server's own
        assert "zf_xiaoxiao" in tts.voices() and chinese is not None and tts.voice_info(chinese).language == "zh"
    finally:
        await tts.aclose()


async def test_remote_tts_errors_come_before_any_audio(base_url: str) -> None:
    tts = RemoteTTS(base_url, "tts-1", default_voice="en_US-joe-medium", voices=VOICES, api_key=MODEL_KEY)
    with pytest.raises(EngineError, match=r"TTS endpoint .* answered 400: unknown voice 'nobody'"):
        _ = [chunk async for chunk in tts.synthesize("Hello.", "nobody")]
    await tts.aclose()
    down = RemoteTTS(dead_url(), "tts-1", default_voice="en_US-joe-medium", voices=VOICES)
    assert down.learn_voices() == 0 and down.voices() == sorted(VOICES.values())
    with pytest.raises(EngineUnavailable, match=r"cannot reach the TTS endpoint"):
        _ = [chunk async for chunk in down.synthesize("Hello.")]
    assert "cannot reach the TTS endpoint" in (await down.check() or "")
    await down.aclose()


async def test_a_model_node_without_the_engine_is_unavailable_as_a_local_one_would_be() -> None:
    # Its 503 (engine_unavailable) is the door's EngineUnavailable, which each door maps as it maps its own.
    async with model_node(Engines()) as base:
        tts = RemoteTTS(base, "tts-1", default_voice="en_US-joe-medium", voices=VOICES, api_key=MODEL_KEY)
        stt = RemoteSTT(base, "whisper-1", api_key=MODEL_KEY)
        try:
            with pytest.raises(EngineUnavailable, match=r"TTS endpoint .* answered 503: the tts engine is unavailable"):
                _ = [chunk async for chunk in tts.synthesize("Hello.")]
            with pytest.raises(EngineUnavailable, match=r"STT endpoint .* answered 503: the stt engine is unavailable"):
                await stt.transcribe(np.zeros(1600, np.int16))
            assert "answered 503" in (await stt.check() or "")
        finally:
            await tts.aclose()
            await stt.aclose()


async def test_the_registry_loads_remote_engines_and_healthz_checks_them(base_url: str, engines: Engines) -> None:
    door = await asyncio.to_thread(door_engines, base_url, engines)
    assert isinstance(door.stt, RemoteSTT) and isinstance(door.tts, RemoteTTS)
    assert door.tts.pool is None and door.stt.pool in door.pools()  # /healthz shows the STT in flight
    assert await door.check() == {}
    gone = door_engines(dead_url(), engines)
    problems = await gone.check()
    assert set(problems) == {"stt", "tts"} and "cannot reach" in problems["stt"]
    assert gone.health(problems)["engines"]["stt"]["ready"] is False
