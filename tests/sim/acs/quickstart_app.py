"""An application shaped like the official ACS quickstart `callautomation-azure-openai-voice` (written for koe's
tests, not copied from it): the same settings, routes and calls, configured only through the sample's own
settings, which is how the README tells a user to point the sample at koe and the emulator.

- `POST /api/incomingCall`: the Event Grid validation handshake; an `IncomingCall` is answered with the aio
  `CallAutomationClient.from_connection_string(ACS_CONNECTION_STRING)`, a callback URI under `CALLBACK_URI_HOST`
  and `MediaStreamingOptions` for `wss://<callback host>/ws`, mixed, PCM 24 kHz, bidirectional, started at once.
- `POST /api/callbacks/{id}`: on `CallConnected`, reads the call's properties, as the sample does.
- `WS /ws`: the call's media, bridged to `AsyncAzureOpenAI(azure_endpoint=AZURE_OPENAI_SERVICE_ENDPOINT, …)
  .beta.realtime.connect()` with the sample's session (whisper-1 transcription, server VAD at 0.4 and 600 ms, text
  and audio); non-silent `AudioData` goes to `input_audio_buffer.append`, `response.audio.delta` comes back as
  outbound `AudioData`, and `input_audio_buffer.speech_started` becomes `StopAudio`.

TLS trust comes from the environment (`SSL_CERT_FILE`), as for the sample. Run it as a process of its own:
`python -m tests.sim.acs.quickstart_app PORT`; it prints one JSON line per thing it did, for the test to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from typing import Any
from urllib.parse import urlencode, urlparse, urlunparse

from azure.communication.callautomation import (
    AudioFormat,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    StreamingTransportType,
)
from azure.communication.callautomation.aio import CallAutomationClient
from openai import AsyncAzureOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ACS_CONNECTION_STRING = os.environ["ACS_CONNECTION_STRING"]
CALLBACK_URI_HOST = os.environ["CALLBACK_URI_HOST"]
CALLBACK_EVENTS_URI = CALLBACK_URI_HOST + "/api/callbacks"
AZURE_OPENAI_SERVICE_ENDPOINT = os.environ["AZURE_OPENAI_SERVICE_ENDPOINT"]
AZURE_OPENAI_SERVICE_KEY = os.environ["AZURE_OPENAI_SERVICE_KEY"]
AZURE_OPENAI_DEPLOYMENT_MODEL_NAME = os.environ["AZURE_OPENAI_DEPLOYMENT_MODEL_NAME"]
API_VERSION = "2024-10-01-preview"
SESSION = {
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"threshold": 0.4, "silence_duration_ms": 600, "type": "server_vad"},
    "instructions": "You are a helpful agent. Answer briefly.",
    "voice": "alloy",
    "modalities": ["text", "audio"],
}

acs_client = CallAutomationClient.from_connection_string(ACS_CONNECTION_STRING)


def report(**what: Any) -> None:
    print(json.dumps(what), flush=True)


async def incoming_call(request: Request) -> Response:
    for event in await request.json():
        kind = event.get("eventType")
        if kind == "Microsoft.EventGrid.SubscriptionValidationEvent":
            return JSONResponse({"validationResponse": event["data"]["validationCode"]})
        if kind == "Microsoft.Communication.IncomingCall":
            data = event["data"]
            caller = data["from"]["phoneNumber"]["value"] if data["from"]["kind"] == "phoneNumber" else ""
            callback_uri = f"{CALLBACK_EVENTS_URI}/{uuid.uuid4()}?{urlencode({'callerId': caller})}"
            websocket_url = urlunparse(("wss", urlparse(CALLBACK_EVENTS_URI).netloc, "/ws", "", "", ""))
            options = MediaStreamingOptions(
                transport_url=websocket_url,
                transport_type=StreamingTransportType.WEBSOCKET,
                content_type=MediaStreamingContentType.AUDIO,
                audio_channel_type=MediaStreamingAudioChannelType.MIXED,
                start_media_streaming=True,
                enable_bidirectional=True,
                audio_format=AudioFormat.PCM24_K_MONO,
            )
            answered = await acs_client.answer_call(
                incoming_call_context=data["incomingCallContext"],
                operation_context="incomingCall",
                callback_url=callback_uri,
                media_streaming=options,
            )
            report(answered=answered.call_connection_id)
    return Response(status_code=200)


async def callbacks(request: Request) -> Response:
    for event in await request.json():
        call_id = event["data"]["callConnectionId"]
        report(callback=event["type"].removeprefix("Microsoft.Communication."))
        if event["type"] == "Microsoft.Communication.CallConnected":
            properties = await acs_client.get_call_connection(call_id).get_call_properties()
            report(media_streaming_subscription=str(properties.media_streaming_subscription.state))
    return Response(status_code=200)


async def media(websocket: WebSocket) -> None:
    await websocket.accept()
    client = AsyncAzureOpenAI(
        azure_endpoint=AZURE_OPENAI_SERVICE_ENDPOINT,
        azure_deployment=AZURE_OPENAI_DEPLOYMENT_MODEL_NAME,
        api_key=AZURE_OPENAI_SERVICE_KEY,
        api_version=API_VERSION,
    )
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as connection:
        report(realtime="connected")
        await connection.session.update(session=SESSION)  # type: ignore[arg-type]

        async def from_openai() -> None:
            async for event in connection:
                if event.type == "response.audio.delta":
                    body = {"Kind": "AudioData", "AudioData": {"Data": event.delta}, "StopAudio": None}
                    await websocket.send_text(json.dumps(body))
                elif event.type == "input_audio_buffer.speech_started":
                    report(event=event.type)
                    await websocket.send_text(json.dumps({"Kind": "StopAudio", "AudioData": None, "StopAudio": {}}))
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    report(user=event.transcript)
                elif event.type in ("response.done", "error"):
                    report(event=event.type, detail=str(getattr(event, "response", getattr(event, "error", "")))[:300])

        receiver = asyncio.create_task(from_openai())
        try:
            while True:
                data = json.loads(await websocket.receive_text())
                if data["kind"] == "AudioData":
                    audio = data.get("audioData", {})
                    if not audio.get("silent", True):
                        await connection.input_audio_buffer.append(audio=audio.get("data"))
        except WebSocketDisconnect:
            report(media="ended")
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
    await client.close()


app = Starlette(
    routes=[
        Route("/api/incomingCall", incoming_call, methods=["POST"]),
        Route("/api/callbacks/{context_id}", callbacks, methods=["POST"]),
        WebSocketRoute("/ws", media),
    ]
)


async def main(port: int) -> None:
    from koe.net.inprocess import start_app

    server = await start_app(app, "127.0.0.1", port, quiet=True)
    report(listening=port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await acs_client.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1])))
