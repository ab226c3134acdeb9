"""The ACS door: koe as the WebSocket server that Azure Communication Services streams call audio to.

`acs_routes(settings, engines, registry)` gives the routes to mount: the media WebSocket at `acs.media_path` (and
below it, so transport URLs can carry per-call path segments and query parameters), every extra route in
`acs.routes`, and the Call Automation webhooks (`koe.server.acs_callautomation`).

Each connection: optional JWT check before the upgrade (a 401/403 JSON denial), accept without a subprotocol,
then every frame goes through `koe.protocols.acs.InboundStream`. Malformed frames are logged, counted and skipped;
protocol violations close the socket with a code and reason. Audio goes to the call's mode pipeline
(`koe.server.acs_modes`): transcribe, agent, bridge or echo. Results are published to the call registry
(`koe.server.calls`) and, when configured, a webhook. Outbound frames go through one `OutboundWriter` per
connection, so sends are serialized and `StopAudio` overtakes audio not yet sent.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from koe.config import ACSMode, Settings
from koe.engines.registry import Engines
from koe.log import bind
from koe.protocols.acs import (
    CLOSE_INTERNAL_ERROR,
    AudioData,
    AudioMetadata,
    DtmfData,
    InboundStream,
    MalformedFrame,
    ProtocolViolation,
)
from koe.server.acs_auth import AcsTokenValidator, TokenRejected
from koe.server.acs_modes import MODES, ModeContext, ModeUnavailable, Pipeline
from koe.server.acs_writer import OutboundWriter
from koe.server.calls import CallRegistry
from koe.server.calls_api import client_allowed
from koe.server.metrics import METRICS
from koe.server.webhooks import WebhookSender

log = logging.getLogger("koe.server.acs")

LOG_EVERY_MALFORMED = 100
"""After the first few, log one malformed frame in this many, so a broken sender cannot flood the log."""
_FIRST_MALFORMED_LOGGED = 5


class AcsDoor:
    """Shared state of the door: settings, engines, the registry, the token validator and the webhook."""

    def __init__(self, settings: Settings, engines: Engines, registry: CallRegistry) -> None:
        self.settings = settings
        self.engines = engines
        self.registry = registry
        self.validator = AcsTokenValidator(settings.acs.jwt) if settings.acs.jwt.enabled else None
        url = settings.acs.webhook_url
        self.webhook = WebhookSender(url, settings.acs.webhook_events) if url else None
        self.connections: dict[str, int] = {}
        self.counters: dict[str, int] = {"connections": 0, "rejected": 0, "violations": 0, "malformed": 0}

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        stamped = self.registry.publish(call_id, event)
        if self.webhook is not None:
            self.webhook.submit(stamped)

    def route(self, path: str, mode: ACSMode) -> list[BaseRoute]:
        async def endpoint(websocket: WebSocket) -> None:
            await self.serve(websocket, mode)

        base = path.rstrip("/") or "/"
        below = f"{base.rstrip('/')}/{{call_path:path}}"
        return [WebSocketRoute(base, endpoint), WebSocketRoute(below, endpoint)]

    async def serve(self, websocket: WebSocket, mode: ACSMode) -> None:
        if not await self._admit(websocket):
            return
        acs = self.settings.acs
        query_mode = websocket.query_params.get("mode")
        if acs.allow_mode_override and query_mode in MODES:
            mode = query_mode  # type: ignore[assignment]  # checked against MODES just above
        call_id = (
            websocket.headers.get("x-ms-call-connection-id")
            or websocket.path_params.get("call_path", "").strip("/").split("/")[0]
            or str(uuid.uuid4())
        )
        correlation_id = websocket.headers.get("x-ms-call-correlation-id", "")
        with bind(call_id=call_id):
            await websocket.accept()
            self.counters["connections"] += 1
            self.connections[call_id] = self.connections.get(call_id, 0) + 1
            self.registry.open(call_id, door="acs", mode=mode, correlation_id=correlation_id, path=websocket.url.path)
            try:
                await _Connection(self, websocket, call_id, mode).run()
            finally:
                self.connections[call_id] -= 1
                if not self.connections[call_id]:
                    del self.connections[call_id]
                    call = self.registry.get(call_id)
                    # A call answered through Call Automation outlives its media: CallDisconnected ends it.
                    if call is not None and not call.info.get("managed"):
                        self.registry.end(call_id, "media stream closed")

    async def _admit(self, websocket: WebSocket) -> bool:
        """JWT (when configured) or koe's own access rule, checked before the upgrade."""
        if self.validator is not None:
            try:
                await self.validator.validate(websocket.headers)
                return True
            except TokenRejected as exc:
                return await self._deny(websocket, exc.status, exc.reason)
        key = websocket.query_params.get("api-key") or websocket.query_params.get("api_key")
        keys = [k.get_secret_value() for k in self.settings.server.api_keys]
        if key and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
            return True
        if client_allowed(websocket, self.settings):
            return True
        return await self._deny(websocket, 401, "present a valid ACS token or an API key")

    async def _deny(self, websocket: WebSocket, status: int, reason: str) -> bool:
        self.counters["rejected"] += 1
        log.warning("refused an ACS media connection: %s", reason)
        code = "unauthorized" if status == 401 else "forbidden"
        await websocket.send_denial_response(
            JSONResponse({"error": {"code": code, "message": reason}}, status_code=status)
        )
        return False


