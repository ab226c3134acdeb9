"""The Realtime door: Azure Voice Live and OpenAI Realtime (beta and GA) clients, over WebSocket, on koe's engine.

Routes: `/voice-live/realtime` (Azure dialect), `/v1/realtime` and `/openai/v1/realtime` (GA, or beta when the
client asks for it), `/openai/realtime` (Azure OpenAI preview, beta), at the root and under `realtime.path_prefix`. The
handshake picks the dialect, and the server's access rule (`koe.server.auth`) is applied before the upgrade (a
refusal is an HTTP response with OpenAI's error body). After it,
each text frame is parsed by `koe.protocols.realtime`, mapped onto a `koe.voice.Session` call, and the session's
events are rendered back in the client's dialect. Bad client events get an `error` event and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from koe.audio.pcm import AudioFormatError
from koe.config import Settings
from koe.engines.base import EngineError
from koe.engines.registry import Engines
from koe.log import bind
from koe.protocols import realtime as rt
from koe.protocols.realtime.formats import decode_audio
from koe.protocols.realtime.session import EchoCancellation
from koe.protocols.websocket import CloseCode
from koe.server._asgi_access import access_request, refusal
from koe.server.auth import Kind, presented_key
from koe.server.lifetime import SESSION_EXPIRED, EndReason, SessionClock
from koe.server.limits import REFUSED_CODE, Admission, Refusal, session_lifetime_s, session_limits
from koe.server.metrics import METRICS
from koe.server.outbox import CLOSE_TIMEOUT_S, STALL_CLOSE, Outbox, send_within
from koe.server.realtime.mapping import engine_config, engine_item, response_options
from koe.server.realtime.render import Renderer
from koe.tasks import stop, within
from koe.voice.session import Session

log = logging.getLogger("koe.realtime")

PATHS = ("/voice-live/realtime", "/v1/realtime", "/openai/v1/realtime", "/openai/realtime")


def realtime_routes(settings: Settings, engines: Engines, admission: Admission | None = None) -> list[BaseRoute]:
    door = RealtimeDoor(settings, engines, admission or Admission(settings))
    prefixes = {"", settings.realtime.path_prefix.rstrip("/")}
    return [WebSocketRoute(prefix + path, door.endpoint) for prefix in sorted(prefixes) for path in PATHS]


class RealtimeDoor:
    def __init__(self, settings: Settings, engines: Engines, admission: Admission) -> None:
        self.settings = settings
        self.engines = engines
        self.admission = admission
        self.active = 0

    async def endpoint(self, websocket: WebSocket) -> None:
        scope = websocket.scope
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        query = scope.get("query_string", b"").decode("latin-1")
        prefix = self.settings.realtime.path_prefix.rstrip("/")
        if not scope["path"].startswith(prefix + "/"):
            prefix = ""
        handshake = rt.negotiate(scope["path"], query, headers, scope.get("subprotocols", ()), prefix=prefix)
        if handshake is None:
            await websocket.close(code=CloseCode.POLICY_VIOLATION, reason="not a Realtime endpoint")
            return
        refused = refusal(scope, self.settings, Kind.API)
        if refused is not None:
            await websocket.send_denial_response(refused)
            return
        key = presented_key(access_request(scope, Kind.API), self.settings)
        ticket = self.admission.admit("realtime", key=key, transcribes=True)
        if isinstance(ticket, Refusal):
            await websocket.accept(subprotocol=handshake.subprotocol)
            await _refuse(websocket, handshake.dialect, ticket)
            return
        timings = "koe_timings=1" in query.split("&")
        with ticket:  # from here on: a client gone during the accept must not keep its place
            await websocket.accept(subprotocol=handshake.subprotocol)
            connection = RealtimeConnection(self.settings, self.engines, websocket, handshake, timings=timings)
            self.active += 1
            try:
                with bind(session_id=connection.session.id, door="realtime", dialect=handshake.dialect.value):
                    log.info("realtime session started on %s", scope["path"])
                    await connection.run()
                    log.info("realtime session ended")
            finally:
                self.active -= 1


async def _refuse(websocket: WebSocket, dialect: rt.Dialect, refused: Refusal) -> None:
    """Overload is refused in the protocol: an `error` event saying which limit, then 1013 (try again later)."""
    error = rt.RealtimeError(refused.message, code=REFUSED_CODE, error_type="server_error")
    with contextlib.suppress(Exception):
        for event in rt.ServerEvents(dialect).error(error):
            await send_within(websocket.send_text(rt.encode_event(event)), CLOSE_TIMEOUT_S)
        await within(websocket.close(CloseCode.TRY_AGAIN_LATER, REFUSED_CODE), CLOSE_TIMEOUT_S)


class RealtimeConnection:
    """One client's session: the receive loop (client events to engine calls) and the send loop (engine events)."""

    def __init__(
        self, settings: Settings, engines: Engines, websocket: WebSocket, handshake: rt.Handshake, *, timings: bool
    ) -> None:
        self.settings = settings
        self.engines = engines
        self.websocket = websocket
        self.dialect = handshake.dialect
        self.events = rt.ServerEvents(self.dialect)
        # Echo cancellation starts as koe is configured; a client's session.update may turn it off (null) or on.
        echo = EchoCancellation() if settings.audio.echo_cancellation else None
        self.config = rt.SessionConfig(model=handshake.model or "koe", input_audio_echo_cancellation=echo)
        if handshake.intent == "transcription":
            self.config = rt.apply_session_update(self.config, rt.SessionPatch({"type": "transcription"}))
        mapped = engine_config(self.config, engines.tts, engines.stt, self.dialect)
        self.observed = METRICS.session("realtime")
        self.session = Session(
            engines,
            mapped.config,
            default_instructions=settings.llm.system_prompt,
            session_id=rt.new_session_id(),
            observer=self.observed,
            limits=session_limits(settings),
            turn_tokens=settings.llm.spoken_turn_tokens,
        )
        self.renderer = Renderer(self.events, self.session.conversation, timings=timings)
        self._sync_renderer()
        self.lifetime_s = session_lifetime_s(settings, "realtime")
        self.expires_at = int(time.time() + self.lifetime_s)
        limits = settings.limits
        self.outbox = Outbox(
            websocket.send_text,
            limit_bytes=limits.send_buffer_bytes,
            stall_s=limits.send_stall_s,
            door="realtime",
            close=websocket.close,
        )
        self._ended: asyncio.Future[EndReason] = asyncio.get_running_loop().create_future()
        self._requests = 0
        self._typed: dict[str, list[str]] = {}
        """Azure `input_text.delta` text per item id, until its `input_text.done`."""

    def _sync_renderer(self) -> None:
        self.renderer.config = self.config
        self.renderer.transcription = self.config.input_audio_transcription is not None

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Queue events for the client, in order; never waits for the client to read (see `koe.server.outbox`)."""
        for event in events:
            self.outbox.put(rt.encode_event(event))

    async def run(self) -> None:
        """Serve the session until the client goes, koe ends it (its lifetime, idle time), or the client stops
        reading: whichever comes first."""
        self.outbox.start()
        await self.send(self._session_event(created=True))
        self.clock = clock = SessionClock(
            "realtime", self.lifetime_s, self.settings.limits.idle_timeout_s, self._end, busy=self._busy
        )
        pump = asyncio.create_task(self._pump())
        receiver = asyncio.create_task(self._receive())
        try:
            ends: set[asyncio.Future[Any]] = {receiver, self.outbox.stalled, self._ended}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            if self.outbox.stalled.done():
                # Nothing more can reach this client; the close frame is all that is tried, and not for long.
                with contextlib.suppress(Exception):
                    reason = "send_stalled"
                    await within(self.websocket.close(STALL_CLOSE, reason), CLOSE_TIMEOUT_S)
            elif self._ended.done():
                ended = self._ended.result()
                code = "session_expired" if ended == SESSION_EXPIRED else "idle_timeout"
                await self.send(self.events.error(rt.RealtimeError(clock.message(ended), code=code)))
                self.outbox.close_after(CloseCode.GOING_AWAY, ended)
                await self.outbox.flush(CLOSE_TIMEOUT_S * 2)
        finally:
            clock.stop()
            receiver.cancel()
            self.observed.close()
            await self.session.close()
            await stop(pump)
            await stop(receiver)
            await self.outbox.aclose()

    async def _receive(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                self.clock.touch()
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                await self.handle(text or "")
        except WebSocketDisconnect:
            return

    def _end(self, reason: EndReason) -> None:
        if not self._ended.done():
            self._ended.set_result(reason)

    def _busy(self) -> bool:
        """A reply is being generated or played: the client may well be listening, not idle."""
        return not self.session.replies.idle or self.session.playback.is_playing()

    async def _pump(self) -> None:
        async for event in self.session.events():
            await self.send(self.renderer.render(event))

    def _session_event(self, created: bool = False) -> list[dict[str, Any]]:
        build = self.events.session_created if created else self.events.session_updated
        return build(self.config, session_id=self.session.id, expires_at=self.expires_at)

    async def handle(self, text: str) -> None:
        try:
            event = rt.parse_client_event(text, self.dialect, input_format=self.config.input_audio_format)
        except rt.RealtimeError as exc:
            await self.send(self.events.error(exc))
            return
        self.session.cause = event.event_id
        try:
            await self._dispatch(event)
        except rt.RealtimeError as exc:
            await self.send(self.events.error(exc.with_event_id(event.event_id)))
        except AudioFormatError as exc:
            await self.send(self.events.error(rt.RealtimeError(str(exc), param="audio", event_id=event.event_id)))
        except EngineError as exc:  # e.g. a model that failed to load: say so, and keep the session open
            error = rt.RealtimeError(str(exc), code="engine_unavailable", error_type="server_error")
            await self.send(self.events.error(error.with_event_id(event.event_id)))
        finally:
            self.session.cause = None

    async def _dispatch(self, event: rt.ClientEvent) -> None:
        session = self.session
        if isinstance(event, rt.InputAudioBufferAppend):
            fmt = self.config.input_audio_format
            session.append_audio(decode_audio(event.audio, fmt), fmt.rate)
        elif isinstance(event, rt.SessionUpdate | rt.TranscriptionSessionUpdate):
            await self._update(
                event.patch, event.warnings, transcription=isinstance(event, rt.TranscriptionSessionUpdate)
            )
        elif isinstance(event, rt.InputAudioBufferCommit):
            session.commit()
        elif isinstance(event, rt.InputAudioBufferClear | rt.InputAudioClear):
            session.clear()
        elif isinstance(event, rt.OutputAudioBufferClear):
            if session.playback.is_playing():
                session.clear_output()
            else:
                await self.send(self.events.output_audio_buffer_cleared(response_id=""))
        elif isinstance(event, rt.ConversationItemCreate):
            item = engine_item(event.item, self.config.input_audio_format, self.config.output_audio_format)
            session.create_item(item, event.previous_item_id)
        elif isinstance(event, rt.ConversationItemRetrieve):
            found = session.retrieve_item(event.item_id)
            if found is not None:
                await self.send(self.renderer.retrieved(found))
        elif isinstance(event, rt.ConversationItemDelete):
            session.delete_item(event.item_id)
        elif isinstance(event, rt.ConversationItemTruncate):
            session.truncate(event.item_id, event.content_index, event.audio_end_ms)
        elif isinstance(event, rt.ResponseCreate):
            await self._create_response(event)
        elif isinstance(event, rt.ResponseCancel):
            session.cancel_response()
        else:
            await self._azure_extra(event)

    async def _update(
        self, patch: rt.SessionPatch, warnings: tuple[rt.RealtimeWarning, ...], transcription: bool
    ) -> None:
        config = rt.apply_session_update(self.config, patch)
        # A language koe cannot hear is refused with an `error` event; the session keeps its settings.
        mapped = engine_config(config, self.engines.tts, self.engines.stt, self.dialect)
        self.config = config
        self.session.update(mapped.config)
        self._sync_renderer()
        for warning in (*warnings, *mapped.warnings):
            await self.send(self.events.warning(warning))
        if transcription:
            updated = self.events.transcription_session_updated
            await self.send(updated(self.config, session_id=self.session.id, expires_at=self.expires_at))
        else:
            await self.send(self._session_event())

    async def _create_response(self, event: rt.ResponseCreate) -> None:
        overrides = event.response
        settings = overrides.settings(self.config)
        for item in overrides.append_input_items or ():
            self.session.create_item(engine_item(item, self.config.input_audio_format, self.config.output_audio_format))
        if overrides.commit:
            self.session.commit()
        fmt, language = self.config.input_audio_format, self.session.config.language
        options, warnings = response_options(overrides, settings, self.engines.tts, fmt, language)
        for warning in (*event.warnings, *warnings):
            await self.send(self.events.warning(warning))
        self._requests += 1
        request_id = f"req_{self._requests}"
        self.renderer.expect_response(request_id, settings)
        self.session.create_response(replace(options, request_id=request_id), replace_active=overrides.cancel_previous)

    async def _azure_extra(self, event: rt.ClientEvent) -> None:
        session = self.session
        if isinstance(event, rt.InputAudioTurnStart | rt.InputAudioTurnCancel):
            session.clear()
        elif isinstance(event, rt.InputAudioTurnAppend):
            fmt = self.config.input_audio_format
            session.append_audio(decode_audio(event.audio, fmt), fmt.rate)
        elif isinstance(event, rt.InputAudioTurnEnd):
            session.commit()
        elif isinstance(event, rt.InputTextDelta | rt.InputTextDone):
            await self._input_text(event)
        else:  # avatar, MCP approvals: accepted, not supported here
            name = type(event).__name__
            await self.send(self.events.warning(rt.RealtimeWarning(f"{name} is not supported by koe; ignored")))

    async def _input_text(self, event: rt.InputTextDelta | rt.InputTextDone) -> None:
        if isinstance(event, rt.InputTextDelta):
            self._typed.setdefault(event.id, []).append(event.delta)
            return
        text = "".join(self._typed.pop(event.id, []))
        if text:
            item = rt.MessageItem("user", (rt.ContentPart("input_text", text=text),), id=event.id)
            self.session.create_item(engine_item(item, self.config.input_audio_format, self.config.output_audio_format))
