"""A small full-duplex HTTP/2 listener on asyncio and the `h2` library, for the Sora door (and its metrics port).

Call `start_listener(route, host, port, ssl=…)`. `route(request)` is called once per request, as soon as its
HEADERS arrive, and returns either a `Response` (sent at once, whole) or a factory that takes the request's
`ResponseStream` and returns a `StreamHandler`. The handler then gets every DATA frame as it arrives, one
`on_data()` call per frame with frame boundaries kept, while it writes its own DATA frames back through the
stream: the response goes out while the request body is still arriving.

One TCP (or TLS) connection speaks:
- h2c with prior knowledge (the client starts with the HTTP/2 preface);
- HTTP/1.1 with `Upgrade: h2c` (101, then HTTP/2; the upgrade request's body becomes stream 1's);
- h2 over TLS, chosen by ALPN, with optional client-certificate verification (mTLS) in the `ssl` context;
- plain HTTP/1.1 for anything else: `route()` sees `http_version="1.1"`, and a streaming answer to an HTTP/1.1
  request is refused with the `http1_refusal` response (the Sora door's 400).

Why not Hypercorn (which serves koe's other doors): it does stream both ways over HTTP/2 (h2c prior knowledge,
Upgrade and TLS with a client-CA check all work), but ASGI does not promise one body message per DATA frame, which
raw framing needs, and each packet costs an ASGI message, a queue hop and a task switch. Measured by
`koe bench sora` (`listener_comparison`), one core answering the `test` service at 10,000 packets/s: Hypercorn
about 85 µs of CPU per packet and saturated (p50 added latency near 80 ms); this listener about 20 µs and p99
under 10 ms. The relay target (1,000 connections per core at 50 packets/s, so 20 µs per packet) decided it.
Two fast paths get it there (`_h2connection`, `_h2stream`): a plain DATA frame of a stream being answered goes
straight to its handler, and response DATA frames are built directly; `h2` keeps the rest of the protocol.
"""

from __future__ import annotations

import asyncio
import pathlib
import ssl as ssl_module

from koe.net._h2connection import MAX_FRAME_BYTES, _Connection
from koe.net.h2types import Request, Response, ResponseStream, Route, StreamHandler

__all__ = [
    "MAX_FRAME_BYTES",
    "Request",
    "Response",
    "ResponseStream",
    "Route",
    "StreamHandler",
    "start_listener",
    "tls_context",
]


def tls_context(certfile: str, keyfile: str, verify_cacert_path: str | None = None) -> ssl_module.SSLContext:
    """Server TLS with ALPN h2 (and http/1.1 for health checks); a CA file or directory turns on mTLS."""
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if verify_cacert_path:
        path = pathlib.Path(verify_cacert_path)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            context.load_verify_locations(cafile=str(file))
        context.verify_mode = ssl_module.CERT_REQUIRED
    return context


async def start_listener(
    route: Route,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    http1_refusal: Response | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on host:port; returns the started `asyncio.Server` (its sockets tell the port when `port=0`).
    `reuse_port`: share the port with other processes (`SO_REUSEPORT`: `koe serve --workers`)."""
    refusal = http1_refusal or Response(400, b'{"message":"Bad Request"}\n')
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(route, refusal), host, port, ssl=ssl, backlog=1024, reuse_port=reuse_port or None
    )
