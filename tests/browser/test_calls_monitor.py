"""The call monitor at `/calls`, in headless Chromium, while the ACS simulator runs a call through koe: the Call
Automation emulator rings koe, koe answers (transcribe mode, two participants, unmixed), and the page shows each
participant's transcript as it arrives; its Stop and Start streaming buttons go through koe's REST routes to the
emulator and back as callbacks; the hang-up ends the call on the page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page
from starlette.applications import Starlette

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.sim.acs.callautomation import CallAutomationEmulator
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.participants import acs_raw_id, phone_raw_id
from tests.browser.chromium import chromium, screenshot
from tests.conftest import load_wav
from tests.server.acs.support import koe_server
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(120)]

STATE_JS = """() => [...document.querySelectorAll('.call')].map((call) => ({
  id: call.dataset.callId,
  state: call.dataset.state,
  meta: call.querySelector('.meta').textContent,
  problem: call.querySelector('.problem').textContent,
  buttons: [...call.querySelectorAll('.actions button')].map((b) => b.dataset.action),
  lanes: Object.fromEntries([...call.querySelectorAll('.lane')].map((lane) => [lane.dataset.participant,
    [...lane.querySelectorAll('li.final')].map((li) => li.lastChild.textContent)])),
}))"""


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[CallAutomationEmulator]:
    emu = CallAutomationEmulator()
    await emu.start(tls_dir=tmp_path / "tls")
    yield emu
    await emu.stop()


def _settings(emu: CallAutomationEmulator) -> Settings:
    assert emu.ca_file is not None
    jwt = {"enabled": True, "jwks_url": emu.endpoint + "calling/keys", "audience": emu.resource_id}
    acs = {
        "mode": "transcribe",
        "audio_channel_type": "unmixed",
        "connection_string": emu.connection_string,
        "ca_file": str(emu.ca_file),
        "jwt": {**jwt, "ca_file": str(emu.ca_file)},
    }
    return load_settings(overrides={"acs": acs})


async def until(page: Page, check: Callable[[dict[str, Any]], bool], what: str, timeout_s: float) -> dict[str, Any]:
    """Poll the page until its one call card satisfies `check`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        cards: list[dict[str, Any]] = await page.evaluate(STATE_JS)
        if len(cards) == 1 and check(cards[0]):
            return cards[0]
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s: {cards}")
        await asyncio.sleep(0.2)


def _info(app: Starlette, call_id: str) -> dict[str, Any]:
    return dict(app.state.calls.get(call_id).info)


async def test_monitor_follows_a_two_party_acs_call(
    engines: Engines, texts: dict[str, str], emulator: CallAutomationEmulator, tmp_path: Path
) -> None:
    caller, agent = phone_raw_id(1), acs_raw_id(emulator.resource_id)
    speakers = [
        Speaker(caller, load_wav("short_16k.wav")[0], 16000),
        Speaker(agent, load_wav("reply_16k.wav")[0], 16000, start_ms=1500),
    ]
    script = CallScript(speakers, speed=2.0, hang_up_when_done=False, linger_ms=300)
    async with koe_server(_settings(emulator), engines) as (base, app), chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(base + "/calls")
        await page.wait_for_selector("#status[data-state=listening]")  # following /v1/calls/*/events

        call = await emulator.ring(base + "/acs/events", script)
        call_id = call.call_connection_id
        card = await until(page, lambda c: c["state"] == "streaming", "streaming", 20)
        assert card["id"] == call_id
        assert card["buttons"] == ["start", "stop"]
        assert "ACS · transcribe" in card["meta"]

        # Both participants' transcripts, each in its own lane, while the call streams.
        card = await until(page, lambda c: all(c["lanes"].get(p) for p in (caller, agent)), "both transcripts", 30)
        assert wer(texts["short"], " ".join(card["lanes"][caller])) <= 0.25, card
        assert call.stream_task is not None
        await call.stream_task
        card = await until(page, lambda c: all(c["lanes"].get(p) for p in (caller, agent)), "every transcript", 10)
        assert wer(texts["reply"], " ".join(card["lanes"][agent])) <= 0.25, card
        await until(page, lambda c: c["state"] == "stopped" and "streaming stopped" in c["meta"], "stopped", 10)
        await screenshot(page, "calls.png")

        # The buttons: koe's REST routes, Call Automation, and the callbacks back onto the page.
        button = page.locator(f'.call[data-call-id="{call_id}"] button[data-action=start]')
        await button.click()
        await until(page, lambda c: c["state"] == "streaming" and "streaming started" in c["meta"], "restarted", 20)
        assert _info(app, call_id)["last_operation_context"] == "koe-monitor-start"
        await page.locator(f'.call[data-call-id="{call_id}"] button[data-action=stop]').click()
        card = await until(page, lambda c: "streaming stopped" in c["meta"], "stopped by the button", 20)
        assert "Stop streaming requested." in card["problem"]
        assert call.callback_types().count("MediaStreamingStopped") == 2
        assert _info(app, call_id)["last_operation_context"] == "koe-monitor-stop"

        await emulator.hang_up(call_id)
        card = await until(page, lambda c: c["state"] == "ended", "the end of the call", 10)
        assert card["buttons"] == []
