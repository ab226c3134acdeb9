"""How much koe takes on at once, for every door alike: sessions per door, per API key, and transcription streams.

Overload is refused, not shared: a session past a limit is turned away in its own protocol, and the sessions
already running keep their latency. `Admission(settings)` is one per server (the app keeps it in
`app.state.admission`, and the Sora gateway shares it); a door calls `admit(door, key=…, transcribes=…)` once a
session is about to start, and gets either a `Ticket`, which it releases when the session ends (`with ticket:`),
or a `Refusal` that says which limit was reached. How each door answers it:

- Realtime: an `error` event (`type` `server_error`, code `session_limit_reached`), then close 1013 (try again later);
- ACS media: close 1013 with the reason;
- Sora: `503` with Suzu's JSON error body.

Who may connect at all is the access rule's question (`koe.server.auth`); this module only counts. It also turns
koe's `[limits]` settings into the voice engine's per-session bounds (`session_limits()`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from koe.config import Settings
from koe.server.metrics import METRICS
from koe.voice.config import Limits

log = logging.getLogger("koe.server.limits")

Door = Literal["realtime", "acs", "sora"]
REFUSED_CODE = "session_limit_reached"
"""The Realtime `error` code of a session refused for a limit (koe's own: OpenAI documents none)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A session koe will not start now; `message` names the limit and its setting."""

    limit: str
    """The setting that was reached: `limits.realtime_sessions`, `limits.sessions_per_key`, `stt.max_streams`, …"""
    message: str


class Ticket:
    """One admitted session's place; `release()` it (or leave its `with` block) when the session ends."""

    def __init__(self, admission: Admission, door: Door, key: int | None, transcribes: bool) -> None:
        self._admission = admission
        self.door = door
        self.key = key
        self.transcribes = transcribes
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Admission:
    def __init__(self, settings: Settings) -> None:
        limits = settings.limits
        self.door_limits: dict[Door, int | None] = {
            "realtime": limits.realtime_sessions,
            "acs": limits.acs_sessions,
            "sora": limits.sora_sessions,
        }
        self.per_key = limits.sessions_per_key
        self.max_streams = settings.stt.max_streams
        self.sessions: Counter[Door] = Counter()
        self.keys: Counter[int] = Counter()
        self.streams = 0
        self.refused: Counter[str] = Counter()
        """Refusals by the limit reached (shown in /metrics)."""

    def admit(self, door: Door, *, key: int | None = None, transcribes: bool = False) -> Ticket | Refusal:
        """A place for a new session of `door` (`key`: the index of the API key it presented; `transcribes`: it
        uses the STT engine), or why there is none."""
        refusal = self._refusal(door, key, transcribes)
        if refusal is not None:
            self.refused[refusal.limit] += 1
            METRICS.refused.labels(door, refusal.limit).inc()
            log.warning("refused a new %s session: %s", door, refusal.message)
            return refusal
        self.sessions[door] += 1
        if key is not None:
            self.keys[key] += 1
        if transcribes:
            self.streams += 1
        return Ticket(self, door, key, transcribes)

    def _refusal(self, door: Door, key: int | None, transcribes: bool) -> Refusal | None:
        limit = self.door_limits[door]
        if limit is not None and self.sessions[door] >= limit:
            return Refusal(
                f"limits.{door}_sessions",
                f"koe already serves {self.sessions[door]} {door} sessions, its limit (limits.{door}_sessions); "
                "try again later",
            )
        if key is not None and self.per_key is not None and self.keys[key] >= self.per_key:
            return Refusal(
                "limits.sessions_per_key",
                f"this API key already has {self.keys[key]} sessions open, its limit (limits.sessions_per_key); "
                "close one or try again later",
            )
        if transcribes and self.max_streams is not None and self.streams >= self.max_streams:
            return Refusal(
                "stt.max_streams",
                f"koe already transcribes {self.streams} streams, what its speech-to-text engine serves in time "
                "(stt.max_streams); try again later",
            )
        return None

    def _release(self, ticket: Ticket) -> None:
        self.sessions[ticket.door] -= 1
        if ticket.key is not None:
            self.keys[ticket.key] -= 1
            if not self.keys[ticket.key]:
                del self.keys[ticket.key]
        if ticket.transcribes:
            self.streams -= 1


def session_limits(settings: Settings) -> Limits:
    """The voice engine's bounds for one session, from `[limits]`."""
    limits = settings.limits
    return Limits(
        conversation_items=limits.conversation_items,
        item_chars=limits.item_chars,
        conversation_chars=limits.conversation_chars,
        prompt_chars=limits.prompt_chars,
        conversation_audio_ms=round(limits.conversation_audio_s * 1000),
    )


def session_lifetime_s(settings: Settings, door: Door) -> float:
    """How long a session of `door` may last (`limits.session_lifetime_s`; Realtime: `realtime.session_lifetime_s`
    when set)."""
    if door == "realtime" and settings.realtime.session_lifetime_s is not None:
        return float(settings.realtime.session_lifetime_s)
    return float(settings.limits.session_lifetime_s)
