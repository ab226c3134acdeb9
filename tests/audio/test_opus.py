"""Opus packets: a round trip keeps the signal once the codec delay is aligned, and malformed packets from the
wire raise `OpusError` without breaking the decoder for the packets after them."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from koe.audio.opus import (
    FRAME_SAMPLES,
    MAX_PACKET_BYTES,
    SILENT_PACKET,
    OpusDecoder,
    OpusEncoder,
    OpusError,
    packet_duration_samples,
)
from koe.audio.pcm import Pcm

MIN_SNR_DB = 15.0
SEARCH_SAMPLES = 200
"""How far around the encoder's reported lookahead the alignment search looks."""


def _snr_db(reference: Pcm, decoded: Pcm, lag: int) -> float:
    n = min(reference.size, decoded.size - lag) - FRAME_SAMPLES
    ref = reference[:n].astype(np.float64)
    err = ref - decoded[lag : lag + n].astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))


def _aligned_snr(reference: Pcm, decoded: Pcm, lookahead: int) -> tuple[int, float]:
    lags = range(max(0, lookahead - SEARCH_SAMPLES), lookahead + SEARCH_SAMPLES)
    return max(((lag, _snr_db(reference, decoded, lag)) for lag in lags), key=lambda item: item[1])


def _round_trip(pcm: Pcm, encoder: OpusEncoder) -> Pcm:
    packets = encoder.encode(pcm) + encoder.flush()
    assert all(len(p) <= MAX_PACKET_BYTES for p in packets)
    decoder = OpusDecoder()
    return np.concatenate([decoder.decode(p) for p in packets])


def test_speech_round_trip_keeps_the_signal(wav: Callable[[str], tuple[Pcm, int]]) -> None:
    speech, rate = wav("reply_48k.wav")
    # "audio" keeps the waveform; "voip" adds a high-pass filter that costs waveform SNR but not intelligibility.
    encoder = OpusEncoder(rate, bitrate=32000, application="audio")
    decoded = _round_trip(speech, encoder)
    assert decoded.size >= speech.size
    lag, snr = _aligned_snr(speech, decoded, encoder.lookahead_samples)
    assert abs(lag - encoder.lookahead_samples) <= 8
    assert snr >= MIN_SNR_DB


def test_tone_round_trip_with_default_voip_settings() -> None:
    t = np.arange(48000) / 48000
    tone = np.rint(np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    encoder = OpusEncoder()
    decoded = _round_trip(tone, encoder)
    _lag, snr = _aligned_snr(tone, decoded, encoder.lookahead_samples)
    assert snr >= MIN_SNR_DB


def test_encoder_frames_any_chunking_into_20ms_packets() -> None:
    encoder = OpusEncoder()
    chunk = np.zeros(700, dtype=np.int16)
    packets = [p for _ in range(10) for p in encoder.encode(chunk)]
    assert len(packets) == 7000 // FRAME_SAMPLES
    assert all(packet_duration_samples(p) == FRAME_SAMPLES for p in packets)
    assert encoder.lookahead_samples == 312
    assert OpusEncoder(application="lowdelay").lookahead_samples == 120


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_decoder_gives_one_packet_duration_per_packet_at_any_rate(rate: int, fixtures_dir: Path) -> None:
    decoder = OpusDecoder(rate)
    lines = (fixtures_dir / "sora" / "opus_packets.jsonl").read_text().splitlines()
    decoded = [decoder.decode(base64.b64decode(json.loads(line)["b64"])) for line in lines]
    assert {pcm.size for pcm in decoded} == {rate // 50}
    # The fixture is a 440 Hz tone gated every 0.5 s: its first half second is the tone, at the asked-for rate.
    tone = np.concatenate(decoded)[decoder.delay_samples + rate // 10 : rate // 2]
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(tone.size)))
    assert np.fft.rfftfreq(tone.size, 1 / rate)[int(np.argmax(spectrum))] == pytest.approx(440, abs=rate / tone.size)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"\x03", id="code-3 without frame count"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x78" * (MAX_PACKET_BYTES + 1), id="oversize"),
        pytest.param(b"\xff\xff\xff\xff", id="garbage: 63 frames of 20 ms"),
        pytest.param(b"\x03\xff", id="garbage: code 3, VBR, 63 frames"),
        pytest.param(b"\x01\x01", id="garbage: code 1 with an odd payload"),
    ],
)
def test_malformed_packets_raise_and_the_decoder_keeps_working(packet: bytes) -> None:
    decoder = OpusDecoder()
    assert decoder.decode(SILENT_PACKET).size == FRAME_SAMPLES
    with pytest.raises(OpusError):
        decoder.decode(packet)
    assert decoder.decode(SILENT_PACKET).size == FRAME_SAMPLES


def test_bad_code3_fixture_is_survived(fixtures_dir: Path) -> None:
    decoder = OpusDecoder()
    (line,) = (fixtures_dir / "sora" / "bad_code3.jsonl").read_text().splitlines()
    with pytest.raises(OpusError, match="TOC 0x03"):
        decoder.decode(base64.b64decode(json.loads(line)["b64"]))


def test_packet_durations_from_toc() -> None:
    assert packet_duration_samples(SILENT_PACKET) == 960
    assert packet_duration_samples(b"\x78\x00") == 960  # config 15: hybrid FB 20 ms
    assert packet_duration_samples(b"\x00") == 480  # config 0: SILK NB 10 ms
    assert packet_duration_samples(b"\x09") == 1920  # config 1: SILK NB 20 ms, code 1: two frames
    assert packet_duration_samples(b"\xfb\x03") == 2880  # CELT 20 ms, code 3, three frames
    assert packet_duration_samples(b"\x03") == 0
    assert packet_duration_samples(b"") == 0


def test_unsupported_rates_and_durations() -> None:
    with pytest.raises(OpusError, match="not 22050"):
        OpusEncoder(22050)
    with pytest.raises(OpusError, match="not 44100"):
        OpusDecoder(44100)
    with pytest.raises(OpusError, match="not 12000"):
        OpusDecoder(12000)
    with pytest.raises(OpusError, match="frame duration"):
        OpusEncoder(frame_ms=30)
