"""The Sora simulator's HTTP API, called as Sora's own API is: `POST /` with `x-sora-target: Sora_<date>.<Action>`.

`api_app(simulator)` returns the ASGI app (serve it with Hypercorn, as `koe sora-sim --serve` does). Sora's audio
streaming actions:

| action | body | answer |
|---|---|---|
| `StartAudioStreaming` | `{"channel_id"}` | `{}` |
| `StopAudioStreaming` | `{"channel_id"}` | `{}` |
| `SubscribeAudioStreamingResultPush` | `{"channel_id", "connection_id"}` | `{}` |
| `UnsubscribeAudioStreamingResultPush` | `{"channel_id", "connection_id"}` | `{}` |
| `ListAudioStreamingResultPushState` | `{"channel_id"}` | `[{"connection_id", "subscribe"}, …]` |
| `TerminateSession` | `{"channel_id"}` | `{}` |

What Sora does on its own (sessions and clients) is driven by koe's extensions, `x-sora-target: KoeSoraSim.<Action>`:
`CreateSession` (`channel_id`, `audio_streaming`, `audio_streaming_auto` → `{"session_id"}`), `Connect`
(`channel_id`, `role`, `audio`, `language_code`, `source` (an audio file path), `connection_id` → `{"connection_id"}`),
`Disconnect`, `GetPushes` (`connection_id` → the pushes it received) and `GetRecords` (what each stream sent and got).
A refused call is `400` (or `404`) with `{"error_code", "error_type", "message"}`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from koe.audio.pcm import AudioFormatError
from koe.sim.sora.channel import SoraApiError
from koe.sim.sora.simulator import SoraSimulator

_TARGET = re.compile(r"^(Sora_\d{8}|KoeSoraSim)\.([A-Za-z]+)$")


def api_app(sim: SoraSimulator) -> Starlette:
    def need(body: dict[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise SoraApiError("INVALID-REQUEST", f"{key} is required")
        return value

    async def start(body: dict[str, Any]) -> Any:
        await sim.start_audio_streaming(need(body, "channel_id"))
        return {}

    async def stop(body: dict[str, Any]) -> Any:
        await sim.stop_audio_streaming(need(body, "channel_id"))
        return {}

    async def subscribe(body: dict[str, Any]) -> Any:
        await sim.subscribe(need(body, "channel_id"), need(body, "connection_id"))
        return {}

    async def unsubscribe(body: dict[str, Any]) -> Any:
        await sim.unsubscribe(need(body, "channel_id"), need(body, "connection_id"))
        return {}

    async def push_states(body: dict[str, Any]) -> Any:
        return sim.list_push_states(need(body, "channel_id"))

    async def terminate(body: dict[str, Any]) -> Any:
        await sim.terminate_session(need(body, "channel_id"))
        return {}

    async def create_session(body: dict[str, Any]) -> Any:
        session_id = await sim.create_session(
            need(body, "channel_id"), body.get("audio_streaming"), body.get("audio_streaming_auto")
        )
        return {"session_id": session_id}

    async def connect(body: dict[str, Any]) -> Any:
        connection_id = await sim.connect(
            need(body, "channel_id"),
            role=body.get("role", "sendrecv"),
            audio=bool(body.get("audio", True)),
            language_code=body.get("language_code"),
            source=body.get("source"),
            connection_id=body.get("connection_id"),
            client_id=body.get("client_id", ""),
        )
        return {"connection_id": connection_id}

    async def disconnect(body: dict[str, Any]) -> Any:
        await sim.disconnect(need(body, "channel_id"), need(body, "connection_id"))
        return {}

    async def pushes(body: dict[str, Any]) -> Any:
        return sim.pushes.get(need(body, "connection_id"), [])

    async def records(body: dict[str, Any]) -> Any:
        return [record.as_dict() for record in sim.records]

    sora: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "StartAudioStreaming": start,
        "StopAudioStreaming": stop,
        "SubscribeAudioStreamingResultPush": subscribe,
        "UnsubscribeAudioStreamingResultPush": unsubscribe,
        "ListAudioStreamingResultPushState": push_states,
        "TerminateSession": terminate,
    }
    koe: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "CreateSession": create_session,
        "Connect": connect,
        "Disconnect": disconnect,
        "GetPushes": pushes,
        "GetRecords": records,
    }

    async def endpoint(request: Request) -> JSONResponse:
        match = _TARGET.match(request.headers.get("x-sora-target", ""))
        handlers = (sora if match.group(1).startswith("Sora_") else koe) if match else {}
        handler = handlers.get(match.group(2)) if match else None
        if handler is None:
            return _error(SoraApiError("UNKNOWN-TARGET", "unknown or missing x-sora-target"))
        try:
            body = await request.json() if await request.body() else {}
            if not isinstance(body, dict):
                raise SoraApiError("INVALID-REQUEST", "the body must be a JSON object")
            return JSONResponse(await handler(body))
        except SoraApiError as exc:
            return _error(exc)
        except (ValueError, AudioFormatError, OSError) as exc:
            return _error(SoraApiError("INVALID-REQUEST", str(exc)))

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


def _error(exc: SoraApiError) -> JSONResponse:
    body = {"error_code": exc.error_code, "error_type": exc.error_type, "message": exc.message}
    return JSONResponse(body, status_code=exc.error_code if exc.error_code in (400, 404) else 400)
