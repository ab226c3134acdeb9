"""The registry of live calls and their results, shared by every door, with a fan-out to result subscribers.

A door calls `registry.open(call_id, door=…, mode=…)` when a call's media arrives, `registry.publish(call_id,
event)` for each result (plain JSON-able dicts with a `type`, see EVENT TYPES), `registry.update(call_id, …)` for
status, and `registry.end(call_id)` when the media is gone. Readers use `registry.get()`, `registry.calls()` and
`registry.subscribe(call_id)` (or `subscribe(None)` for every call), an async iterator that first replays the
call's recent events and then follows live ones. `calls_routes(registry, settings)` serves all of this as
`GET /v1/calls`, `GET /v1/calls/{id}`, and `/v1/calls/{id}/events` over SSE (HTTP GET) or WebSocket. A door that
acts on a call where its media is (Call Automation's start, stop and hang-up) registers the action with
`registry.handle(name, handler)` and runs it with `await registry.command(call_id, name, args)`.

`CallRegistry` is the interface every door uses and its in-process implementation, koe's default: every call lives
in this process. `koe.server.cluster` has the other one, chosen at start-up when `cluster.redis_url` is set: the
same interface over calls held by every koe node. Its hooks are the `_opened`, `_changed` and `_published` methods
(a call part was created or revived, its fields changed, it got an event), `_part` (the part a write goes to) and
`_is_new`; here they do nothing beyond this process. A door never knows which registry it has.

EVENT TYPES (koe's own names; every event also carries `call_id`, `seq` and `time`): `call.started`,
`call.state` (`state`: connecting|streaming|stopped|ended, plus door details), `participant.joined`,
`speech.started`, `speech.stopped`, `transcript.delta` (`participant`, `item_id`, `delta`, `text`),
`transcript.completed` (`participant`, `item_id`, `text`, `audio_start_ms`, `audio_end_ms`, `language`),
`transcript.failed`, `dtmf` (`participant`, `tone`), `response.started`, `response.done`, `barge_in`, `error`,
`call.ended` (always the last event of a call).

`open(…, media=False)` registers a call whose media is elsewhere (Call Automation answering it): in a cluster, the
node with the media socket is the one commands reach.

Slow subscribers never slow a call: each has a bounded queue, and on overflow the oldest events are dropped and
counted (`Subscription.dropped`). Ended calls stay readable for `ENDED_RETENTION_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from koe.server.calls.call import Call, CallId

SUBSCRIBER_QUEUE_EVENTS = 1000
ENDED_RETENTION_S = 600.0
MAX_ENDED_CALLS = 200


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command run on a call answers: an HTTP status and a JSON body (`{"error": {…}}` on failure)."""

    status: int
    body: dict[str, Any]


