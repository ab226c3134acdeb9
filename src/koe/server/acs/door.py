"""The ACS door: koe as the WebSocket server that Azure Communication Services streams call audio to.

`AcsDoor(settings, engines, registry)` is the door; `acs_routes(door)` gives the routes to mount on the main port:
the media WebSocket at `acs.media_path` (and below it, so transport URLs can carry per-call path segments and query
parameters), every extra route in `acs.routes`, and the Call Automation webhooks (`koe.server.acs.callautomation`).
The same door also serves its own port when `acs.media_port` is set (`koe.server.acs.listener`, on picows).

Each connection: `match(path)` picks the route's mode, `refusal(request)` applies the server's access rule
(`koe.server.auth`: keys, or ACS's JWT when configured) before the upgrade (a 401/403 JSON denial), then
`serve(socket, mode, call_path)` runs the call on an accepted `koe.server.acs.socket.MediaSocket`: every frame goes
through `koe.protocols.acs.InboundStream`. The call's language is the transport URL's `?language=` (a BCP-47 tag
such as `ja-JP`, or `auto`, which Call Automation's `transportUrl` carries), else `acs.language`; one koe cannot hear
closes the socket at once with 1008 and `unsupported_language: …`, before any audio is read.
Malformed frames are logged, counted and skipped; protocol violations close the socket with a code and reason.
Audio goes to the call's mode pipeline (`koe.server.acs.modes.base`): transcribe, agent, bridge or echo. Results are
published to the call registry (`koe.server.calls.registry`) and, when configured, a webhook. Outbound frames go through
one `OutboundWriter` per connection, so sends are serialized and `StopAudio` overtakes audio not yet sent.

A media connection lost without a close frame leaves its call open for `acs.reconnect_grace_s`, in state
"reconnecting", as ACS reconnects the stream of a live call: a new connection with the same call id goes on with it
(its subscribers and webhook kept, no `call.ended` in between); past the grace the call ends, "media stream lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from koe.config import ACSMode, Settings
from koe.engines.registry import Engines
from koe.log import bind
from koe.protocols.acs import (
    AudioData,
    AudioMetadata,
    DtmfData,
    InboundStream,
    MalformedFrame,
    ProtocolViolation,
)
from koe.protocols.websocket import CloseCode
from koe.server._asgi_access import access_request
from koe.server.acs.jwt import AcsTokenValidator
from koe.server.acs.modes import MODES
from koe.server.acs.modes.base import ModeContext, ModeUnavailable, Pipeline
from koe.server.acs.socket import MediaSocket, StarletteMediaSocket
from koe.server.acs.writer import OutboundWriter
from koe.server.auth import WWW_AUTHENTICATE, AccessRequest, Allowed, Kind, admit, presented_key
from koe.server.calls.registry import CallRegistry
from koe.server.calls.webhooks import WebhookSender
from koe.server.language import UnsupportedLanguage, session_language
from koe.server.lifetime import EndReason, SessionClock
from koe.server.limits import Admission, Ticket, session_lifetime_s, session_limits
from koe.server.metrics import METRICS
from koe.server.outbox import CLOSE_TIMEOUT_S, STALL_CLOSE
from koe.tasks import within

log = logging.getLogger("koe.server.acs.door")

LOG_EVERY_MALFORMED = 100
"""After the first few, log one malformed frame in this many, so a broken sender cannot flood the log."""
_FIRST_MALFORMED_LOGGED = 5


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a media connection is refused before the upgrade: an HTTP status (401 or 403) and a reason."""

    status: int
    reason: str

    def body(self) -> bytes:
        code = "unauthorized" if self.status == 401 else "forbidden"
        return orjson.dumps({"error": {"code": code, "message": self.reason}})

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            **({"WWW-Authenticate": WWW_AUTHENTICATE} if self.status == 401 else {}),
        }


