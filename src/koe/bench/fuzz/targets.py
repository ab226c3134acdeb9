"""What `koe bench fuzz` feeds: every sans-I/O parser koe has, each with real seeds and its typed rejections.

`targets()` builds them, fresh state each time. A `Target` has a `name`, the `seeds` its inputs are mutated from,
`feed(data)`, which runs the parser as the door runs it (a stream's state included: one `InboundStream`, one Opus
decoder, one framing reader per stream) and raises only the parser's own protocol errors (`rejects`) for bad
input, and an optional `fix(data)` that repairs what would stop every input at the door (the Ogg pages' CRCs). Any
other exception is a crash.
"""

from __future__ import annotations

import base64
import os
import random
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from koe.audio._oggpage import ogg_crc, parse_page_header
from koe.audio.ogg import OggError, OggOpusReader, OggOpusWriter
from koe.audio.opus import OPUS_RATE, OpusDecoder, OpusEncoder, OpusError
from koe.config import ConfigError, Settings, load_settings, masked_dump, to_toml
from koe.protocols import acs
from koe.protocols.acs_outbound import STOP_AUDIO, OutboundAudioData, OutboundFormatError, parse_outbound
from koe.protocols.acs_outbound import encode as encode_outbound
from koe.protocols.realtime import (
    Dialect,
    RealtimeError,
    SessionConfig,
    SessionUpdate,
    TranscriptionSessionUpdate,
    apply_session_update,
    parse_client_event,
)
from koe.protocols.realtime.client import RealtimeClientError, parse_server_event
from koe.protocols.sora import (
    HeaderPacketReader,
    RawPacketReader,
    SoraProtocolError,
    SoraRequest,
    frame_packet,
    parse_request_headers,
    request_headers,
)
from koe.protocols.sora_results import ResultStreamError, ResultStreamReader, encode, error_result, koe_result


@dataclass
class Target:
    name: str
    seeds: list[bytes]
    feed: Callable[[bytes], object]
    rejects: tuple[type[BaseException], ...]
    fix: Callable[[bytes, random.Random], bytes] | None = None
    notes: str = ""
    stats: dict[str, int] = field(default_factory=dict)


def _json(*objects: object) -> list[bytes]:
    return [orjson.dumps(obj) for obj in objects]


