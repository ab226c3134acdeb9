"""Spec §2.1: how Sora reaches the door — h2c (prior knowledge and Upgrade), h2 over TLS with ALPN, mTLS, and the
answers to HTTP/1.1, health checks and metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from pathlib import Path

import httpx
import pytest

from koe import __version__
from koe.sim.sora.gateway_client import TLSOptions
from tests.server.sora.support import SORA, connect, fixture_packets, framed, make_pki, post, running_gateway

PACKETS = fixture_packets()


async def test_ok_over_h2_and_http11() -> None:
    async with running_gateway() as gateway:
        conn = await connect(gateway)
        stream = await conn.open_stream("/.ok", [], method="GET")
        await stream.closed(5)
        await conn.close()
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{gateway.port}/.ok/")
    assert stream.status == 200
    assert json.loads(bytes(stream.body)) == {"version": __version__}
    assert response.status_code == 200
    assert response.json() == {"version": __version__}


@pytest.mark.parametrize("path", ["/speech", "/test", "/dump"])
async def test_http11_on_audio_paths_is_400_json(path: str) -> None:
    async with running_gateway() as gateway, httpx.AsyncClient() as client:
        response = await client.post(
            f"http://127.0.0.1:{gateway.port}{path}",
            content=(SORA / "silent.bin").read_bytes(),
            headers={"sora-audio-streaming-language-code": "ja-JP"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"] == "Bad Request"  # the reference gateway's body, plus koe's reason
    assert "HTTP/2" in response.json()["reason"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl (with nghttp2) is not installed")
async def test_h2c_upgrade_with_curl() -> None:
    async with running_gateway() as gateway:
        base = f"http://127.0.0.1:{gateway.port}"
        process = await asyncio.create_subprocess_exec(
            "curl", "-s", "-i", "--http2", f"{base}/.ok",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        post_process = await asyncio.create_subprocess_exec(
            "curl", "-s", "--http2", "-H", "sora-audio-streaming-language-code: ja-JP",
            "--data-binary", f"@{SORA / 'silent.bin'}", f"{base}/test",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        post_out, _ = await post_process.communicate()
    text = out.decode()
    assert text.startswith("HTTP/1.1 101 Switching Protocols")
    assert "HTTP/2 200" in text
    assert text.rstrip().endswith(json.dumps({"version": __version__}, separators=(",", ":")))
    # A POST upgraded to h2c: its body arrives before the switch and becomes stream 1's body (raw framing).
    assert post_out == b'{"channel_id":"ch_0","message":"n: 3","type":"test"}\n'


async def test_h2_over_tls_with_alpn(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with running_gateway(
        https=True, tls_fullchain_file=pki["server_pem"], tls_privkey_file=pki["server_key"],
        audio_streaming_header=True,
    ) as gateway:  # fmt: skip
        conn = await connect(gateway, TLSOptions(verify_cacert_file=str(pki["server_ca_pem"])))
        stream = await post(conn, "/speech", framed(PACKETS[:3]))
        await stream.closed(5)
        await conn.close()
        # httpx negotiates h2 by ALPN too.
        context = ssl.create_default_context(cafile=str(pki["server_ca_pem"]))
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            response = await client.get(f"https://127.0.0.1:{gateway.port}/.ok")
    assert [r["message"] for r in stream.text_results()] == ["n: 120", "n: 77", "n: 82"]
    assert response.http_version == "HTTP/2"
    assert response.json() == {"version": __version__}


async def test_mtls_requires_a_certificate_from_the_configured_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca_dir = tmp_path / "cas"
    ca_dir.mkdir()
    shutil.copy(pki["client_ca_pem"], ca_dir / "client_ca.pem")  # a directory of CA files, as Suzu accepts
    async with running_gateway(
        https=True, tls_fullchain_file=pki["server_pem"], tls_privkey_file=pki["server_key"],
        tls_verify_cacert_path=ca_dir, audio_streaming_header=True,
    ) as gateway:  # fmt: skip
        server_ca = str(pki["server_ca_pem"])
        good = TLSOptions(server_ca, str(pki["client_pem"]), str(pki["client_key"]))
        conn = await connect(gateway, good)
        stream = await post(conn, "/speech", [(SORA / "hdr_silent.bin").read_bytes()])
        await stream.closed(5)
        await conn.close()
        for bad in (TLSOptions(server_ca), TLSOptions(server_ca, str(pki["rogue_pem"]), str(pki["rogue_key"]))):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # noqa: PT012  # TLS 1.3 fails on first read
                rejected = await connect(gateway, bad)
                probe = await rejected.open_stream("/.ok", [], method="GET")
                await probe.closed(5)
                await rejected.close()
                raise ConnectionError(probe.error or "no error")
    assert stream.text_results() == [{"channel_id": "ch_0", "message": "n: 3", "type": "test"}]


async def test_metrics_on_the_sora_port_and_the_exporter_port() -> None:
    async with running_gateway(exporter_port=0) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", [PACKETS[0]])
        await stream.closed(5)
        await conn.close()
        async with httpx.AsyncClient() as client:
            main = await client.get(f"http://127.0.0.1:{gateway.port}/metrics")
            exporter = await client.get(f"http://127.0.0.1:{gateway.exporter_port}/metrics")
            exporter_other = await client.post(f"http://127.0.0.1:{gateway.exporter_port}/speech")
    assert main.status_code == exporter.status_code == 200
    assert main.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'koe_sora_requests_total{path="/test",status="200"} 1' in exporter.text
    assert "koe_sora_packets_total 1" in exporter.text
    assert 'koe_sora_results_total{type="test"} 1' in exporter.text
    assert exporter_other.status_code == 404


async def test_many_streams_share_one_connection() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        streams = [await post(conn, "/test", [], end=False) for _ in range(20)]
        for frame in framed(PACKETS[:5]):
            for stream in streams:
                await stream.send(frame)
        for stream in streams:
            await stream.end()
        await asyncio.gather(*(s.closed(5) for s in streams))
        await conn.close()
    for stream in streams:
        assert [r["message"] for r in stream.text_results()] == ["n: 120", "n: 77", "n: 82", "n: 78", "n: 76"]
