"""HTTP and WebSocket access to the call registry: `GET /v1/calls`, `GET /v1/calls/{id}`, and the result stream
`/v1/calls/{id}/events` (SSE on GET, or a WebSocket of JSON text frames). `{id}` may be `*` for every call.

Call `calls_routes(registry, settings)` and add the routes to the app. Access follows the server's one rule
(`koe.server.auth`): with `server.api_keys` set a client presents one in any carrier (a browser's WebSocket offers
the subprotocols `koe-events` and `openai-insecure-api-key.<key>`, or uses `?api-key=`); with none, only loopback
clients, from no foreign web origin, are served. A subscriber's queue is bounded (the oldest events go first), and a
WebSocket subscriber whose sends make no progress for `limits.send_stall_s` is closed with 1008 `send_stalled`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from koe.config import Settings
from koe.protocols.websocket import CloseCode
from koe.server._asgi_access import refusal
from koe.server.auth import Kind
from koe.server.calls.registry import CallRegistry
from koe.server.metrics import METRICS
from koe.server.outbox import CLOSE_TIMEOUT_S, STALL_CLOSE, SendStalled, send_within
from koe.tasks import within

SSE_KEEPALIVE_S = 15.0
SSE_OPENED = b": subscribed\n\n"  # an SSE comment: readers skip it
ALL_CALLS = "*"
EVENTS_SUBPROTOCOL = "koe-events"
"""Selected when offered: a browser offers it next to `openai-insecure-api-key.<key>`."""


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def calls_routes(registry: CallRegistry, settings: Settings) -> list[BaseRoute]:
    def denied(connection: HTTPConnection) -> JSONResponse | None:
        return refusal(connection.scope, settings, Kind.API)

    async def list_calls(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        return _json({"calls": [call.snapshot() for call in registry.calls()]})

    async def get_call(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        call = registry.get(request.path_params["call_id"])
        if call is None:
            return error_response(404, "call_not_found", f"no call {request.path_params['call_id']!r}")
        return _json(call.snapshot())

    async def events_sse(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
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
        if (refused := denied(websocket)) is not None:
            await websocket.send_denial_response(refused)
            return
        call_id = websocket.path_params["call_id"]
        if call_id != ALL_CALLS and registry.get(call_id) is None:
            await websocket.send_denial_response(error_response(404, "call_not_found", f"no call {call_id!r}"))
            return
        # A browser that offers subprotocols (one to carry its key) needs one selected, or it drops the socket.
        offered = websocket.scope.get("subprotocols", ())
        await websocket.accept(subprotocol=EVENTS_SUBPROTOCOL if EVENTS_SUBPROTOCOL in offered else None)
        subscription = registry.subscribe(None if call_id == ALL_CALLS else call_id)
        watcher = asyncio.create_task(_drain_until_closed(websocket))
        sender = asyncio.create_task(_forward(websocket, subscription, settings.limits.send_stall_s))
        try:
            await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not watcher.done():
                stalled = isinstance(sender.exception(), SendStalled)
                if stalled:  # a subscriber that stopped reading: its queue already drops the oldest events
                    METRICS.send_stalls.labels("calls").inc()
                if stalled or sender.exception() is None:
                    code, reason = (STALL_CLOSE, "send_stalled") if stalled else (CloseCode.NORMAL, "call ended")
                    await within(websocket.close(code, reason), CLOSE_TIMEOUT_S)
        except (WebSocketDisconnect, RuntimeError, TimeoutError):
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


async def _forward(websocket: WebSocket, subscription: AsyncIterable[dict[str, Any]], stall_s: float) -> None:
    async for event in subscription:
        await send_within(websocket.send_text(orjson.dumps(event).decode()), stall_s)


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
