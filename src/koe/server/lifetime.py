"""When a session ends on koe's side: at its maximum length, or after a stretch with nothing from its client.

One rule for every door. `SessionClock(lifetime_s, idle_s, on_end, busy=…)` starts counting when built; the door
calls `touch()` whenever its client sends something (a frame, a packet) and `stop()` when the session ends. When the
session reaches `lifetime_s`, or `idle_s` pass after the last `touch()` while `busy()` is false (no reply being
generated or played), `on_end(reason)` is called once, with `SESSION_EXPIRED` or `IDLE_TIMEOUT`; the door then
closes in its protocol's own way (Realtime: an `error` event and close 1001; ACS: close 1001; Sora: an error line
and the end of the stream). Timers are re-armed from the last touch, so a frame costs no timer of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from koe.server.metrics import METRICS

EndReason = Literal["session_expired", "idle_timeout"]
SESSION_EXPIRED: EndReason = "session_expired"
IDLE_TIMEOUT: EndReason = "idle_timeout"
BUSY_RECHECK_S = 1.0
"""A session quiet for long enough but still busy (a reply playing) is looked at again this soon."""


def end_message(reason: EndReason, lifetime_s: float, idle_s: float | None) -> str:
    """What the client is told, in OpenAI's words for an expired session."""
    if reason == SESSION_EXPIRED:
        minutes = lifetime_s / 60
        length = f"{minutes:g} minutes" if minutes >= 1 else f"{lifetime_s:g} seconds"
        return f"Your session hit the maximum duration of {length}."
    return f"the session was idle for {idle_s:g} s (no audio or message from the client; limits.idle_timeout_s)"


class SessionClock:
    def __init__(
        self,
        door: str,
        lifetime_s: float,
        idle_s: float | None,
        on_end: Callable[[EndReason], None],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.door = door
        self.lifetime_s = lifetime_s
        self.idle_s = idle_s
        self._on_end = on_end
        self._busy = busy
        self._last = self._loop.time()
        self._ended = False
        self._lifetime = self._loop.call_later(lifetime_s, self._end, SESSION_EXPIRED)
        self._idle = self._loop.call_later(idle_s, self._check_idle) if idle_s is not None else None

    def touch(self) -> None:
        """The client sent something."""
        self._last = self._loop.time()

    def message(self, reason: EndReason) -> str:
        return end_message(reason, self.lifetime_s, self.idle_s)

    def stop(self) -> None:
        self._ended = True
        self._lifetime.cancel()
        if self._idle is not None:
            self._idle.cancel()

    def _check_idle(self) -> None:
        assert self.idle_s is not None
        if self._ended:
            return
        quiet = self._loop.time() - self._last
        if quiet >= self.idle_s - 0.001 and not self._busy():
            self._end(IDLE_TIMEOUT)
            return
        wait = self.idle_s - quiet if quiet < self.idle_s else min(self.idle_s, BUSY_RECHECK_S)
        self._idle = self._loop.call_later(wait, self._check_idle)

    def _end(self, reason: EndReason) -> None:
        if self._ended:
            return
        self.stop()
        METRICS.session_ends.labels(self.door, reason).inc()
        self._on_end(reason)