class AcsDoor:
    """Shared state of the door: settings, engines, the registry, the token validator and the webhook."""

    def __init__(
        self, settings: Settings, engines: Engines, registry: CallRegistry, admission: Admission | None = None
    ) -> None:
        self.settings = settings
        self.engines = engines
        self.registry = registry
        self.admission = admission or Admission(settings)
        self.validator = AcsTokenValidator(settings.acs.jwt) if settings.acs.jwt.enabled else None
        url = settings.acs.webhook_url
        self.webhook = WebhookSender(url, settings.acs.webhook_events) if url else None
        self.connections: dict[str, int] = {}
        self._awaiting: dict[str, asyncio.TimerHandle] = {}
        """Calls whose media was lost, each with the timer that ends it unless a reconnection comes first."""
        self.counters: dict[str, int] = {
            "connections": 0,
            "rejected": 0,
            "violations": 0,
            "malformed": 0,
            "reconnections": 0,
        }
        media_routes = [(settings.acs.media_path, settings.acs.mode)]
        media_routes += [(extra.path, extra.mode) for extra in settings.acs.routes]
        self.media_routes: list[tuple[str, ACSMode]] = [(path.rstrip("/") or "/", mode) for path, mode in media_routes]
        """(path, mode) in matching order; each path also takes any path below it."""

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        stamped = self.registry.publish(call_id, event)
        if self.webhook is not None:
            self.webhook.submit(stamped)

    def routes(self) -> list[BaseRoute]:
        """The media routes for the main port (Starlette), matching as `match()` does."""
        routes: list[BaseRoute] = []
        for base, mode in self.media_routes:
            endpoint = self._endpoint(mode)
            below = f"{base.rstrip('/')}/{{call_path:path}}"
            routes += [WebSocketRoute(base, endpoint), WebSocketRoute(below, endpoint)]
        return routes

    def _endpoint(self, mode: ACSMode) -> Callable[[WebSocket], Awaitable[None]]:
        async def endpoint(websocket: WebSocket) -> None:
            await self._serve_asgi(websocket, mode)

        return endpoint

    def match(self, path: str) -> tuple[ACSMode, str] | None:
        """The mode of the first media route that takes `path`, and the part of the path below it."""
        for base, mode in self.media_routes:
            if path == base:
                return mode, ""
            prefix = base.rstrip("/") + "/"
            if path.startswith(prefix):
                return mode, path[len(prefix) :]
        return None

    async def _serve_asgi(self, websocket: WebSocket, mode: ACSMode) -> None:
        refused = await self.refusal(access_request(websocket.scope, Kind.ACS_MEDIA))
        if refused is not None:
            await websocket.send_denial_response(Response(refused.body(), refused.status, refused.headers))
            return
        socket = StarletteMediaSocket(websocket)
        await websocket.accept()
        await self.serve(socket, mode, websocket.path_params.get("call_path", ""))

    async def serve(self, socket: MediaSocket, mode: ACSMode, call_path: str = "") -> None:
        """Run one call on an admitted, upgraded socket until it ends."""
        acs = self.settings.acs
        query_mode = socket.query.get("mode")
        if acs.allow_mode_override and query_mode in MODES:
            mode = query_mode  # type: ignore[assignment]  # checked against MODES just above
        headers = socket.headers
        call_id = headers.get("x-ms-call-connection-id") or call_path.strip("/").split("/")[0] or str(uuid.uuid4())
        correlation_id = headers.get("x-ms-call-correlation-id", "")
        with bind(call_id=call_id):
            named = socket.query.get("language") or acs.language
            try:
                language = session_language(named, self.engines.stt if mode in TRANSCRIBING else None)
            except UnsupportedLanguage as exc:
                # Refused before any audio is read, in ACS's terms: a close with the reason (1008, a broken rule).
                self.counters["rejected"] += 1
                log.warning("refused an ACS media connection: %s", exc)
                await _close_soon(socket, CloseCode.POLICY_VIOLATION, _reason(f"{UNSUPPORTED_LANGUAGE}: {exc}"))
                return
            ticket = self.admission.admit("acs", key=_key(socket, self.settings), transcribes=mode in TRANSCRIBING)
            if not isinstance(ticket, Ticket):
                # Overload is refused in ACS's terms: the socket closes at once with 1013 (try again later).
                self.counters["rejected"] += 1
                await _close_soon(socket, CloseCode.TRY_AGAIN_LATER, _reason(ticket.message))
                return
            with ticket:
                await self._serve_call(socket, mode, call_id, correlation_id, language)

    async def _serve_call(
        self, socket: MediaSocket, mode: ACSMode, call_id: str, correlation_id: str, language: str | None
    ) -> None:
        self.counters["connections"] += 1
        self.connections[call_id] = self.connections.get(call_id, 0) + 1
        awaited = self._awaiting.pop(call_id, None)
        if awaited is not None:
            awaited.cancel()
            self.counters["reconnections"] += 1
            log.info("the media stream reconnected within the grace period")
        self.registry.open(call_id, door="acs", mode=mode, correlation_id=correlation_id, path=socket.path)
        connection = _Connection(self, socket, call_id, mode, language)
        try:
            await connection.run()
        finally:
            self.connections[call_id] -= 1
            if not self.connections[call_id]:
                del self.connections[call_id]
                call = self.registry.get(call_id)
                # A call answered through Call Automation outlives its media: CallDisconnected ends it.
                if call is not None and not call.info.get("managed"):
                    ending = connection.ended_by_koe
                    if connection.awaits_reconnection:
                        grace = self.settings.acs.reconnect_grace_s
                        log.info("the media stream was lost; waiting %.1f s for ACS to reconnect it", grace)
                        self._awaiting[call_id] = asyncio.get_running_loop().call_later(grace, self._lost, call_id)
                    else:
                        self.registry.end(call_id, f"ended by koe: {ending}" if ending else "media stream closed")

    def _lost(self, call_id: str) -> None:
        """The grace period of a call whose media was lost ran out with no reconnection."""
        if self._awaiting.pop(call_id, None) is None or call_id in self.connections:
            return
        call = self.registry.get(call_id)
        if call is not None and call.state == "reconnecting":  # not taken up meanwhile (on another cluster node)
            with bind(call_id=call_id):
                log.info("no reconnection within %.1f s: the call ends", self.settings.acs.reconnect_grace_s)
            self.registry.end(call_id, "media stream lost")

    def close(self) -> None:
        """End every call still waiting for its media to reconnect (the server is stopping)."""
        awaiting, self._awaiting = self._awaiting, {}
        for call_id, timer in awaiting.items():
            timer.cancel()
            self.registry.end(call_id, "media stream lost")

    async def refusal(self, request: AccessRequest) -> Refusal | None:
        """The server's access rule (`koe.server.auth`: keys, or ACS's JWT when configured), checked before the
        upgrade; None admits."""
        verify = self.validator.verdict if self.validator is not None else None
        decision = await admit(request, self.settings, verify)
        if isinstance(decision, Allowed):
            return None
        return self._refused(decision.status, decision.message)

    def _refused(self, status: int, reason: str) -> Refusal:
        self.counters["rejected"] += 1
        log.warning("refused an ACS media connection: %s", reason)
        return Refusal(status, reason)


