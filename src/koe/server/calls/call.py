"""One call as the registry keeps it (`Call`): its state, participants, transcript and recent events, and the one
rule for what an event changes in it (`Call.record`). `Call.state_dict()` and `Call.from_state()` carry a call
between cluster nodes (`koe.server.cluster`); `snapshot()` is what `GET /v1/calls/{id}` shows.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

CallId = str
REPLAY_EVENTS = 200
"""Recent events of a call kept for late subscribers."""
TRANSCRIPT_ENTRIES = 500
"""Final transcript entries kept per call."""


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
    node: str | None = None
    """The cluster node holding this call (None in one process)."""
    media: bool = True
    """Whether the holder has the call's media (False for a call Call Automation answered, before its media)."""
    opened_at: float = field(default_factory=time.time)
    """When the call was last opened or revived (0: never, for a part that only records what another node has)."""

    def snapshot(self) -> dict[str, Any]:
        body = {
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
        if self.node is not None:
            body["node"] = self.node
        return body

    def record(self, event: dict[str, Any], *, stamp: bool = True) -> None:
        """Keep `event` as this call's latest: number it (`stamp`, or take its own `seq`), fold it into the
        participants and transcript, and keep it for replay."""
        if stamp:
            self.seq += 1
            event["seq"] = self.seq
        else:
            self.seq = max(self.seq, int(event.get("seq", 0)))
        _fold(self, event)
        self.recent.append(event)

    def state_dict(self) -> dict[str, Any]:
        """Everything about the call, as JSON-able data that `from_state()` reads back (cluster replication)."""
        body = self.snapshot()
        body.update(node=self.node, media=self.media, opened_at=self.opened_at, seq=self.seq, recent=list(self.recent))
        return body

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Call:
        call = cls(
            str(data["id"]),
            str(data["door"]),
            str(data["mode"]),
            started_at=float(data["started_at"]),
            state=str(data["state"]),
            ended_at=data.get("ended_at"),
            info=dict(data.get("info") or {}),
            participants={str(k): dict(v) for k, v in (data.get("participants") or {}).items()},
            partials={str(k): str(v) for k, v in (data.get("partials") or {}).items()},
            seq=int(data.get("seq", 0)),
            node=data.get("node"),
            media=bool(data.get("media", True)),
            opened_at=float(data.get("opened_at", 0.0)),
        )
        call.transcript.extend(data.get("transcript") or ())
        call.recent.extend(data.get("recent") or ())
        return call


def _fold(call: Call, event: dict[str, Any]) -> None:
    """What an event changes in a call's participants, partial and final transcripts."""
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
