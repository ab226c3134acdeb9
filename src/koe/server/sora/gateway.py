"""The Sora door: koe as an audio streaming gateway that Sora's `audio_streaming_url` can point at.

Build a `SoraGateway(settings.sora, engines, access=settings)` and `await gateway.start()`; `gateway.port` then
tells where it listens, and `await gateway.close()` stops it. `koe serve` does this next to the main ASGI port.

Routes (spec §2.1): `POST /speech` (the configured service), `POST /test`, `POST /dump`, `GET /.ok`, and
`GET /metrics` (also on `sora.exporter_port` when set, as Suzu's exporter). Every one follows the server's access
rule (`koe.server.auth`): Sora's protocol carries no credentials, so a client needs a verified certificate (mTLS on
this port) or must be on this machine, and no request may name a foreign `Host` or come from a foreign web origin
(a 403 with Sora's JSON error body). A trailing slash and the query string
are ignored. Each Sora connection is one HTTP/2 request: the door de-frames its body with `koe.protocols.sora`,
injects the silent packet while Sora is idle, hands packets to the service, and writes each result back as one
newline-terminated JSON object per DATA frame while the body is still arriving.

Deliberate differences from the reference gateway (spec §2.8): a missing language code, or one the installed STT
model does not support, is a `400` with a JSON `reason` (not a `500`; for the language, the reason starts with Suzu's
error name `UNSUPPORTED-LANGUAGE-CODE`, and it comes before any audio is read); every error object ends in a newline
and is written once; empty packets are skipped; a malformed packet, an oversize length or a truncated packet ends that
stream only, with an error object. Past a limit of `koe.server.limits` (`limits.sora_sessions`, or
`stt.max_streams` for the `koe` service) a new request gets a `503` with the JSON body, and a stream ends with an
error object after `limits.session_lifetime_s`.

Why its own listener rather than Hypercorn (which serves the other doors): see `koe.net.h2listener`. In short,
raw framing needs each DATA frame to stay one packet, and the relay target of 1,000 connections per core at
50 packets/s leaves 20 µs per packet: measured, Hypercorn spends about 85 µs, this listener about 20 µs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import orjson

from koe import __version__
from koe.config import Settings, SoraSettings
from koe.engines.registry import Engines
from koe.log import bind
from koe.net.h2listener import Request, Response, ResponseStream, StreamHandler, start_listener, tls_context
from koe.protocols.sora import (
    SILENT_PACKET,
    Framing,
    Packet,
    SoraProtocolError,
    SoraRequest,
    packet_reader,
    parse_request_headers,
)
from koe.protocols.sora_results import encode, error_result, http_error_body
from koe.server.auth import AccessRequest, Kind, Listener, Refused, decide
from koe.server.calls.registry import CallRegistry
from koe.server.lifetime import SESSION_EXPIRED, end_message
from koe.server.limits import Admission, Ticket, session_lifetime_s
from koe.server.metrics import METRICS
from koe.server.sora.metrics import CONTENT_TYPE, SoraMetrics
from koe.server.sora.services.base import DumpService, Service, ServiceStream, TestService
from koe.tasks import TaskSet, within

log = logging.getLogger("koe.sora")

AUDIO_PATHS = ("/speech", "/test", "/dump")


class SoraGateway:
    def __init__(
        self,
        settings: SoraSettings,
        engines: Engines | None = None,
        calls: CallRegistry | None = None,
        *,
        access: Settings | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.settings = settings
        self.access = access if access is not None else Settings(sora=settings)
        """What the access rule (`koe.server.auth`) reads: the allowed hosts and origins (the server's), and the
        limits (`koe.server.limits`)."""
        self.admission = admission or Admission(self.access)
        self.lifetime_s = session_lifetime_s(self.access, "sora")
        self.engines = engines
        self.calls = calls
        self.call_streams: dict[str, int] = {}
        self.metrics = SoraMetrics()
        self.framing: Framing = "header" if settings.audio_streaming_header else "raw"
        self.silence_wait_s = (
            None if settings.disable_silent_packet else settings.time_to_wait_for_opus_packet_ms / 1000
        )
        self.test_service = TestService()
        self.dump_service = DumpService(
            settings.dump_file,
            settings.dump_ogg_dir,
            settings.audio_sample_rate,
            settings.audio_channel_count,
            on_malformed=self._count_malformed,
        )
        self.speech_service: Service = self._speech_service()
        self._servers: list[asyncio.Server] = []
        self.tasks = TaskSet(log, "Sora connection task")
        self.streams: set[SoraStream] = set()
        self.port = 0
        self.exporter_port = 0

    def _speech_service(self) -> Service:
        name = self.settings.service
        if name == "test":
            return self.test_service
        if name == "dump":
            return self.dump_service
        if name == "relay":
            from koe.server.sora.services.relay import RelayService

            return RelayService(self.settings, self.metrics)
        from koe.server.sora.services.koe import KoeService

        return KoeService(self.settings, self.engines, self.metrics)

    def _count_malformed(self) -> None:
        self.metrics.malformed_packets += 1

    async def start(self, *, reuse_port: bool = False) -> None:
        """Listen on `sora.port` (and the exporter's); `reuse_port` shares them with other workers."""
        s = self.settings
        context = None
        if s.https:
            if s.tls_fullchain_file is None or s.tls_privkey_file is None:
                raise ValueError("sora.https needs sora.tls_fullchain_file and sora.tls_privkey_file")
            cacert = str(s.tls_verify_cacert_path) if s.tls_verify_cacert_path else None
            context = tls_context(str(s.tls_fullchain_file), str(s.tls_privkey_file), cacert)
        refusal = Response(400, http_error_body("Bad Request", "the audio paths need HTTP/2"))
        server = await start_listener(
            self.route, s.host, s.port, ssl=context, http1_refusal=refusal, reuse_port=reuse_port
        )
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if s.exporter_port is not None:
            exporter = await start_listener(self._exporter_route, s.host, s.exporter_port, reuse_port=reuse_port)
            self._servers.append(exporter)
            self.exporter_port = exporter.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for stream in list(self.streams):
            stream.on_reset()
        self.tasks.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await within(server.wait_closed(), 1.0)
        self.dump_service.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.tasks.spawn(coro)

    # --- routing ----------------------------------------------------------------------------------------------

    def _exporter_route(self, request: Request) -> Response:
        refused = self._refusal(request, Listener.SORA_EXPORTER)
        if refused is not None:
            return refused
        path = _normalize(request.path)
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            return Response(200, self.metrics.render().encode(), [("content-type", CONTENT_TYPE)])
        return Response(404, http_error_body("Not Found"))

    def route(self, request: Request) -> Response | Callable[[ResponseStream], StreamHandler]:
        path = _normalize(request.path)
        answer = self._route(request, path)
        if isinstance(answer, Response):
            self.metrics.request(path if path in (*AUDIO_PATHS, "/.ok", "/metrics") else "other", answer.status)
        else:
            self.metrics.request(path, 200)
        return answer

    def _refusal(self, request: Request, listener: Listener) -> Response | None:
        """The server's access rule: with no credentials in Sora's protocol, mTLS or a loopback client."""
        client = request.peer.rpartition(":")[0] if request.peer.count(":") else request.peer
        headers = [(name.lower(), value) for name, value in request.headers]
        access = AccessRequest(Kind.SORA, headers, client=client.strip("[]"), listener=listener)
        decision = decide(access, self.access)
        if isinstance(decision, Refused):
            log.warning("sora: refused a request from %s: %s", request.peer, decision.message)
            return Response(decision.status, http_error_body(HTTPStatus(decision.status).phrase, decision.message))
        return None

    def _route(self, request: Request, path: str) -> Response | Callable[[ResponseStream], StreamHandler]:
        if (refused := self._refusal(request, Listener.SORA)) is not None:
            return refused
        if path == "/.ok" and request.method in ("GET", "HEAD"):
            return Response(200, orjson.dumps({"version": __version__}))
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            return Response(200, self.metrics.render().encode(), [("content-type", CONTENT_TYPE)])
        if path not in AUDIO_PATHS:
            if path in ("/.ok", "/metrics"):
                return _method_not_allowed("GET, HEAD")
            return Response(404, http_error_body("Not Found"))
        if request.method != "POST":
            return _method_not_allowed("OPTIONS, POST")
        if request.http_version != "2":
            return Response(400, http_error_body("Bad Request", "the audio paths need HTTP/2"))
        try:
            sora = parse_request_headers(request.headers)
        except SoraProtocolError as exc:
            # The reference gateway answers 500 here; the request is the client's error, so koe says 400 and why.
            return Response(400, http_error_body("Bad Request", str(exc)))
        fixed: dict[str, Service] = {"/test": self.test_service, "/dump": self.dump_service}
        service = fixed.get(path, self.speech_service)
        try:
            refusal = service.check(sora)
        except Exception as exc:  # e.g. no STT engine loaded
            log.warning("sora: %s cannot serve %s: %s", service.name, sora.connection_id, exc)
            return Response(503, http_error_body("Service Unavailable", str(exc)))
        if refusal is not None:
            return Response(400, http_error_body("Bad Request", refusal))
        ticket = self.admission.admit("sora", transcribes=service.transcribes)
        if not isinstance(ticket, Ticket):  # overload is refused, never shared: 503 with Suzu's error body
            return Response(503, http_error_body("Service Unavailable", ticket.message))
        return lambda response: SoraStream(self, sora, service, response, ticket)


class SoraStream:
    """One Sora connection's request: de-framing, silent-packet injection, and the service's results."""

    def __init__(
        self, gateway: SoraGateway, request: SoraRequest, service: Service, response: ResponseStream, ticket: Ticket
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.response = response
        self.ticket = ticket
        self.reader = packet_reader(gateway.framing)
        self.done = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._last_packet = self._loop.time()
        self._ids = {"channel_id": request.channel_id, "connection_id": request.connection_id}
        gateway.metrics.streams_active += 1
        gateway.streams.add(self)
        self.call_id = f"sora:{request.channel_id}:{request.session_id}"
        self._register(service.name)
        with bind(**self._ids):
            log.info("sora: stream opened (%s, %s)", service.name, request.language_code)
            self.service: ServiceStream = service.open(request, self)
        # An upstream service answers only once it is connected (spec §2.4); local ones answer at once.
        if not getattr(self.service, "defers_response", False):
            self.start_response()
        if gateway.silence_wait_s is not None:
            self._timer = self._loop.call_later(gateway.silence_wait_s, self._idle)
        # Sora sends nothing while a participant is silent or muted, so only the lifetime ends a stream here.
        self._lifetime = self._loop.call_later(gateway.lifetime_s, self._expire)

    # --- ResultSink ---------------------------------------------------------------------------------------------

    def emit(self, result: dict[str, Any]) -> None:
        if self.done or self.response.closed:
            return
        self.response.send(encode(result))
        self.gateway.metrics.result(str(result.get("type", "")))

    def start_response(self) -> None:
        if not self.done:
            self.response.start(200, [("content-type", "application/json")])

    def refuse(self, status: int) -> None:
        if self.done:
            return
        self.gateway.metrics.stream_error("upstream_connect")
        self.response.start(status, [("content-type", "application/json"), ("content-length", "0")])
        self._close()
        self.response.finish()

    def fail(self, reason: str, kind: str = "service") -> None:
        if self.done:
            return
        with bind(**self._ids):
            log.info("sora: stream failed: %s", reason)
        self.emit(error_result(reason))
        self.gateway.metrics.stream_error(kind)
        self._close()
        self.response.finish()
        with contextlib.suppress(Exception):
            self.service.abort()

    def publish(self, event: dict[str, Any]) -> None:
        if self.gateway.calls is not None:
            self.gateway.calls.publish(self.call_id, {**event, "participant": self.request.connection_id})

    # --- StreamHandler ------------------------------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self.done:
            return
        try:
            packets = self.reader.feed(data)
        except SoraProtocolError as exc:
            self.fail(str(exc), "framing")
            return
        for packet in packets:
            self._forward(packet)

    def on_end(self) -> None:
        if self.done:
            return
        try:
            self.reader.end()
        except SoraProtocolError as exc:
            self.fail(str(exc), "framing")
            return
        self._cancel_timer()
        self.gateway.spawn(self._finish())

    def on_reset(self) -> None:
        if self.done:
            return
        self.gateway.metrics.client_resets += 1
        with bind(**self._ids):
            log.info("sora: client went away mid-stream")
        self._close()
        with contextlib.suppress(Exception):
            self.service.abort()

    # --- internals ----------------------------------------------------------------------------------------------

    def _forward(self, packet: Packet) -> None:
        metrics = self.gateway.metrics
        if self.done:
            return
        if not packet.payload:
            metrics.empty_packets += 1  # the reference gateway's Ogg path fails on these (spec §2.8 #7)
            return
        self._last_packet = self._loop.time()
        if packet.injected:
            metrics.silent_packets_injected += 1
        else:
            metrics.packets += 1
            metrics.packet_bytes += len(packet.payload)
        try:
            self.service.packet(packet)
        except Exception as exc:  # a service bug costs this stream only
            log.exception("sora: service failed on a packet")
            self.fail(f"INTERNAL-ERROR: {type(exc).__name__}", "internal")

    def _idle(self) -> None:
        # One timer per stream, re-armed from the last packet's time, so a packet costs no timer churn.
        wait = self.gateway.silence_wait_s
        if self.done or wait is None:
            return
        idle = self._loop.time() - self._last_packet
        if idle >= wait - 0.001:
            self._forward(Packet(SILENT_PACKET, injected=True))
            idle = 0.0
        if not self.done:
            self._timer = self._loop.call_later(wait - idle, self._idle)

    async def _finish(self) -> None:
        try:
            await self.service.finish()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("sora: service failed to finish")
            self.fail(f"INTERNAL-ERROR: {type(exc).__name__}", "internal")
            return
        if not self.done:
            self._close()
            self.response.finish()

    def _expire(self) -> None:
        METRICS.session_ends.labels("sora", SESSION_EXPIRED).inc()
        message = end_message(SESSION_EXPIRED, self.gateway.lifetime_s, None)
        self.fail(f"SESSION-EXPIRED: {message} (limits.session_lifetime_s)", "lifetime")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        if self.done:
            return
        self.done = True
        self._cancel_timer()
        self._lifetime.cancel()
        self.ticket.release()
        self.gateway.metrics.streams_active -= 1
        self.gateway.streams.discard(self)
        calls = self.gateway.calls
        if calls is not None:
            left = self.gateway.call_streams.get(self.call_id, 1) - 1
            calls.update(self.call_id, connections=left)
            if left <= 0:
                self.gateway.call_streams.pop(self.call_id, None)
                calls.end(self.call_id, "every Sora connection's stream ended")
            else:
                self.gateway.call_streams[self.call_id] = left

    def _register(self, service: str) -> None:
        # One monitored call per Sora session; its participants are the session's connections.
        calls = self.gateway.calls
        if calls is None:
            return
        count = self.gateway.call_streams.get(self.call_id, 0) + 1
        self.gateway.call_streams[self.call_id] = count
        request = self.request
        calls.open(self.call_id, door="sora", mode=service, channel_id=request.channel_id,
                   session_id=request.session_id)  # fmt: skip
        calls.publish(self.call_id, {"type": "participant.joined", "participant": request.connection_id,
                                     "language": request.language_code})  # fmt: skip
        calls.update(self.call_id, "streaming", connections=count)


def _normalize(path: str) -> str:
    return path.rstrip("/") or "/"


def _method_not_allowed(allow: str) -> Response:
    return Response(
        405, http_error_body("Method Not Allowed"), [("content-type", "application/json"), ("allow", allow)]
    )
