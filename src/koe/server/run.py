"""Running the server: load the engines with progress, then serve the app with Hypercorn until interrupted.

`run_server()` is what `koe serve` calls. Engines that fail to load are reported and skipped; the server still
starts so the doors that do not need them keep working. The Sora door and, when `acs.media_port` is set, the ACS
media door also listen on ports of their own, next to the main one. With TLS (`server.tls`, `koe serve --tls`, or
certificate files), every listener serves it: `koe.server.tls` decides which certificate each one gets. Every port
is checked before the models load (`koe.server.ports`): a taken one is one line naming its setting, and exit 1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from koe.config import Settings
from koe.engines.registry import load_engines
from koe.log import setup_logging
from koe.server.auth import allowed_hosts, is_loopback, sora_mtls
from koe.server.ports import port_problems
from koe.tasks import describe_tasks

if TYPE_CHECKING:
    from koe.server.acs.door import AcsDoor
    from koe.server.acs.listener import AcsMediaListener

log = logging.getLogger("koe.server")


def run_server(settings: Settings, progress: Callable[[str], None], *, reuse_port: bool = False) -> int:
    """Serve until SIGINT or SIGTERM; the exit status. `reuse_port`: one of `koe serve --workers` (every listener
    shares its port with the other workers, `koe.server.workers`)."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from koe.net.close_frames import report_clean_closes
    from koe.server.app import create_app
    from koe.server.tls import TlsSetupError, check_certificates, describe, effective_tls

    setup_logging(settings.server.log_level, settings.server.log_json)
    try:
        served = effective_tls(settings)
        settings = served.settings
        check_certificates(settings)
    except (TlsSetupError, OSError) as exc:
        progress(f"cannot serve TLS: {exc}")
        return 1
    if settings.server.public:
        from koe.server.public import prepare_public

        settings, refusals = prepare_public(settings)
        where = f"{settings.server.host}:{settings.server.port}"
        for reason in refusals:
            progress(f"refusing to start with --public on {where}: {reason}")
        if refusals:
            return 1
    problems = port_problems(settings)  # before the models load: a taken port fails in a second, not after them
    for problem in problems:
        progress(problem)
    if problems:
        return 1
    engines = load_engines(settings, progress=progress)
    failed = [kind for kind, status in engines.status.items() if not status.loaded]
    if failed:
        progress(f"starting without: {', '.join(failed)} (see the messages above, and GET /healthz)")
    for line in [*access_summary(settings), *describe(served)]:
        progress(line)
    app = create_app(settings, engines)
    config = Config()
    config.bind = [f"{settings.server.host}:{settings.server.port}"]
    if reuse_port:
        from koe.net.reuseport import shared_socket

        # Hypercorn takes a socket made here by its descriptor (and owns it from then on).
        config.bind = [f"fd://{shared_socket(settings.server.host, settings.server.port).detach()}"]
    if settings.server.tls_cert_file is not None and settings.server.tls_key_file is not None:
        # Hypercorn offers h2 and http/1.1 by ALPN; WebSockets go over HTTP/1.1 (or RFC 8441 over h2).
        config.certfile, config.keyfile = str(settings.server.tls_cert_file), str(settings.server.tls_key_file)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_ping_interval = None
    config.keep_alive_timeout = 75
    report_clean_closes()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("asyncio tasks:\n%s", describe_tasks()))
        scheme = "https" if settings.server.tls_cert_file is not None else "http"
        progress(f"serving on {scheme}://{settings.server.host}:{settings.server.port}/ (health: /healthz)")
        sora = await _start_sora(settings, engines, app.state.calls, progress, app.state.admission, reuse_port)
        app.state.sora = sora  # the main /metrics includes the Sora door's counters
        acs_media = await start_acs_media(settings, app.state.acs, progress, reuse_port=reuse_port)
        try:
            await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]  # Starlette is ASGI 3
        finally:
            if acs_media is not None:
                await acs_media.close()
            if sora is not None:
                await sora.close()

    asyncio.run(main())
    for pool in engines.pools():
        pool.shutdown()
    return 0


def access_summary(settings: Settings) -> list[str]:
    """What `koe serve` says at startup about who may connect (the rule is `koe.server.auth`)."""
    server, lines = settings.server, []
    if server.api_keys:
        lines.append(
            f"{len(server.api_keys)} API key(s) configured: every door takes one as the api-key header, "
            "Authorization: Bearer, the openai-insecure-api-key.<key> subprotocol or ?api-key="
        )
    else:
        origins = f", and {', '.join(server.allowed_origins)}" if server.allowed_origins else ""
        lines.append(
            "no API keys configured: only clients on this machine (loopback) are accepted, and only from koe's own "
            f"pages{origins} when sent by a browser (server.allowed_origins)"
        )
    if not is_loopback(server.host) or server.allowed_hosts:
        names = ", ".join(["localhost", "IP addresses", *allowed_hosts(settings)])
        lines.append(f"requests must name one of these hosts (server.allowed_hosts): {names}")
    sora = settings.sora
    if sora.enabled and not is_loopback(sora.host) and not sora_mtls(sora):
        lines.append(
            f"the Sora door listens on {sora.host} without client certificates: it serves only clients on this "
            "machine (Suzu's protocol has no credentials; set sora.https with sora.tls_verify_cacert_path for mTLS)"
        )
    return lines


async def _start_sora(
    settings: Settings,
    engines: Any,
    calls: Any,
    progress: Callable[[str], None],
    admission: Any = None,
    reuse_port: bool = False,
) -> Any:
    """The Sora door listens on its own HTTP/2 port (see `koe.server.sora.gateway` for why)."""
    if not settings.sora.enabled:
        progress("the Sora door is off (sora.enabled = false)")
        return None
    from koe.server.sora.gateway import SoraGateway

    gateway = SoraGateway(settings.sora, engines, calls, access=settings, admission=admission)
    await gateway.start(reuse_port=reuse_port)
    s = settings.sora
    scheme = "https" if s.https else "http"
    framing = "20-byte header" if s.audio_streaming_header else "raw"
    progress(
        f"Sora audio streaming gateway on {scheme}://{s.host}:{gateway.port}/speech ({s.service}, {framing}; "
        "sora.port moves it, sora.enabled = false turns it off)"
    )
    return gateway


async def start_acs_media(
    settings: Settings, door: AcsDoor | None, progress: Callable[[str], None], *, reuse_port: bool = False
) -> AcsMediaListener | None:
    """The ACS media door's own listener (picows) on `acs.media_port`, when set; see `koe.server.acs.listener`."""
    acs = settings.acs
    if door is None or not acs.media_port:
        return None
    from koe.server.acs.listener import AcsMediaListener
    from koe.server.tls import media_port_context

    host = acs.media_host or settings.server.host
    context = media_port_context(settings)
    listener = await AcsMediaListener.start(door, host, acs.media_port, ssl=context, reuse_port=reuse_port)
    scheme = "wss" if context is not None else "ws"
    progress(f"ACS media listener on {scheme}://{host}:{listener.port}{acs.media_path} (picows)")
    return listener
