"""The OpenAPI 3.1 description of koe's HTTP API, served at `GET /openapi.json` by `openapi_routes()`.

It covers every plain HTTP route of the main port: health, metrics, the OpenAI-compatible REST API, the call
registry, and the ACS door's Call Automation routes. WebSocket endpoints (the Realtime door, ACS media, the call
event socket) and the Sora door's own HTTP/2 listener are named in `info.description`, since OpenAPI cannot
describe them. `tests/server/openapi/test_document.py` validates the document and checks it against the app's routes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from koe import __version__
from koe.config import Settings
from koe.server._asgi_access import guarded
from koe.server.auth import WEBHOOK_BODY, Kind
from koe.server.openai._speech_encode import CONTENT_TYPES
from koe.server.openapi._schemas import SCHEMAS, ref

JSON = "application/json"
_WEBHOOK = sorted(WEBHOOK_BODY.media_types)
_DESCRIPTION = """\
koe (声): a self-hosted real-time voice gateway. Keys: with `server.api_keys` set, send one as
`Authorization: Bearer …`, the `api-key` header or `?api-key=` (every key a request carries must be valid); with
none set, koe serves only clients on its own machine, and no web page of another origin. Every request must name an
allowed `Host`, and a body must be sent as the media type its route reads (415 otherwise). See docs/operations.md.

Not described here, because OpenAPI cannot: the Realtime door's WebSockets (`/v1/realtime`, `/openai/v1/realtime`,
`/openai/realtime`, `/voice-live/realtime`, also under `realtime.path_prefix`), the ACS media WebSocket
(`acs.media_path`, default `/acs/media`, and `acs.routes`), the WebSocket variant of `/v1/calls/{call_id}/events`,
and the Sora door, which listens on its own HTTP/2 port (`sora.port`).
"""


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid request",
        401: "No valid credential presented (a missing or wrong key)",
        403: "Refused by the Host rule, or, with no keys configured, not a loopback client or a foreign Origin",
        404: "Not found",
        413: "Upload too large (`api.max_upload_mb`)",
        415: "The body is not sent as the media type the route reads",
        429: "The engine's queue is full; retry shortly",
        502: "Azure Communication Services refused the operation",
        503: "The engine is not loaded",
    }
    return {str(status): _json(ref("Error"), reasons[status]) for status in statuses}


def _op(summary: str, ok: dict[str, Any], *errors: int, tag: str, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "responses": {**ok, **_errors(*errors)}, **extra}


def _forwarded(operation: dict[str, Any]) -> None:
    """A call operation that, in a cluster, runs on the node holding the call's media (docs/cluster.md)."""
    operation["responses"]["503"] = _json(ref("Error"), "In a cluster: this node cannot reach Redis to pass it on")
    operation["responses"]["504"] = _json(ref("Error"), "In a cluster: the node with the call's media did not answer")


_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
_OPEN: dict[str, Any] = {"security": []}
"""Operations that take no koe key (they carry their own proof, or none is needed)."""


