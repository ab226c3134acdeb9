"""A node's connection to Redis: what it sends, what it reads, its heartbeat, and which other nodes are alive.

`RedisLink(url, node, prefix=…, ttl_s=…, listener=…)`, then `start()`; `send(entry)` appends to the shared log,
`send_to(node, entry)` to another node's inbox (neither ever blocks: entries queue for one writer task, and are
dropped and counted while Redis is unreachable); `await close()` says `Bye` and stops. The `LinkListener` (the
cluster registry) hears everything read, in order, on the event loop.

Redis keys, under the prefix (`cluster.key_prefix`):
- `{p}:log`: a Redis Stream that every node reads with one blocking XREAD and appends to (capped at `LOG_ENTRIES`);
- `{p}:inbox:{node}`: the node's own stream, read by the same XREAD: the per-node command channel;
- `{p}:node:{node}`: the heartbeat, set every `ttl/4` to expire after `0.7 × ttl`. Every `ttl/10` a node checks the
  heartbeats of the nodes it has calls from, so a dead node's calls end within the TTL.

Streams rather than pub/sub: a reader that loses its connection for a moment resumes from the last entry it read
and misses nothing, where pub/sub drops whatever was published meanwhile, and one XREAD serves both the log and the
inbox. When Redis itself restarts (the streams are gone) or this node was cut off long enough for entries to be
lost, every node resends what it holds (`on_up`), so only the events published during the outage are missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from koe.server.cluster.entries import FIELD, BadEntry, Bye, Entry, decode, encode

log = logging.getLogger("koe.server.cluster")

LOG_ENTRIES = 20_000
"""The shared log is trimmed to about this many entries: a reader cut off for longer than that resyncs instead."""
INBOX_ENTRIES = 1_000
INBOX_TTL_S = 60.0
"""A dead node's inbox goes away this long after the last command sent to it."""
BLOCK_MS = 1000
SOCKET_TIMEOUT_S = 5.0
"""Longer than `BLOCK_MS`: a blocked read is not a dead connection."""
CONNECT_TIMEOUT_S = 2.0
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
QUEUE_ENTRIES = 10_000
BATCH_ENTRIES = 256
READ_ENTRIES = 512
CLOSE_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 3.0
"""How long stopping the link's tasks may take. redis-py can swallow a cancellation that lands in the middle of a
blocking read, and the task then reads on: `_stopped()` cancels again until this has passed."""
STOP_RETRY_S = 0.25
HEARTBEAT_SHARE = 0.25
KEY_TTL_SHARE = 0.7
POLL_SHARE = 0.1
GRACE_SHARE = 0.5
"""After a reconnection, other nodes get this share of the TTL to reconnect too before any is declared dead."""


class LinkListener(Protocol):
    def on_up(self) -> None:
        """Connected (again): send what this node holds."""

    def on_down(self) -> None:
        """Redis is unreachable; entries sent until `on_up` are dropped."""

    def on_entry(self, entry: Entry) -> None:
        """An entry another node sent to the log, or any entry of this node's inbox."""

    def watched_nodes(self) -> set[str]:
        """The other nodes whose heartbeats matter (those this node has calls from, or found dead)."""

    def on_liveness(self, alive: set[str], dead: set[str]) -> None:
        """The watched nodes found alive, and those whose heartbeat has lapsed."""

    def on_gap(self) -> None:
        """Entries of the log were trimmed before this node read them: what it shows of others may be stale."""

    def about(self) -> dict[str, Any]:
        """What this node's heartbeat says of it."""


