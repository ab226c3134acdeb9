"""Hypercorn's WebSocket closes, as koe patches them (`koe.net.close_frames`): koe's close frame reaches a client that
was still sending when koe closed, instead of being lost to a TCP reset (the client saw 1006, not koe's code), and
a frame that cannot be parsed is answered with a close frame saying why."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct

import orjson
import pytest

from koe.config import load_settings
from tests.server.acs.support import koe_server

BURST_BYTES = 4 * 1024 * 1024
"""What the client has sent after the violating message, still unread by koe when it closes."""


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x1f\x2e\x3d\x4c"  # fixed, so the parameters (and pytest-xdist's test ids) are the same each run
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _close_frame(data: bytes) -> tuple[int, str] | None:
    """The code and reason of the first close frame in `data` (server frames are unmasked), None if there is none."""
    at = data.index(b"\r\n\r\n") + 4
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = struct.unpack("!H", data[at : at + 2])[0], at + 2
        elif size == 127:
            size, at = struct.unpack("!Q", data[at : at + 8])[0], at + 8
        payload = data[at : at + size]
        at += size
        if opcode == 0x8 and len(payload) >= 2:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    return None


async def _upgraded(base: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b"HTTP/1.1 101\r\n\r\n"
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), 5.0):
            received += chunk
    return received


async def test_a_client_still_sending_when_koe_closes_gets_the_close_frame() -> None:
    async with koe_server(load_settings(overrides={"acs": {"mode": "echo"}})) as (base, _app):
        reader, writer = await _upgraded(base, "/acs/media")
        unsupported = {"kind": "AudioMetadata", "audioMetadata": {"encoding": "PCM", "sampleRate": 14000}}
        frame = _masked(b"x" * 60_000)
        writer.write(_masked(orjson.dumps(unsupported)) + frame * (BURST_BYTES // len(frame)))
        with contextlib.suppress(ConnectionError):  # koe closes while the burst is still going out
            await writer.drain()
        await asyncio.sleep(0.5)  # koe has closed by now, with most of the burst unread
        received = await _until_closed(reader)
        writer.close()
    assert _close_frame(received) == (1003, "unsupported sampleRate 14000 (need 16000 or 24000)")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_masked(b"{}", opcode=0x3), 1002),  # a reserved opcode
        (_masked(b'{"type": "\xff"}'), 1007),  # a text message that is not UTF-8
        (bytes([0x81, 0x02]) + b"{}", 1002),  # a client frame without a mask
    ],
    ids=["reserved-opcode", "invalid-utf8", "unmasked"],
)
async def test_a_frame_that_cannot_be_parsed_is_answered_with_a_close_frame(frame: bytes, code: int) -> None:
    async with koe_server(load_settings()) as (base, _app):
        reader, writer = await _upgraded(base, "/v1/realtime?model=m")
        writer.write(frame)
        received = await _until_closed(reader)
        writer.close()
    closed = _close_frame(received)
    assert closed is not None and closed[0] == code, received[-200:]
