"""A real koe server for the ACS tests: `async with koe_server(settings, engines) as base_url:` serves
`create_app()` under Hypercorn on a free 127.0.0.1 port, in the test's event loop, and stops it afterwards;
`tls=TlsFiles` serves it over TLS (`https://`), as `koe serve --tls` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.net.inprocess import serving
from koe.net.tls import TlsFiles
from koe.server.app import create_app
from koe.sim.acs.media import MediaStream


def acs_settings(**acs: Any) -> Settings:
    return load_settings(overrides={"acs": acs})


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None, tls: TlsFiles | None = None) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 (over TLS with `tls`'s certificate); yields its base URL."""
    certfile, keyfile = (tls.cert, tls.key) if tls is not None else (None, None)
    async with serving(app, port=port or 0, certfile=certfile, keyfile=keyfile) as bound:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{bound}"


@contextlib.asynccontextmanager
async def koe_server(
    settings: Settings, engines: Engines | None = None, tls: TlsFiles | None = None
) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(settings, engines or Engines())
    async with serve_app(app, tls=tls) as base:
        yield base, app


def record_outbound(stream: MediaStream) -> bytearray:
    """Every outbound AudioData payload `stream` receives, back to back (its playout timeline has gaps wherever the
    simulator, running faster than real time, played faster than koe sent)."""
    received = bytearray()
    enqueue = stream.playout.enqueue

    def keep(pcm: bytes, now_ms: float) -> None:
        received.extend(pcm)
        enqueue(pcm, now_ms)

    stream.playout.enqueue = keep  # type: ignore[method-assign]
    return received
