"""Ringing an application and following the call to its end, with every way it can go wrong as one `RingError`
whose message is one line: nothing answers at the URL, it fails the Event Grid handshake, it refuses
`IncomingCall`, or it takes the event and never answers the call.

`CallAutomationEmulator.ring_and_follow(url, script, RingOptions(...))` returns a `RingResult` (`summary()` is one
line, `as_dict()` the whole record); `koe acs-call emulator --ring` and `koe acs-call ring` print them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

RING_RATE = 16000
"""The callers' audio in `POST /koe/ring`: PCM16 at 16 kHz."""
RingFailure = Literal["unreachable", "invalid", "refused", "unanswered"]


class RingError(Exception):
    """The call could not be placed or was not answered; `str()` is one line saying why and what to do."""

    def __init__(self, kind: RingFailure, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RingOptions:
    wait_s: float = 0.0
    """Keep trying this long while nothing answers at the URL yet (the application is still starting)."""
    answer_timeout_s: float = 30.0
    """After `IncomingCall` was accepted, how long the application has to answer the call."""
    call_timeout_s: float = 3600.0
    """How long an answered call may last before the emulator hangs up."""


@dataclass
class RingResult:
    call_connection_id: str
    events_url: str
    callbacks: list[str]
    rest: list[str]
    media: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended: str = "caller"
    """Who ended the call: `caller` (the script ran out), `application` (it hung up) or `timeout`."""

    def summary(self) -> str:
        """One line: the call, its media and how it ended."""
        if self.media:
            frames = sum(int(report["frames_sent"]) for report in self.media)
            back_s = sum(int(r["outbound_audio_bytes"]) / (int(r["rate"]) * 2) for r in self.media)
            stops = sum(int(report["stop_audio"]) for report in self.media)
            media = f"{len(self.media)} media stream(s), {frames} frames sent, {back_s:.1f} s of audio back, "
            media += f"{stops} StopAudio"
        else:
            media = "no media"
        ended = {"caller": "the caller hung up", "application": "the application hung up"}.get(
            self.ended, "the emulator hung up at the call timeout"
        )
        problems = f"; {len(self.errors)} error(s), the first: {self.errors[0]}" if self.errors else ""
        return f"call {self.call_connection_id} answered: {media}; {ended}{problems}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "answered",
            "call_connection_id": self.call_connection_id,
            "events_url": self.events_url,
            "callbacks": self.callbacks,
            "rest": self.rest,
            "media": self.media,
            "errors": self.errors,
            "ended": self.ended,
            "summary": self.summary(),
        }


def failure_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words (TLS problems named as such, with what to do)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"its TLS certificate is not trusted ({seen.verify_message}): give the emulator its CA (--ca-file)"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed ({seen.reason or seen}): if it serves plain HTTP, use an http:// URL"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def retryable(exc: BaseException) -> bool:
    """A failure that waiting may cure: nothing listens yet (but not a TLS mismatch, which waiting does not fix)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return False
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError)


def refusal_detail(response: httpx.Response) -> str:
    """The reason a webhook gave with its refusal: an error body's message, else the start of its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message") or error
        if isinstance(message, str) and message:
            return message
    text = " ".join(response.text.split())
    return text[:200]