def _pcm_b64(ms: int, rate: int = 24000) -> str:
    tone = (np.sin(np.arange(rate * ms // 1000) * 0.05) * 8000).astype("<i2")
    return base64.b64encode(tone.tobytes()).decode()


# --- Realtime client events, per dialect ---------------------------------------------------------------------------

_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
_COMMON_EVENTS = [
    {"type": "input_audio_buffer.append", "audio": _pcm_b64(20), "event_id": "e1"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "output_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "previous_item_id": None,
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": _pcm_b64(40)}]},
    },
    {"type": "conversation.item.retrieve", "item_id": "item_abc"},
    {"type": "conversation.item.delete", "item_id": "item_abc"},
    {"type": "conversation.item.truncate", "item_id": "item_abc", "content_index": 0, "audio_end_ms": 1500},
    {
        "type": "response.create",
        "response": {
            "instructions": "Be brief.",
            "tools": [_TOOL],
            "tool_choice": "required",
            "conversation": "none",
            "metadata": {"topic": "weather"},
            "input": [{"type": "item_reference", "id": "item_abc"}],
            "max_output_tokens": 64,
        },
    },
    {"type": "response.cancel", "response_id": "resp_1"},
]
_SESSIONS: dict[Dialect, dict[str, object]] = {
    Dialect.GA: {
        "type": "realtime",
        "instructions": "You are helpful.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
                "transcription": {"model": "whisper-1", "language": "en"},
                "noise_reduction": {"type": "near_field"},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy", "speed": 1.0},
        },
        "tools": [_TOOL],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    },
    Dialect.BETA: {
        "modalities": ["text", "audio"],
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
        "tools": [_TOOL],
        "temperature": 0.7,
        "max_response_output_tokens": 200,
    },
    Dialect.AZURE: {
        "modalities": ["text", "audio"],
        "voice": {"name": "en-US-Ava:DragonHDLatestNeural", "type": "azure-standard", "temperature": 0.8},
        "turn_detection": {
            "type": "azure_semantic_vad",
            "end_of_utterance_detection": {"model": "semantic_detection_v1", "threshold": 0.01},
        },
        "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
        "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
        "input_audio_sampling_rate": 16000,
    },
}
_AZURE_EVENTS = [
    {"type": "input_audio.turn.start", "turn_id": "t1"},
    {"type": "input_audio.turn.append", "turn_id": "t1", "audio": _pcm_b64(20)},
    {"type": "input_audio.turn.end", "turn_id": "t1"},
    {"type": "input_audio.turn.cancel", "turn_id": "t1"},
    {"type": "input_audio.clear"},
    {"type": "input_text.delta", "delta": "Hel"},
    {"type": "input_text.done", "text": "Hello"},
    {"type": "transcription_session.update", "session": {"input_audio_transcription": {"model": "azure-speech"}}},
    {"type": "session.avatar.connect", "client_sdp": "v=0"},
    {"type": "mcp_approval_response", "approval_request_id": "a1", "approve": True},
]


def _realtime_seeds(dialect: Dialect) -> list[bytes]:
    events = [*_COMMON_EVENTS, {"type": "session.update", "session": _SESSIONS[dialect]}]
    if dialect is Dialect.AZURE:
        events += _AZURE_EVENTS
    return _json(*events)


def _realtime_target(dialect: Dialect) -> Target:
    config = SessionConfig(model="koe")

    def feed(data: bytes) -> object:
        event = parse_client_event(data, dialect)
        if isinstance(event, SessionUpdate | TranscriptionSessionUpdate):
            return apply_session_update(config, event.patch)  # the door's next step
        return event

    return Target(f"realtime_client_events_{dialect.value}", _realtime_seeds(dialect), feed, (RealtimeError,))


def _session_update_target() -> Target:
    """session.update alone, every dialect's shape into every dialect, merged twice (a patch on a patched config)."""
    seeds = _json(*({"type": "session.update", "session": session} for session in _SESSIONS.values()))
    dialects = list(Dialect)
    counter = [0]

    def feed(data: bytes) -> object:
        counter[0] += 1
        dialect = dialects[counter[0] % len(dialects)]
        event = parse_client_event(data, dialect)
        if not isinstance(event, SessionUpdate | TranscriptionSessionUpdate):
            return event
        once = apply_session_update(SessionConfig(model="koe"), event.patch)
        return apply_session_update(once, event.patch)

    return Target("realtime_session_update", seeds, feed, (RealtimeError,))


# --- ACS -------------------------------------------------------------------------------------------------------------

_STAMP = acs.iso_timestamp(1_700_000_000.0)


def _acs_seeds() -> list[bytes]:
    frames = [
        acs.encode(acs.AudioMetadata("89e8cb59-b991-48b0-b154-1db84f16a077", 16000)),
        acs.encode(acs.AudioData(bytes(640), _STAMP)),
        acs.encode(acs.AudioData(bytes(range(256)) * 2 + bytes(128), _STAMP, "4:+15551234567", silent=False)),
        acs.encode(acs.DtmfData("5", _STAMP, "4:+15551234567")),
        acs.encode(acs.TranscriptionMetadata("sub", "en-US", "call", "corr")),
    ]
    transcription = {
        "kind": "TranscriptionData",
        "transcriptionData": {
            "text": "Hello everyone.",
            "format": "display",
            "confidence": 0.92,
            "offset": 212483227,
            "duration": 9600000,
            "words": [{"text": "hello", "offset": 212483227, "duration": 2800000}],
            "participantRawID": "4:+000000000000",
            "resultStatus": "Final",
        },
    }
    return [frame.encode() if isinstance(frame, str) else frame for frame in frames] + _json(transcription)


class _Calls:
    """ACS connections, one after another: each takes `FRAMES_PER_CALL` inputs after its `AudioMetadata`."""

    FRAMES_PER_CALL = 64

    def __init__(self) -> None:
        self.metadata = acs.encode(acs.AudioMetadata("sub", 16000))
        self.stream = acs.InboundStream()
        self.fed = 0

    def feed(self, data: bytes) -> object:
        if self.fed % self.FRAMES_PER_CALL == 0:
            self.stream = acs.InboundStream()
            self.stream.receive(self.metadata)
        self.fed += 1
        # Text frames (the transport hands over valid UTF-8 only) and binary frames, by turns.
        return self.stream.receive(data.decode() if self.fed % 2 else data)


def _acs_inbound_target() -> Target:
    return Target(
        "acs_inbound",
        _acs_seeds(),
        _Calls().feed,
        (acs.AcsProtocolError, UnicodeDecodeError),
        notes="UnicodeDecodeError is the transport's: a text frame that is not UTF-8 never reaches the parser",
    )


def _acs_outbound_target() -> Target:
    seeds = [encode_outbound(OutboundAudioData(bytes(960))).encode(), encode_outbound(STOP_AUDIO).encode()]
    seeds += _json({"kind": "audioData", "audioData": {"data": _pcm_b64(20), "isSilent": False}, "stopAudio": {}})
    return Target("acs_outbound_emulator", seeds, parse_outbound, (OutboundFormatError,))


# --- Sora ------------------------------------------------------------------------------------------------------------


def _opus_seeds() -> list[bytes]:
    encoder = OpusEncoder(OPUS_RATE)
    tone = (np.sin(np.arange(OPUS_RATE // 5) * 0.03) * 9000).astype(np.int16)
    packets = encoder.encode(tone) + encoder.flush()
    return [*packets[:8], b"\xfc\xff\xfe", b"\x03", b"\xf8\xff\xfe"]  # Sora's silent packet; Suzu's TOC-3 crasher


def _sora_header_target() -> Target:
    packets = _opus_seeds()
    seeds = [b"".join(frame_packet(p, 1_795_422_666_893_554 + i * 20_000, i) for i, p in enumerate(packets))]
    seeds += [frame_packet(packets[0])[:20] + b"\xff" * 4, frame_packet(b"")]

    def feed(data: bytes) -> object:
        reader, got = HeaderPacketReader(), []
        cut = len(data) // 3
        for chunk in (data[:cut], data[cut : cut * 2], data[cut * 2 :]):  # DATA frames split anywhere
            got += reader.feed(chunk)
        reader.end()
        return got

    return Target("sora_framing_header", seeds, feed, (SoraProtocolError,))


def _sora_raw_target() -> Target:
    def feed(data: bytes) -> object:
        reader = RawPacketReader()
        got = reader.feed(data)
        reader.end()
        return got

    return Target("sora_framing_raw", _opus_seeds(), feed, (SoraProtocolError,))


def _sora_headers_target() -> Target:
    request = SoraRequest("sora", "SESSION0000000000000000000A", "CONNECTION000000000000000AB", "ja-JP", "client-1")
    seeds = [orjson.dumps(request_headers(request))]

    def feed(data: bytes) -> object:
        pairs = orjson.loads(data)  # the fuzzed header list, as h2 hands it over (names and values as text)
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
        ):
            return None  # h2 would not deliver this shape: not a header list
        return parse_request_headers([(name, value) for name, value in pairs])

    return Target("sora_request_headers", seeds, feed, (SoraProtocolError, orjson.JSONDecodeError))


def _opus_target() -> Target:
    decoder = OpusDecoder(16000)  # one per stream, as the koe and relay services keep it

    def feed(data: bytes) -> object:
        return decoder.decode(data)

    return Target("opus_packets", _opus_seeds(), feed, (OpusError,))


def _ogg_seeds() -> list[bytes]:
    writer = OggOpusWriter(pre_skip=3840, initial_granule=1)
    stream = writer.header() + b"".join(writer.write(p) for p in _opus_seeds()[:6]) + writer.close()
    return [stream]


def _repair_crcs(data: bytes, rng: random.Random) -> bytes:
    """Recompute every page's CRC, most of the time: otherwise nearly every mutation stops at the CRC check."""
    if rng.random() < 0.25:
        return data
    buf = bytearray(data)
    at = buf.find(b"OggS")
    while at != -1:
        try:
            header = parse_page_header(buf, at)
        except OggError:
            break  # the reader will say so
        if header is None or at + header.size > len(buf):
            break
        buf[at + 22 : at + 26] = b"\0\0\0\0"
        buf[at + 22 : at + 26] = struct.pack("<I", ogg_crc(bytes(buf[at : at + header.size])))
        at = buf.find(b"OggS", at + header.size)
    return bytes(buf)


def _ogg_target() -> Target:
    def feed(data: bytes) -> object:
        reader = OggOpusReader()
        cut = len(data) // 2
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        reader.close()
        return got

    return Target("ogg_opus_reader", _ogg_seeds(), feed, (OggError,), _repair_crcs)


# --- results readers ---------------------------------------------------------------------------------------------


def _sora_results_target() -> Target:
    result = koe_result(
        channel_id="sora",
        connection_id="C",
        result_id="r1",
        is_final=True,
        message="こんにちは",
        language="ja-JP",
        start_ms=0,
        end_ms=900,
    )
    seeds = [encode(result) + encode(error_result("UPSTREAM-DISCONNECTED: x"))[:-1] + b'{"type":"test"}\n']

    def feed(data: bytes) -> object:
        reader = ResultStreamReader(max_value_bytes=16 * 1024)
        cut = len(data) // 2
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        reader.end()
        return got

    return Target("sora_results_reader", seeds, feed, (ResultStreamError,))


def _realtime_server_events_target() -> Target:
    seeds = _json(
        {"type": "session.created", "session": {"id": "sess_1"}},
        {"type": "input_audio_buffer.speech_started", "item_id": "item_1", "audio_start_ms": 100},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "item_1", "audio_end_ms": 900},
        {"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_1", "delta": "Hel"},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_1", "transcript": "Hi"},
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "i", "error": {"message": "x"}},
        {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": _pcm_b64(20)},
        {"type": "response.done", "response": {"id": "r", "status": "completed", "status_details": None}},
        {"type": "error", "error": {"type": "invalid_request_error", "code": "x", "message": "bad"}},
    )
    return Target("realtime_server_events_reader", seeds, parse_server_event, (RealtimeClientError,))


# --- configuration -------------------------------------------------------------------------------------------------


def _config_target() -> Target:
    """A TOML config file, read as `koe serve --config` reads it."""
    full = to_toml(masked_dump(Settings())).encode()
    small = b'[server]\nport = 8000\napi_keys = ["k"]\n[sora]\nport = 5890\nservice = "relay"\nmax_retry = 2\n'
    folder = Path(tempfile.mkdtemp(prefix="koe-fuzz-"))
    path = folder / "koe.toml"

    def feed(data: bytes) -> object:
        path.write_bytes(data)
        return load_settings(path)

    target = Target("config_toml", [full, small], feed, (ConfigError,))
    target.notes = f"each input written to {path} and read by load_settings()"
    os.environ.pop("KOE_CONFIG", None)
    return target


def targets() -> list[Target]:
    return [
        *(_realtime_target(dialect) for dialect in Dialect),
        _session_update_target(),
        _acs_inbound_target(),
        _acs_outbound_target(),
        _sora_headers_target(),
        _sora_raw_target(),
        _sora_header_target(),
        _opus_target(),
        _ogg_target(),
        _sora_results_target(),
        _realtime_server_events_target(),
        _config_target(),
    ]
