"""koe's OpenAI-compatible REST API on its embedded engines: what `openai_routes(settings, engines)` mounts.

Routes: `GET /v1/models` and `GET /v1/models/{model}` (here), `POST /v1/audio/transcriptions` and
`POST /v1/audio/speech` (`koe.server.openai.audio`), `POST /v1/chat/completions` (`koe.server.openai.chat`).
Every route follows the server's one access rule (`koe.server.auth`: keys as `Authorization: Bearer …`, as OpenAI's
SDKs send them, or any other carrier; a JSON body sent as application/json), and answers errors with OpenAI's body
`{"error": {message, type, param, code}}`.
`api.enabled = false` mounts none of them.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server.auth import FORM_BODY, JSON_BODY, Body
from koe.server.openai._common import ApiError, Handler, endpoint
from koe.server.openai.audio import speech, transcriptions
from koe.server.openai.chat import chat_completions

OWNER = "koe"


def openai_routes(settings: Settings, engines: Engines) -> list[BaseRoute]:
    if not settings.api.enabled:
        return []
    created = int(time.time())

    def model_list() -> list[dict[str, Any]]:
        return installed_models(engines, created)

    async def list_models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": model_list()})

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model"]
        for model in model_list():
            if model["id"] == wanted:
                return JSONResponse(model)
        raise ApiError(404, f"the model {wanted!r} does not exist", param="model", code="model_not_found")

    def post(path: str, handler: Handler, body: Body) -> Route:
        return Route(path, endpoint(settings, handler, path, body), methods=["POST"])

    def get(path: str, handler: Handler) -> Route:
        return Route(path, endpoint(settings, handler, path.replace(":path", "")), methods=["GET"])

    return [
        get("/v1/models", list_models),
        get("/v1/models/{model:path}", get_model),
        post("/v1/audio/transcriptions", transcriptions(settings, engines), FORM_BODY),
        post("/v1/audio/speech", speech(engines), JSON_BODY),
        post("/v1/chat/completions", chat_completions(engines), JSON_BODY),
    ]


def installed_models(engines: Engines, created: int) -> list[dict[str, Any]]:
    """The loaded LLM and Whisper model by their engine names, and every installed voice by its name.

    `koe_kind` (koe's own field) says which endpoint takes the id: `chat` for `/v1/chat/completions`,
    `transcription` for `/v1/audio/transcriptions`, `voice` for the `voice` of `/v1/audio/speech`; a voice's
    `koe_language` is the ISO 639-1 code of the language it speaks.
    """

    def model(model_id: str, kind: str, **extra: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER, "koe_kind": kind, **extra}

    found: list[dict[str, Any]] = []
    if engines.llm is not None:
        found.append(model(engines.llm.name, "chat"))
    if engines.stt is not None:
        found.append(model(engines.stt.name, "transcription"))
    if (tts := engines.tts) is not None:
        found.extend(model(voice, "voice", koe_language=tts.voice_info(voice).language) for voice in tts.voices())
    return found
