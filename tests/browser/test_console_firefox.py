"""The voice console at `/` in headless Firefox ESR, against a real koe on 127.0.0.1 with its real models.

Firefox's fake microphone plays a steady tone, not speech, so no turn is spoken here (tests/browser/test_console.py
speaks one in Chromium). What is checked: the page loads and runs without a JavaScript error; Start opens the Realtime
WebSocket and the capture worklet's audio reaches koe as 40 ms input_audio_buffer.append chunks of 24 kHz PCM16 that
still carry the tone at its pitch (the page resamples from the device rate); the level meter moves; a reply, asked for
in text over the page's own socket, is played in full through the page's playback worklet, its transcript shown; Stop
and a second Start work; and when koe goes away the page says so, then that koe is not reachable.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server.app import create_app
from tests.browser.firefox import Page, firefox, screenshot
from tests.server.acs.support import serve_app

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(150)]

RATE = 24000  # the page's audio/pcm rate, both ways
APPEND_BYTES = RATE * 2 * 40 // 1000  # 40 ms of PCM16 per input_audio_buffer.append
FAKE_TONE_HZ = 1000  # what Firefox's fake microphone plays
PLAYED_SLACK_MS = 50  # the page counts what it played at the device rate, in whole milliseconds
INSTRUCTIONS = "You are koe, a voice assistant. Answer in one short sentence."
QUESTION = "Say hello to me."

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

# Before the page's scripts: keep every WebSocket the page opens, so the test can speak over the console's own.
KEEP_SOCKETS = """() => {
  const Native = window.WebSocket;
  const sockets = (window.koeTestSockets = []);
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  };
}"""

# A typed turn and a request for a reply, over the console's open Realtime socket; the reply comes back to the page.
ASK = """(text) => {
  const socket = window.koeTestSockets.findLast((s) => s.readyState === WebSocket.OPEN);
  if (!socket) return false;
  const content = [{ type: "input_text", text }];
  socket.send(JSON.stringify({ type: "conversation.item.create", item: { type: "message", role: "user", content } }));
  socket.send(JSON.stringify({ type: "response.create" }));
  return true;
}"""

STATE = """() => {
  const error = document.getElementById("error");
  return {
    status: document.getElementById("status").dataset.state,
    start: document.getElementById("start").textContent,
    startEnabled: !document.getElementById("start").disabled,
    error: error.hidden ? "" : error.textContent,
    notice: document.getElementById("notice").textContent,
    meter: parseFloat(document.querySelector("#meter .fill").style.width) || 0,
    played: Number(document.getElementById("played").dataset.playedMs),
    assistant: [...document.querySelectorAll("#conversation li.turn.assistant")].map((li) => ({
      item: li.dataset.item, text: li.querySelector(".text").textContent, pending: li.classList.contains("pending"),
    })),
  };
}"""


class RealtimeTap:
    """koe's app with a tap on its WebSockets: what the Realtime door received from the page and what it sent."""

    def __init__(self, app: Callable[[Scope, Any, Any], Awaitable[None]]) -> None:
        self.app = app
        self.append_sizes: list[int] = []
        self.microphone = bytearray()  # every appended chunk, joined
        self.received: list[dict[str, Any]] = []  # the page's other events
        self.sent: list[dict[str, Any]] = []  # koe's events but its audio
        self.reply_audio_bytes = 0

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def tapped_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text"):
                self._from_page(json.loads(message["text"]))
            return message

        async def tapped_send(message: Message) -> None:
            if message["type"] == "websocket.send" and message.get("text"):
                self._from_koe(json.loads(message["text"]))
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)

    def _from_page(self, event: dict[str, Any]) -> None:
        if event["type"] == "input_audio_buffer.append":
            chunk = base64.b64decode(event["audio"])
            self.append_sizes.append(len(chunk))
            self.microphone += chunk
        else:
            self.received.append(event)

    def _from_koe(self, event: dict[str, Any]) -> None:
        if event["type"] == "response.output_audio.delta":
            self.reply_audio_bytes += len(base64.b64decode(event["delta"]))
        else:
            self.sent.append(event)

    def of(self, kind: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == kind]


