"""What a person sees: the voice console at `/`, the call monitor at `/calls`, their static files under `/static`,
and `GET /v1/voices` (the installed voices, for the console's voice picker).

Call `page_routes(settings, engines)` and add the routes to the app. The pages are plain HTML, CSS and JavaScript
modules from `koe/server/static/`, with no build step; they talk to koe only through the public API (the Realtime
door, `/v1/calls…`), so they show what any client would get. The pages themselves are served to anyone who can reach
the port; everything they fetch follows the server's access rule (`koe.server.auth.admit`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server.auth import admit

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/calls": "calls.html"}
_HEADERS = {
    # The pages hold an API key in localStorage: no framing by other sites, no guessing of content types.
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_routes(settings: Settings, engines: Engines) -> list[BaseRoute]:
    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(_request: Request) -> Response:
            return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=_HEADERS)

        return endpoint

    async def voices(request: Request) -> Response:
        refused = admit(settings, _presented_key(request), request.client.host if request.client else None)
        if refused is not None:
            status = 401 if settings.server.api_keys else 403
            return JSONResponse({"error": {"code": "unauthorized", "message": refused}}, status_code=status)
        tts = engines.tts
        if tts is None:
            return JSONResponse({"default": None, "voices": [], "error": "the TTS engine is not loaded"})
        return JSONResponse({"default": tts.default_voice, "voices": tts.voices()})

    routes: list[BaseRoute] = [Route(path, page(name), methods=["GET"]) for path, name in PAGES.items()]
    routes += [
        Route("/v1/voices", voices, methods=["GET"]),
        Mount("/static", app=_Static(directory=STATIC), name="static"),
    ]
    return routes


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("api-key")
    auth = request.headers.get("authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key or None


class _Static(StaticFiles):
    """StaticFiles that revalidates every time (the files change with each koe version, and are small)."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response
