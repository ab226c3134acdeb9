"""What the voice console says in Firefox ESR when it cannot work: the microphone refused, and a browser with no audio
output (Firefox then leaves the page's AudioContext suspended, without an error, for as long as the page waits).
koe not being reachable is shown in tests/browser/test_console_firefox.py, after the koe it talked to stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from koe.config import load_settings
from koe.engines.registry import Engines
from tests.browser.firefox import firefox
from tests.server.acs_server import koe_server

pytestmark = pytest.mark.timeout(120)

# After Start: the attempt is over (the button is back) and the page shows an error.
FAILED = """() => {
  const [start, error, status] = ["start", "error", "status"].map((id) => document.getElementById(id));
  if (start.disabled || error.hidden) return null;
  return { error: error.textContent, start: start.textContent, status: status.dataset.state };
}"""


async def test_refused_microphone_in_firefox(tmp_path: Path) -> None:
    async with (
        koe_server(load_settings(), Engines()) as (base, _app),
        firefox(tmp_path, allow_microphone=False) as browser,
    ):
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.click("#start")
        shown = await page.until(FAILED, "the refusal shown", 30)
        assert "Microphone permission was denied" in shown["error"]
        assert (shown["start"], shown["status"]) == ("Start talking", "idle")
        assert not page.errors, page.errors


async def test_no_audio_output_in_firefox(tmp_path: Path) -> None:
    async with (
        koe_server(load_settings(), Engines()) as (base, _app),
        firefox(tmp_path, audio_output=False) as browser,
    ):
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.click("#start")
        shown = await page.until(FAILED, "the missing audio output shown", 30)
        assert "The browser's audio did not start" in shown["error"]
        assert "speaker or headphones" in shown["error"]
        assert (shown["start"], shown["status"]) == ("Start talking", "idle")
        assert not page.errors, page.errors
