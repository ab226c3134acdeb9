"""HTTP and WebSocket access to the call registry: `GET /v1/calls`, `GET /v1/calls/{id}`, and the result stream
`/v1/calls/{id}/events` (SSE on GET, or a WebSocket of JSON text frames). `{id}` may be `*` for every call.

Call `calls_routes(registry, settings)` and add the routes to the app. Access follows the server's rule: with
`server.api_keys` set a client presents one (`Authorization: Bearer …` or `api-key`); with none, only loopback
clients are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from koe.config import Settings
from koe.server.calls.registry import CallRegistry
from koe.server.run import is_loopback

SSE_KEEPALIVE_S = 15.0
SSE_OPENED = b": subscribed\n\n"  # an SSE comment: readers skip it
CLOSE_POLICY_VIOLATION = 1008
ALL_CALLS = "*"


def client_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    """True when the client presents a configured key, or no keys are configured and it is on loopback."""
    host = connection.client.host if connection.client else ""
    return credentials_allowed(connection.headers, host, settings)


def credentials_allowed(headers: Mapping[str, str], client_host: str, settings: Settings) -> bool:
    """`client_allowed` from the request's headers and client address (for servers that are not ASGI)."""
    keys = [key.get_secret_value() for key in settings.server.api_keys]
    if not keys:
        return is_loopback(client_host)
    presented = headers.get("api-key", "")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        presented = presented or auth[7:].strip()
    return any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def calls_routes(registry: CallRegistry, settings: Settings) -> list[BaseRoute]:
    def denied(connection: HTTPConnection) -> JSONResponse | None:
        if client_allowed(connection, settings):
            return None
        return error_response(401, "unauthorized", "present an API key (Authorization: Bearer … or api-key)")

    async def list_calls(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        return _json({"calls": [call.snapshot() for call in registry.calls()]})

    async def get_call(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        call = registry.get(request.path_params["call_id"])
        if call is None:
            return error_response(404, "call_not_found", f"no call {request.path_params['call_id']!r}")
        return _json(call.snapshot())

    async def events_sse(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        call_id = request.path_params["call_id"]
        if call_id != ALL_CALLS and registry.get(call_id) is None:
            return error_response(404, "call_not_found", f"no call {call_id!r}")
        subscription = registry.subscribe(None if call_id == ALL_CALLS else call_id)

        async def stream() -> AsyncIterator[bytes]:
            try:
                # Firefox resolves a streaming fetch() at its first body byte, not at the headers: say something now.
                yield SSE_OPENED
                async for event in _with_keepalive(subscription, SSE_KEEPALIVE_S):
                    if event is None:
                        yield b": keepalive\n\n"
                        continue
                    data = orjson.dumps(event)
                    yield b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + data + b"\n\n"
            finally:
                registry.unsubscribe(subscription)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def events_ws(websocket: WebSocket) -> None:
        if not client_allowed(websocket, settings):
            await websocket.send_denial_response(
                error_response(401, "unauthorized", "present an API key (Authorization: Bearer … or api-key)")
            )
            return
        call_id = websocket.path_params["call_id"]
        if call_id != ALL_CALLS and registry.get(call_id) is None:
            await websocket.send_denial_response(error_response(404, "call_not_found", f"no call {call_id!r}"))
            return
        await websocket.accept()
        subscription = registry.subscribe(None if call_id == ALL_CALLS else call_id)
        watcher = asyncio.create_task(_drain_until_closed(websocket))
        sender = asyncio.create_task(_forward(websocket, subscription))
        try:
            await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not watcher.done() and sender.exception() is None:
                await websocket.close(1000, "call ended")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            registry.unsubscribe(subscription)
            watcher.cancel()
            sender.cancel()

    return [
        Route("/v1/calls", list_calls, methods=["GET"]),
        Route("/v1/calls/{call_id}", get_call, methods=["GET"]),
        Route("/v1/calls/{call_id}/events", events_sse, methods=["GET"]),
        WebSocketRoute("/v1/calls/{call_id}/events", events_ws),
    ]


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _forward(websocket: WebSocket, subscription: AsyncIterable[dict[str, Any]]) -> None:
    async for event in subscription:
        await websocket.send_text(orjson.dumps(event).decode())


async def _drain_until_closed(websocket: WebSocket) -> None:
    # Subscribers only listen; reading is how a disconnect is noticed while the call is quiet.
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()


async def _with_keepalive(subscription: AsyncIterable[dict[str, Any]], every_s: float) -> AsyncIterator[Any]:
    iterator = subscription.__aiter__()
    pending: asyncio.Task[dict[str, Any]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()