def _paths() -> dict[str, Any]:
    text = {"description": "Plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    audio = {media: {"schema": {"type": "string", "contentMediaType": media}} for media in CONTENT_TYPES.values()}
    transcription = {
        JSON: {"schema": {"oneOf": [ref("Transcription"), ref("TranscriptionVerbose")]}},
        "text/plain": {"schema": {"type": "string"}},
        "application/x-subrip": {"schema": {"type": "string"}},
        "text/vtt": {"schema": {"type": "string"}},
    }
    sse = {"text/event-stream": {"schema": {"type": "string", "description": "`data:` lines, then `data: [DONE]`"}}}
    ok = {"200": {"description": "OK"}}
    return {
        "/healthz": {
            "get": _op(
                "Engines, queues, and the cluster (with cluster.redis_url)",
                {"200": _json({"type": "object"}, "Health")},
                tag="ops",
                **_OPEN,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics (text format 0.0.4)", {"200": text}, 401, 403, tag="ops")},
        "/openapi.json": {
            "get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")}, tag="ops", **_OPEN)
        },
        "/v1/models": {
            "get": _op(
                "Installed models and voices", {"200": _json(ref("ModelList"), "Models")}, 401, 403, tag="openai"
            )
        },
        "/v1/models/{model}": {
            "get": _op(
                "One model or voice",
                {"200": _json(ref("Model"), "Model")},
                401,
                403,
                404,
                tag="openai",
                parameters=[{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/v1/audio/transcriptions": {
            "post": _op(
                "Transcribe an audio file (Whisper)",
                {"200": {"description": "The transcript in `response_format`", "content": transcription}},
                400,
                401,
                403,
                413,
                415,
                429,
                503,
                tag="openai",
                requestBody={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": ref("TranscriptionRequest")}},
                },
            )
        },
        "/v1/audio/speech": {
            "post": _op(
                "Speak text (Piper), streamed clause by clause",
                {"200": {"description": "Audio in `response_format`, chunked", "content": audio}},
                400,
                401,
                403,
                415,
                429,
                503,
                tag="openai",
                requestBody={"required": True, "content": {JSON: {"schema": ref("SpeechRequest")}}},
            )
        },
        "/v1/chat/completions": {
            "post": _op(
                "Chat with the LLM, whole or streamed",
                {
                    "200": {
                        "description": "A chat.completion, or chat.completion.chunk events",
                        "content": {JSON: {"schema": ref("ChatCompletion")}, **sse},
                    }
                },
                400,
                401,
                403,
                415,
                429,
                503,
                tag="openai",
                requestBody={"required": True, "content": {JSON: {"schema": ref("ChatCompletionRequest")}}},
            )
        },
        "/v1/voices": {
            "get": _op(
                "TTS voices, for the voice console",
                {"200": _json({"type": "object"}, "Voices")},
                401,
                403,
                tag="openai",
            )
        },
        "/v1/calls": {
            "get": _op(
                "Calls in progress and recently ended",
                {
                    "200": _json(
                        {"type": "object", "properties": {"calls": {"type": "array", "items": ref("Call")}}}, "Calls"
                    )
                },
                401,
                403,
                tag="calls",
            )
        },
        "/v1/calls/{call_id}": {
            "get": _op(
                "One call", {"200": _json(ref("Call"), "Call")}, 401, 403, 404, tag="calls", parameters=[_CALL_ID]
            )
        },
        "/v1/calls/{call_id}/events": {
            "get": _op(
                "A call's result events as server-sent events (`*`: every call); also a WebSocket",
                {
                    "200": {
                        "description": "`event:` and `data:` lines",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                401,
                403,
                404,
                tag="calls",
                parameters=[_CALL_ID],
            )
        },
        "/v1/calls/{call_id}/media/{action}": {
            "post": _op(
                "Start or stop an ACS call's media streaming (Call Automation)",
                {"202": _json({"type": "object"}, "Requested")},
                401,
                403,
                404,
                415,
                502,
                tag="acs",
                parameters=[
                    _CALL_ID,
                    {"name": "action", "in": "path", "required": True, "schema": {"enum": ["start", "stop"]}},
                ],
                requestBody={
                    "content": {
                        JSON: {"schema": {"type": "object", "properties": {"operationContext": {"type": "string"}}}}
                    }
                },
            )
        },
        "/v1/calls/{call_id}/hangup": {
            "post": _op(
                "Hang up an ACS call (Call Automation)",
                {"202": _json({"type": "object"}, "Requested")},
                401,
                403,
                404,
                415,
                502,
                tag="acs",
                parameters=[_CALL_ID],
            )
        },
        "/acs/events": {
            "post": _op(
                "Event Grid webhook: subscription validation, and IncomingCall (answered with media streaming)",
                {
                    "200": _json(
                        {"type": "object", "properties": {"validationResponse": {"type": "string"}}}, "Accepted"
                    )
                },
                400,
                401,
                403,
                415,
                tag="acs",
                description="Takes `?code=` (`acs.event_grid_secret`) or a key; `?mode=` picks the call's mode.",
                requestBody={
                    "required": True,
                    "content": {
                        media: {"schema": {"type": "array", "items": {"type": "object"}}} for media in _WEBHOOK
                    },
                },
                **_OPEN,
            ),
            "options": _op("CloudEvents webhook validation", ok, tag="acs", **_OPEN),
        },
        "/acs/callbacks": {
            "post": _op(
                "Call Automation callbacks (CloudEvents); CallDisconnected ends the call",
                ok,
                400,
                401,
                403,
                415,
                tag="acs",
                description="Takes the RS256 token ACS sends when `acs.jwt` is enabled, or a key.",
                requestBody={
                    "required": True,
                    "content": {
                        media: {"schema": {"type": "array", "items": {"type": "object"}}} for media in _WEBHOOK
                    },
                },
                **_OPEN,
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    paths = _paths()
    for path in ("/v1/calls/{call_id}/media/{action}", "/v1/calls/{call_id}/hangup"):
        _forwarded(paths[path]["post"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "koe", "version": __version__, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": [{"name": name} for name in ("ops", "openai", "calls", "acs")],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
        },
    }


def openapi_routes(settings: Settings) -> list[BaseRoute]:
    document = openapi_document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    return [Route("/openapi.json", guarded(settings, Kind.PAGE, openapi), methods=["GET"])]
