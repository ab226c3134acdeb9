"""What koe nodes tell each other through Redis: one typed class per entry, and its one encoding (sans-I/O).

`encode(entry)` gives the bytes stored in a Redis stream entry's one field (`FIELD`); `decode(raw)` reads them back,
raising `BadEntry` for anything else, so a stray writer or a newer koe's entry kind cannot break a node.

The shared log (every node reads it) carries what each node holds:
- `PartState`: a node's whole part of a call (`Call.state_dict()`), when it opens one, revives one, or resends
  what it holds;
- `PartChange`: fields of that part that changed (`state`, `ended_at`, `info` keys);
- `PartEvent`: an event of the call, stamped by the node that published it;
- `Inventory`: the calls a node holds, after it sent their states; `ask` asks every other node to send theirs
  (a node that starts or reconnects);
- `Bye`: a node leaving (its live calls end at once, not after its heartbeat lapses).

A node's inbox (only it reads it) carries `Command` (run a door's command on a call held here) and `Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import orjson

FIELD = b"e"
"""The one field of a stream entry."""
MAX_ENTRY_BYTES = 4 * 1024 * 1024
"""A call's whole state (500 transcript lines, 200 recent events) is a few hundred kB; nothing legitimate is larger."""


class BadEntry(ValueError):
    """Bytes that are not an entry of this koe: not JSON, an unknown kind, a missing field, or too large."""


@dataclass(frozen=True, slots=True)
class PartState:
    node: str
    call_id: str
    part: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PartChange:
    node: str
    call_id: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PartEvent:
    node: str
    call_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Inventory:
    node: str
    calls: list[str]
    ask: bool = False


@dataclass(frozen=True, slots=True)
class Bye:
    node: str


@dataclass(frozen=True, slots=True)
class Command:
    node: str
    """The node that asks, and gets the `Reply`."""
    request_id: str
    call_id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    node: str
    request_id: str
    status: int
    body: dict[str, Any]


Entry = PartState | PartChange | PartEvent | Inventory | Bye | Command | Reply

_KINDS: dict[str, type[Entry]] = {
    "part": PartState,
    "change": PartChange,
    "event": PartEvent,
    "inventory": Inventory,
    "bye": Bye,
    "command": Command,
    "reply": Reply,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def encode(entry: Entry) -> bytes:
    return orjson.dumps({"kind": _KIND_OF[type(entry)], **_fields(entry)})


def decode(raw: bytes) -> Entry:
    if len(raw) > MAX_ENTRY_BYTES:
        raise BadEntry(f"an entry of {len(raw)} bytes (at most {MAX_ENTRY_BYTES})")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEntry(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEntry("not a JSON object")
    cls = _KINDS.get(data.pop("kind", None))
    if cls is None:
        raise BadEntry("no known kind")
    try:
        entry = cls(**data)
    except TypeError as exc:
        raise BadEntry(f"{cls.__name__}: {exc}") from None
    _check_types(entry)
    return entry


_TYPES: dict[str, type | tuple[type, ...]] = {
    "node": str,
    "call_id": str,
    "request_id": str,
    "name": str,
    "part": dict,
    "fields": dict,
    "event": dict,
    "args": dict,
    "body": dict,
    "calls": list,
    "ask": bool,
    "status": int,
}


def _check_types(entry: Entry) -> None:
    for name, value in _fields(entry).items():
        expected = _TYPES[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise BadEntry(f"{type(entry).__name__}.{name} is {type(value).__name__}")
    if isinstance(entry, Inventory) and not all(isinstance(call, str) for call in entry.calls):
        raise BadEntry("Inventory.calls holds a non-string")
    if isinstance(entry, PartState) and not isinstance(entry.part.get("id"), str):
        raise BadEntry("PartState.part has no id")


def _fields(entry: Entry) -> dict[str, Any]:
    # Shallow, unlike dataclasses.asdict(), which would deep-copy a call's whole state for every entry.
    return {field.name: getattr(entry, field.name) for field in fields(entry)}
