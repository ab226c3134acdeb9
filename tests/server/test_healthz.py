"""`koe serve` as a real process on a free loopback port: it starts even when an engine fails to load, and
GET /healthz says which engines loaded and why one did not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from koe.net.inprocess import free_port

START_TIMEOUT_S = 120.0


def _koe(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KOE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "koe", *args],
        env={**clean, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_health(process: subprocess.Popen[str], url: str) -> httpx.Response:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"koe serve exited with {process.returncode}:\n{output}")
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("koe serve did not answer /healthz in time")


def test_serve_reports_engines_and_survives_a_missing_model(tmp_path: Path) -> None:
    port = free_port()
    missing = tmp_path / "no-such-model"
    process = _koe("serve", "--port", str(port), env={"KOE_STT__MODEL_PATH": str(missing)}, cwd=tmp_path)
    try:
        response = _wait_for_health(process, f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        engines = body["engines"]
        assert not engines["stt"]["loaded"]
        assert f"{missing} is not a CTranslate2 Whisper model directory" in engines["stt"]["error"]
        for kind in ("vad", "tts", "llm"):
            assert engines[kind]["loaded"], engines[kind]
            assert engines[kind]["load_s"] > 0
        assert engines["llm"]["name"].startswith("llama.cpp:SmolLM2")
        assert body["pools"]["tts"] == {"depth": 0, "active": 0}
        assert "stt" not in body["pools"]
        process.send_signal(signal.SIGUSR1)  # the task dump: every asyncio task with its awaits, in the log
        assert _wait_for_health(process, f"http://127.0.0.1:{port}/healthz").status_code == 200  # and it serves on
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "stt failed to load" in output
    assert "starting without: stt" in output
    assert "asyncio tasks:" in output and "koe/server/run.py" in output, output[-2000:]


def test_public_without_keys_refuses_to_start(tmp_path: Path) -> None:
    process = _koe("serve", "--public", "--port", str(free_port()), env={}, cwd=tmp_path)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "refusing to start with --public" in output


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    from koe.server.auth import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")
