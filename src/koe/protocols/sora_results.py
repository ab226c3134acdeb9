"""Sora audio streaming, the response side: the gateway's JSON result objects, built and read back (sans-I/O).

The gateway answers each request with a stream of JSON objects, one per DATA frame, each ending in `\\n`. Build them
with `service_test_result()`, `dump_result()`, `koe_result()` or `error_result()` and turn each into its line with
`encode()`. Field names and order follow the reference gateway (spec §2.5) so byte-level comparisons hold; koe's
own transcription results have `type: "koe"`.

`ResultStreamReader` is the client side (the simulator, tests): `feed()` the response DATA and it returns every
complete JSON value so far. It reads concatenated JSON values, not lines, because the reference gateway writes some
error objects without a newline (and writes some twice); a value larger than `max_value_bytes` or text that is not
a JSON object raises `ResultStreamError`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_RESULT_BYTES = 1 << 20
"""No single result object from a gateway is anywhere near 1 MiB; a larger one means a broken stream."""
AUDIO_CHANNEL = "ch_0"
"""The reference gateway's `channel_id` in test results is the audio channel, not the Sora channel."""


def encode(result: dict[str, Any]) -> bytes:
    """One result as the line that goes into its own DATA frame: compact JSON, UTF-8, then `\\n`."""
    return orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE)


def service_test_result(payload_bytes: int) -> dict[str, Any]:
    """The `test` service's answer to one packet (the length of the Opus payload, header stripped)."""
    return {"channel_id": AUDIO_CHANNEL, "message": f"n: {payload_bytes}", "type": "test"}


def dump_result(
    *,
    timestamp_ms: int,
    channel_id: str,
    connection_id: str,
    language_code: str,
    sample_rate: int,
    channel_count: int,
    payload_b64: str,
) -> dict[str, Any]:
    """The `dump` service's line for one packet; `timestamp_ms` is when the gateway received it (UNIX ms)."""
    return {
        "timestamp": timestamp_ms,
        "channel_id": channel_id,
        "connection_id": connection_id,
        "language_code": language_code,
        "sample_rate": sample_rate,
        "channel_count": channel_count,
        "payload": payload_b64,
    }


def koe_result(
    *,
    channel_id: str,
    connection_id: str,
    result_id: str,
    is_final: bool,
    message: str,
    language: str,
    start_ms: int,
    end_ms: int,
) -> dict[str, Any]:
    """A transcription result. `start_ms`/`end_ms` are on the connection's audio timeline (from its first packet)."""
    return {
        "channel_id": channel_id,
        "connection_id": connection_id,
        "result_id": result_id,
        "is_final": is_final,
        "language": language,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "message": message,
        "type": "koe",
    }


def error_result(reason: str) -> dict[str, Any]:
    return {"reason": reason, "type": "error"}


def http_error_body(message: str, reason: str | None = None) -> bytes:
    """The JSON body of an HTTP error status: the reference gateway's `{"message": …}`, plus koe's `reason`."""
    body: dict[str, Any] = {"message": message}
    if reason:
        body["reason"] = reason
    return encode(body)


class ResultStreamError(ValueError):
    """The response body is not a stream of JSON objects."""


class ResultStreamReader:
    """Incremental reader of concatenated JSON objects (whitespace between them optional)."""

    def __init__(self, max_value_bytes: int = MAX_RESULT_BYTES) -> None:
        self.max_value_bytes = max_value_bytes
        self._buffer = bytearray()
        self._scan = 0  # how far the current value has been scanned
        self._depth = 0
        self._in_string = False
        self._escape = False

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        values: list[Any] = []
        while True:
            value_end = self._find_end()
            if value_end is None:
                if len(self._buffer) > self.max_value_bytes:
                    raise ResultStreamError(f"a result is longer than {self.max_value_bytes} bytes")
                return values
            raw = bytes(self._buffer[:value_end])
            del self._buffer[:value_end]
            self._scan = 0
            try:
                values.append(json.loads(raw))
            except ValueError as exc:
                raise ResultStreamError(f"invalid JSON in the result stream: {exc}") from exc

    def end(self) -> None:
        """At END_STREAM: anything left but whitespace is a cut-off value."""
        if self._buffer.strip():
            raise ResultStreamError(f"the stream ended inside a JSON value ({len(self._buffer)} bytes left)")

    def _find_end(self) -> int | None:
        # Scans bytes once, carrying the state across feeds; JSON's structural bytes are all ASCII, so UTF-8
        # continuation bytes inside strings never look like quotes or braces.
        buffer = self._buffer
        i = self._scan
        if self._depth == 0:
            while i < len(buffer) and buffer[i] in b" \t\r\n":
                i += 1
            del buffer[:i]
            i = 0
            if not buffer:
                self._scan = 0
                return None
            if buffer[0] not in b"{[":
                raise ResultStreamError(f"expected a JSON object, got {bytes(buffer[:16])!r}")
        n = len(buffer)
        while i < n:
            byte = buffer[i]
            i += 1
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif byte == 0x5C:  # backslash
                    self._escape = True
                elif byte == 0x22:  # quote
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in b"{[":
                self._depth += 1
            elif byte in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    return i
        self._scan = i
        return None
