"""What the Sora door does with a connection's packets: the service interface, and the `test` and `dump` services.

A service is chosen per route (`/speech` uses `sora.service`; `/test` and `/dump` are fixed). For each request the
door calls `service.check(request)` (a reason to refuse it with 400, or None) and then `service.open(request,
sink)`, which returns a `ServiceStream`: the door feeds it `packet()` for every de-framed packet (injected silent
packets included), then calls `finish()` at END_STREAM or `abort()` when the client vanishes or the stream fails.
Results go back through the `ResultSink` as JSON-ready dicts, one per DATA frame.

`test` and `dump` behave as the reference gateway's do (spec §3.3, §3.4); `dump` can also write each
connection's audio as an Ogg Opus file laid out as the reference gateway's `opus2ogg` writes it (spec §2.4).
"""

from __future__ import annotations

import base64
import logging
import re
import time
from pathlib import Path
from typing import IO, Any, Protocol

from koe.audio.ogg import PION_VENDOR, OggError, OggOpusWriter
from koe.protocols.sora import Packet, SoraRequest
from koe.protocols.sora_results import dump_result, encode, service_test_result

log = logging.getLogger("koe.sora")

SUZU_PRE_SKIP = 3840
"""OpusHead pre-skip that the reference gateway (pion) writes: 80 ms at 48 kHz."""
SUZU_VENDOR = PION_VENDOR
"""pion writes a 5-byte vendor string, its terminating NUL included."""
SUZU_INITIAL_GRANULE = 1
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class ResultSink(Protocol):
    def emit(self, result: dict[str, Any]) -> None:
        """Send one result object (its own DATA frame, newline-terminated)."""

    def fail(self, reason: str, kind: str = "service") -> None:
        """Send `{"reason": …, "type": "error"}` once and end the response; the stream is over."""

    def start_response(self) -> None:
        """For a stream whose `defers_response` is true: the upstream is connected, send the 200 HEADERS now."""

    def refuse(self, status: int) -> None:
        """For a stream whose `defers_response` is true: the upstream connect failed; answer `status`, empty body."""

    def publish(self, event: dict[str, Any]) -> None:
        """Tell the call monitor (`koe.server.calls.registry`) about an engine event, with this connection as
        participant."""


class ServiceStream(Protocol):
    def packet(self, packet: Packet) -> None: ...

    async def finish(self) -> None:
        """The body ended: produce the last results, then return (the door then ends the response)."""

    def abort(self) -> None:
        """Stop at once; nothing more can be sent."""


class Service(Protocol):
    name: str
    transcribes: bool
    """Whether its streams use koe's STT engine (and so count against `stt.max_streams`)."""

    def check(self, request: SoraRequest) -> str | None: ...

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream: ...


class TestService:
    """One `{"channel_id":"ch_0","message":"n: <bytes>","type":"test"}` line per packet. Accepts any language."""

    name = "test"
    transcribes = False

    def check(self, request: SoraRequest) -> str | None:
        return None

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream:
        return _TestStream(sink)


class _TestStream:
    def __init__(self, sink: ResultSink) -> None:
        self._sink = sink

    def packet(self, packet: Packet) -> None:
        self._sink.emit(service_test_result(len(packet.payload)))

    async def finish(self) -> None:
        return None

    def abort(self) -> None:
        return None


class DumpService:
    """One dump line per packet, answered and appended to `dump_file` when set; optionally an Ogg file per stream.

    The reference gateway fails every request when `dump_file` is unset (spec §2.8 #9); koe then just answers.
    """

    name = "dump"
    transcribes = False

    def __init__(
        self,
        dump_file: Path | None = None,
        ogg_dir: Path | None = None,
        sample_rate: int = 48000,
        channel_count: int = 1,
        on_malformed: Any = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.channel_count = channel_count
        self.ogg_dir = ogg_dir
        self._on_malformed = on_malformed
        self._file: IO[bytes] | None = None
        if dump_file is not None:
            dump_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = dump_file.open("ab")  # kept open for the service's lifetime; close()
        if ogg_dir is not None:
            ogg_dir.mkdir(parents=True, exist_ok=True)

    def check(self, request: SoraRequest) -> str | None:
        return None

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream:
        ogg_path = None
        if self.ogg_dir is not None:
            ogg_path = self.ogg_dir / f"{_safe(request.session_id)}-{_safe(request.connection_id)}.ogg"
        return _DumpStream(self, request, sink, ogg_path)

    def write_line(self, line: bytes) -> None:
        if self._file is not None:
            self._file.write(line)
            self._file.flush()

    def malformed(self) -> None:
        if self._on_malformed is not None:
            self._on_malformed()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _DumpStream:
    def __init__(self, service: DumpService, request: SoraRequest, sink: ResultSink, ogg_path: Path | None) -> None:
        self._service = service
        self._request = request
        self._sink = sink
        self._ogg: OggOpusWriter | None = None
        self._ogg_file: IO[bytes] | None = None
        if ogg_path is not None:
            self._ogg = OggOpusWriter(
                channels=service.channel_count,
                pre_skip=SUZU_PRE_SKIP,
                input_rate=service.sample_rate,
                vendor=SUZU_VENDOR,
                initial_granule=SUZU_INITIAL_GRANULE,
            )
            self._ogg_file = ogg_path.open("wb")  # closed in finish()/abort()
            self._ogg_path = ogg_path
            self._ogg_started = False

    def packet(self, packet: Packet) -> None:
        request = self._request
        result = dump_result(
            timestamp_ms=time.time_ns() // 1_000_000,
            channel_id=request.channel_id,
            connection_id=request.connection_id,
            language_code=request.language_code,
            sample_rate=self._service.sample_rate,
            channel_count=self._service.channel_count,
            payload_b64=base64.b64encode(packet.payload).decode("ascii"),
        )
        self._service.write_line(encode(result))
        self._sink.emit(result)
        if self._ogg is not None and self._ogg_file is not None:
            self._write_ogg(packet.payload)

    def _write_ogg(self, payload: bytes) -> None:
        assert self._ogg is not None
        assert self._ogg_file is not None
        # Headers go out with the first packet, as the reference gateway writes them (lazily, PR #207).
        head = b"" if self._ogg_started else self._ogg.header()
        self._ogg_started = True
        try:
            page = self._ogg.write(payload)
        except OggError as exc:
            # A malformed packet (e.g. a 1-byte code-3 TOC, which crashes the reference gateway) is left out of
            # the file; the JSON dump line still records it.
            log.info("dump: packet left out of %s: %s", self._ogg_path.name, exc)
            self._service.malformed()
            page = b""
        self._ogg_file.write(head + page)

    async def finish(self) -> None:
        self._close_ogg()

    def abort(self) -> None:
        self._close_ogg()

    def _close_ogg(self) -> None:
        if self._ogg_file is not None:
            # Like pion's writer: no EOS page, so the file matches the reference gateway's byte layout.
            self._ogg_file.close()
            self._ogg_file = None


def _safe(name: str) -> str:
    return _SAFE_NAME.sub("_", name)[:128] or "unknown"
