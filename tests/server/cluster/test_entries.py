"""What nodes tell each other (`koe.server.cluster.entries`): every kind survives its encoding, and any other bytes
are refused with `BadEntry`, never another exception."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.server.calls.call import Call
from koe.server.cluster.entries import (
    MAX_ENTRY_BYTES,
    BadEntry,
    Bye,
    Command,
    Entry,
    Inventory,
    PartChange,
    PartEvent,
    PartState,
    Reply,
    decode,
    encode,
)

ENTRIES: list[Entry] = [
    PartState("a", "call-1", Call("call-1", "acs", "echo").state_dict()),
    PartChange("a", "call-1", {"state": "streaming", "info": {"sample_rate": 16000}}),
    PartEvent("a", "call-1", {"type": "dtmf", "tone": "5", "seq": 3, "time": 1.5, "call_id": "call-1"}),
    Inventory("a", ["call-1", "call-2"], ask=True),
    Bye("a"),
    Command("b", "r1", "call-1", "acs.media", {"action": "stop", "context": None}),
    Reply("a", "r1", 202, {"call_id": "call-1"}),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: type(entry).__name__)
def test_every_kind_round_trips(entry: Entry) -> None:
    assert decode(encode(entry)) == entry


def test_a_call_round_trips_through_its_state() -> None:
    call = Call("c", "sora", "koe", node="a", media=True)
    call.record({"type": "transcript.completed", "participant": "p", "text": "hello", "time": 2.0, "call_id": "c"})
    again = Call.from_state(orjson.loads(orjson.dumps(call.state_dict())))
    assert again.state_dict() == call.state_dict()
    assert list(again.transcript) == [{"participant": "p", "text": "hello", "time": 2.0}]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": "party", "node": "a"}', "no known kind"),
        (b'{"node": "a"}', "no known kind"),
        (b'{"kind": "bye"}', "Bye"),
        (b'{"kind": "bye", "node": "a", "extra": 1}', "Bye"),
        (b'{"kind": "reply", "node": "a", "request_id": "r", "status": true, "body": {}}', "Reply.status"),
        (b'{"kind": "inventory", "node": "a", "calls": [1]}', "non-string"),
        (b'{"kind": "part", "node": "a", "call_id": "c", "part": {}}', "no id"),
        (b'{"kind": "event", "node": 7, "call_id": "c", "event": {}}', "PartEvent.node"),
    ],
)
def test_anything_else_is_a_bad_entry(raw: bytes, why: str) -> None:
    with pytest.raises(BadEntry, match=why):
        decode(raw)


def test_an_oversize_entry_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(BadEntry, match="at most"):
        decode(b" " * (MAX_ENTRY_BYTES + 1))


_VALUES = st.one_of(
    st.text(max_size=5), st.integers(-5, 5), st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["id", "door", "mode"]), st.text(max_size=3), max_size=3),
)  # fmt: skip
_NAMES = ["node", "call_id", "part", "fields", "event", "calls", "ask", "request_id", "name", "args", "status", "body"]
_KINDS = ["part", "change", "event", "inventory", "bye", "command", "reply", "other"]
_OBJECTS = st.builds(
    lambda kind, rest: orjson.dumps({"kind": kind, **rest}),
    st.sampled_from(_KINDS),
    st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6),
)


@given(st.binary(max_size=200) | _OBJECTS)
def test_random_bytes_never_raise_anything_but_bad_entry(raw: bytes) -> None:
    with contextlib.suppress(BadEntry):
        decode(raw)
