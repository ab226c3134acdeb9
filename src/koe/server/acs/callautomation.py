"""Call Automation for the ACS door, through the official `azure-communication-callautomation` SDK.

`callautomation_routes(settings, registry, validator)` serves (with the door's ACS token validator, shared):
- `POST /acs/events`: the Event Grid webhook. It answers the subscription validation handshake (and the CloudEvents
  `OPTIONS` one), and answers each `IncomingCall` with `answer_call` and `MediaStreamingOptions` pointing ACS at
  koe's media path. A `?mode=` on the webhook URL is passed on to the transport URL.
- `POST /acs/callbacks`: the CloudEvents callbacks; each updates the call in the registry (`GET /v1/calls/{id}`
  shows `call_connection_state`, `media_streaming` and the last operation context) and is published as an
  `acs.callback` event. `CallDisconnected` ends the call.
- `POST /v1/calls/{id}/media/start`, `…/media/stop` (body `{"operationContext": …}`) and `POST /v1/calls/{id}/hangup`,
  run as the registry's `acs.media` command: in a cluster, on the node with the call's media, whichever node the
  request reached (`koe.server.cluster`).

The SDK client is built from `acs.connection_string` (trusting `acs.ca_file` when set) and runs in worker threads,
since its sync transport blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from koe.config import Settings
from koe.server._asgi_access import access_request, refusal, refusal_response
from koe.server.acs.jwt import AcsTokenValidator
from koe.server.auth import OPTIONAL_JSON_BODY, WEBHOOK_BODY, Kind, Refused, admit
from koe.server.calls.api import error_response
from koe.server.calls.registry import CallRegistry, CommandResult
from koe.tasks import TaskSet

log = logging.getLogger("koe.server.acs.door")

MAX_WEBHOOK_BYTES = 1024 * 1024
EVENT_PREFIX = "Microsoft.Communication."
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
NOT_CONFIGURED = (
    "acs.connection_string is not configured: koe cannot answer calls (set it, or KOE_ACS__CONNECTION_STRING, to "
    "the ACS resource's connection string; `koe acs-call emulator` prints its own)"
)
MEDIA_COMMAND = "acs.media"
"""The registry command that starts or stops a call's media streaming, or hangs up (args: action, context)."""
_STREAMING_STATES = {
    "MediaStreamingStarted": "started",
    "MediaStreamingStopped": "stopped",
    "MediaStreamingFailed": "failed",
}


