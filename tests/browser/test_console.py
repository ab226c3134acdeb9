"""The voice console at `/`, in headless Chromium with a fake microphone, against a real koe on 127.0.0.1 with its
real VAD, Whisper and Piper: a spoken turn (both transcripts on the page, reply audio played, the latency panel
filled), settings applied live with session.update, and a barge-in (the looping microphone speaks again over a long
reply: playback stops and the page truncates the reply to what it played). koe's LLM is a stand-in telling a fixed
half-minute story: the barge-in needs a reply still playing when the microphone loops, and how long the embedded
model talks is its own."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket

from koe.config import Settings
from koe.engines.registry import Engines
from tests.browser.chromium import chromium, mic_wav, screenshot
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import koe_server
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(150)]

# Sent as the page's instructions and checked in its session.update; the stand-in's story is longer than the
# microphone's loop (the utterance again, ~9 s later), so that loop lands while koe is speaking.
INSTRUCTIONS = (
    "You are koe, a helpful voice assistant. Give a detailed spoken answer of several sentences, without lists or "
    "markdown."
)
APPEND_BYTES = 24000 * 2 * 40 // 1000  # the page sends 40 ms of 24 kHz PCM16 per input_audio_buffer.append

STATE_JS = """() => {
  const turns = (role) => [...document.querySelectorAll(`#conversation li.turn.${role}`)].map((li) => ({
    item: li.dataset.item, text: li.querySelector('.text').textContent,
    pending: li.classList.contains('pending'), interrupted: li.classList.contains('interrupted'),
  }));
  const error = document.getElementById('error');
  return {
    user: turns('user'), assistant: turns('assistant'),
    played: Number(document.getElementById('played').dataset.playedMs),
    latest: document.querySelector('[data-latest]').textContent,
    timings: document.querySelectorAll('#latency tbody tr').length,
    error: error.hidden ? '' : error.textContent,
    status: document.getElementById('status').dataset.state,
  };
}"""


class Frames:
    """Every event the page's WebSocket sent and received (appends only counted, plus a few kept to check)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.appends: list[str] = []

    def watch(self, socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: self._keep(self.sent, payload))
        socket.on("framereceived", lambda payload: self._keep(self.received, payload))

    def _keep(self, into: list[dict[str, Any]], payload: str | bytes) -> None:
        event = json.loads(payload)
        if event.get("type") == "input_audio_buffer.append":
            self.appends.append(event["audio"] if len(self.appends) < 50 else "")
        elif event.get("type") != "response.output_audio.delta":
            into.append(event)

    def of(self, kind: str, events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [e for e in (self.received if events is None else events) if e["type"] == kind]


async def until(page: Page, check: Callable[[dict[str, Any]], bool], what: str, timeout_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        state: dict[str, Any] = await page.evaluate(STATE_JS)
        assert not state["error"], state["error"]
        if check(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s: {state}")
        await asyncio.sleep(0.25)


def _turn_done(state: dict[str, Any]) -> bool:
    said = [t for t in state["user"] if not t["pending"]]
    answered = [t for t in state["assistant"] if t["text"].strip() and not t["pending"]]
    return bool(said and answered and state["played"] > 500 and state["timings"])


async def test_spoken_turn_settings_and_barge_in(engines: Engines, texts: dict[str, str], tmp_path: Path) -> None:
    mic = mic_wav(tmp_path / "mic.wav", "short_48k.wav", lead_s=0.5, tail_s=6.0)
    frames = Frames()
    async with (
        scripted_engines(engines) as scripted,
        koe_server(Settings(), scripted) as (base, _app),
        chromium(tmp_path, mic) as browser,
    ):
        page = await browser.new_page()
        page.on("websocket", frames.watch)
        await page.goto(base + "/")
        await page.fill("textarea[name=instructions]", INSTRUCTIONS)
        await page.click("#start")

        # A spoken turn: what the fake microphone said, koe's answer, its audio played, its latency shown.
        state = await until(page, _turn_done, "a spoken turn", 60)
        heard = next(t for t in state["user"] if not t["pending"])["text"]
        assert wer(texts["short"], heard) <= 0.25, heard
        assert state["latest"].endswith("ms") or state["latest"].endswith(" s")
        timing = frames.of("koe.response.timing")[0]
        assert timing["total_ms"] > 0
        assert all(timing[k] is not None for k in ("turn_end_ms", "stt_ms", "llm_first_token_ms", "tts_first_audio_ms"))

        update = frames.of("session.update", frames.sent)[0]["session"]
        assert update["type"] == "realtime"
        assert update["instructions"] == INSTRUCTIONS
        assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert update["audio"]["input"]["koe_echo_cancellation"] == {"type": "server_echo_cancellation"}
        assert all(len(base64.b64decode(a)) == APPEND_BYTES for a in frames.appends if a)

        # Settings apply live by session.update: noise suppression on (it starts off, as in koe), echo canceller off.
        assert update["audio"]["input"]["noise_reduction"] is None
        updates_before = len(frames.of("session.updated"))
        await page.check("input[name=noiseSuppression]")
        await page.uncheck("input[name=echoCancellation]")
        await until(page, lambda _s: len(frames.of("session.updated")) >= updates_before + 2, "session.updated", 10)
        last = frames.of("session.update", frames.sent)[-1]["session"]["audio"]["input"]
        assert last["noise_reduction"] == {"type": "near_field"}
        assert last["koe_echo_cancellation"] is None
        assert frames.of("session.updated")[-1]["session"]["audio"]["input"]["noise_reduction"] == {
            "type": "near_field"
        }

        # Barge-in: the utterance comes round again while koe speaks; the page stops and truncates what it played.
        state = await until(page, lambda s: any(t["interrupted"] for t in s["assistant"]), "a barge-in", 60)
        await until(page, lambda _s: bool(frames.of("conversation.item.truncated")), "the truncation", 10)
        truncate = frames.of("conversation.item.truncate", frames.sent)[0]
        interrupted = [t["item"] for t in state["assistant"] if t["interrupted"]]
        assert truncate["item_id"] in interrupted
        assert 0 < truncate["audio_end_ms"] <= state["played"]
        truncated = frames.of("conversation.item.truncated")[0]
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (truncate["item_id"], truncate["audio_end_ms"])
        assert not frames.of("error"), frames.of("error")

        await screenshot(page, "console.png")
