"""Configuration: defaults < TOML file < KOE_* environment < explicit overrides, with secrets masked on output."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from koe.cli import main
from koe.config import MASK, ConfigError, Settings, find_config_file, load_settings, masked_dump, to_toml

TOML = """
[server]
host = "0.0.0.0"
port = 1234
api_keys = ["key-from-toml"]

[stt]
threads = 4
beam_size = 2

[llm]
backend = "remote"
api_key = "sk-from-toml"
"""


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No koe.toml or KOE_* variable of the developer's may leak into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KOE_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(TOML, "utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert settings.llm.backend == "embedded"
    assert settings.tts.voice == "en_US-joe-medium"


def test_precedence_toml_then_env_then_overrides(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOE_SERVER__PORT", "2345")
    monkeypatch.setenv("KOE_STT__THREADS", "1")
    settings = load_settings(config_file, {"server": {"log_level": "debug"}, "stt": {"beam_size": 3}})
    assert settings.server.host == "0.0.0.0"  # TOML over the default
    assert settings.server.port == 2345  # env over TOML
    assert settings.stt.threads == 1  # nested env variable
    assert settings.stt.beam_size == 3  # override over TOML
    assert settings.server.log_level == "debug"
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == "sk-from-toml"


def test_config_file_from_env_and_from_the_working_directory(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOE_CONFIG", str(config_file))
    assert find_config_file() == config_file
    assert load_settings().server.port == 1234
    monkeypatch.delenv("KOE_CONFIG")
    Path("koe.toml").write_text("[server]\nport = 4321\n", "utf-8")
    assert load_settings().server.port == 4321


def test_bad_configuration_says_what_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    monkeypatch.setenv("KOE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"KOE_CONFIG=.*does not name an existing file"):
        load_settings()
    monkeypatch.delenv("KOE_CONFIG")
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = ", "utf-8")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(broken)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text("[server]\nport = 70000\n[nonsense]\nx = 1\n", "utf-8")
    with pytest.raises(ConfigError, match=r"invalid configuration \(config file .*invalid.toml\)") as caught:
        load_settings(invalid)
    assert "port" in str(caught.value)
    assert "nonsense" in str(caught.value)
    monkeypatch.setenv("KOE_STT__THREADS", "zero")
    with pytest.raises(ConfigError, match="threads"):
        load_settings()


def test_masked_dump_hides_every_secret(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOE_LLM__API_KEY", "sk-from-env")
    data = masked_dump(load_settings(config_file))
    assert data["llm"]["api_key"] == MASK
    assert data["server"]["api_keys"] == [MASK]
    text = json.dumps(data)
    assert "sk-from-env" not in text
    assert "key-from-toml" not in text


def test_shown_toml_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    shown = to_toml(masked_dump(Settings()))
    tomllib.loads(shown)  # valid TOML, nested sections included
    path = tmp_path / "shown.toml"
    path.write_text(shown, "utf-8")
    assert load_settings(path).model_dump() == Settings().model_dump()


def test_config_show_command_masks_secrets(config_file: Path) -> None:
    runner = CliRunner()
    env = {"KOE_LLM__API_KEY": "sk-live-secret", "KOE_SERVER__PORT": "9999"}
    result = runner.invoke(main, ["config", "show", "--config", str(config_file)], env=env)
    assert result.exit_code == 0, result.output
    assert "sk-live-secret" not in result.output
    assert "key-from-toml" not in result.output
    shown = tomllib.loads(result.output)
    assert shown["llm"]["api_key"] == MASK
    assert shown["server"]["port"] == 9999
    assert shown["server"]["host"] == "0.0.0.0"
    as_json = runner.invoke(main, ["config", "show", "--json", "--config", str(config_file)], env=env)
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["stt"]["threads"] == 4
    assert "sk-live-secret" not in as_json.output


def test_config_show_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = -1\n", "utf-8")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(bad)])
    assert result.exit_code == 1
    assert "Error: invalid configuration" in result.output
    assert "Traceback" not in result.output


def test_a_bad_acs_language_fails_at_start() -> None:
    assert load_settings(overrides={"acs": {"language": "ja-JP"}}).acs.language == "ja-JP"
    assert load_settings(overrides={"acs": {"language": "en,ja"}}).acs.language == "en,ja"
    with pytest.raises(ConfigError, match=r"acs\.language"):
        load_settings(overrides={"acs": {"language": "xx"}})
