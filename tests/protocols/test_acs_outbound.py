"""koe.protocols.acs_outbound: the server's typed outbound messages, their one encoder, and the emulator's lenient
parser (spec §3.1)."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.protocols.acs_outbound import (
    STOP_AUDIO,
    OutboundAudioData,
    OutboundFormatError,
    OutboundMessage,
    StopAudio,
    UnknownOutbound,
    encode,
    parse_outbound,
)

PCM = bytes(range(200))
B64 = base64.b64encode(PCM).decode()

# Every shape official code emits (spec §3.1), each with the message it must mean.
SHAPES = [
    # docs, Python samples
    (f'{{"Kind":"AudioData","AudioData":{{"Data":"{B64}"}},"StopAudio":null}}', OutboundAudioData(PCM)),
    ('{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}', StopAudio()),
    # .NET SDK
    (
        f'{{"Kind":"AudioData","AudioData":{{"Data":"{B64}","Timestamp":"0001-01-01T00:00:00+00:00","Participant":null,'
        '"IsSilent":false},"StopAudio":null}',
        OutboundAudioData(PCM),
    ),
    # Java SDK
    (
        f'{{"kind":"AudioData","audioData":{{"data":"{B64}","timestamp":null,"participant":null,"isSilent":false}},'
        '"stopAudio":null}',
        OutboundAudioData(PCM),
    ),
    ('{"kind":"StopAudio","stopAudio":{}}', StopAudio()),
    # JS SDK 1.6.0: lowercase kind values, and stopAudio:{} riding on an audio frame
    (
        f'{{"kind":"audioData","audioData":{{"data":"{B64}","isSilent":false}},"stopAudio":{{}}}}',
        OutboundAudioData(PCM),
    ),
    ('{"kind":"stopAudio","stopAudio":{}}', StopAudio()),
    # call-center-ai, semantic-kernel
    (f'{{"kind":"AudioData","audioData":{{"data":"{B64}"}}}}', OutboundAudioData(PCM)),
    # art-voice-agent-accelerator: mixed casing
    (f'{{"kind":"AudioData","AudioData":{{"data":"{B64}"}},"StopAudio":null}}', OutboundAudioData(PCM)),
    # kinds ACS does not define
    ('{"Kind":"StartAudio","AudioData":null,"StopAudio":null}', UnknownOutbound("StartAudio")),
    ('{"Kind":"Transcription","Text":"hello"}', UnknownOutbound("Transcription")),
]


@pytest.mark.parametrize(("frame", "expected"), SHAPES)
def test_3_1_every_official_shape_is_understood(frame: str, expected: object) -> None:
    assert parse_outbound(frame) == expected
    assert parse_outbound(frame.encode()) == expected


def test_3_1_a_stop_audio_object_inside_audio_data_is_not_a_stop() -> None:
    frame = json.dumps({"kind": "audioData", "audioData": {"data": B64}, "stopAudio": {}})
    assert isinstance(parse_outbound(frame), OutboundAudioData)


def test_server_encodes_the_documented_pascal_case_shapes() -> None:
    audio = encode(OutboundAudioData(PCM))
    assert audio == f'{{"Kind":"AudioData","AudioData":{{"Data":"{B64}"}},"StopAudio":null}}'
    assert json.loads(audio) == {"Kind": "AudioData", "AudioData": {"Data": B64}, "StopAudio": None}
    assert encode(StopAudio()) == encode(STOP_AUDIO) == '{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}'
    assert json.loads(encode(STOP_AUDIO)) == {"Kind": "StopAudio", "AudioData": None, "StopAudio": {}}


@pytest.mark.parametrize("message", [OutboundAudioData(PCM), OutboundAudioData(b""), STOP_AUDIO])
def test_every_message_koe_sends_round_trips_through_the_emulator_parser(message: OutboundMessage) -> None:
    assert parse_outbound(encode(message)) == message
    assert parse_outbound(encode(message).encode()) == message


def test_server_refuses_odd_length_audio() -> None:
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        encode(OutboundAudioData(b"abc"))


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("nope", "not JSON"),
        ('"AudioData"', "not an object"),
        ('{"AudioData":{"Data":""}}', "no string 'kind'"),
        ('{"Kind":"AudioData"}', "no 'AudioData' object"),
        ('{"Kind":"AudioData","AudioData":{}}', "no base64"),
        ('{"Kind":"AudioData","AudioData":{"Data":"%%%"}}', "not valid base64"),
        ('{"Kind":"AudioData","AudioData":{"Data":"AAAA"}}', None),  # 3 bytes
    ],
)
def test_unusable_frames_raise_outbound_format_error(frame: str, why: str | None) -> None:
    with pytest.raises(OutboundFormatError, match=why or "even number"):
        parse_outbound(frame)


@given(st.binary(min_size=0, max_size=2000).map(lambda b: b[: len(b) // 2 * 2]))
def test_encode_then_parse_round_trips(pcm: bytes) -> None:
    assert parse_outbound(encode(OutboundAudioData(pcm))) == OutboundAudioData(pcm)


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_parser_only_ever_raises_its_typed_error(frame: bytes | str) -> None:
    with contextlib.suppress(OutboundFormatError):
        parse_outbound(frame)


@given(
    st.dictionaries(
        st.sampled_from(["kind", "Kind", "KIND", "audioData", "AudioData", "stopAudio", "x"]),
        st.one_of(st.none(), st.text(max_size=10), st.dictionaries(st.sampled_from(["data", "Data"]), st.text())),
    )
)
def test_parser_only_ever_raises_its_typed_error_on_near_misses(obj: dict[str, object]) -> None:
    with contextlib.suppress(OutboundFormatError):
        parse_outbound(json.dumps(obj))
