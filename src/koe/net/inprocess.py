"""Serve an ASGI app with Hypercorn inside the running event loop: for simulators, benchmarks and tests.

`koe serve` has its own runner (`koe.server.run`); this is for code that needs a real server next to itself, such as
the Call Automation emulator's REST API, `koe bench latency`'s in-process koe, or a test's koe on loopback.

    server = await start_app(app, "127.0.0.1")     # port 0: a free one
    ... server.port ...
    await server.stop()

or `async with serving(app) as port: ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from koe.tasks import stop, within

READY_TIMEOUT_S = 4.0
STOP_TIMEOUT_S = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def without_lifespan(app: Any) -> Any:
    """The app with lifespan declined: Hypercorn then keeps no lifespan task that could outlive a cancelled serve."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan events")  # Hypercorn goes on without lifespan support
        await app(scope, receive, send)

    return wrapped


class InProcessServer:
    """A Hypercorn server running as a task of this event loop."""

    def __init__(self, stop: asyncio.Event, task: asyncio.Task[Any], port: int) -> None:
        self._stop, self._task, self.port = stop, task, port

    async def stop(self) -> None:
        self._stop.set()
        # A TLS peer that never sends close_notify would hold the shutdown for the SSL timeout; do not wait for it.
        with contextlib.suppress(Exception):
            await within(asyncio.shield(self._task), STOP_TIMEOUT_S)
        if not self._task.done():
            await stop(self._task, ignore_failure=True)


async def start_app(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    quiet: bool = False,
    log_level: str = "INFO",
) -> InProcessServer:
    """Serve `app` on host:port (a free port when 0) and return once it accepts connections; `log_level` is
    Hypercorn's (`ERROR` keeps its start-up notices out of a command's output), `quiet` silences it."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from koe.net.close_frames import report_clean_closes

    report_clean_closes()
    port = port or free_port(host)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = log_level
    if quiet:
        config.errorlog = None
    config.websocket_ping_interval = None
    config.graceful_timeout = 1.0  # clients keep pooled connections open; do not wait for them at shutdown
    if certfile is not None and keyfile is not None:
        config.certfile, config.keyfile = str(certfile), str(keyfile)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(without_lifespan(app), config, shutdown_trigger=stop.wait))
    server = InProcessServer(stop, task, port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return server
        except OSError:
            if task.done() or loop.time() > deadline:
                await server.stop()
                raise RuntimeError(f"the in-process server did not start on {host}:{port}") from None
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    quiet: bool = False,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> AsyncIterator[int]:
    """`start_app()` for the length of a block; yields the port."""
    server = await start_app(app, host, port, quiet=quiet, certfile=certfile, keyfile=keyfile)
    try:
        yield server.port
    finally:
        await server.stop()
