"""Optional webhook delivery of call results: each selected event is POSTed as JSON to a configured URL.

Make a `WebhookSender(url, event_types)`, `start()` it, `submit(event)` from any door (never blocks; a full queue
drops the event and counts it), and `await close()` at shutdown. Delivery is at-least-once with a few retries on
network errors and 5xx answers; `stats()` says what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import httpx
import orjson

from koe.tasks import stop

log = logging.getLogger("koe.server.calls.webhooks")

QUEUE_EVENTS = 1000
TIMEOUT_S = 5.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
JSON_HEADERS = {"content-type": "application/json"}


class WebhookSender:
    def __init__(
        self,
        url: str,
        event_types: Collection[str] = ("transcript.completed",),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.event_types = frozenset(event_types)
        self._headers = headers or {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_EVENTS)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, headers=self._headers)
            self._task = asyncio.create_task(self._run(), name="koe-webhooks")

    def submit(self, event: dict[str, Any]) -> None:
        if event.get("type") not in self.event_types and "*" not in self.event_types:
            return
        self.start()
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def flush(self) -> None:
        """Wait until everything submitted so far was delivered or given up on."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
        if self._client is not None:
            await self._client.aclose()

    def stats(self) -> dict[str, Any]:
        return {"url": self.url, "delivered": self.delivered, "failed": self.failed, "dropped": self.dropped}

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: dict[str, Any]) -> None:
        assert self._client is not None
        # UTF-8 as it is (orjson escapes nothing): Japanese and Chinese transcripts reach the hook readable.
        body = orjson.dumps(event)
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self._client.post(self.url, content=body, headers=JSON_HEADERS)
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed (attempt %d): %s", self.url, attempt + 1, exc)
                continue
            if response.status_code < 500:
                if response.is_success:
                    self.delivered += 1
                else:
                    self.failed += 1
                    log.warning("webhook %s refused an event: HTTP %d", self.url, response.status_code)
                return
        self.failed += 1
