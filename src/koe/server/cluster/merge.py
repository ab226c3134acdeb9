"""One call as every node shows it, from the parts that nodes hold of it (pure: no I/O, no clock).

A call usually has one part, on the node with its media. A call that Call Automation answered on one node while its
media reached another has two, and a third when yet another node took a callback (`CallDisconnected` ending it, a
`media/stop` recording its operation). Each node writes only its own part, so parts never conflict; `merged(parts,
lost)` combines them:

- the call is ended when every part that opened it (`opened_at`; a part that only records callbacks has none) has
  ended, when a part without media (Call Automation's: a hang-up, `CallDisconnected`) ended it after its latest
  opening, or when no part that opened it is on a node still alive: a lost node (`lost`: node → when it was found
  dead) ends its parts then. Two nodes streaming one Sora session each hold a media part: the call goes on until
  both have ended;
- otherwise its state, door and mode are those of the live part holding the media (else the latest opened);
- its info, participants and partial transcripts are the parts' together, the media part's winning on a clash; its
  transcript and recent events are the parts' interleaved by time (a part's `call.ended` left out while the call
  goes on).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from koe.server.calls.call import REPLAY_EVENTS, TRANSCRIPT_ENTRIES, Call

NODE_LOST_INFO = "node_lost"
"""The info key naming the node whose loss ended a call."""


def merged(parts: Sequence[Call], lost: Mapping[str, float]) -> Call:
    """The call as one view. `parts` is not empty; a lone part on a live node is returned as it is."""
    if len(parts) == 1 and not _lost(parts[0], lost):
        return parts[0]
    live_opened = [p for p in parts if p.opened_at > 0 and not _lost(p, lost)]
    ended_at: float | None
    lost_node: str | None = None
    if live_opened:
        last_open = max(p.opened_at for p in live_opened)
        running = [p for p in live_opened if p.ended_at is None]
        hang_ups = [
            p.ended_at
            for p in parts
            if not p.media and p.ended_at is not None and p.ended_at >= last_open and not _lost(p, lost)
        ]
        if hang_ups:
            ended_at = max(hang_ups)
        elif not running:
            ended_at = max(p.ended_at or 0.0 for p in live_opened)
        else:
            ended_at = None
        candidates = running or live_opened
    else:
        times = [t for p in parts if (t := _end_time(p, lost)) is not None]
        ended_at = max(times) if times else max(p.started_at for p in parts)
        lost_node = next((p.node for p in parts if p.ended_at is None and _lost(p, lost)), None)
        candidates = [p for p in parts if p.opened_at > 0] or list(parts)
    base = max(candidates, key=lambda p: (p.media, p.opened_at))
    state = "ended" if ended_at is not None else base.state or next((p.state for p in candidates if p.state), "")
    view = Call(
        base.id,
        base.door,
        base.mode,
        started_at=min(p.started_at for p in parts),
        state=state or "connecting",
        ended_at=ended_at,
        seq=max(p.seq for p in parts),
        node=base.node,
        media=any(p.media for p in live_opened),
        opened_at=max(p.opened_at for p in parts),
    )
    # The media part last, so its values win.
    for part in sorted(parts, key=lambda p: (p.media, p.opened_at)):
        view.info.update(part.info)
        for who, person in part.participants.items():
            view.participants[who] = dict(person)
        view.partials.update(part.partials)
    if lost_node is not None:
        view.info[NODE_LOST_INFO] = lost_node
    view.transcript = deque(_by_time(p.transcript for p in parts), maxlen=TRANSCRIPT_ENTRIES)
    recent = _by_time(p.recent for p in parts)
    if ended_at is None:  # one part's end (a reconnected stream's first, another node's) is not the call's
        recent = [event for event in recent if event.get("type") != "call.ended"]
    view.recent = deque(recent, maxlen=REPLAY_EVENTS)
    return view


def _lost(part: Call, lost: Mapping[str, float]) -> bool:
    return part.node is not None and part.node in lost


def _end_time(part: Call, lost: Mapping[str, float]) -> float | None:
    if part.ended_at is not None:
        return part.ended_at
    return lost.get(part.node) if part.node is not None else None


def _by_time(groups: Any) -> list[dict[str, Any]]:
    entries = [entry for group in groups for entry in group]
    entries.sort(key=lambda entry: float(entry.get("time", 0.0)))
    return entries