class _Connection:
    def __init__(self, door: AcsDoor, websocket: WebSocket, call_id: str, mode: ACSMode) -> None:
        self.door = door
        self.websocket = websocket
        self.call_id = call_id
        self.mode = mode
        self.stream = InboundStream(require_metadata_first=door.settings.acs.require_metadata_first)
        self.writer: OutboundWriter | None = None
        self.pipeline: Pipeline | None = None
        self.drop_silent = door.settings.acs.silent_frames == "drop"

    async def run(self) -> None:
        close: tuple[int, str] | None = None
        try:
            close = await self._receive_loop()
        except Exception:
            log.exception("ACS media connection failed")
            close = (CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            hung_up = close is None
            if self.pipeline is not None:
                with contextlib.suppress(Exception):
                    await self.pipeline.finish(hung_up=hung_up)
            if self.writer is not None:
                await self.writer.close()
            self.door.registry.update(self.call_id, "stopped", stream=self.stream.stats.as_dict())
            if close is not None and self.websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(*close)

    async def _receive_loop(self) -> tuple[int, str] | None:
        """Returns the close to send, or None when the peer went away."""
        receive = self.websocket.receive
        while True:
            try:
                message = await receive()
            except WebSocketDisconnect:
                return None
            if message["type"] == "websocket.disconnect":
                return None
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            try:
                event = self.stream.receive(frame)
            except MalformedFrame as exc:
                self._malformed(exc)
                continue
            except ProtocolViolation as exc:
                self.door.counters["violations"] += 1
                log.warning("closing ACS media connection: %s", exc.reason)
                self.door.publish(self.call_id, {"type": "error", "code": "protocol_violation", "message": exc.reason})
                return exc.close_code, exc.reason
            if isinstance(event, AudioData):
                if self.pipeline is not None and not (event.silent and self.drop_silent):
                    self.pipeline.audio(event)
            elif isinstance(event, AudioMetadata):
                try:
                    await self._start(event)
                except ModeUnavailable as exc:
                    log.error("cannot serve the call in %s mode: %s", self.mode, exc)
                    self.door.publish(self.call_id, {"type": "error", "code": "mode_unavailable", "message": str(exc)})
                    return CLOSE_INTERNAL_ERROR, f"{self.mode} mode unavailable"
            elif isinstance(event, DtmfData):
                who = event.participant_raw_id
                self.door.publish(self.call_id, {"type": "dtmf", "participant": who, "tone": event.data})
                if self.pipeline is not None:
                    self.pipeline.dtmf(event)

    async def _start(self, metadata: AudioMetadata) -> None:
        if self.pipeline is not None:
            return  # a repeated AudioMetadata with the same format changes nothing
        self.writer = OutboundWriter(self.websocket, metadata.sample_rate)
        self.writer.start()
        context = ModeContext(
            settings=self.door.settings,
            engines=self.door.engines,
            call_id=self.call_id,
            rate=metadata.sample_rate,
            writer=self.writer,
            publish=lambda event: self.door.publish(self.call_id, event),
        )
        self.pipeline = MODES[self.mode](context)
        await self.pipeline.start()
        self.door.registry.update(
            self.call_id,
            "streaming",
            sample_rate=metadata.sample_rate,
            subscription_id=metadata.subscription_id,
            mode=self.mode,
        )

    def _malformed(self, exc: MalformedFrame) -> None:
        self.door.counters["malformed"] += 1
        METRICS.drop("acs", "malformed")
        count = self.stream.stats.malformed
        if count <= _FIRST_MALFORMED_LOGGED or count % LOG_EVERY_MALFORMED == 0:
            log.warning("skipped a malformed ACS frame (%d so far): %s", count, exc)


def acs_routes(settings: Settings, engines: Engines, registry: CallRegistry) -> list[BaseRoute]:
    """Every route of the ACS door, or none when `acs.enabled` is false."""
    if not settings.acs.enabled:
        return []
    door = AcsDoor(settings, engines, registry)
    routes = door.route(settings.acs.media_path, settings.acs.mode)
    for extra in settings.acs.routes:
        routes += door.route(extra.path, extra.mode)
    from koe.server.acs_callautomation import callautomation_routes

    routes += callautomation_routes(settings, registry)
    return routes
