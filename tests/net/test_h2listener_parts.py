"""The Sora listener's sans-I/O parts: the frame scanner (GOAWAY, FRAME_SIZE) and the HTTP/1.1 exchange."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.net._h2frames import DataFrame, FrameScanner
from koe.net._http1 import Http1Error, Http1Exchange
from koe.net.h2types import Response

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, payload: bytes, stream_id: int = 1) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + stream_id.to_bytes(4, "big") + payload


@given(
    st.lists(st.tuples(st.sampled_from([0, 1, 4, 8]), st.binary(max_size=40)), max_size=8),
    st.booleans(),
    st.lists(st.integers(1, 30), max_size=30),
)
def test_scanner_stops_exactly_at_goaway(frames: list[tuple[int, bytes]], goaway: bool, cuts: list[int]) -> None:
    before = PREFACE + b"".join(frame(k, p) for k, p in frames)
    stream = before + (frame(7, bytes(8), 0) + frame(0, b"after") if goaway else b"")
    scanner = FrameScanner(1 << 20)
    passed, stop, pos = b"", None, 0
    fast: list[DataFrame] = []
    for size in [*cuts, len(stream)]:
        pieces, stop = scanner.feed(stream[pos : pos + size])
        passed += b"".join(p.raw if isinstance(p, DataFrame) else p for p in pieces)
        fast += [p for p in pieces if isinstance(p, DataFrame)]
        pos += size
        if stop:
            break
    assert passed == before
    assert stop == ("goaway" if goaway else None)
    # Whole plain DATA frames come out as such (the listener's fast path), with their payload.
    for piece in fast:
        assert piece.raw[9:] == piece.payload
        assert piece.payload
        assert piece.stream_id == 1
    if not cuts:
        assert [p.payload for p in fast] == [p for k, p in frames if k == 0 and p]


def test_scanner_oversize_frame() -> None:
    scanner = FrameScanner(1 << 20)
    out, stop = scanner.feed(PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
    assert (out, stop, scanner.oversize_length) == ([PREFACE], "oversize", 0xFFFFFF)
    assert scanner.feed(b"more") == ([], "oversize")


def test_scanner_leaves_padded_and_end_stream_data_to_h2() -> None:
    scanner = FrameScanner(1 << 20)
    padded = b"\x00\x00\x03\x00\x08\x00\x00\x00\x01\x01ab"
    ending = b"\x00\x00\x02\x00\x01\x00\x00\x00\x01ab"
    pieces, _ = scanner.feed(PREFACE + padded + ending)
    assert pieces == [PREFACE + padded + ending]


def test_http1_upgrade_request_with_body() -> None:
    settings = base64.urlsafe_b64encode(bytes(6)).decode().rstrip("=")
    raw = (
        b"POST /test?x=1 HTTP/1.1\r\nHost: 127.0.0.1:5890\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings.encode() + b"\r\nContent-Length: 3\r\n"
        b"sora-audio-streaming-language-code: ja-JP\r\n\r\n\xfc\xff\xfe" + PREFACE
    )
    exchange = Http1Exchange()
    assert exchange.feed(raw[:40]) is None
    request = exchange.feed(raw[40:])
    assert request is not None
    assert request.upgrade_settings == settings
    assert request.body == b"\xfc\xff\xfe"
    assert request.rest == PREFACE
    assert request.path == "/test"
    assert request.h2_headers() == [
        (":method", "POST"), (":path", "/test?x=1"), (":scheme", "http"), (":authority", "127.0.0.1:5890"),
        ("sora-audio-streaming-language-code", "ja-JP"),
    ]  # fmt: skip


def test_http1_plain_request_and_reply() -> None:
    exchange = Http1Exchange()
    request = exchange.feed(b"GET /.ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request is not None
    assert request.upgrade_settings is None
    out = exchange.reply(Response(200, b"{}"))
    assert out.startswith(b"HTTP/1.1 200 ")
    assert out.endswith(b"\r\n\r\n{}")


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"\x00\x01garbage", 400), (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400)],
)
def test_http1_errors(data: bytes, status: int) -> None:
    exchange = Http1Exchange()
    with pytest.raises(Http1Error) as info:
        exchange.feed(data)
    assert info.value.response.status == status
    assert exchange.reply(info.value.response).startswith(b"HTTP/1.1 400 ")


def test_http1_oversize_body() -> None:
    exchange = Http1Exchange()
    exchange.feed(b"POST /speech HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n")
    with pytest.raises(Http1Error) as info:
        exchange.feed(bytes(1 << 20) + b"x")
    assert info.value.response.status == 413
