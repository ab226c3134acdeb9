"""The pages' routes on a real koe: `/` and `/calls` with their static files (JavaScript modules and worklets served
as JavaScript), `GET /v1/voices` under the server's access rule, and the routes around them still answering.
(Every route under the Host, Origin and key rules: `tests/server/test_auth_matrix.py`.)"""

from __future__ import annotations

import re

import httpx
import pytest

from koe.config import load_settings
from koe.engines.registry import Engines
from koe.server.pages import STATIC
from tests.server.acs.support import koe_server

KEY = "pages-test-key"


async def test_pages_and_every_file_they_load() -> None:
    async with koe_server(load_settings(), Engines()) as (base, _app), httpx.AsyncClient(base_url=base) as http:
        for path, title in (("/", "voice console"), ("/calls", "call monitor")):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert f"koe · {title}" in page.text
            assert page.headers["x-frame-options"] == "DENY"
        # Every module a page imports, and every worklet, is served, and as JavaScript (module scripts need it).
        scripts = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.js"))
        assert {"console.js", "calls.js", "worklets/capture.js", "worklets/playback.js"} <= set(scripts)
        for name in scripts:
            response = await http.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith("text/javascript"), name
            for imported in re.findall(r'from "\./([^"]+)"', response.text):
                folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
                assert (STATIC / folder / imported).is_file(), (name, imported)
        assert (await http.get("/static/koe.css")).headers["content-type"].startswith("text/css")
        assert (await http.get("/static/missing.js")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/v1/calls")).json() == {"calls": []}


@pytest.mark.models
async def test_voices_lists_the_installed_voices(engines: Engines) -> None:
    async with koe_server(load_settings(), engines) as (base, _app), httpx.AsyncClient(base_url=base) as http:
        body = (await http.get("/v1/voices")).json()
    tts = engines.tts
    assert tts is not None
    assert body["default"] == tts.default_voice and body["voices"] == tts.voices()
    assert body["default"] in body["voices"]
    assert body["by_language"]["en"] == tts.voice_for("en") and body["by_language"]["ja"] == "jf_alpha"
    assert [voice["name"] for voice in body["details"]] == body["voices"]
    assert {"name": "jm_kumo", "language": "ja", "gender": "male", "backend": "kokoro"} in body["details"]


async def test_voices_without_a_tts_engine_say_so() -> None:
    async with koe_server(load_settings(), Engines()) as (base, _app), httpx.AsyncClient(base_url=base) as http:
        body = (await http.get("/v1/voices")).json()
    assert body["voices"] == []
    assert "not loaded" in body["error"]


async def test_with_keys_the_pages_load_but_their_api_needs_a_key() -> None:
    settings = load_settings(overrides={"server": {"api_keys": [KEY]}})
    async with koe_server(settings, Engines()) as (base, _app), httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/static/voice.js")).status_code == 200
        refused = await http.get("/v1/voices")
        assert refused.status_code == 401
        assert "API key" in refused.json()["error"]["message"]
        wrong = await http.get("/v1/voices", headers={"Authorization": "Bearer nope"})
        assert wrong.json()["error"]["message"] == "the API key is not valid (Authorization: Bearer)"
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"api-key": KEY}):
            assert (await http.get("/v1/voices", headers=headers)).status_code == 200