class CallAutomation:
    def __init__(self, settings: Settings, registry: CallRegistry, validator: AcsTokenValidator | None) -> None:
        self.settings = settings
        self.registry = registry
        self.validator = validator
        """The door's validator of ACS tokens (one JWKS cache for media sockets and callbacks), if enabled."""
        self._tasks = TaskSet(log, "Call Automation request")
        registry.handle(MEDIA_COMMAND, self._operate)

    def client(self) -> Any:
        """A new SDK `CallAutomationClient`. Calls are rare (answer, start, stop, hang up), so each operation uses its
        own client and closes it, leaving no pooled connections behind."""
        from azure.communication.callautomation import CallAutomationClient

        secret = self.settings.acs.connection_string
        if secret is None:
            raise RuntimeError(NOT_CONFIGURED)
        verify: Any = str(self.settings.acs.ca_file) if self.settings.acs.ca_file else True
        return CallAutomationClient.from_connection_string(secret.get_secret_value(), connection_verify=verify)

    def _with_client(self, operation: Callable[[Any], Any]) -> Any:
        """Run `operation(client)` with a fresh client (in a worker thread: the SDK's transport blocks)."""
        with self.client() as client:
            return operation(client)

    # --- Event Grid ---------------------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        if (refused := refusal(request.scope, self.settings, Kind.ACS_EVENTS, WEBHOOK_BODY)) is not None:
            return refused
        events = await _json_list(request)
        if events is None:
            return error_response(400, "bad_request", "expected a JSON array of Event Grid events")
        for event in events:
            kind = event.get("eventType") or event.get("type")
            data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
            if kind == VALIDATION_EVENT:
                return JSONResponse({"validationResponse": data.get("validationCode")})
            if kind == EVENT_PREFIX + "IncomingCall":
                if self.settings.acs.connection_string is None:  # say so to the caller now, not in koe's log later
                    return error_response(503, "not_configured", NOT_CONFIGURED)
                self._spawn(self._answer(request, data))
        return Response(status_code=200)

    async def events_options(self, request: Request) -> Response:
        """The CloudEvents webhook validation handshake."""
        if (refused := refusal(request.scope, self.settings, Kind.ACS_EVENTS)) is not None:
            return refused
        origin = request.headers.get("webhook-request-origin", "")
        return Response(status_code=200, headers={"WebHook-Allowed-Origin": origin or "*"})

    async def _answer(self, request: Request, data: dict[str, Any]) -> None:
        from azure.communication.callautomation import MediaStreamingOptions

        acs = self.settings.acs
        mode = request.query_params.get("mode") or acs.mode
        base = acs.public_url or str(request.base_url)
        callback_url = base.rstrip("/") + "/acs/callbacks"
        transport_url = self._transport_url(base, mode if "mode" in request.query_params else None)
        options = MediaStreamingOptions(
            transport_url=transport_url,
            transport_type="websocket",
            content_type="audio",
            audio_channel_type=acs.audio_channel_type,
            start_media_streaming=acs.start_media_streaming,
            enable_bidirectional=acs.enable_bidirectional and mode != "transcribe",
            audio_format=acs.audio_format,
            enable_dtmf_tones=acs.enable_dtmf,
        )
        caller = (data.get("from") or {}).get("rawId", "")
        try:
            properties = await asyncio.to_thread(
                self._with_client,
                lambda client: client.answer_call(
                    incoming_call_context=data.get("incomingCallContext", ""),
                    callback_url=callback_url,
                    operation_context="koe-answer",
                    media_streaming=options,
                ),
            )
        except Exception as exc:  # the SDK raises HttpResponseError, ServiceRequestError…; none may kill the loop
            log.error("answering the call from %s failed: %s", caller, exc)
            return
        call_id = properties.call_connection_id
        self.registry.open(call_id, door="acs", mode=mode, media=False, managed=True, caller=caller)
        self.registry.update(
            call_id,
            call_connection_state=str(properties.call_connection_state or "connecting"),
            server_call_id=properties.server_call_id,
            transport_url=transport_url,
            media_streaming="requested" if acs.start_media_streaming else "inactive",
        )
        log.info("answered the call from %s as %s", caller, call_id)

    def _transport_url(self, base: str, mode: str | None) -> str:
        acs = self.settings.acs
        if acs.transport_url:
            return acs.transport_url
        parts = urlsplit(base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"mode": mode}) if mode else ""
        return urlunsplit((scheme, parts.netloc, acs.media_path, query, ""))

    # --- callbacks ----------------------------------------------------------------------------------------------

    async def callbacks(self, request: Request) -> Response:
        verify = self.validator.verdict if self.validator is not None else None
        decision = await admit(access_request(request.scope, Kind.ACS_CALLBACKS, WEBHOOK_BODY), self.settings, verify)
        if isinstance(decision, Refused):
            return refusal_response(decision)
        events = await _json_list(request)
        if events is None:
            return error_response(400, "bad_request", "expected a JSON array of CloudEvents")
        for event in events:
            self._on_callback(event)
        return Response(status_code=200)

    def _on_callback(self, event: dict[str, Any]) -> None:
        data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        call_id = data.get("callConnectionId")
        kind = str(event.get("type", "")).removeprefix(EVENT_PREFIX)
        if not isinstance(call_id, str) or not call_id:
            return
        if self.registry.get(call_id) is None:
            self.registry.open(call_id, door="acs", mode=self.settings.acs.mode, media=False, managed=True)
        context = data.get("operationContext")
        result = data.get("resultInformation")
        self.registry.publish(
            call_id, {"type": "acs.callback", "event": kind, "operation_context": context, "result": result}
        )
        info: dict[str, Any] = {"last_callback": kind, "last_operation_context": context}
        if kind == "CallConnected":
            self.registry.update(call_id, call_connection_state="connected", **info)
        elif kind in _STREAMING_STATES:
            update = data.get("mediaStreamingUpdate") or {}
            info["media_streaming"] = _STREAMING_STATES[kind]
            info["media_streaming_details"] = update.get("mediaStreamingStatusDetails")
            if kind == "MediaStreamingFailed":
                info["media_streaming_error"] = result
            self.registry.update(call_id, **info)
        elif kind == "ParticipantsUpdated":
            people = [p.get("identifier", {}).get("rawId") for p in data.get("participants", []) if isinstance(p, dict)]
            self.registry.update(call_id, acs_participants=people, **info)
        elif kind == "CallDisconnected":
            self.registry.update(call_id, call_connection_state="disconnected", **info)
            self.registry.end(call_id, "call disconnected")
        else:
            self.registry.update(call_id, **info)

    # --- koe's own REST -----------------------------------------------------------------------------------------

    async def media(self, request: Request) -> Response:
        if (refused := refusal(request.scope, self.settings, Kind.API, OPTIONAL_JSON_BODY)) is not None:
            return refused
        call_id = request.path_params["call_id"]
        action = request.path_params.get("action", "hangup")
        if action not in ("start", "stop", "hangup"):
            return error_response(404, "not_found", "use media/start, media/stop or hangup")
        body = await _json_object(request)
        context = body.get("operationContext") if isinstance(body.get("operationContext"), str) else None
        if self.registry.get(call_id) is None:
            return error_response(404, "call_not_found", f"no call {call_id!r}")
        result = await self.registry.command(call_id, MEDIA_COMMAND, {"action": action, "context": context})
        return JSONResponse(result.body, status_code=result.status)

    async def _operate(self, call_id: str, args: dict[str, Any]) -> CommandResult:
        """Start or stop the call's media streaming, or hang up, through Call Automation (the `acs.media` command)."""
        action, context = args.get("action"), args.get("context")
        try:

            def operate(client: Any) -> None:
                connection = client.get_call_connection(call_id)
                if action == "start":
                    connection.start_media_streaming(operation_context=context)
                elif action == "stop":
                    connection.stop_media_streaming(operation_context=context)
                else:
                    connection.hang_up(True)

            await asyncio.to_thread(self._with_client, operate)
        except Exception as exc:  # the SDK's errors carry ACS's status and message
            status = getattr(exc, "status_code", None)
            message = getattr(exc, "message", None) or str(exc)
            code = status if isinstance(status, int) and status < 500 else 502
            return CommandResult(code, {"error": {"code": "acs_error", "message": message}})
        self.registry.update(call_id, last_operation=action, last_operation_context=context)
        return CommandResult(202, {"call_id": call_id, "action": action, "operation_context": context})

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coroutine)


async def _json_list(request: Request) -> list[dict[str, Any]] | None:
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return None
    return [event for event in body if isinstance(event, dict)]


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def callautomation_routes(
    settings: Settings, registry: CallRegistry, validator: AcsTokenValidator | None = None
) -> list[BaseRoute]:
    automation = CallAutomation(settings, registry, validator)
    return [
        Route("/acs/events", automation.events, methods=["POST"]),
        Route("/acs/events", automation.events_options, methods=["OPTIONS"]),
        Route("/acs/callbacks", automation.callbacks, methods=["POST"]),
        Route("/v1/calls/{call_id}/media/{action:str}", automation.media, methods=["POST"]),
        Route("/v1/calls/{call_id}/hangup", automation.media, methods=["POST"]),
    ]