async def eventually(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.1)


def pitch_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency in a stretch of PCM16."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


async def state_when(page: Page, check: str, what: str, timeout_s: float) -> dict[str, Any]:
    """Wait for `check(state)` (JavaScript) to hold of the page's state; return the state."""
    function = f"() => {{ const state = ({STATE})(); return ({check})(state) ? state : null; }}"
    found: dict[str, Any] = await page.until(function, what, timeout_s)
    return found


async def test_console_in_firefox(engines: Engines, tmp_path: Path) -> None:
    tap = RealtimeTap(create_app(Settings(), engines))
    async with firefox(tmp_path) as browser:
        page = await browser.new_page()
        await page.add_init_script(KEEP_SOCKETS)
        async with serve_app(tap) as base:
            await page.goto(base + "/")
            await page.call(
                "(text) => { document.querySelector('textarea[name=instructions]').value = text; }", INSTRUCTIONS
            )
            await page.click("#start")
            state = await state_when(page, "(s) => s.status === 'listening' && s.meter > 0", "listening", 30)
            assert (state["start"], state["error"]) == ("Stop", "")

            # The microphone reaches koe: 40 ms chunks of 24 kHz PCM16, still the fake microphone's tone.
            await eventually(lambda: len(tap.microphone) >= RATE * 2, "a second of microphone audio at koe", 20)
            assert set(tap.append_sizes) == {APPEND_BYTES}
            last_second = bytes(tap.microphone[-RATE * 2 :])
            assert abs(pitch_hz(last_second, RATE) - FAKE_TONE_HZ) < 20
            update = tap.of("session.update", tap.received)[0]["session"]
            assert update["instructions"] == INSTRUCTIONS
            assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": RATE}

            # A reply, asked for in text over the page's socket, played in full and shown.
            assert await page.call(ASK, QUESTION)
            await eventually(lambda: bool(tap.of("response.done", tap.sent)), "koe's reply", 60)
            reply_ms = tap.reply_audio_bytes / 2 / RATE * 1000
            assert reply_ms > 0  # how long is the model's business; that all of it plays is the page's
            assert [r["response"]["status"] for r in tap.of("response.done", tap.sent)] in (
                ["completed"],
                ["incomplete"],
            )
            played = f"(s) => s.status === 'listening' && s.played >= {reply_ms - PLAYED_SLACK_MS}"
            state = await state_when(page, played, "the whole reply played", 30)
            assert state["played"] <= reply_ms + PLAYED_SLACK_MS, (state["played"], reply_ms)
            said = tap.of("response.output_audio_transcript.done", tap.sent)[0]
            assert said["transcript"].strip()
            assert state["assistant"] == [{"item": said["item_id"], "text": said["transcript"], "pending": False}]
            assert not tap.of("error", tap.sent), tap.of("error", tap.sent)
            await screenshot(page, "console-firefox.png")

            # Stop, and Start again: a new AudioContext, worklets and socket.
            await page.click("#start")
            await state_when(page, "(s) => s.status === 'idle' && s.start === 'Start talking'", "stopped", 15)
            await page.click("#start")
            await state_when(page, "(s) => s.status === 'listening'", "listening again", 30)

        # koe stopped under a live session: the page says so, goes back to Start, then finds koe unreachable.
        state = await state_when(page, "(s) => s.status === 'idle' && s.error", "the lost connection", 20)
        assert "connection to koe was lost" in state["error"] or "koe closed the connection" in state["error"]
        await page.click("#start")
        state = await state_when(page, "(s) => s.startEnabled && s.error.includes('not reachable')", "unreachable", 20)
        assert state["error"].startswith("koe is not reachable at 127.0.0.1:")
        assert not page.errors, page.errors
