"""Headless Chromium for the browser tests: Debian's `/usr/bin/chromium` driven by Playwright (never a browser that
Playwright downloads), a fresh profile per test, a fake microphone fed from a WAV, and every process it started gone
afterwards.

    async with chromium(tmp_path, mic=wav_path) as browser:
        page = await browser.new_page()

With `allow_microphone=False` every permission prompt is refused, as a person refusing the microphone would.
`mic_wav(path, fixture, lead_s, tail_s)` writes the microphone's input: silence, a fixture utterance, silence.
Chromium loops the file, so the utterance comes back every `lead_s + speech + tail_s` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import BrowserContext, Page, ViewportSize, async_playwright

from tests.conftest import AUDIO, REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
# Without the background-networking flags Chromium's own connections are refused by a closed network and it stalls.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]
ALLOW_MICROPHONE = "--use-fake-ui-for-media-stream"
DENY_MICROPHONE = "--deny-permission-prompts"
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}


def mic_wav(path: Path, fixture: str, lead_s: float, tail_s: float) -> Path:
    """`lead_s` of silence, the fixture WAV, `tail_s` of silence, at the fixture's rate (16-bit mono)."""
    with wave.open(str(AUDIO / fixture)) as source:
        rate = source.getframerate()
        speech = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    lead = np.zeros(round(lead_s * rate), dtype="<i2")
    tail = np.zeros(round(tail_s * rate), dtype="<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate([lead, speech, tail]).tobytes())
    return path


@contextlib.asynccontextmanager
async def chromium(
    tmp_path: Path, mic: Path | None = None, *, allow_microphone: bool = True
) -> AsyncIterator[BrowserContext]:
    _require_chromium()
    profile = tmp_path / "chromium-profile"
    args = [*FLAGS, ALLOW_MICROPHONE if allow_microphone else DENY_MICROPHONE]
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}")
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=args, viewport=VIEWPORT
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        _kill_leftovers(profile)


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: run `scripts/ensure-apt chromium` (make test does)")


def _kill_leftovers(profile: Path) -> None:
    """Chromium's helpers normally exit with the browser; any that did not are ours by their unique profile path."""
    marker = str(profile).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)


async def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot under test-artifacts/ (git-ignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path
