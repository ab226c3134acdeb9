"""A call in the Call Automation emulator, as its REST API and its callbacks see it: the caller's script
(`CallScript`, `Speaker`), the media streaming options the app asked for (`MediaConfig`), and the call's state
(`EmulatedCall`). `koe.sim.acs.callautomation` runs them; `koe.sim.acs._rest` serves them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from koe.audio.pcm import Pcm
from koe.sim.acs import cloudevents as ce
from koe.sim.acs.media import MediaReport, MediaStream
from koe.sim.acs.participants import SilencePolicy, phone_raw_id


@dataclass
class Speaker:
    """One voice in a scripted call: PCM at any supported rate, resampled to the negotiated one."""

    raw_id: str
    pcm: Pcm
    rate: int
    start_ms: int = 0


@dataclass
class CallScript:
    """What happens on the caller's side once media flows."""

    speakers: Sequence[Speaker]
    speed: float = 1.0
    silence: SilencePolicy = "continuous"
    dtmf: Sequence[tuple[int, str]] = ()
    linger_ms: int = 1500
    reply_timeout_ms: int = 0
    """After the script's audio, wait up to this long (streaming silence) for the app to start answering."""
    hang_up_when_done: bool = True
    """After the script's audio (and the server's answer) ends, the caller hangs up."""
    barge_in: Speaker | None = None
    """Speech that starts `barge_in_after_ms` after the app's audio begins to play, to interrupt it."""
    barge_in_after_ms: int = 800
    caller: str = field(default_factory=lambda: phone_raw_id(1))
    callee: str = field(default_factory=lambda: phone_raw_id(9999))


@dataclass
class MediaConfig:
    transport_url: str
    rate: int
    mixed: bool
    bidirectional: bool
    dtmf: bool
    start: bool


@dataclass
class EmulatedCall:
    call_connection_id: str
    server_call_id: str
    correlation_id: str
    incoming_call_context: str
    script: CallScript
    state: str = "ringing"
    callback_uri: str = ""
    operation_context: str | None = None
    media: MediaConfig | None = None
    subscription_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    streaming: str = "disabled"
    stream: MediaStream | None = None
    stream_task: asyncio.Task[None] | None = None
    media_reports: list[MediaReport] = field(default_factory=list)
    callbacks: list[tuple[str, int | None]] = field(default_factory=list)
    """(event type, HTTP status or None on a delivery failure) in order."""
    rest: list[str] = field(default_factory=list)
    """REST operations the app performed on this call."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def properties(self) -> dict[str, Any]:
        """`CallConnectionProperties`, always with `targets` and `source` (SDK 1.4.0 crashes without targets)."""
        body: dict[str, Any] = {
            "callConnectionId": self.call_connection_id,
            "serverCallId": self.server_call_id,
            "targets": [ce.identifier(self.script.caller)],
            "source": ce.identifier(self.script.callee),
            "callConnectionState": self.state if self.state != "ringing" else "connecting",
            "callbackUri": self.callback_uri,
            "correlationId": self.correlation_id,
        }
        if self.script.callee.startswith("4:"):
            body["answeredFor"] = {"value": self.script.callee[2:]}
        if self.media is not None:
            body["mediaStreamingSubscription"] = {
                "id": self.subscription_id,
                "state": "active" if self.streaming == "started" else "inactive",
                "subscribedContentTypes": ["audio"],
            }
        return body

    async def wait_for(self, event_type: str, timeout_s: float = 30.0) -> None:
        """Until a callback of `event_type` (short name, like `CallConnected`) has been delivered."""
        kind = ce.EVENT_PREFIX + event_type
        await self.wait_until(lambda: any(sent == kind for sent, _ in self.callbacks), timeout_s)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Until `condition()` holds; it is checked whenever the call changes (`notify()`)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def notify(self) -> None:
        """The call's state or callbacks changed."""
        self._changed.set()

    def callback_types(self) -> list[str]:
        return [kind.removeprefix(ce.EVENT_PREFIX) for kind, _ in self.callbacks]
