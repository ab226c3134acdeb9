"""The Call Automation emulator: enough of ACS that an app written against the official SDK answers a simulated
call, gets its callbacks and receives the call's media, with only its endpoint and key changed.

    emulator = CallAutomationEmulator()                 # access_key=…: a fixed one, for a stable connection string
    await emulator.start(tls_dir=Path("/tmp/acs"))      # HTTPS with the local CA there (`koe.net.tls`), or None
    # the app uses emulator.connection_string and trusts emulator.ca_file (REQUESTS_CA_BUNDLE / SSL_CERT_FILE)
    call = await emulator.ring("http://127.0.0.1:8000/acs/events", script)   # Event Grid validation + IncomingCall
    await call.wait_for("CallDisconnected")
    await emulator.stop()

or `result = await emulator.ring_and_follow(url, script, RingOptions(wait_s=60))`, which waits for the application
to come up, fails with a one-line `RingError` (unreachable, refused, unanswered), and returns when the call ends.

REST (`koe.sim.acs._rest`): answer, create, connect, GET call, DELETE, `:terminate`, `:startMediaStreaming`,
`:stopMediaStreaming`, plus the JWKS at `/calling/keys` and koe's own `POST /koe/ring` (`koe acs-call ring`).
Callbacks go out as CloudEvents arrays, signed with the
emulator's key; media goes out through `MediaStream`. `emulator.hang_up(call_id)` is the remote party hanging up.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from koe.audio.resample import resample
from koe.net.tls import TlsFiles, client_context, ensure_local_tls
from koe.sim.acs import cloudevents as ce
from koe.sim.acs._rest import serve_rest
from koe.sim.acs.calls import CallScript, EmulatedCall, MediaConfig, Speaker
from koe.sim.acs.media import MediaConnectError, MediaOptions, MediaReport, MediaStream
from koe.sim.acs.participants import CallAudio, Participant
from koe.sim.acs.ringing import RingError, RingOptions, RingResult, failure_reason, refusal_detail, retryable
from koe.sim.acs.signing import access_key_bytes
from koe.sim.acs.tokens import CALLBACK_TOKEN_LIFETIME_S, SigningKey
from koe.tasks import TaskSet

log = logging.getLogger("koe.sim.acs")

DELIVERY_TIMEOUT_S = 5.0
"""The JS sample never answers its callbacks, so deliveries must time out."""
RETRY_S = 0.5
"""While waiting for an application to come up, how often to try its webhook again."""


class CallAutomationEmulator:
    def __init__(
        self,
        access_key: str | None = None,
        resource_id: str | None = None,
        trust: Sequence[Path] = (),
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        """`trust`: CA files to trust, besides the system's and the emulator's own, when calling the application
        (webhooks, callbacks, media). `delivery_timeout_s`: how long a webhook or callback may take to be answered
        (Event Grid waits up to 30 s)."""
        if access_key is not None:
            access_key_bytes(access_key)  # a ValueError saying what a key must be
        self.access_key = access_key or base64.b64encode(secrets.token_bytes(32)).decode()
        self.resource_id = resource_id or str(uuid.uuid4())
        self.signing_key = SigningKey()
        self.calls: dict[str, EmulatedCall] = {}
        self.verify_hmac = True
        self.ca_file: Path | None = None
        self.endpoint = ""
        self.validated_urls: set[str] = set()
        self.errors: list[str] = []
        self._server: Any = None
        self.trust = list(trust)
        self.delivery_timeout_s = delivery_timeout_s
        self._http = httpx.AsyncClient(timeout=delivery_timeout_s, verify=client_context(*self.trust))
        self._tasks = TaskSet(log, "Call Automation emulator task")
        self.outbound_script: CallScript | None = None
        """What the callee says on calls the app creates or connects (default: one second of silence)."""

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.endpoint};accesskey={self.access_key}"

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls_dir: Path | None = None) -> str:
        """Serve the REST API (HTTPS when `tls_dir` is given) and return the endpoint URL."""

        tls: TlsFiles | None = ensure_local_tls(tls_dir)[0] if tls_dir is not None else None
        self.ca_file = tls.ca_cert if tls else None
        if tls is not None:  # the application may serve TLS from the same local CA (koe serve --tls does)
            await self._http.aclose()
            context = client_context(tls.ca_cert, *self.trust)
            self._http = httpx.AsyncClient(timeout=self.delivery_timeout_s, verify=context)
        self._server, bound = await serve_rest(self, host, port, tls)
        self.endpoint = f"{'https' if tls else 'http'}://{host}:{bound}/"
        return self.endpoint

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            if call.state not in ("disconnected",):
                await self.hang_up(call.call_connection_id)
        self._tasks.cancel()
        if self._server is not None:
            await self._server.stop()
        await self._http.aclose()

    # --- Event Grid -------------------------------------------------------------------------------------------

    async def ring(self, events_url: str, script: CallScript, *, wait_s: float = 0.0) -> EmulatedCall:
        """Deliver `IncomingCall` to an Event Grid webhook (validating the subscription first, once per URL, and
        waiting up to `wait_s` for something to answer there). Raises `RingError`."""
        if events_url not in self.validated_urls:
            await self._validate_subscription(events_url, wait_s)
        call = EmulatedCall(
            call_connection_id=str(uuid.uuid4()),
            server_call_id=base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("="),
            correlation_id=str(uuid.uuid4()),
            incoming_call_context=base64.b64encode(secrets.token_bytes(48)).decode(),
            script=script,
        )
        self.calls[call.call_connection_id] = call
        delivery = ce.incoming_call(
            script.caller, script.callee, call.server_call_id, call.incoming_call_context, call.correlation_id
        )
        try:
            response = await self._http.post(events_url, json=delivery, headers={"aeg-event-type": "Notification"})
        except httpx.HTTPError as exc:
            del self.calls[call.call_connection_id]
            raise RingError(
                "unreachable", f"cannot deliver IncomingCall to {events_url}: {failure_reason(exc)}"
            ) from exc
        if response.status_code >= 300:
            del self.calls[call.call_connection_id]
            detail = refusal_detail(response)
            message = f"{events_url} refused IncomingCall with HTTP {response.status_code}"
            raise RingError("refused", message + (f": {detail}" if detail else ""))
        return call

    async def ring_and_follow(self, events_url: str, script: CallScript, options: RingOptions) -> RingResult:
        """Ring, wait for the answer, then for the call's end. Raises `RingError` for a call that did not happen."""
        first_error = len(self.errors)
        call = await self.ring(events_url, script, wait_s=options.wait_s)
        try:
            await call.wait_until(lambda: call.state != "ringing", options.answer_timeout_s)
        except TimeoutError:
            self.abandon(call)
            raise RingError(
                "unanswered",
                f"{events_url} took IncomingCall but did not answer the call within {options.answer_timeout_s:g} s "
                "(see the application's log)",
            ) from None
        ended = "caller"
        try:
            await call.wait_for("CallDisconnected", timeout_s=options.call_timeout_s)
        except TimeoutError:
            ended = "timeout"
            await self.hang_up(call.call_connection_id)
        if ended == "caller" and ("terminate" in call.rest or "delete" in call.rest):
            ended = "application"
        if call.stream_task is not None:
            await asyncio.wait({call.stream_task}, timeout=5.0)
        return RingResult(
            call_connection_id=call.call_connection_id,
            events_url=events_url,
            callbacks=call.callback_types(),
            rest=list(call.rest),
            media=[report.as_dict() for report in call.media_reports],
            errors=self.errors[first_error:],
            ended=ended,
        )

    def abandon(self, call: EmulatedCall) -> None:
        """A ringing call nobody answered: the caller gives up (ACS sends the app nothing; it never answered)."""
        call.state = "disconnected"
        call.notify()

    async def _validate_subscription(self, events_url: str, wait_s: float = 0.0) -> None:
        code, delivery = ce.subscription_validation(self.endpoint + "eventgrid/validate")
        headers = {"aeg-event-type": "SubscriptionValidation"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                response = await self._http.post(events_url, json=delivery, headers=headers)
            except httpx.HTTPError as exc:
                if retryable(exc) and loop.time() < deadline:
                    await asyncio.sleep(RETRY_S)
                    continue
                waited = f" (waited {wait_s:g} s)" if wait_s else ""
                raise RingError(
                    "unreachable", f"nothing answers at {events_url}{waited}: {failure_reason(exc)}"
                ) from exc
            if response.status_code in (502, 503, 504) and loop.time() < deadline:
                await asyncio.sleep(RETRY_S)
                continue
            break
        try:
            answer = response.json() if response.status_code == 200 else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict) or answer.get("validationResponse") != code:
            detail = refusal_detail(response) or "no validationResponse in the answer"
            raise RingError(
                "invalid",
                f"{events_url} failed the Event Grid validation handshake (HTTP {response.status_code}): {detail}",
            )
        self.validated_urls.add(events_url)

    # --- call lifecycle (called by the REST layer) -------------------------------------------------------------

    def outbound_call(self, target: str, source: str | None = None) -> EmulatedCall:
        """A call the app placed (create) or joined (connect): it connects at once. `target` is who was called and
        `source` the caller ID the app presented."""
        script = self.outbound_script or CallScript([Speaker(target, np.zeros(16000, dtype=np.int16), 16000)])
        script = replace(script, caller=target, callee=source or script.callee)
        call = EmulatedCall(
            call_connection_id=str(uuid.uuid4()),
            server_call_id=base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("="),
            correlation_id=str(uuid.uuid4()),
            incoming_call_context="",
            script=script,
        )
        self.calls[call.call_connection_id] = call
        return call

    def answer(self, call: EmulatedCall, callback_uri: str, context: str | None, media: MediaConfig | None) -> None:
        call.callback_uri = callback_uri
        call.operation_context = context
        call.media = media
        call.state = "connected"
        call.notify()
        self.spawn(self._after_connect(call))

    async def _after_connect(self, call: EmulatedCall) -> None:
        await self.callback(call, "CallConnected", call.operation_context)
        participants = [{"identifier": ce.identifier(s.raw_id), "isMuted": False} for s in call.script.speakers]
        await self.callback(call, "ParticipantsUpdated", None, participants=participants, sequenceNumber=1)
        if call.media is not None and call.media.start:
            await self.start_streaming(call, call.operation_context)

    async def start_streaming(self, call: EmulatedCall, context: str | None, callback_uri: str | None = None) -> None:
        media = call.media
        if media is None or call.streaming == "started":
            return
        audio = CallAudio(
            _participants(call.script, media.rate), media.rate, mixed=media.mixed, silence=call.script.silence
        )
        options = MediaOptions(
            media.transport_url,
            media.rate,
            call_connection_id=call.call_connection_id,
            correlation_id=call.correlation_id,
            subscription_id=call.subscription_id,
            bidirectional=media.bidirectional,
            enable_dtmf=media.dtmf,
            dtmf=call.script.dtmf,
            speed=call.script.speed,
            token=self.signing_key.sign(self.resource_id),
            ca_file=self.ca_file,
            linger_ms=call.script.linger_ms,
            reply_timeout_ms=call.script.reply_timeout_ms,
            barge_in=_barge_in(call.script, media.rate),
            barge_in_after_ms=call.script.barge_in_after_ms,
        )
        stream = MediaStream(options, audio)
        call.stream = stream
        call.streaming = "starting"
        runner = asyncio.create_task(stream.run())
        started = asyncio.create_task(stream.started.wait())
        await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            call.streaming = "failed"
            exc = runner.exception()
            detail = "initialWebSocketConnectionFailed" if isinstance(exc, MediaConnectError) else "unspecifiedError"
            self.errors.append(f"{call.call_connection_id}: {exc}")
            update = ce.media_streaming_update("mediaStreamingFailed", detail)
            result = ce.RESULT_STREAM_FAILED
            await self.callback(
                call, "MediaStreamingFailed", context, result, callback_uri, mediaStreamingUpdate=update
            )
            return
        call.streaming = "started"
        update = ce.media_streaming_update("mediaStreamingStarted", "subscriptionStarted")
        await self.callback(call, "MediaStreamingStarted", context, None, callback_uri, mediaStreamingUpdate=update)
        call.stream_task = self.spawn(self._stream_ended(call, runner, context))

    async def _stream_ended(self, call: EmulatedCall, runner: asyncio.Task[MediaReport], context: str | None) -> None:
        try:
            report = await runner
        except Exception as exc:
            self.errors.append(f"{call.call_connection_id}: media failed: {exc}")
            return
        call.media_reports.append(report)
        if call.streaming != "started":
            return  # stopped through the API or a hang-up, which report it themselves
        call.streaming = "stopped"
        by_server = report.closed_by == "server"
        details = "streamConnectionInterrupted" if by_server else "subscriptionStopped"
        update = ce.media_streaming_update("mediaStreamingStopped", details)
        await self.callback(call, "MediaStreamingStopped", context, None, None, mediaStreamingUpdate=update)
        if call.script.hang_up_when_done and not by_server:
            await self.hang_up(call.call_connection_id)

    async def stop_streaming(self, call: EmulatedCall, context: str | None, callback_uri: str | None = None) -> None:
        if call.streaming != "started" or call.stream is None:
            return
        call.streaming = "stopped"
        call.stream.hang_up()
        if call.stream_task is not None:
            await call.stream_task
        update = ce.media_streaming_update("mediaStreamingStopped", "subscriptionStopped")
        await self.callback(call, "MediaStreamingStopped", context, None, callback_uri, mediaStreamingUpdate=update)

    async def hang_up(self, call_id: str) -> None:
        """The call ends (either side): streaming stops automatically, then `CallDisconnected`."""
        call = self.calls.get(call_id)
        if call is None or call.state == "disconnected":
            return
        call.state = "disconnecting"
        if call.streaming == "started":
            await self.stop_streaming(call, call.operation_context)
        call.state = "disconnected"
        await self.callback(call, "CallDisconnected", call.operation_context, ce.RESULT_HANGUP)

    async def callback(
        self,
        call: EmulatedCall,
        kind: str,
        context: str | None,
        result: dict[str, Any] | None = None,
        uri: str | None = None,
        **data: Any,
    ) -> None:
        event = ce.cloud_event(
            kind, call.call_connection_id, call.server_call_id, call.correlation_id, context, result, **data
        )
        token = self.signing_key.sign(self.resource_id, lifetime_s=CALLBACK_TOKEN_LIFETIME_S)
        status: int | None = None
        target = uri or call.callback_uri
        if target:
            try:
                response = await self._http.post(target, json=[event], headers={"Authorization": f"Bearer {token}"})
                status = response.status_code
            except httpx.HTTPError as exc:
                timeout = f"{type(exc).__name__} after {self.delivery_timeout_s:g} s"  # a timeout has no message
                why = str(exc) or timeout
                self.errors.append(f"callback {kind} to {target} failed: {why}")
        call.callbacks.append((event["type"], status))
        call.notify()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coroutine)


def _participants(script: CallScript, rate: int) -> list[Participant]:
    return [
        Participant(s.raw_id, np.asarray(resample(s.pcm, s.rate, rate), dtype=np.int16), s.start_ms)
        for s in script.speakers
    ]


def _barge_in(script: CallScript, rate: int) -> tuple[str, Any] | None:
    speaker = script.barge_in
    if speaker is None:
        return None
    return speaker.raw_id, np.asarray(resample(speaker.pcm, speaker.rate, rate), dtype=np.int16)