class RedisLink:
    def __init__(self, url: str, node: str, *, prefix: str, ttl_s: float, listener: LinkListener) -> None:
        self.node = node
        self.ttl_s = ttl_s
        self.listener = listener
        self.up = False
        self.counters = {"sent": 0, "dropped": 0, "bad_entries": 0, "reconnects": 0, "gaps": 0}
        self._prefix = prefix
        self._log_key = f"{prefix}:log"
        self._inbox_key = self.inbox_key(node)
        self._positions: dict[str, bytes] = {}
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._grace_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            protocol=2,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # a failure surfaces at once: the supervisor reconnects and resyncs
        )

    def inbox_key(self, node: str) -> str:
        return f"{self._prefix}:inbox:{node}"

    def node_key(self, node: str) -> str:
        return f"{self._prefix}:node:{node}"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="koe-cluster-link")

    def send(self, entry: Entry) -> None:
        self._enqueue(self._log_key, entry)

    def send_to(self, node: str, entry: Entry) -> None:
        self._enqueue(self.inbox_key(node), entry)

    def status(self) -> dict[str, Any]:
        return {"redis": "up" if self.up else "down", **self.counters}

    def reconnect_grace_s(self) -> float:
        """How long after its own reconnection this node waits before it may declare another lost: half the TTL, and
        never less than the longest reconnect backoff plus one heartbeat, since after a Redis restart another node
        may still be waiting out its backoff (`RECONNECT_MAX_S`) before its first heartbeat."""
        return max(GRACE_SHARE * self.ttl_s, RECONNECT_MAX_S + HEARTBEAT_SHARE * self.ttl_s)

    async def close(self) -> None:
        """Leave: tell the others (`Bye`), and stop. The heartbeat is left to lapse: deleting it could let another
        node find it gone before it reads the `Bye`."""
        was_up = self.up
        if self._task is not None and not await _stopped({self._task}):
            log.warning("cluster: the Redis link's task did not stop within %.0f s; leaving it", STOP_TIMEOUT_S)
        if was_up:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._client.xadd(self._log_key, {FIELD: encode(Bye(self.node))})
        self.up = False
        await self._client.aclose()

    # --- the connection's life ---------------------------------------------------------------------------------

    def _enqueue(self, key: str, entry: Entry) -> None:
        if not self.up or self._queue.qsize() >= QUEUE_ENTRIES:
            self.counters["dropped"] += 1
            return
        self._queue.put_nowait((key, encode(entry)))

    async def _supervise(self) -> None:
        delay, first, warned = RECONNECT_MIN_S, True, False
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._client.ping()
                await self._find_positions(first)
            except (RedisError, OSError) as exc:
                if not warned:
                    log.warning("cluster: cannot reach Redis (%s); retrying every %.1f s at most", exc, RECONNECT_MAX_S)
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            log.info("cluster: node %s connected to Redis", self.node)
            delay, warned = RECONNECT_MIN_S, False
            self._grace_until = loop.time() + (0.0 if first else self.reconnect_grace_s())
            self.counters["reconnects"] += 0 if first else 1
            first = False
            self.up = True
            try:
                self.listener.on_up()
                await self._run_connected()
            except (RedisError, OSError) as exc:
                log.warning("cluster: lost Redis (%s); reconnecting", exc)
            except Exception:  # a bug must not end the node's part in the cluster for good: reconnect and resync
                log.exception("cluster: the Redis link failed; reconnecting")
                await asyncio.sleep(RECONNECT_MAX_S)
            finally:
                self.up = False
                self.counters["dropped"] += self._queue.qsize()
                self._queue = asyncio.Queue()
                self.listener.on_down()

    async def _run_connected(self) -> None:
        tasks = [
            asyncio.create_task(self._read(), name="koe-cluster-read"),
            asyncio.create_task(self._write(), name="koe-cluster-write"),
            asyncio.create_task(self._heartbeat(), name="koe-cluster-heartbeat"),
            asyncio.create_task(self._watch(), name="koe-cluster-watch"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the failure
        finally:
            await _stopped(set(tasks))

    async def _find_positions(self, first: bool) -> None:
        """Where to read from: on the first connection, from now on; after a reconnection, where reading stopped,
        unless the stream restarted below that (Redis restarted): then from its current end."""
        for key in (self._log_key, self._inbox_key):
            newest = await self._client.xrevrange(key, count=1)
            last = _as_bytes(newest[0][0]) if newest else b"0-0"
            known = self._positions.get(key)
            if first or known is None or _stream_id(last) < _stream_id(known):
                self._positions[key] = last

    # --- the four tasks of a connection ------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            streams: dict[Any, Any] = dict(self._positions)  # redis-py's key type is invariant: str keys, bytes ids
            reply = await self._client.xread(streams, count=READ_ENTRIES, block=BLOCK_MS)
            for key, entry_id, raw in _read_reply(reply):
                self._positions[key] = entry_id
                self._deliver(raw, from_log=key == self._log_key)

    def _deliver(self, raw: bytes, *, from_log: bool) -> None:
        try:
            entry = decode(raw)
        except BadEntry as exc:
            self.counters["bad_entries"] += 1
            if self.counters["bad_entries"] <= 5:
                log.warning("cluster: skipped an entry that is not koe's: %s", exc)
            return
        if from_log and entry.node == self.node:
            return  # this node's own, read back
        try:
            self.listener.on_entry(entry)
        except Exception:
            log.exception("cluster: applying a %s from %s failed", type(entry).__name__, entry.node)

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_ENTRIES and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            async with self._client.pipeline(transaction=False) as pipe:
                for key, data in batch:
                    inbox = key != self._log_key
                    pipe.xadd(key, {FIELD: data}, maxlen=INBOX_ENTRIES if inbox else LOG_ENTRIES, approximate=True)
                    if inbox:
                        pipe.pexpire(key, int(INBOX_TTL_S * 1000))
                await pipe.execute()
            self.counters["sent"] += len(batch)

    async def _heartbeat(self) -> None:
        key, ttl_ms = self.node_key(self.node), int(KEY_TTL_SHARE * self.ttl_s * 1000)
        while True:
            await self._client.set(key, orjson.dumps(self.listener.about()), px=ttl_ms)
            await asyncio.sleep(HEARTBEAT_SHARE * self.ttl_s)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_SHARE * self.ttl_s)
            await self._check_gap()
            nodes = sorted(self.listener.watched_nodes())
            if not nodes or loop.time() < self._grace_until:
                continue
            async with self._client.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.exists(self.node_key(node))
                found = await pipe.execute()
            alive = {node for node, exists in zip(nodes, found, strict=True) if exists}
            self.listener.on_liveness(alive, set(nodes) - alive)

    async def _check_gap(self) -> None:
        """A reader that fell more than `LOG_ENTRIES` behind (a starved event loop) would skip entries unawares."""
        try:
            info = await self._client.xinfo_stream(self._log_key)
        except RedisError:  # no log yet
            return
        trimmed = int(info.get("entries-added", 0)) - int(info.get("length", 0))
        first = info.get("recorded-first-entry-id")
        read = self._positions.get(self._log_key)
        if trimmed > 0 and first is not None and read is not None and _stream_id(read) < _stream_id(_as_bytes(first)):
            self.counters["gaps"] += 1
            log.warning("cluster: this node fell behind the shared log by more than %d entries; resyncing", LOG_ENTRIES)
            self.listener.on_gap()


def _read_reply(reply: Any) -> list[tuple[str, bytes, bytes]]:
    """(stream, entry id, the entry's field) for each entry of an XREAD reply, in either RESP version's shape."""
    streams = reply.items() if isinstance(reply, dict) else reply or ()
    found = []
    for stream, items in streams:
        key = _as_bytes(stream).decode()
        for entry_id, fields in items:
            raw = fields.get(FIELD, b"") if isinstance(fields, dict) else b""
            found.append((key, _as_bytes(entry_id), _as_bytes(raw)))
    return found


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


async def _stopped(tasks: set[asyncio.Task[Any]]) -> bool:
    """Cancel `tasks` and wait for them, cancelling again every `STOP_RETRY_S` (a cancellation may be swallowed),
    for at most `STOP_TIMEOUT_S`; whether all of them stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT_S
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_RETRY_S)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure on the way out is no news
    return not pending