CommandHandler = Callable[[CallId, dict[str, Any]], Awaitable[CommandResult]]


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
    node_id: str | None = None
    """This node's name in a cluster; None in one process."""

    def __init__(self) -> None:
        self._calls: dict[CallId, Call] = {}
        self._subscribers: dict[CallId | None, set[Subscription]] = {}
        self._handlers: dict[str, CommandHandler] = {}

    async def start(self) -> None:
        """Begin sharing calls (the app's start-up); nothing to do in one process."""

    async def close(self) -> None:
        """Stop sharing calls (the app's shutdown)."""

    def status(self) -> dict[str, Any] | None:
        """The cluster's state for `GET /healthz`; None in one process."""
        return None

    def open(self, call_id: CallId, *, door: str, mode: str, media: bool = True, **info: Any) -> Call:
        """Register a call whose media is arriving, or revive one that reconnects (ACS may reconnect)."""
        call = self._calls.get(call_id)
        if call is None:
            self._forget_old()
            new = self._is_new(call_id)
            call = self._calls[call_id] = Call(call_id, door, mode, info=dict(info), node=self.node_id, media=media)
            self._opened(call)
            if new:
                self.publish(call_id, {"type": "call.started", "door": door, "mode": mode, **info})
        else:
            call.info.update(info)
            call.mode = mode
            call.ended_at = None
            call.opened_at = time.time()
            call.media = call.media or media
            self._opened(call)
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
        call = self._part(call_id)
        if call is None:
            return
        call.info.update(info)
        changed = state is not None and state != call.state and call.ended_at is None
        if changed:
            call.state = str(state)
        if info or changed:
            self._changed(call, {"info": info, **({"state": call.state} if changed else {})})
        if changed:
            self.publish(call_id, {"type": "call.state", "state": state, **info})

    def publish(self, call_id: CallId, event: dict[str, Any]) -> dict[str, Any]:
        """Record `event` against the call and fan it out; returns it stamped with `call_id`, `seq` and `time`
        (and, in a cluster, `node`)."""
        call = self._part(call_id)
        stamped = {**event, "call_id": call_id, "time": time.time()}
        if self.node_id is not None:
            stamped["node"] = self.node_id
        if call is not None:
            call.record(stamped)
            self._published(call, stamped)
        self._fanout(stamped)
        return stamped

    def end(self, call_id: CallId, reason: str = "") -> None:
        """The call's media is gone: publish `call.ended` and end its subscriptions."""
        call = self._part(call_id)
        if call is None or call.ended_at is not None:
            return
        call.state = "ended"
        call.ended_at = time.time()
        self._changed(call, {"state": call.state, "ended_at": call.ended_at})
        self.publish(call_id, {"type": "call.ended", "reason": reason})
        self._close_subscriptions(call_id)

    def subscribe(self, call_id: CallId | None, replay: bool = True) -> Subscription:
        """Follow one call (replaying its recent events first) or, with None, every call from now on."""
        call = self.get(call_id) if call_id is not None else None
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

    def handle(self, name: str, handler: CommandHandler) -> None:
        """Run `handler(call_id, args)` for `command(call_id, name, args)`, on the node holding the call's media."""
        self._handlers[name] = handler

    async def command(self, call_id: CallId, name: str, args: dict[str, Any]) -> CommandResult:
        """Run the command `name` on the call, where its media is (here, in one process)."""
        handler = self._handlers.get(name)
        if handler is None:
            message = f"this koe has no {name!r} command: is the door that provides it enabled?"
            return CommandResult(501, {"error": {"code": "not_implemented", "message": message}})
        return await handler(call_id, args)

    # --- what a cluster registry extends -----------------------------------------------------------------------

    def _part(self, call_id: CallId) -> Call | None:
        """The call that a write to `call_id` changes (None: no such call, and the write is dropped)."""
        return self._calls.get(call_id)

    def _is_new(self, call_id: CallId) -> bool:
        """Whether a call opened here is new (and so gets `call.started`), rather than known elsewhere."""
        return True

    def _opened(self, call: Call) -> None:
        """`call` was created or revived here."""

    def _changed(self, call: Call, fields: dict[str, Any]) -> None:
        """Some of `call`'s fields changed: `state`, `ended_at`, and `info` (the keys that changed)."""

    def _published(self, call: Call, event: dict[str, Any]) -> None:
        """`call` got `event` (already recorded)."""

    def _fanout(self, event: dict[str, Any]) -> None:
        for key in (event["call_id"], None):
            for subscription in tuple(self._subscribers.get(key, ())):
                subscription.push(event)

    def _close_subscriptions(self, call_id: CallId) -> None:
        for subscription in self._subscribers.pop(call_id, set()):
            subscription.close()

    def _forget_old(self) -> None:
        now = time.time()
        ended = sorted((c for c in self._calls.values() if c.ended_at is not None), key=lambda c: c.ended_at or 0)
        for index, call in enumerate(ended):
            if now - (call.ended_at or now) > ENDED_RETENTION_S or len(ended) - index > MAX_ENDED_CALLS:
                del self._calls[call.id]
