"""The call registry of a cluster node: the in-process registry for the calls this node holds, plus a replica of
every other node's, kept through Redis (`koe.server.cluster.link`).

`RedisCallRegistry(settings.cluster)` is a `CallRegistry` (the doors use it unchanged); the app `start()`s it and
`close()`s it. How it works:

- Each node writes only its own *part* of a call: the door that has the call's media opens it here, and a node that
  hears of another node's call (a Call Automation callback, a `media/stop`) keeps what it learnt in a part of its own.
  Every change to a part goes to the shared log as it happens (`PartState`, `PartChange`, `PartEvent`).
- Every node applies the other nodes' entries to its replicas, fans their events out to its own subscribers, and
  answers reads with the parts merged (`koe.server.cluster.merge`): `/v1/calls` and the call monitor on any node
  show every call of the cluster, and `/v1/calls/{id}/events` streams its events wherever it is read.
- A node that connects (or reconnects, after Redis restarted) sends the state of every part it holds and asks the
  others to do the same (`Inventory`), so nothing but the events published while Redis was unreachable is lost.
- A node whose heartbeat lapses, or that says `Bye`, is lost: its live calls end on every other node, within the TTL.
- `command(call_id, …)` runs on the node whose part holds the call's media: forwarded to its inbox, answered with a
  `Reply`, or a 504 after `cluster.command_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import uuid
from typing import Any

from koe import __version__
from koe.config import ClusterSettings
from koe.server.calls.call import Call, CallId
from koe.server.calls.registry import ENDED_RETENTION_S, CallRegistry, CommandResult
from koe.server.cluster.entries import (
    Bye,
    Command,
    Entry,
    Inventory,
    PartChange,
    PartEvent,
    PartState,
    Reply,
)
from koe.server.cluster.link import KEY_TTL_SHARE, RedisLink
from koe.server.cluster.merge import merged
from koe.tasks import TaskSet

log = logging.getLogger("koe.server.cluster")

RESEND_DELAY_S = 0.2
"""Requests to resend (every node asks when Redis comes back) within this long are answered once."""
MAX_REMOTE_ENDED = 1000
"""Ended calls of other nodes kept for reading, at most (each node keeps its own `MAX_ENDED_CALLS`)."""
_CHANGEABLE = ("state", "ended_at", "opened_at", "mode")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


class RedisCallRegistry(CallRegistry):
    def __init__(self, settings: ClusterSettings, node_id: str | None = None) -> None:
        super().__init__()
        if settings.redis_url is None:
            raise ValueError("cluster.redis_url is not set")
        self.settings = settings
        self.node: str = node_id or settings.node_id or default_node_id()
        self.node_id = self.node
        self._remote: dict[CallId, dict[str, Call]] = {}
        """call → node → that node's part."""
        self._lost: dict[str, float] = {}
        """Nodes found dead, and when."""
        self._left: set[str] = set()
        """Nodes that said `Bye`: their heartbeat, still there until it lapses, does not bring them back."""
        self._pending: dict[str, asyncio.Future[CommandResult]] = {}
        self._commands = TaskSet(log, "cluster command")
        self._resend_at: asyncio.TimerHandle | None = None
        self._started_at = time.time()
        url = settings.redis_url.get_secret_value()
        self._link = RedisLink(url, self.node, prefix=settings.key_prefix, ttl_s=settings.node_ttl_s, listener=self)

    async def start(self) -> None:
        self._link.start()

    async def close(self) -> None:
        if self._resend_at is not None:
            self._resend_at.cancel()
        await self._commands.cancel_and_wait()
        await self._link.close()

    def status(self) -> dict[str, Any]:
        nodes = {node for parts in self._remote.values() for node in parts} - set(self._lost)
        return {
            "node": self.node,
            **self._link.status(),
            "other_nodes": sorted(nodes),
            "lost_nodes": sorted(self._lost),
            "calls_held": len(self._calls),
            "calls_elsewhere": len(self._remote),
        }

    # --- reads: every node's parts, merged ------------------------------------------------------------------------

    def get(self, call_id: CallId) -> Call | None:
        parts = self._parts(call_id)
        return merged(parts, self._lost) if parts else None

    def calls(self) -> list[Call]:
        views = (self.get(call_id) for call_id in dict.fromkeys([*self._calls, *self._remote]))
        return sorted((view for view in views if view is not None), key=lambda view: view.started_at)

    async def command(self, call_id: CallId, name: str, args: dict[str, Any]) -> CommandResult:
        target = self._media_node(call_id)
        if target is None or target == self.node:
            return await super().command(call_id, name, args)
        if not self._link.up:
            message = (
                f"call {call_id}'s media is on node {target}, and this node cannot reach Redis to pass the command "
                "on: retry, or send it to that node"
            )
            return CommandResult(503, {"error": {"code": "cluster_unavailable", "message": message}})
        request_id = uuid.uuid4().hex
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._link.send_to(target, Command(self.node, request_id, call_id, name, args))
        timeout = self.settings.command_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            message = (
                f"node {target}, which has call {call_id}'s media, did not answer {name} within {timeout:g} s: it may "
                f"be overloaded or gone (a gone node's calls end within {self.settings.node_ttl_s:g} s); retry"
            )
            return CommandResult(504, {"error": {"code": "node_timeout", "message": message}})
        finally:
            self._pending.pop(request_id, None)

    def _parts(self, call_id: CallId) -> list[Call]:
        parts = list(self._remote.get(call_id, {}).values())
        local = self._calls.get(call_id)
        return [local, *parts] if local is not None else parts

    def _media_node(self, call_id: CallId) -> str | None:
        holding = [
            part
            for part in self._parts(call_id)
            if part.media and part.opened_at > 0 and part.ended_at is None and part.node not in self._lost
        ]
        return max(holding, key=lambda part: part.opened_at).node if holding else None

    # --- writes: the in-process registry's, each also sent to the log -------------------------------------------

    def _is_new(self, call_id: CallId) -> bool:
        return call_id not in self._remote

    def _part(self, call_id: CallId) -> Call | None:
        part = self._calls.get(call_id)
        if part is None and call_id in self._remote:
            # A call held elsewhere, which this node has something to say about: keep it in a part of its own.
            view = self.get(call_id)
            assert view is not None
            part = Call(
                call_id, view.door, view.mode, started_at=view.started_at, state="", node=self.node, media=False
            )
            part.opened_at = 0.0
            self._calls[call_id] = part
            self._opened(part)
        return part

    def _opened(self, call: Call) -> None:
        self._link.send(PartState(self.node, call.id, call.state_dict()))

    def _changed(self, call: Call, fields: dict[str, Any]) -> None:
        self._link.send(PartChange(self.node, call.id, fields))

    def _published(self, call: Call, event: dict[str, Any]) -> None:
        self._link.send(PartEvent(self.node, call.id, event))

    # --- LinkListener: what the other nodes say ---------------------------------------------------------------------

    def on_up(self) -> None:
        self._send_all(ask=True)

    def on_down(self) -> None:
        for future in self._pending.values():
            if not future.done():
                message = "this node lost its connection to Redis before the node with the call's media answered"
                future.set_result(CommandResult(503, {"error": {"code": "cluster_unavailable", "message": message}}))

    def on_entry(self, entry: Entry) -> None:
        if isinstance(entry, PartState | PartChange | PartEvent | Inventory):
            self._found_alive(entry.node)
        if isinstance(entry, PartState):
            self._apply_state(entry)
        elif isinstance(entry, PartChange):
            self._apply_change(entry)
        elif isinstance(entry, PartEvent):
            self._apply_event(entry)
        elif isinstance(entry, Inventory):
            self._apply_inventory(entry)
        elif isinstance(entry, Bye):
            self._left.add(entry.node)
            self._lose(entry.node, "left the cluster")
        elif isinstance(entry, Command):
            self._commands.spawn(self._run_command(entry))
        else:
            future = self._pending.get(entry.request_id)
            if future is not None and not future.done():
                future.set_result(CommandResult(entry.status, entry.body))

    def watched_nodes(self) -> set[str]:
        return {node for parts in self._remote.values() for node in parts} | set(self._lost)

    def on_liveness(self, alive: set[str], dead: set[str]) -> None:
        for node in alive - self._left:
            self._found_alive(node)
        lapse = KEY_TTL_SHARE * self.settings.node_ttl_s
        for node in dead:
            self._lose(node, f"stopped answering (no heartbeat for {lapse:.1f} s)")
        self._forget_remote()

    def on_gap(self) -> None:
        self._link.send(Inventory(self.node, list(self._calls), ask=True))

    def about(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at,
            "calls": len(self._calls),
        }

    # --- applying entries ----------------------------------------------------------------------------------------

    def _apply_state(self, entry: PartState) -> None:
        try:
            part = Call.from_state(entry.part)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("cluster: node %s sent an unreadable call state: %s", entry.node, exc)
            return
        part.node = entry.node
        live = self._live(entry.call_id)
        self._remote.setdefault(entry.call_id, {})[entry.node] = part
        self._settle(entry.call_id, live, f"ended on node {entry.node}")

    def _apply_change(self, entry: PartChange) -> None:
        # An end comes with its own `call.ended` event, right after: that one ends the subscriptions.
        part = self._remote.get(entry.call_id, {}).get(entry.node)
        if part is None:
            return  # its state was missed; it comes with the node's next resend
        part.info.update(entry.fields.get("info") or {})
        for name in _CHANGEABLE:
            if name in entry.fields:
                setattr(part, name, entry.fields[name])

    def _apply_event(self, entry: PartEvent) -> None:
        part = self._remote.get(entry.call_id, {}).get(entry.node)
        event = entry.event
        if part is None or int(event.get("seq", 0)) <= part.seq:
            return  # missed state (a resend follows), or an event the part's state already has
        part.record(event, stamp=False)
        self._fanout(event)
        if event.get("type") == "call.ended":
            self._close_subscriptions(entry.call_id)

    def _apply_inventory(self, entry: Inventory) -> None:
        held = set(entry.calls)
        for call_id in [call_id for call_id, parts in self._remote.items() if entry.node in parts]:
            if call_id not in held:
                live = self._live(call_id)
                del self._remote[call_id][entry.node]
                if not self._remote[call_id]:
                    del self._remote[call_id]
                self._settle(call_id, live, f"gone from node {entry.node}")
        if entry.ask:
            self._resend_soon()

    def _found_alive(self, node: str) -> None:
        self._left.discard(node)
        if self._lost.pop(node, None) is not None:
            log.info("cluster: node %s is back", node)
            self._link.send(Inventory(self.node, list(self._calls), ask=True))  # its calls may have moved on

    def _lose(self, node: str, why: str) -> None:
        if node in self._lost or node == self.node:
            return
        calls = [call_id for call_id, parts in self._remote.items() if node in parts]
        live = {call_id for call_id in calls if self._live(call_id)}
        self._lost[node] = time.time()
        ended = sum(self._settle(call_id, call_id in live, f"node {node} {why}", node) for call_id in calls)
        log.warning("cluster: node %s %s; %d live call(s) of it ended", node, why, ended)

    def _live(self, call_id: CallId) -> bool:
        view = self.get(call_id)
        return view is not None and view.ended_at is None

    def _settle(self, call_id: CallId, was_live: bool, reason: str, lost_node: str | None = None) -> bool:
        """A call that was live before a change that came with no `call.ended` (a lost node, a dropped or resent
        part) and is not now gets one of this node's own, for its subscribers here. True if it ended."""
        if not was_live or self._live(call_id):
            return False
        event = {"type": "call.ended", "reason": reason, "call_id": call_id, "time": time.time()}
        event["node"] = lost_node or self.node
        part = self._remote.get(call_id, {}).get(lost_node or "")
        if part is not None:
            part.recent.append(event)  # so a later reader's replay ends with it too
        self._fanout(event)
        self._close_subscriptions(call_id)
        return True

    def _fanout(self, event: dict[str, Any]) -> None:
        # One node's part ending is not the call's end while another node's part goes on (two nodes streaming one
        # Sora session): its `call.ended` would stop every subscriber.
        if event.get("type") == "call.ended" and self._live(str(event["call_id"])):
            return
        super()._fanout(event)

    def _close_subscriptions(self, call_id: CallId) -> None:
        if not self._live(call_id):
            super()._close_subscriptions(call_id)

    def _forget_remote(self) -> None:
        """Ended calls held elsewhere, kept for reading as long as this node keeps its own ended calls; and this
        node's parts of them that only recorded what it heard (they never end by themselves)."""
        now = time.time()
        ended = []
        for call_id in list(self._remote):
            view = self.get(call_id)
            if view is None or view.ended_at is None:
                continue
            local = self._calls.get(call_id)
            if now - view.ended_at > ENDED_RETENTION_S and (local is None or local.opened_at == 0):
                del self._remote[call_id]
                self._calls.pop(call_id, None)
            elif local is None:
                ended.append((view.ended_at, call_id))
        for _, call_id in sorted(ended)[: max(0, len(ended) - MAX_REMOTE_ENDED)]:
            del self._remote[call_id]
        holding = {node for parts in self._remote.values() for node in parts}
        for node in [node for node in self._lost if node not in holding]:
            del self._lost[node]  # nothing of it is left to show

    # --- resending and commands ----------------------------------------------------------------------------------

    def _send_all(self, ask: bool) -> None:
        for call in self._calls.values():
            self._opened(call)
        self._link.send(Inventory(self.node, list(self._calls), ask=ask))

    def _resend_soon(self) -> None:
        if self._resend_at is None:
            self._resend_at = asyncio.get_running_loop().call_later(RESEND_DELAY_S, self._resend)

    def _resend(self) -> None:
        self._resend_at = None
        self._send_all(ask=False)

    async def _run_command(self, entry: Command) -> None:
        try:
            result = await CallRegistry.command(self, entry.call_id, entry.name, entry.args)  # here, never again on
        except Exception as exc:
            log.exception("cluster: command %s on call %s failed", entry.name, entry.call_id)
            result = CommandResult(500, {"error": {"code": "internal_error", "message": str(exc)}})
        self._link.send_to(entry.node, Reply(self.node, entry.request_id, result.status, result.body))
