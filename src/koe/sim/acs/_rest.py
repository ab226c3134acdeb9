"""The Call Automation REST surface of the emulator (spec §5, §11.2), as a Starlette app served by Hypercorn.

`serve_rest(emulator, host, port, tls)` starts it and returns (server handle, bound port). Requests may carry any
`api-version`; enum values compare case-insensitively; `transportType` or `kind` names the transport; HMAC
signatures are checked when `emulator.verify_hmac`; bad input gets a 4xx with an ACS-like error body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from koe.net.inprocess import InProcessServer, start_app
from koe.net.tls import TlsFiles
from koe.sim.acs import cloudevents as ce
from koe.sim.acs.calls import CallScript, EmulatedCall, MediaConfig, Speaker
from koe.sim.acs.ringing import RING_RATE, RingError, RingOptions, RingResult
from koe.sim.acs.signing import SignatureError, check_signature
from koe.sim.acs.tokens import SigningKey

MAX_BODY_BYTES = 256 * 1024
MAX_RING_BODY_BYTES = 32 * 1024 * 1024
"""`POST /koe/ring` carries the callers' audio (base64 PCM16 at 16 kHz: about 40 s per MiB)."""

AUDIO_FORMATS = {"pcm16kmono": 16000, "pcm24kmono": 24000}


class CallAutomationEmulator(Protocol):
    """What the REST API needs of the emulator (`koe.sim.acs.callautomation.CallAutomationEmulator`)."""

    access_key: str
    signing_key: SigningKey
    calls: dict[str, EmulatedCall]
    verify_hmac: bool
    endpoint: str

    def answer(self, call: EmulatedCall, callback_uri: str, context: str | None, media: MediaConfig | None) -> None: ...

    def outbound_call(self, target: str, source: str | None = None) -> EmulatedCall: ...

    async def hang_up(self, call_id: str) -> None: ...

    async def start_streaming(
        self, call: EmulatedCall, context: str | None, callback_uri: str | None = None
    ) -> None: ...

    async def stop_streaming(
        self, call: EmulatedCall, context: str | None, callback_uri: str | None = None
    ) -> None: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def ring_and_follow(self, events_url: str, script: CallScript, options: RingOptions) -> RingResult: ...


class _RestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def serve_rest(
    emulator: CallAutomationEmulator, host: str, port: int, tls: TlsFiles | None
) -> tuple[InProcessServer, int]:
    server = await start_app(
        build_app(emulator),
        host,
        port,
        certfile=tls.cert if tls else None,
        keyfile=tls.key if tls else None,
        log_level="ERROR",  # errors only: its start-up notices would clutter `koe acs-call emulator`'s output
    )
    return server, server.port


