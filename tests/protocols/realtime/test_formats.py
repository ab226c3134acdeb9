"""Spec §3 / §11.12: the session's audio formats as (codec, rate), converting to and from PCM16, and delta splitting."""

from __future__ import annotations

import numpy as np
import pytest

from koe.protocols.realtime import AudioFormat, RealtimeError, decode_audio, encode_audio, split_audio
from koe.protocols.realtime.formats import (
    G711_ALAW,
    G711_ULAW,
    PCM16_8K,
    PCM16_16K,
    PCM16_24K,
    ga_format,
    input_format,
    output_format_from_name,
    output_format_name,
)

SINE = (np.sin(np.arange(800) * 2 * np.pi * 440 / 8000) * 12000).astype(np.int16)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("pcm16", PCM16_24K),
        ("pcm16_16000hz", PCM16_16K),
        ("pcm16_8000hz", PCM16_8K),
        ("g711_ulaw", G711_ULAW),
        ("g711_alaw", G711_ALAW),
    ],
)
def test_output_names_round_trip(name: str, fmt: AudioFormat) -> None:
    assert output_format_from_name(name) == fmt
    assert output_format_name(fmt) == name


def test_legacy_hyphenated_names_and_unknown_names() -> None:
    assert output_format_from_name("pcm16-16000hz") == PCM16_16K
    assert output_format_from_name("pcm16-8000hz") == PCM16_8K
    assert output_format_from_name("opus") is None


def test_input_rates_and_ga_objects() -> None:
    assert input_format("pcm16", None) == PCM16_24K
    assert input_format("pcm16", 16000) == PCM16_16K
    assert input_format("g711_ulaw", None) == G711_ULAW
    assert ga_format(PCM16_24K) == {"type": "audio/pcm", "rate": 24000}
    assert ga_format(G711_ULAW) == {"type": "audio/pcmu"}
    assert ga_format(G711_ALAW) == {"type": "audio/pcma"}


def test_sizes() -> None:
    assert PCM16_24K.bytes_for_ms(20) == 960  # the quickstart's 20 ms append
    assert PCM16_16K.bytes_for_ms(20) == 640
    assert G711_ULAW.bytes_for_ms(20) == 160
    assert PCM16_24K.duration_ms(48000) == 1000.0
    assert G711_ALAW.duration_ms(8000) == 1000.0


@pytest.mark.parametrize("fmt", [PCM16_24K, PCM16_8K, G711_ULAW, G711_ALAW])
def test_encode_decode(fmt: AudioFormat) -> None:
    wire = encode_audio(SINE, fmt)
    assert len(wire) == SINE.size * fmt.sample_bytes
    back = decode_audio(wire, fmt)
    assert back.dtype == np.int16
    if fmt.codec == "pcm16":
        assert np.array_equal(back, SINE)
    else:  # companding keeps a tone within a few percent of full scale
        assert np.max(np.abs(back.astype(np.int32) - SINE)) < 12000 * 0.04


def test_decode_rejects_torn_pcm16_samples() -> None:
    with pytest.raises(RealtimeError) as info:
        decode_audio(b"\x00\x01\x02", PCM16_24K)
    assert (info.value.code, info.value.param) == ("invalid_value", "audio")
    assert decode_audio(b"\xff\xff\xff", G711_ULAW).tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", [PCM16_24K, PCM16_16K, G711_ULAW])
def test_split_keeps_sample_boundaries_and_every_byte(fmt: AudioFormat) -> None:
    data = bytes(range(256)) * 97 * fmt.sample_bytes
    pieces = split_audio(data, fmt, max_ms=37)
    assert b"".join(pieces) == data
    assert all(len(p) % fmt.sample_bytes == 0 for p in pieces)
    assert max(len(p) for p in pieces) == fmt.bytes_for_ms(37)
    assert split_audio(b"", fmt) == []
    assert split_audio(data[: fmt.sample_bytes], fmt, max_ms=0.001) == [data[: fmt.sample_bytes]]
