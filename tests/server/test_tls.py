"""TLS on every listener (`koe.server.tls`): which certificate each one serves, and each one serving it: the main
port with HTTP/1.1 and HTTP/2 by ALPN and WebSockets, the Sora port with HTTP/2, the ACS media port (picows) with
the emulator's media client over wss://. Echo and test services, so no models are needed."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from koe.config import Settings, load_settings
from koe.net.inprocess import free_port
from koe.net.tls import TlsFiles, client_context, ensure_local_tls
from koe.server.run import start_acs_media
from koe.server.sora.gateway import SoraGateway
from koe.server.tls import TlsSetupError, check_certificates, effective_tls
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def local(tmp_path: Path) -> TlsFiles:
    return ensure_local_tls(tmp_path / "tls")[0]


def _settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    server = {"tls_dir": str(tmp_path / "tls"), **sections.pop("server", {})}
    return load_settings(overrides={"server": server, **sections})


# --- which certificate ------------------------------------------------------------------------------------------


def test_no_tls_unless_asked(tmp_path: Path) -> None:
    served = effective_tls(_settings(tmp_path))
    assert served.settings.server.tls_cert_file is None
    assert served.settings.sora.https is False
    assert served.local is None
    assert not (tmp_path / "tls").exists()


def test_tls_uses_the_local_ca_and_every_listener_follows(tmp_path: Path) -> None:
    served = effective_tls(_settings(tmp_path, server={"tls": True}))
    assert served.local is not None
    assert served.made
    settings = served.settings
    assert settings.server.tls_cert_file == served.local.cert
    assert settings.sora.https is True
    assert settings.sora.tls_fullchain_file == served.local.cert
    assert not effective_tls(_settings(tmp_path, server={"tls": True})).made  # made once, then kept


def test_explicit_files_override_the_local_ca_and_a_listener_may_have_its_own(tmp_path: Path) -> None:
    other = ensure_local_tls(tmp_path / "other")[0]
    sora_own = ensure_local_tls(tmp_path / "sora")[0]
    files = {"tls": True, "tls_cert_file": str(other.cert), "tls_key_file": str(other.key)}
    sora = {"tls_fullchain_file": str(sora_own.cert), "tls_privkey_file": str(sora_own.key)}
    settings = effective_tls(_settings(tmp_path, server=files, sora=sora)).settings
    assert settings.server.tls_cert_file == other.cert
    assert settings.sora.tls_fullchain_file == sora_own.cert
    assert not (tmp_path / "tls").exists()
    plain_sora = effective_tls(_settings(tmp_path, server=files, sora={"https": False})).settings
    assert plain_sora.sora.https is False


def test_half_a_pair_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    from koe.config import ConfigError

    with pytest.raises(ConfigError, match=r"tls_cert_file and server\.tls_key_file go together"):
        _settings(tmp_path, server={"tls_cert_file": "/nowhere.pem"})
    settings = effective_tls(
        _settings(tmp_path, server={"tls_cert_file": "/nowhere.pem", "tls_key_file": "/nowhere.key"})
    ).settings
    with pytest.raises(TlsSetupError, match=r"server\.tls_cert_file") as info:
        check_certificates(settings)
    assert "\n" not in str(info.value)


# --- serving it ---------------------------------------------------------------------------------------------------


async def test_the_main_port_speaks_http2_http11_and_websockets_over_tls(tmp_path: Path, local: TlsFiles) -> None:
    settings = _settings(tmp_path, acs={"mode": "echo"})
    async with koe_server(settings, tls=local) as (base, _app):
        assert base.startswith("https://")
        context = client_context(local.ca_cert)
        async with httpx.AsyncClient(http2=True, verify=context) as h2, httpx.AsyncClient(verify=context) as h1:
            two, one = await h2.get(f"{base}/healthz"), await h1.get(f"{base}/healthz")
        assert (two.status_code, two.http_version) == (200, "HTTP/2")
        assert (one.status_code, one.http_version) == (200, "HTTP/1.1")
        audio = CallAudio([Participant(phone_raw_id(1), _tone(300))], 16000)
        wss = base.replace("https", "wss") + "/acs/media"
        report = await MediaStream(MediaOptions(wss, speed=0, ca_file=local.ca_cert), audio).run()
        assert report.frames_sent == 15
        assert report.violations == []
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the CA is refused
            async with connect(wss, ssl=ssl.create_default_context()):
                pass


async def test_the_sora_port_follows_with_http2_over_tls(tmp_path: Path) -> None:
    settings = effective_tls(_settings(tmp_path, server={"tls": True}, sora={"port": 0, "service": "test"})).settings
    gateway = SoraGateway(settings.sora, None, None)
    await gateway.start()
    try:
        ca = settings.server.tls_dir / "ca.pem"  # type: ignore[operator]
        async with httpx.AsyncClient(http2=True, verify=client_context(ca)) as client:
            response = await client.get(f"https://127.0.0.1:{gateway.port}/.ok")
    finally:
        await gateway.close()
    assert (response.status_code, response.http_version) == (200, "HTTP/2")


@contextlib.asynccontextmanager
async def _media_listener(settings: Settings) -> AsyncIterator[tuple[int, list[str]]]:
    said: list[str] = []
    async with koe_server(settings) as (_base, app):
        listener = await start_acs_media(settings, app.state.acs, said.append)
        assert listener is not None
        try:
            yield listener.port, said
        finally:
            await listener.close()


async def test_the_acs_media_port_serves_wss_with_the_same_certificate(tmp_path: Path) -> None:
    settings = effective_tls(_settings(tmp_path, server={"tls": True}, acs={"mode": "echo"})).settings
    settings.acs.media_port = free_port()
    ca = tmp_path / "tls" / "ca.pem"
    async with _media_listener(settings) as (port, said):
        assert said == [f"ACS media listener on wss://127.0.0.1:{port}/acs/media (picows)"]
        audio = CallAudio([Participant(phone_raw_id(1), _tone(400))], 16000)
        options = MediaOptions(f"wss://127.0.0.1:{port}/acs/media", speed=4.0, ca_file=ca, linger_ms=300)
        report = await MediaStream(options, audio).run()
    assert report.frames_sent >= 20
    assert report.outbound_audio_bytes > 0  # echoed back over TLS
    assert report.violations == []


async def test_a_plain_media_port_turns_tls_away_at_once_and_the_emulator_falls_back(tmp_path: Path) -> None:
    settings = _settings(tmp_path, acs={"mode": "echo"})
    settings.acs.media_port = free_port()
    async with _media_listener(settings) as (port, _said):
        started = time.monotonic()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            async with connect(f"wss://127.0.0.1:{port}/acs/media", ssl=ssl.create_default_context(), open_timeout=4):
                pass
        assert time.monotonic() - started < 2.0  # not the 5 s handshake timeout
        audio = CallAudio([Participant(phone_raw_id(1), _tone(200))], 16000)
        # the samples force wss:// on a local app that serves plain HTTP: the emulator falls back to ws://
        report = await MediaStream(MediaOptions(f"wss://127.0.0.1:{port}/acs/media", speed=0), audio).run()
    assert report.frames_sent == 10
    assert report.url.startswith("wss://")


def _tone(ms: int, rate: int = 16000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


async def test_koe_serve_banner_names_every_listener_and_its_tls(tmp_path: Path) -> None:
    """`koe serve --tls` as a user runs it, until its banner is out: every listener's URL, the Sora port with how to
    move or disable it, and the lines clients need to trust the local CA."""
    port = free_port()
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "KOE_SORA__PORT": str(free_port()), "PATH": "/usr/bin:/bin"}
    import os
    import sys

    env = {**os.environ, **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "koe", "serve", "--tls", "--port", str(port), "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(50):
            while not any("Sora audio streaming gateway" in line for line in lines):
                line = (await process.stderr.readline()).decode()
                assert line, "koe serve ended: " + "".join(lines)
                lines.append(line)
    finally:
        process.terminate()
        await process.communicate()
    banner = "".join(lines)
    ca = tmp_path / "xdg" / "koe" / "tls" / "ca.pem"
    assert f"serving on https://127.0.0.1:{port}/" in banner
    assert f"SSL_CERT_FILE={ca}" in banner
    assert f"NODE_EXTRA_CA_CERTS={ca}" in banner
    assert "Sora audio streaming gateway on https://127.0.0.1:" in banner
    assert "sora.port moves it, sora.enabled = false turns it off" in banner
