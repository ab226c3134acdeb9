"""koe.protocols.acs: inbound ACS media-streaming frames (spec §2), the per-connection rules, and exact encoding."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.protocols.acs import (
    MAX_FRAME_BYTES,
    AcsProtocolError,
    AudioData,
    AudioMetadata,
    DtmfData,
    FrameTooLarge,
    InboundStream,
    MalformedFrame,
    ProtocolViolation,
    TranscriptionData,
    TranscriptionMetadata,
    TranscriptionWord,
    UnknownKind,
    encode,
    frame_bytes,
    iso_timestamp,
    parse_frame,
)
from koe.protocols.websocket import CloseCode

# The docs' own examples (spec §2.2-§2.5), verbatim apart from the shortened audio.
DOC_METADATA = (
    '{"kind":"AudioMetadata","audioMetadata":{"subscriptionId":"89e8cb59-b991-48b0-b154-1db84f16a077",'
    '"encoding":"PCM","sampleRate":16000,"channels":1,"length":640}}'
)
PCM_640 = bytes(range(256)) * 2 + bytes(128)
DOC_AUDIO = (
    '{"kind":"AudioData","audioData":{"timestamp":"2024-11-15T19:16:12.925Z","participantRawID":'
    '"8:acs:3d20e1de-0f28-41c5-84a0-4960fde5f411_0000000b-faeb-c708-99bf-a43a0d0036b0","data":"'
    + base64.b64encode(PCM_640).decode()
    + '","silent":false}}'
)
DOC_TRANSCRIPTION = (
    '{"kind":"TranscriptionData","transcriptionData":{"text":"Hello everyone.","format":"display",'
    '"confidence":0.922650933265686,"offset":212483227,"duration":9600000,"words":[{"text":"hello",'
    '"offset":212483227,"duration":2800000},{"text":"everyone","offset":215283227,"duration":6800000}],'
    '"participantRawID":"4:+000000000000","resultStatus":"Final"}}'
)


def test_2_2_audio_metadata_from_the_docs() -> None:
    message = parse_frame(DOC_METADATA)
    assert message == AudioMetadata("89e8cb59-b991-48b0-b154-1db84f16a077", 16000, "PCM", 1, 640)


def test_2_3_audio_data_from_the_docs() -> None:
    message = parse_frame(DOC_AUDIO)
    assert isinstance(message, AudioData)
    assert message.data == PCM_640
    assert message.timestamp == "2024-11-15T19:16:12.925Z"
    assert message.participant_raw_id is not None
    assert message.participant_raw_id.startswith("8:acs:")
    assert message.silent is False


def test_binary_frames_holding_json_are_accepted() -> None:
    assert parse_frame(DOC_METADATA.encode()) == parse_frame(DOC_METADATA)


def test_2_6_mixed_audio_has_no_participant_and_empty_means_none() -> None:
    frame = {"kind": "AudioData", "audioData": {"timestamp": "t", "data": "AAAAAA==", "participantRawID": ""}}
    message = parse_frame(json.dumps(frame))
    assert isinstance(message, AudioData)
    assert message.participant_raw_id is None


def test_2_8_silent_frame_with_empty_data() -> None:
    frame = '{"kind":"AudioData","audioData":{"timestamp":"t","data":"","silent":true}}'
    assert parse_frame(frame) == AudioData(b"", "t", None, True)


def test_2_4_dtmf() -> None:
    assert parse_frame('{"kind":"DtmfData","dtmfData":{"data":"3"}}') == DtmfData("3")


def test_2_5_transcription_frames() -> None:
    message = parse_frame(DOC_TRANSCRIPTION)
    assert isinstance(message, TranscriptionData)
    assert message.words[1] == TranscriptionWord("everyone", 215283227, 6800000)
    assert message.result_status == "Final"
    assert message.participant_raw_id == "4:+000000000000"
    meta = parse_frame(
        '{"kind":"TranscriptionMetadata","transcriptionMetadata":{"subscriptionId":"s","locale":"en-US"}}'
    )
    assert meta == TranscriptionMetadata("s", "en-US")


def test_unknown_kinds_are_returned_not_raised() -> None:
    assert parse_frame('{"kind":"DtmfMetadata","dtmfMetadata":{}}') == UnknownKind("DtmfMetadata")


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "not an object"),
        ('{"audioData":{}}', "no string 'kind'"),
        ('{"kind":"AudioData"}', "no 'audioData' object"),
        ('{"kind":"AudioData","audioData":{"data":"!!!!"}}', "not valid base64"),
        ('{"kind":"AudioData","audioData":{"data":"AA=="}}', "even number"),
        ('{"kind":"AudioData","audioData":{"data":5}}', "base64 string"),
        ('{"kind":"AudioData","audioData":{"data":"","silent":"yes"}}', "boolean"),
        ('{"kind":"AudioMetadata","audioMetadata":{"sampleRate":"16000"}}', "integer"),
        ('{"kind":"DtmfData","dtmfData":{}}', "no 'data' tone"),
    ],
)
def test_malformed_frames_raise_malformed_frame(frame: str, why: str) -> None:
    with pytest.raises(MalformedFrame, match=why):
        parse_frame(frame)


def test_oversize_frames_are_skipped_unparsed() -> None:
    with pytest.raises(FrameTooLarge):
        parse_frame(" " * (MAX_FRAME_BYTES + 1))
    big_audio = json.dumps({"kind": "AudioData", "audioData": {"data": base64.b64encode(bytes(20000)).decode()}})
    with pytest.raises(FrameTooLarge):
        parse_frame(big_audio)


def test_stream_requires_metadata_first() -> None:
    stream = InboundStream()
    with pytest.raises(ProtocolViolation) as info:
        stream.receive(DOC_AUDIO)
    assert info.value.close_code == CloseCode.POLICY_VIOLATION
    assert "before AudioMetadata" in info.value.reason


def test_stream_can_be_lenient_about_order() -> None:
    stream = InboundStream(require_metadata_first=False)
    assert isinstance(stream.receive(DOC_AUDIO), AudioData)


@pytest.mark.parametrize(
    "payload",
    [
        {"sampleRate": 8000},
        {"sampleRate": 16000, "channels": 2},
        {"sampleRate": 16000, "encoding": "OPUS"},
    ],
)
def test_stream_rejects_unsupported_formats(payload: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation) as info:
        InboundStream().receive(json.dumps({"kind": "AudioMetadata", "audioMetadata": payload}))
    assert info.value.close_code == CloseCode.UNSUPPORTED_DATA


def test_stream_rejects_a_rate_change_but_accepts_repeated_metadata() -> None:
    stream = InboundStream()
    stream.receive(DOC_METADATA)
    stream.receive(DOC_METADATA)
    with pytest.raises(ProtocolViolation):
        stream.receive(DOC_METADATA.replace("16000", "24000"))


def test_stream_skips_out_of_order_frames_per_participant_and_counts() -> None:
    stream = InboundStream()
    stream.receive(DOC_METADATA)

    def frame(ts: str, who: str | None) -> str:
        return encode(AudioData(bytes(640), ts, who))

    stream.receive(frame("2024-11-15T19:16:12.940Z", "4:+1"))
    stream.receive(frame("2024-11-15T19:16:12.920Z", "4:+2"))  # another speaker's clock is independent
    with pytest.raises(MalformedFrame, match="older"):
        stream.receive(frame("2024-11-15T19:16:12.920Z", "4:+1"))
    stream.receive(frame("2024-11-15T19:16:12.960Z", "4:+1"))
    stream.receive('{"kind":"Whatever","whatever":{}}')
    stats = stream.stats.as_dict()
    assert stats["audio_frames"] == 3
    assert stats["out_of_order"] == 1
    assert stats["malformed"] == 1
    assert stats["unknown_kinds"] == {"Whatever": 1}
    assert stats["frames"] == 6


def test_iso_timestamp_has_milliseconds_and_z() -> None:
    assert iso_timestamp(1731698172.925) == "2024-11-15T19:16:12.925Z"
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_frame_sizes() -> None:
    assert frame_bytes(16000) == 640
    assert frame_bytes(24000) == 960


def test_encode_spells_keys_exactly_with_kind_first() -> None:
    text = encode(AudioData(bytes(960), "2024-11-15T19:16:12.925Z", "4:+15551234567", True))
    assert text.startswith('{"kind":"AudioData","audioData":{"timestamp":"2024-11-15T19:16:12.925Z",')
    assert '"participantRawID":"4:+15551234567"' in text
    assert len(text) < 2048, "the .NET samples read one 2048-byte buffer"
    mixed = encode(AudioData(bytes(640), "2024-11-15T19:16:12.925Z"))
    assert "participantRawID" not in mixed
    meta = json.loads(encode(AudioMetadata("sub", 24000)))
    assert meta == {
        "kind": "AudioMetadata",
        "audioMetadata": {
            "subscriptionId": "sub",
            "encoding": "PCM",
            "sampleRate": 24000,
            "channels": 1,
            "length": 960,
        },
    }


def test_encode_transcription_always_has_words_with_offset_and_duration() -> None:
    data = TranscriptionData("hi", "Intermediate", words=(TranscriptionWord("hi", 1, 2),))
    body = json.loads(encode(data))["transcriptionData"]
    assert body["words"] == [{"text": "hi", "offset": 1, "duration": 2}]
    assert body["format"] == "display"
    assert body["resultStatus"] == "Intermediate"


messages = st.one_of(
    st.builds(AudioMetadata, st.text(max_size=40), st.sampled_from([16000, 24000])),
    st.builds(
        AudioData,
        st.binary(max_size=960).map(lambda b: b[: len(b) // 2 * 2]),
        st.just("2024-11-15T19:16:12.925Z"),
        st.one_of(st.none(), st.text(min_size=1, max_size=60)),
        st.booleans(),
    ),
    st.builds(DtmfData, st.sampled_from("0123456789*#ABCD"), st.just("2024-11-15T19:16:12.925Z"), st.just("4:+1")),
)


@given(messages)
def test_encode_then_parse_round_trips(message: AudioMetadata | AudioData | DtmfData) -> None:
    parsed = parse_frame(encode(message))
    if isinstance(message, AudioMetadata):
        assert parsed == AudioMetadata(
            message.subscription_id, message.sample_rate, length=frame_bytes(message.sample_rate)
        )
    else:
        assert parsed == message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
kinds = st.sampled_from(["AudioMetadata", "AudioData", "DtmfData", "TranscriptionData", "TranscriptionMetadata", "x"])


@given(kinds, json_values)
def test_parser_only_ever_raises_typed_errors_on_any_json(kind: str, payload: object) -> None:
    key = kind[0].lower() + kind[1:]
    stream = InboundStream(require_metadata_first=False)
    for frame in (json.dumps({"kind": kind, key: payload}), json.dumps(payload)):
        with contextlib.suppress(AcsProtocolError):
            stream.receive(frame)


@given(st.binary(max_size=300))
def test_parser_only_ever_raises_typed_errors_on_any_bytes(frame: bytes) -> None:
    with contextlib.suppress(AcsProtocolError):
        InboundStream().receive(frame)
