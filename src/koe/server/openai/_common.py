"""What every OpenAI-compatible route shares: the error body, the access rule, and engine failures as HTTP statuses.

Raise `ApiError` anywhere inside a handler wrapped by `endpoint()`; it becomes OpenAI's error body
`{"error": {"message", "type", "param", "code"}}` with its status. Engine failures map the way OpenAI's own
statuses read to a client: a full queue is 429 (retry later), an engine that is not loaded (or a remote one that
cannot be reached) is 503, a remote one that did not answer in time is 504, and an engine that refused this input
is 400.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from koe.config import Settings
from koe.engines.base import EngineError, EngineTimeout, EngineUnavailable
from koe.engines.pool import EngineBusy
from koe.server._asgi_access import refusal
from koe.server.auth import Body, Kind
from koe.server.metrics import METRICS

log = logging.getLogger("koe.api")

Handler = Callable[[Request], Awaitable[Response]]

MAX_REFUSED_BODY_BYTES = 2 * 1024 * 1024
"""How much of a refused request's body koe reads before answering: a client still sending its upload when koe
answers and closes would see a broken connection instead of the refusal (a remote STT uploads whole segments)."""


class ApiError(Exception):
    """A request koe will not serve; rendered as OpenAI's error body with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 429 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def engine_failure(exc: EngineError) -> ApiError:
    if isinstance(exc, EngineBusy):
        return ApiError(429, str(exc), type="server_error", code="engine_busy")
    if isinstance(exc, EngineUnavailable):
        return ApiError(503, str(exc), type="server_error", code="engine_unavailable")
    if isinstance(exc, EngineTimeout):
        return ApiError(504, str(exc), type="server_error", code="engine_timeout")
    return ApiError(400, str(exc), code="engine_error")


def endpoint(settings: Settings, handler: Handler, route: str, body: Body | None = None) -> Handler:
    """`handler` behind the server's access rule (`koe.server.auth`; `body`: what the handler parses), with
    `ApiError` and engine failures turned into OpenAI error bodies, and each answer counted in
    `koe_api_requests_total{route, status}`."""

    async def guarded(request: Request) -> Response:
        try:
            refused = refusal(request.scope, settings, Kind.API, body)
            if refused is not None:
                await _drain(request)
            response = refused if refused is not None else await handler(request)
        except ApiError as exc:
            response = exc.response()
        except EngineError as exc:
            response = engine_failure(exc).response()
        except Exception:  # the server keeps serving; the client gets a 500 in its own format
            log.exception("the %s handler failed", route)
            response = ApiError(500, "koe failed to handle this request; see its log", type="server_error").response()
        METRICS.api_requests.labels(route, str(response.status_code)).inc()
        return response

    return guarded


async def _drain(request: Request) -> None:
    """Read and drop the body of a refused request, up to `MAX_REFUSED_BODY_BYTES` (beyond it the client sees the
    connection close). Handlers read their bodies before anything can fail (koe.server.openai.audio)."""
    drained = 0
    with contextlib.suppress(ClientDisconnect):
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > MAX_REFUSED_BODY_BYTES:
                return


async def json_body(request: Request) -> dict[str, Any]:
    import orjson

    raw = await request.body()
    if not raw:
        raise invalid("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def number(body: dict[str, Any], name: str, default: float | None, low: float, high: float) -> float | None:
    """An optional numeric field, checked against OpenAI's documented range."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number", param=name)
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}, not {value}", param=name)
    return float(value)
