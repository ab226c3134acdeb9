"""A real koe server for the ACS tests: `async with koe_server(settings, engines) as base_url:` serves
`create_app()` under Hypercorn on a free 127.0.0.1 port, in the test's event loop, and stops it afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.server.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def acs_settings(**acs: Any) -> Settings:
    return load_settings(overrides={"acs": acs})


def _without_lifespan(app: Any) -> Any:
    # koe's app has no lifespan handlers; declining lifespan leaves Hypercorn no task that could outlive the test.
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan events")
        await app(scope, receive, send)

    return wrapped


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None) -> AsyncIterator[str]:
    port = port or free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.websocket_ping_interval = None
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    task = asyncio.create_task(serve(_without_lifespan(app), config, shutdown_trigger=stop.wait))
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def koe_server(settings: Settings, engines: Engines | None = None) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(settings, engines or Engines())
    async with serve_app(app) as base:
        yield base, app
