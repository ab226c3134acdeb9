"""The ASGI application: every door on one port. `create_app()` is what `koe serve` runs under Hypercorn.

`GET /healthz` says which engines loaded (and why one did not), whether each can serve now (`ready`: a remote LLM
that is down or stalled is not), and the depth of each inference queue.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from koe import __version__
from koe.config import Settings
from koe.engines.registry import Engines
from koe.server._asgi_access import guarded
from koe.server.auth import Kind
from koe.server.limits import Admission


def create_app(settings: Settings, engines: Engines) -> Starlette:
    started = time.time()

    async def healthz(_request: Request) -> JSONResponse:
        problems = await engines.check()  # a remote LLM that is down or stalled (cached: never one call per probe)
        body: dict[str, Any] = {
            "status": "ok" if all(s.loaded for s in engines.status.values()) and not problems else "degraded",
            "version": __version__,
            "uptime_s": round(time.time() - started, 1),
            "pid": os.getpid(),  # which process answered: `koe serve --workers N` runs N
            **engines.health(problems),
        }
        if (cluster := calls.status()) is not None:
            body["cluster"] = cluster
        return JSONResponse(body)

    from koe.server.acs.door import AcsDoor, acs_routes
    from koe.server.calls.api import calls_routes
    from koe.server.cluster import call_registry

    # Shared by every door (/v1/calls and /v1/calls/{id}/events); with cluster.redis_url, by every koe node.
    calls = call_registry(settings)
    admission = Admission(settings)  # the limits every door counts against (koe.server.limits)
    # One ACS door for the main port and, when `acs.media_port` is set, its own listener (`koe serve` starts it).
    acs = AcsDoor(settings, engines, calls, admission) if settings.acs.enabled else None
    from koe.server.metrics import metrics_routes
    from koe.server.openai.api import openai_routes
    from koe.server.openapi.document import openapi_routes
    from koe.server.pages import page_routes
    from koe.server.realtime.door import realtime_routes

    door_routes = [
        *calls_routes(calls, settings),
        *acs_routes(acs),
        *(realtime_routes(settings, engines, admission) if settings.realtime.enabled else []),
        *page_routes(settings, engines),  # the voice console at / and the call monitor at /calls
        *openai_routes(settings, engines),
        *metrics_routes(settings, engines),
        *openapi_routes(settings),
    ]
    public_healthz = guarded(settings, Kind.PAGE, healthz)  # public, under the Host rule

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await calls.start()
        try:
            yield
        finally:
            if acs is not None:
                acs.close()  # calls waiting for their media to reconnect end now, while the registry still runs
            await calls.close()

    app = Starlette(routes=[Route("/healthz", public_healthz, methods=["GET"]), *door_routes], lifespan=lifespan)
    app.state.calls = calls
    app.state.admission = admission
    app.state.acs = acs
    app.state.settings = settings
    app.state.engines = engines
    return app
