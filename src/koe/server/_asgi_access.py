"""The access rule (`koe.server.auth`) on the main port: an `AccessRequest` from an ASGI scope, a refusal as
OpenAI's error body, and `guarded()` for plain Starlette endpoints.

`access_request(scope, kind, body)` describes a request or WebSocket upgrade; `refusal(scope, settings, kind, body)`
is None when the rule allows it, else the response to send (before the upgrade, for a WebSocket). The body is
OpenAI's `{"error": {"message", "type", "param", "code"}}`, which koe's own routes share (their `code` and
`message` are where they always were).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from koe.config import Settings
from koe.server.auth import AccessRequest, Body, Kind, Listener, Refused, decide

Endpoint = Callable[[Request], Awaitable[Response]]


def access_request(scope: Scope, kind: Kind, body: Body | None = None) -> AccessRequest:
    headers = tuple((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"])
    query = tuple(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    websocket = scope["type"] == "websocket"
    client = scope.get("client")
    return AccessRequest(
        kind=kind,
        headers=headers,
        query=query,
        subprotocols=tuple(scope.get("subprotocols", ())) if websocket else (),
        client=client[0] if client else None,
        listener=Listener.MAIN,
        websocket=websocket,
        body=body,
    )


def refusal(scope: Scope, settings: Settings, kind: Kind, body: Body | None = None) -> JSONResponse | None:
    decision = decide(access_request(scope, kind, body), settings)
    return refusal_response(decision) if isinstance(decision, Refused) else None


def refusal_response(refused: Refused) -> JSONResponse:
    error = {"message": refused.message, "type": "invalid_request_error", "param": None, "code": refused.code}
    return JSONResponse({"error": error}, status_code=refused.status, headers=dict(refused.headers))


def guarded(settings: Settings, kind: Kind, endpoint: Endpoint, body: Body | None = None) -> Endpoint:
    """`endpoint` behind the rule."""

    async def checked(request: Request) -> Response:
        refused = refusal(request.scope, settings, kind, body)
        return refused if refused is not None else await endpoint(request)

    return checked
