"""The `koe` command on real files and real models: transcribe, say, chat, and clean one-line errors."""

from __future__ import annotations

import json
import os
import socket
import wave
from pathlib import Path

import pytest
from click.testing import CliRunner

from koe.cli import main
from tests.wer import normalize, wer

MAX_WER = 0.10


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KOE_")]:
        monkeypatch.delenv(name)
    return CliRunner()


def test_transcribe_text_and_json(runner: CliRunner, audio_dir: Path, texts: dict[str, str]) -> None:
    short, ogg = audio_dir / "short_48k.wav", audio_dir / "reply_48k_opus.ogg"
    result = runner.invoke(main, ["transcribe", str(short)])
    assert result.exit_code == 0, result.output
    assert wer(texts["short"], result.stdout) <= MAX_WER

    result = runner.invoke(main, ["transcribe", "--json", str(short), str(ogg)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(short), str(ogg)]
    assert wer(texts["reply"], records[1]["text"]) <= MAX_WER
    words = records[0]["words"]
    assert normalize(" ".join(w["word"] for w in words)) == normalize(records[0]["text"])  # the same transcript
    assert all(w["start"] <= w["end"] for w in words)
    assert records[1]["duration_s"] == pytest.approx(4.4, abs=0.01)


def test_transcribe_reports_a_bad_file_and_goes_on(
    runner: CliRunner, audio_dir: Path, tmp_path: Path, texts: dict[str, str]
) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    short = audio_dir / "short_16k.wav"
    result = runner.invoke(main, ["transcribe", str(garbage), str(short)])
    assert result.exit_code == 1
    assert f"koe: {garbage}: cannot decode" in result.stderr
    assert result.stdout.startswith(f"{short}: ")  # the good file is still transcribed
    assert wer(texts["short"], result.stdout.removeprefix(f"{short}: ")) <= MAX_WER
    assert "Traceback" not in result.output


def test_say_writes_a_wav_whisper_can_read(runner: CliRunner, tmp_path: Path, texts: dict[str, str]) -> None:
    out = tmp_path / "reply.wav"
    result = runner.invoke(main, ["say", texts["reply"], "-o", str(out), "--voice", "en_US-joe-medium"])
    assert result.exit_code == 0, result.output
    with wave.open(str(out)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 22050)
        assert 3.0 < handle.getnframes() / 22050 < 7.0
    heard = runner.invoke(main, ["transcribe", str(out)])
    assert wer(texts["reply"], heard.stdout) <= MAX_WER


def test_say_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["say", "Hello.", "-o", str(tmp_path / "x.wav"), "--voice", "nobody"])
    assert result.exit_code == 1
    assert "Error: unknown voice 'nobody'" in result.output
    assert not (tmp_path / "x.wav").exists()
    result = runner.invoke(main, ["say", "Hello."])
    assert result.exit_code == 2
    listed = runner.invoke(main, ["say", "--list-voices"])
    assert "en_US-joe-medium (en, male, piper, default)" in listed.stdout
    assert "jf_alpha (ja, female, kokoro)" in listed.stdout
    result = runner.invoke(main, ["say", "안녕하세요", "-o", str(tmp_path / "x.wav"), "--language", "ko"])
    assert result.exit_code == 1
    assert "no installed voice speaks 'ko'" in result.output


def test_say_speaks_the_voice_of_a_language(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "ja.wav"
    result = runner.invoke(main, ["say", "こんにちは。", "-o", str(out), "--language", "ja-JP"])
    assert result.exit_code == 0, result.output
    with wave.open(str(out)) as handle:
        assert handle.getframerate() == 24000
        assert 0.5 < handle.getnframes() / 24000 < 3.0


def test_chat_answers(runner: CliRunner) -> None:
    # What the model says is its own; the command streams it out as text, then ends the line.
    result = runner.invoke(main, ["chat", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() and result.stdout.endswith("\n")
    assert "[tool call" not in result.stdout  # no tools were offered


def test_chat_with_the_remote_endpoint_down(runner: CliRunner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"KOE_LLM__BACKEND": "remote", "KOE_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1"}
    result = runner.invoke(main, ["chat", "Hello?"], env=env)
    assert result.exit_code == 1
    assert f"Error: cannot reach the LLM endpoint http://127.0.0.1:{port}/v1/chat/completions" in result.output


def test_an_engine_that_cannot_load_is_named(runner: CliRunner, tmp_path: Path, audio_dir: Path) -> None:
    env = {"KOE_STT__MODEL_PATH": str(tmp_path / "no-model")}
    result = runner.invoke(main, ["transcribe", str(audio_dir / "short_16k.wav")], env=env)
    assert result.exit_code == 1
    assert "the stt engine could not be loaded" in result.output
    assert "no-model is not a CTranslate2 Whisper model directory" in result.output
