"""What the voice console says in Firefox ESR when it cannot work: the microphone refused, and a browser with no audio
output (Firefox then leaves the page's AudioContext suspended, without an error, for as long as the page waits).
koe not being reachable is shown in tests/browser/test_console_firefox.py, after the koe it talked to stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from koe.config import load_settings
from koe.engines.registry import Engines
from tests.browser.firefox import firefox
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(120)

# After Start: the attempt is over (the button is back) and the page shows an error.
FAILED = """() => {
  const [start, error, status] = ["start", "error", "status"].map((id) => document.getElementById(id));
  if (start.disabled || error.hidden) return null;
  return { error: error.textContent, start: start.textContent, status: status.dataset.state };
}"""


@pytest.mark.parametrize(
    ("browser_options", "said"),
    [
        ({"allow_microphone": False}, ["Microphone permission was denied"]),
        ({"audio_output": False}, ["The browser's audio did not start", "speaker or headphones"]),
    ],
    ids=["refused-microphone", "no-audio-output"],
)
async def test_failures_are_said_in_words_in_firefox(
    tmp_path: Path, browser_options: dict[str, bool], said: list[str]
) -> None:
    async with (
        koe_server(load_settings(), Engines()) as (base, _app),
        firefox(tmp_path, **browser_options) as browser,
    ):
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.click("#start")
        shown = await page.until(FAILED, "the failure shown", 30)
        for words in said:
            assert words in shown["error"]
        assert (shown["start"], shown["status"]) == ("Start talking", "idle")
        assert not page.errors, page.errors
