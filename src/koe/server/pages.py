"""What a person sees: the voice console at `/`, the call monitor at `/calls`, their static files under `/static`,
and `GET /v1/voices` (the installed voices, for the console's voice picker).

Call `page_routes(settings, engines)` and add the routes to the app. The pages are plain HTML, CSS and JavaScript
modules from `koe/server/static/`, with no build step; they talk to koe only through the public API (the Realtime
door, `/v1/calls…`), so they show what any client would get. The pages themselves are public (only the Host rule of
`koe.server.auth` applies to them); everything they fetch follows the server's whole access rule.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Receive, Scope, Send

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server._asgi_access import guarded, refusal
from koe.server.auth import Kind

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

        return guarded(settings, Kind.PAGE, endpoint)

    async def voices(_request: Request) -> Response:
        tts = engines.tts
        if tts is None:
            return JSONResponse({"default": None, "voices": [], "error": "the TTS engine is not loaded"})
        infos = [tts.voice_info(name) for name in tts.voices()]
        languages = sorted({info.language for info in infos})
        return JSONResponse(
            {
                "default": tts.default_voice,
                "voices": [info.name for info in infos],
                "by_language": {language: tts.voice_for(language) for language in languages},
                "details": [
                    {"name": i.name, "language": i.language, "gender": i.gender, "backend": i.backend} for i in infos
                ],
            }
        )

    routes: list[BaseRoute] = [Route(path, page(name), methods=["GET"]) for path, name in PAGES.items()]
    routes += [
        Route("/v1/voices", guarded(settings, Kind.API, voices), methods=["GET"]),
        Mount("/static", app=_Static(settings, directory=STATIC), name="static"),
    ]
    return routes


class _Static(StaticFiles):
    """StaticFiles behind the Host rule (the pages are public), revalidated every time (the files change with each
    koe version, and are small)."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        super().__init__(directory=directory)
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = refusal(scope, self.settings, Kind.PAGE)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response
