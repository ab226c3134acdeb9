"""The registry of live calls and their results, shared by every door, with a fan-out to result subscribers.

A door calls `registry.open(call_id, door=…, mode=…)` when a call's media arrives, `registry.publish(call_id,
event)` for each result (plain JSON-able dicts with a `type`, see EVENT TYPES), `registry.update(call_id, …)` for
status, and `registry.end(call_id)` when the media is gone. Readers use `registry.get()`, `registry.calls()` and
`registry.subscribe(call_id)` (or `subscribe(None)` for every call), an async iterator that first replays the
call's recent events and then follows live ones. `calls_routes(registry, settings)` serves all of this as
`GET /v1/calls`, `GET /v1/calls/{id}`, and `/v1/calls/{id}/events` over SSE (HTTP GET) or WebSocket.

EVENT TYPES (koe's own names; every event also carries `call_id`, `seq` and `time`): `call.started`,
`call.state` (`state`: connecting|streaming|stopped|ended, plus door details), `participant.joined`,
`speech.started`, `speech.stopped`, `transcript.delta` (`participant`, `item_id`, `delta`, `text`),
`transcript.completed` (`participant`, `item_id`, `text`, `audio_start_ms`, `audio_end_ms`, `language`),
`transcript.failed`, `dtmf` (`participant`, `tone`), `response.started`, `response.done`, `barge_in`, `error`,
`call.ended` (always the last event of a call).

Slow subscribers never slow a call: each has a bounded queue, and on overflow the oldest events are dropped and
counted (`Subscription.dropped`). Ended calls stay readable for `ENDED_RETENTION_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

CallId = str
SUBSCRIBER_QUEUE_EVENTS = 1000
REPLAY_EVENTS = 200
"""Recent events of a call kept for late subscribers."""
TRANSCRIPT_ENTRIES = 500
"""Final transcript entries kept per call."""
ENDED_RETENTION_S = 600.0
MAX_ENDED_CALLS = 200


@dataclass
class Call:
    id: CallId
    door: str
    mode: str
    started_at: float = field(default_factory=time.time)
    state: str = "connecting"
    ended_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Door-specific status (connection ids, audio format, frame counters…), shown as is."""
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    transcript: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=TRANSCRIPT_ENTRIES))
    partials: dict[str, str] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REPLAY_EVENTS))
    seq: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "door": self.door,
            "mode": self.mode,
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "participants": {key: dict(value) for key, value in self.participants.items()},
            "transcript": list(self.transcript),
            "partials": dict(self.partials),
            "info": dict(self.info),
        }


class Subscription:
    """Events of one call (or all calls) for one reader. Iterate it; `close()` (or the call ending) stops it."""

    def __init__(self, call_id: CallId | None, backlog: list[dict[str, Any]]) -> None:
        self.call_id = call_id
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque(backlog, maxlen=None)
        self._ready = asyncio.Event()
        self._closed = False
        if backlog:
            self._ready.set()

    def push(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        if len(self._queue) >= SUBSCRIBER_QUEUE_EVENTS:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            while self._queue:
                event = self._queue.popleft()
                yield event
                if self.call_id is not None and event.get("type") == "call.ended":
                    return
            if self._closed:
                return
            self._ready.clear()
            await self._ready.wait()


class CallRegistry:
    def __init__(self) -> None:
        self._calls: dict[CallId, Call] = {}
        self._subscribers: dict[CallId | None, set[Subscription]] = {}

    def open(self, call_id: CallId, *, door: str, mode: str, **info: Any) -> Call:
        """Register a call whose media is arriving, or revive one that reconnects (ACS may reconnect)."""
        call = self._calls.get(call_id)
        if call is None:
            self._forget_old()
            call = self._calls[call_id] = Call(call_id, door, mode, info=dict(info))
            self.publish(call_id, {"type": "call.started", "door": door, "mode": mode, **info})
        else:
            call.info.update(info)
            call.mode = mode
            call.ended_at = None
        return call

    def get(self, call_id: CallId) -> Call | None:
        return self._calls.get(call_id)

    def calls(self) -> list[Call]:
        return list(self._calls.values())

    def update(self, call_id: CallId, state: str | None = None, **info: Any) -> None:
        """Change a call's state or info; a state change is published as `call.state`.

        An ended call stays ended (only `open()` revives it): a media connection that finishes draining after
        Call Automation's `CallDisconnected` must not turn it back into "stopped".
        """
        call = self._calls.get(call_id)
        if call is None:
            return
        call.info.update(info)
        if state is not None and state != call.state and call.ended_at is None:
            call.state = state
            self.publish(call_id, {"type": "call.state", "state": state, **info})

    def publish(self, call_id: CallId, event: dict[str, Any]) -> dict[str, Any]:
        """Record `event` against the call and fan it out; returns it stamped with `call_id`, `seq` and `time`."""
        call = self._calls.get(call_id)
        stamped = {**event, "call_id": call_id, "time": time.time()}
        if call is not None:
            call.seq += 1
            stamped["seq"] = call.seq
            self._fold(call, stamped)
            call.recent.append(stamped)
        for key in (call_id, None):
            for subscription in tuple(self._subscribers.get(key, ())):
                subscription.push(stamped)
        return stamped

    def end(self, call_id: CallId, reason: str = "") -> None:
        """The call's media is gone: publish `call.ended` and end its subscriptions."""
        call = self._calls.get(call_id)
        if call is None or call.ended_at is not None:
            return
        call.state = "ended"
        call.ended_at = time.time()
        self.publish(call_id, {"type": "call.ended", "reason": reason})
        for subscription in self._subscribers.pop(call_id, set()):
            subscription.close()

    def subscribe(self, call_id: CallId | None, replay: bool = True) -> Subscription:
        """Follow one call (replaying its recent events first) or, with None, every call from now on."""
        call = self._calls.get(call_id) if call_id is not None else None
        backlog = list(call.recent) if call is not None and replay else []
        subscription = Subscription(call_id, backlog)
        if call is not None and call.ended_at is not None:
            subscription.close()
        else:
            self._subscribers.setdefault(call_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        self._subscribers.get(subscription.call_id, set()).discard(subscription)

    def _fold(self, call: Call, event: dict[str, Any]) -> None:
        kind = event.get("type")
        who = event.get("participant")
        if isinstance(who, str) and who not in call.participants:
            call.participants[who] = {"joined_at": event["time"], "speaking": False, "turns": 0}
        person = call.participants.get(who) if isinstance(who, str) else None
        if kind == "speech.started" and person is not None:
            person["speaking"] = True
        elif kind == "speech.stopped" and person is not None:
            person["speaking"] = False
        elif kind == "transcript.delta" and isinstance(who, str):
            call.partials[who] = str(event.get("text", ""))
        elif kind == "transcript.completed":
            if isinstance(who, str):
                call.partials.pop(who, None)
            if person is not None:
                person["turns"] += 1
            keep = ("participant", "item_id", "text", "audio_start_ms", "audio_end_ms", "language", "time")
            call.transcript.append({key: event[key] for key in keep if key in event})

    def _forget_old(self) -> None:
        now = time.time()
        ended = sorted((c for c in self._calls.values() if c.ended_at is not None), key=lambda c: c.ended_at or 0)
        for index, call in enumerate(ended):
            if now - (call.ended_at or now) > ENDED_RETENTION_S or len(ended) - index > MAX_ENDED_CALLS:
                del self._calls[call.id]
