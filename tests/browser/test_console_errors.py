"""What the voice console says when things go wrong, in headless Chromium against a real koe: the microphone refused,
a missing or wrong API key (and the right one, sent as the browser subprotocol, letting it in), the server going
away mid-session, and a server that is not there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Page

from koe.config import load_settings
from koe.engines.registry import Engines
from tests.browser.chromium import chromium
from tests.server.acs.support import koe_server

KEY = "console-test-key"


async def _start_and_read(page: Page, wanted_state: str) -> tuple[str, str]:
    """Press Start; wait for the status badge to reach `wanted_state`; return (state, error banner text)."""
    await page.click("#start")  # disables the button until the attempt is over
    await page.wait_for_selector("#start:not([disabled])", timeout=15_000)
    await page.wait_for_selector(f"#status[data-state={wanted_state}]", timeout=15_000)
    if wanted_state == "idle":  # the attempt failed: its error, not the state from before the click took effect
        await page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    error = await page.locator("#error").text_content() or ""
    return await page.locator("#status").get_attribute("data-state") or "", error


async def test_refused_microphone(tmp_path: Path) -> None:
    async with (
        koe_server(load_settings(), Engines()) as (base, _app),
        chromium(tmp_path, allow_microphone=False) as browser,
    ):
        page = await browser.new_page()
        await page.goto(base + "/")
        _state, error = await _start_and_read(page, "idle")
        assert "Microphone permission was denied" in error
        assert await page.locator("#start").text_content() == "Start talking"


@pytest.mark.models  # a live session needs the VAD engine
async def test_keys_and_a_server_that_goes_away(engines: Engines, tmp_path: Path) -> None:
    settings = load_settings(overrides={"server": {"api_keys": [KEY]}})
    async with chromium(tmp_path) as browser:
        page = await browser.new_page()
        async with koe_server(settings, engines) as (base, _app):
            await page.goto(base + "/")
            # Loading the page already asks for the voices, and says a key is needed.
            await page.wait_for_selector("#error:not([hidden])")
            assert "koe needs an API key" in (await page.locator("#error").text_content() or "")

            _state, error = await _start_and_read(page, "idle")
            assert "koe needs an API key" in error

            await page.fill("#key", "wrong-key")
            await page.dispatch_event("#key", "change")
            _state, error = await _start_and_read(page, "idle")
            assert "The API key was not accepted" in error

            await page.fill("#key", KEY)
            await page.dispatch_event("#key", "change")
            state, error = await _start_and_read(page, "listening")
            assert (state, error) == ("listening", "")
            assert await page.evaluate("localStorage.getItem('koe.apiKey')") == KEY
        # koe stopped under a live session: the page says so, and goes back to Start.
        await page.wait_for_selector("#status[data-state=idle]", timeout=15_000)
        error = await page.locator("#error").text_content() or ""
        assert "connection to koe was lost" in error or "koe closed the connection" in error, error

        await asyncio.sleep(0.2)
        _state, error = await _start_and_read(page, "idle")
        assert "koe is not reachable" in error