def build_app(emulator: CallAutomationEmulator) -> Starlette:
    async def body_of(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > limit:
            raise _RestError(413, "RequestEntityTooLarge", "request body too large")
        if emulator.verify_hmac:
            _check_hmac(request, raw, emulator.access_key)
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _RestError(400, "BadRequest", f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _RestError(400, "BadRequest", "request body must be a JSON object")
        return body

    def find(request: Request) -> EmulatedCall:
        call = emulator.calls.get(request.path_params["call_id"])
        if call is None:
            raise _RestError(404, "8522", "Call not found.")
        return call

    def handler(work: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                result: Response = await work(request)
                return result
            except _RestError as exc:
                return _error(exc.status, exc.code, exc.message)

        return endpoint

    async def answer(request: Request) -> Response:
        body = await body_of(request)
        context = body.get("incomingCallContext")
        callback = _required_str(body, "callbackUri")
        match = [c for c in emulator.calls.values() if c.incoming_call_context == context]
        if not match:
            raise _RestError(400, "BadRequest", "incomingCallContext is not valid for any ringing call")
        call = match[0]
        if call.state != "ringing":
            raise _RestError(400, "8532", "Call is already answered or ended.")
        call.rest.append("answer")
        media = _media_options(body.get("mediaStreamingOptions"), body.get("transcriptionOptions"))
        emulator.answer(call, callback, _opt_str(body, "operationContext"), media)
        return JSONResponse(call.properties(), status_code=200)

    async def create(request: Request, status: int = 201, op: str = "create") -> Response:
        body = await body_of(request)
        callback = _required_str(body, "callbackUri")
        if op == "create":
            targets = body.get("targets")
            if not isinstance(targets, list) or not targets:
                raise _RestError(400, "BadRequest", "targets must be a non-empty array")
            caller = ce.raw_id_of(targets[0]) or "4:+15550100001"
        else:
            if not isinstance(body.get("callLocator"), dict):
                raise _RestError(400, "BadRequest", "callLocator is required")
            caller = "4:+15550100001"
        source = body.get("sourceCallerIdNumber")
        presented = ce.raw_id_of(body.get("source")) or (
            "4:" + str(source["value"]) if isinstance(source, dict) and source.get("value") else None
        )
        call = emulator.outbound_call(caller, presented)
        call.rest.append(op)
        emulator.answer(
            call,
            callback,
            _opt_str(body, "operationContext"),
            _media_options(body.get("mediaStreamingOptions"), body.get("transcriptionOptions")),
        )
        return JSONResponse(call.properties(), status_code=status)

    async def connect(request: Request) -> Response:
        return await create(request, 200, "connect")

    async def get_call(request: Request) -> Response:
        if emulator.verify_hmac:
            _check_hmac(request, b"", emulator.access_key)
        call = find(request)
        call.rest.append("get")
        return JSONResponse(call.properties())

    async def hang_up(request: Request) -> Response:
        await body_of(request)
        call = find(request)
        call.rest.append("terminate" if request.method == "POST" else "delete")
        await emulator.hang_up(call.call_connection_id)
        return Response(status_code=204)

    async def streaming(request: Request) -> Response:
        body = await body_of(request)
        call = find(request)
        start = request.url.path.endswith(":startMediaStreaming")
        call.rest.append("startMediaStreaming" if start else "stopMediaStreaming")
        if call.state != "connected":
            raise _RestError(400, "8501", "Action is not valid when call is not in Established state.")
        if call.media is None:
            raise _RestError(400, "BadRequest", "Media streaming was not configured for this call.")
        context = _opt_str(body, "operationContext")
        uri = _opt_str(body, "operationCallbackUri")
        if start:
            if call.streaming == "started":
                raise _RestError(400, "8582", "Media streaming is already active.")
            emulator.spawn(emulator.start_streaming(call, context, uri))
        else:
            if call.streaming != "started":
                raise _RestError(400, "8583", "Media streaming is not active.")
            emulator.spawn(emulator.stop_streaming(call, context, uri))
        return Response(status_code=202)

    async def ring(request: Request) -> Response:
        """koe's own extension: ring an Event Grid webhook and answer when the call has ended (`koe acs-call ring`)."""
        body = await body_of(request, MAX_RING_BODY_BYTES)
        url = _required_str(body, "url")
        speakers = [_speaker(item) for item in body.get("speakers") or []]
        if not speakers:
            raise _RestError(400, "BadRequest", "speakers must be a non-empty array of {raw_id, pcm16, start_ms}")
        script = CallScript(speakers, speed=_number(body, "speed", 1.0))
        options = RingOptions(
            wait_s=_number(body, "wait_s", 0.0),
            answer_timeout_s=_number(body, "answer_timeout_s", RingOptions.answer_timeout_s),
            call_timeout_s=_number(body, "call_timeout_s", RingOptions.call_timeout_s),
        )
        try:
            result = await emulator.ring_and_follow(url, script, options)
        except RingError as exc:
            return _error(504 if exc.kind == "unanswered" else 502, exc.kind, str(exc))
        return JSONResponse(result.as_dict())

    async def keys(_request: Request) -> Response:
        return JSONResponse(emulator.signing_key.jwks())

    async def openid(_request: Request) -> Response:
        return JSONResponse({"issuer": emulator.signing_key.issuer, "jwks_uri": emulator.endpoint + "calling/keys"})

    routes = [
        Route("/calling/callConnections:answer", handler(answer), methods=["POST"]),
        Route("/calling/callConnections:connect", handler(connect), methods=["POST"]),
        Route("/calling/callConnections", handler(create), methods=["POST"]),
        Route("/calling/callConnections/{call_id}:terminate", handler(hang_up), methods=["POST"]),
        Route("/calling/callConnections/{call_id}:startMediaStreaming", handler(streaming), methods=["POST"]),
        Route("/calling/callConnections/{call_id}:stopMediaStreaming", handler(streaming), methods=["POST"]),
        Route("/calling/callConnections/{call_id}", handler(get_call), methods=["GET"]),
        Route("/calling/callConnections/{call_id}", handler(hang_up), methods=["DELETE"]),
        Route("/koe/ring", handler(ring), methods=["POST"]),
        Route("/calling/keys", keys, methods=["GET"]),
        Route("/calling/.well-known/acsopenidconfiguration", openid, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _RestError(400, "BadRequest", f"{key} is required")
    return value


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _RestError(400, "BadRequest", f"{key} must be a number of 0 or more")
    return float(value)


def _speaker(item: Any) -> Speaker:
    if not isinstance(item, dict):
        raise _RestError(400, "BadRequest", "each speaker is an object {raw_id, pcm16, start_ms}")
    try:
        pcm = np.frombuffer(base64.b64decode(_required_str(item, "pcm16"), validate=True), dtype="<i2")
    except (binascii.Error, ValueError) as exc:
        raise _RestError(400, "BadRequest", "pcm16 must be base64 of 16-bit little-endian PCM at 16 kHz") from exc
    start = item.get("start_ms", 0)
    if not isinstance(start, int) or start < 0:
        raise _RestError(400, "BadRequest", "start_ms must be a whole number of 0 or more")
    return Speaker(_required_str(item, "raw_id"), pcm.copy(), RING_RATE, start)


def _media_options(options: Any, transcription: Any = None) -> MediaConfig | None:
    """`mediaStreamingOptions` as the emulator streams it; `transcriptionOptions.locale` is passed on to koe as the
    media URL's `?language=` (koe, not the platform, transcribes here), unless the URL names a language itself."""

    if options is None:
        return None
    if not isinstance(options, dict):
        raise _RestError(400, "BadRequest", "mediaStreamingOptions must be an object")
    transport = str(options.get("transportType") or options.get("kind") or "").lower()
    if transport != "websocket":
        raise _RestError(400, "BadRequest", f"unsupported media streaming transport {transport!r}")
    url = _required_str(options, "transportUrl")
    channels = str(options.get("audioChannelType", "")).lower()
    if channels not in ("mixed", "unmixed"):
        raise _RestError(400, "BadRequest", "audioChannelType must be mixed or unmixed")
    audio_format = str(options.get("audioFormat") or "pcm16KMono").lower()
    if audio_format not in AUDIO_FORMATS:
        raise _RestError(400, "BadRequest", f"unsupported audioFormat {options.get('audioFormat')!r}")
    content = str(options.get("contentType") or "audio").lower()
    if content != "audio":
        raise _RestError(400, "BadRequest", f"unsupported contentType {content!r}")
    return MediaConfig(
        transport_url=_with_locale(url, transcription),
        rate=AUDIO_FORMATS[audio_format],
        mixed=channels == "mixed",
        bidirectional=bool(options.get("enableBidirectional")),
        dtmf=bool(options.get("enableDtmfTones")),
        start=bool(options.get("startMediaStreaming")),
    )


def _with_locale(url: str, transcription: Any) -> str:
    if transcription is None:
        return url
    if not isinstance(transcription, dict):
        raise _RestError(400, "BadRequest", "transcriptionOptions must be an object")
    locale = transcription.get("locale")
    if locale is None:
        return url
    if not isinstance(locale, str) or not locale.strip():
        raise _RestError(400, "BadRequest", "transcriptionOptions.locale must be a locale such as 'ja-JP'")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "language" for name, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("language", locale.strip())])))


def _check_hmac(request: Request, body: bytes, access_key: str) -> None:
    """The SDK's HMAC-SHA256 request signature (spec §4.4, `koe.sim.acs.signing`)."""
    path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    target = path + ("?" + query if query else "")
    try:
        check_signature(request.method, target, request.headers, body, access_key)
    except SignatureError as exc:
        raise _RestError(401, "Unauthorized", str(exc)) from exc
