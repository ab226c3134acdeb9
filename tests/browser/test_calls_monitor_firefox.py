"""The call monitor at `/calls` in headless Firefox ESR: it follows koe's event stream with a streaming fetch(), which
Firefox resolves only once the first bytes of the body arrive (Chromium resolves at the headers). koe therefore opens
the stream with a comment; without it the page would say "Connecting…", and show none of the calls in progress, until
the first keepalive. tests/browser/test_calls_monitor.py follows a whole call in Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from koe.config import load_settings
from koe.engines.registry import Engines
from koe.server.calls.api import SSE_KEEPALIVE_S
from koe.server.calls.registry import CallRegistry
from tests.browser.firefox import firefox
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(120)

LIVE = """() => {
  const status = document.getElementById("status");
  const call = document.querySelector(".call");
  if (status.dataset.state !== "listening" || !call) return null;
  return { status: status.textContent, call: call.dataset.callId, state: call.dataset.state };
}"""
UPDATED = "(callState) => document.querySelector('.call')?.dataset.state === callState"


async def test_monitor_goes_live_at_once_in_firefox(tmp_path: Path) -> None:
    async with koe_server(load_settings(), Engines()) as (base, app), firefox(tmp_path) as browser:
        calls: CallRegistry = app.state.calls
        calls.open("call-in-progress", door="acs", mode="transcribe")
        calls.update("call-in-progress", "streaming")
        page = await browser.new_page()
        await page.goto(base + "/calls")
        # Well before the first keepalive: the page is live and shows the call already in progress.
        live = await page.until(LIVE, "the monitor going live", SSE_KEEPALIVE_S / 2)
        assert live == {"status": "Live", "call": "call-in-progress", "state": "streaming"}
        calls.end("call-in-progress", "hung up")  # and events flow
        await page.until(UPDATED, "the call's end shown", SSE_KEEPALIVE_S / 2, "ended")
        assert not page.errors, page.errors
