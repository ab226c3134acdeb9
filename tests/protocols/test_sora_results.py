"""Spec §2.5 (response shape): result lines byte-for-byte as the reference gateway wrote them, and the reader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.protocols.sora_results import (
    ResultStreamError,
    ResultStreamReader,
    dump_result,
    encode,
    error_result,
    http_error_body,
    koe_result,
    service_test_result,
)
from tests.conftest import FIXTURES

SORA = FIXTURES / "sora"


def test_test_result_bytes_match_capture() -> None:
    capture = json.loads((SORA / "req2_header.json").read_text())
    expected = capture["response"]["body"].encode()
    sizes = [120, 77, 82, 78, 76, 78, 73, 73, 79, 74]
    assert b"".join(encode(service_test_result(n)) for n in sizes) == expected


def test_dump_result_bytes_match_dump_file() -> None:
    for line in (SORA / "dump-header.jsonl").read_text().splitlines():
        d = json.loads(line)
        built = dump_result(
            timestamp_ms=d["timestamp"],
            channel_id=d["channel_id"],
            connection_id=d["connection_id"],
            language_code=d["language_code"],
            sample_rate=d["sample_rate"],
            channel_count=d["channel_count"],
            payload_b64=d["payload"],
        )
        assert encode(built) == line.encode() + b"\n"


def test_error_and_http_bodies() -> None:
    assert encode(error_result("PAYLOAD-TOO-LARGE: 16777216")) == (
        b'{"reason":"PAYLOAD-TOO-LARGE: 16777216","type":"error"}\n'
    )
    assert http_error_body("Not Found") == b'{"message":"Not Found"}\n'


def test_koe_result_unicode_unescaped() -> None:
    line = encode(
        koe_result(
            channel_id="c",
            connection_id="k",
            result_id="r",
            is_final=True,
            message="こんにちは",
            language="ja-JP",
            start_ms=0,
            end_ms=10,
        )
    )
    assert "こんにちは".encode() in line
    assert line.endswith(b'"type":"koe"}\n')


def test_reader_tolerates_suzu_quirks() -> None:
    # PAYLOAD-TOO-LARGE from the reference gateway: the object twice, the second without a newline.
    line = b'{"reason":"PAYLOAD-TOO-LARGE: 16777216","type":"error"}'
    body = line + b"\n" + line
    reader = ResultStreamReader()
    values = reader.feed(body)
    reader.end()
    assert values == [error_result("PAYLOAD-TOO-LARGE: 16777216")] * 2


@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.integers(-(2**53), 2**53), max_size=3), max_size=6
    ),
    st.integers(1, 17),
)
def test_reader_any_chunking(objects: list[dict[str, object]], step: int) -> None:
    body = b"".join(encode(o) for o in objects)
    reader = ResultStreamReader()
    got = []
    for i in range(0, len(body), step):
        got += reader.feed(body[i : i + step])
    reader.end()
    assert got == objects


def test_reader_rejects_garbage_and_oversize() -> None:
    with pytest.raises(ResultStreamError, match="expected a JSON object"):
        ResultStreamReader().feed(b"hello")
    with pytest.raises(ResultStreamError, match="longer than"):
        ResultStreamReader(max_value_bytes=10).feed(b'{"a":"' + b"x" * 20)
    reader = ResultStreamReader()
    reader.feed(b'{"a":')
    with pytest.raises(ResultStreamError, match="ended inside"):
        reader.end()
