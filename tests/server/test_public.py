"""`koe serve --public`: it refuses to start, before loading any model, while a door would take clients without
credentials (no API keys; ACS JWTs without an audience; the Sora listener off loopback without mTLS), names each
one and the setting that fixes it, and listens on every interface unless a host was given."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from koe.cli import main
from koe.config import load_settings
from koe.server.public import prepare_public


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    for name in [n for n in os.environ if n.startswith("KOE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./koe.toml
    # `koe serve` sets up logging for the process; put the test process's logging back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield CliRunner()
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "given.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_keys_is_refused_on_every_interface(runner: CliRunner) -> None:
    result = runner.invoke(main, ["serve", "--public", "--port", "8123"])
    assert result.exit_code == 1
    assert "refusing to start with --public on 0.0.0.0:8123" in result.output
    assert "server.api_keys" in result.output
    assert "loading" not in result.output  # refused before any model was loaded


def test_each_open_door_is_named(runner: CliRunner, tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[server]\napi_keys = ["k"]\n[sora]\nhost = "0.0.0.0"\n[acs.jwt]\nenabled = true\n',
    )
    result = runner.invoke(main, ["serve", "--public", "--config", str(config), "--host", "127.0.0.2"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "refusing to start with --public on 127.0.0.2:8000" in line]
    assert len(lines) == 2, result.output
    assert "acs.jwt.audience" in lines[0]
    assert "Sora door listens on 0.0.0.0" in lines[1] and "sora.tls_verify_cacert_path" in lines[1]
    assert "server.api_keys" not in result.output


def test_what_public_accepts(tmp_path: Path) -> None:
    keys = {"server": {"api_keys": ["k"], "public": True}}
    settings, refusals = prepare_public(load_settings(overrides=keys))
    assert refusals == [] and settings.server.host == "0.0.0.0"  # Sora stays on loopback by default
    mtls = {"https": True, "host": "0.0.0.0", "tls_verify_cacert_path": str(tmp_path / "ca.pem")}
    assert prepare_public(load_settings(overrides={**keys, "sora": mtls}))[1] == []
    assert prepare_public(load_settings(overrides={**keys, "sora": {"enabled": False, "host": "0.0.0.0"}}))[1] == []
    jwt = {"jwt": {"enabled": True, "audience": "00000000-0000-0000-0000-000000000001"}}
    assert prepare_public(load_settings(overrides={**keys, "acs": jwt}))[1] == []
    # A host from the config file (or KOE_SERVER__HOST) is kept.
    given = load_settings(_config(tmp_path, '[server]\nhost = "192.0.2.7"\n'), keys)
    assert prepare_public(given)[0].server.host == "192.0.2.7"