class _Connection:
    def __init__(self, door: AcsDoor, socket: MediaSocket, call_id: str, mode: ACSMode, language: str | None) -> None:
        self.door = door
        self.socket = socket
        self.call_id = call_id
        self.mode = mode
        self.language = language
        self.stream = InboundStream(require_metadata_first=door.settings.acs.require_metadata_first)
        self.writer: OutboundWriter | None = None
        self.pipeline: Pipeline | None = None
        self.drop_silent = door.settings.acs.silent_frames == "drop"
        self._ending: tuple[int, str, bool] | None = None
        """Set when koe ends the call itself (lifetime, idle, a caller that stopped reading): the close to send, and
        whether nobody is left to hear the rest."""
        self._task: asyncio.Task[Any] | None = None
        self.clock: SessionClock | None = None
        self.awaits_reconnection = False
        """Set when the connection ends: it was lost without a close frame, so its call waits for ACS to reconnect."""
        self._handed_over: tuple[int, str] | None = None
        """The close a frame taken directly called for, which the receive loop sends when that frame reaches it."""

    async def run(self) -> None:
        close: tuple[int, str] | None = None
        hung_up = False
        limits = self.door.settings.limits
        self._task = asyncio.current_task()
        self.clock = SessionClock(
            "acs", session_lifetime_s(self.door.settings, "acs"), limits.idle_timeout_s, self._expire
        )
        try:
            close = await self._receive_loop()
            hung_up = close is None
        except asyncio.CancelledError:
            if self._ending is None or self._task is None:
                raise
            self._task.uncancel()  # the cancel was koe's own way of ending the receive loop
            code, reason, hung_up = self._ending
            close = (code, reason)
        except Exception:
            log.exception("ACS media connection failed")
            close = (CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self.socket.deliver_directly(None)
            self.clock.stop()
            self.awaits_reconnection = (
                hung_up and self._ending is None and self.socket.lost and self.door.settings.acs.reconnect_grace_s > 0
            )
            if self.pipeline is not None:
                with contextlib.suppress(Exception):
                    await self.pipeline.finish(hung_up=hung_up)
            if self.writer is not None:
                await self.writer.close()
            state = "reconnecting" if self.awaits_reconnection else "stopped"
            self.door.registry.update(self.call_id, state, stream=self.stream.stats.as_dict())
            if close is not None:
                await _close_soon(self.socket, *close)

    @property
    def ended_by_koe(self) -> str | None:
        """Why koe ended the call itself (`session_expired`, `idle_timeout`, `send_stalled`), if it did: the reason
        `call.ended` gives."""
        return self._ending[1] if self._ending is not None else None

    def _end(self, code: int, reason: str, hung_up: bool) -> None:
        if self._ending is None and self._task is not None:
            self._ending = (code, reason, hung_up)
            log.info("ending the ACS media connection: %s", reason)
            self._task.cancel()

    def _expire(self, reason: EndReason) -> None:
        self._end(CloseCode.GOING_AWAY, reason, False)

    def _stalled(self, reason: str) -> None:
        self._end(STALL_CLOSE, "send_stalled", True)

    async def _receive_loop(self) -> tuple[int, str] | None:
        """Returns the close to send, or None when the peer went away."""
        receive = self.socket.receive
        while True:
            frame = await receive()
            if frame is None:
                return None
            outcome = self._handed_over or self._take(frame)
            if isinstance(outcome, AudioMetadata):
                try:
                    await self._start(outcome)
                except ModeUnavailable as exc:
                    log.error("cannot serve the call in %s mode: %s", self.mode, exc)
                    self.door.publish(self.call_id, {"type": "error", "code": "mode_unavailable", "message": str(exc)})
                    return CloseCode.INTERNAL_ERROR, f"{self.mode} mode unavailable"
                self.socket.deliver_directly(self._take_directly)
            elif outcome is not None:
                return outcome

    def _take(self, frame: str | bytes) -> AudioMetadata | tuple[int, str] | None:
        """One frame, as far as it needs no waiting: the AudioMetadata that starts the call (the receive loop
        awaits its start), the close that a violation calls for, or None once it is dealt with."""
        assert self.clock is not None
        self.clock.touch()
        try:
            event = self.stream.receive(frame)
        except MalformedFrame as exc:
            self._malformed(exc)
            return None
        except ProtocolViolation as exc:
            self.door.counters["violations"] += 1
            log.warning("closing ACS media connection: %s", exc.reason)
            self.door.publish(self.call_id, {"type": "error", "code": "protocol_violation", "message": exc.reason})
            return exc.close_code, exc.reason
        if isinstance(event, AudioData):
            if self.pipeline is not None and not (event.silent and self.drop_silent):
                self.pipeline.audio(event)
        elif isinstance(event, AudioMetadata):
            return event
        elif isinstance(event, DtmfData):
            who = event.participant_raw_id
            self.door.publish(self.call_id, {"type": "dtmf", "participant": who, "tone": event.data})
            if self.pipeline is not None:
                self.pipeline.dtmf(event)
        return None

    def _take_directly(self, frame: str | bytes) -> bool:
        """A frame taken as it arrives, once the call has started, where the socket can (picows calls this from its
        frame callback): the relay's hot path no longer wakes the call's task for every 20 ms frame. False leaves
        the frame to the receive loop: untouched when koe is ending the call; taken, with its close kept in
        `_handed_over` for the loop to send, when the frame ends the call (a violation)."""
        if self._ending is not None or self._handed_over is not None:
            return False
        try:
            outcome = self._take(frame)
        except Exception:
            log.exception("ACS media connection failed")
            outcome = (CloseCode.INTERNAL_ERROR, "internal error")
        if outcome is None or isinstance(outcome, AudioMetadata):
            return True  # a repeated AudioMetadata of the same format changes nothing once the call has started
        self._handed_over = outcome
        return False

    async def _start(self, metadata: AudioMetadata) -> None:
        if self.pipeline is not None:
            return  # a repeated AudioMetadata with the same format changes nothing
        limits = self.door.settings.limits
        self.writer = OutboundWriter(
            self.socket,
            metadata.sample_rate,
            stall_s=limits.send_stall_s,
            limit_bytes=limits.send_buffer_bytes,
            on_stall=self._stalled,
        )
        self.writer.start()
        context = ModeContext(
            settings=self.door.settings,
            engines=self.door.engines,
            call_id=self.call_id,
            rate=metadata.sample_rate,
            writer=self.writer,
            publish=lambda event: self.door.publish(self.call_id, event),
            limits=session_limits(self.door.settings),
            language=self.language,
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


UNSUPPORTED_LANGUAGE = "unsupported_language"
"""The close reason's first word when a call names a language koe cannot hear."""
TRANSCRIBING: frozenset[str] = frozenset({"transcribe", "agent"})
"""The modes that use the STT engine, and so count against `stt.max_streams`."""
MAX_CLOSE_REASON_BYTES = 123


def _key(socket: MediaSocket, settings: Settings) -> int | None:
    """Which API key the connection presented, if any (for `limits.sessions_per_key`)."""
    headers = tuple((name.lower(), value) for name, value in socket.headers.items())
    request = AccessRequest(Kind.ACS_MEDIA, headers=headers, query=tuple(socket.query.items()), websocket=True)
    return presented_key(request, settings)


def _reason(message: str) -> str:
    """A close reason that fits a close frame (123 bytes of UTF-8)."""
    encoded = message.encode()
    return message if len(encoded) <= MAX_CLOSE_REASON_BYTES else encoded[:120].decode("utf-8", "ignore") + "..."


async def _close_soon(socket: MediaSocket, code: int, reason: str) -> None:
    """Close, but never wait long on a client that does not read."""
    with contextlib.suppress(Exception):
        await within(socket.close(code, reason), CLOSE_TIMEOUT_S)


def acs_routes(door: AcsDoor | None) -> list[BaseRoute]:
    """Every route of the ACS door on the main port, or none without a door (`acs.enabled` false)."""
    if door is None:
        return []
    from koe.server.acs.callautomation import callautomation_routes

    return door.routes() + callautomation_routes(door.settings, door.registry, door.validator)
