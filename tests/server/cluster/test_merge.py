"""One call from the parts that nodes hold of it (`koe.server.cluster.merge`): when it is live or ended, whose
state it shows, and what lost nodes do to it."""

from __future__ import annotations

from koe.server.calls.call import Call
from koe.server.cluster.merge import NODE_LOST_INFO, merged


def _part(node: str, *, opened: float = 1.0, media: bool = True, state: str = "streaming", **fields: object) -> Call:
    part = Call("c", "acs", "echo", started_at=opened, state=state, node=node, media=media, opened_at=opened)
    for name, value in fields.items():
        setattr(part, name, value)
    return part


def _event(kind: str, at: float, **fields: object) -> dict[str, object]:
    return {"type": kind, "time": at, "call_id": "c", **fields}


def test_a_lone_part_on_a_live_node_is_the_call_itself() -> None:
    part = _part("a")
    assert merged([part], {}) is part


def test_a_lost_node_ends_its_lone_part_then() -> None:
    view = merged([_part("a")], {"a": 9.0})
    assert (view.state, view.ended_at, view.info[NODE_LOST_INFO]) == ("ended", 9.0, "a")


def test_a_part_that_ended_before_its_node_was_lost_keeps_its_own_end() -> None:
    view = merged([_part("a", state="ended", ended_at=5.0)], {"a": 9.0})
    assert (view.state, view.ended_at) == ("ended", 5.0)
    assert NODE_LOST_INFO not in view.info


def test_answered_on_one_node_streaming_on_another_shows_the_media_part() -> None:
    answered = _part("a", opened=1.0, media=False, state="connecting", info={"managed": True, "caller": "4:+1"})
    media = _part("d", opened=2.0, info={"sample_rate": 16000})
    view = merged([answered, media], {})
    assert (view.state, view.node, view.ended_at) == ("streaming", "d", None)
    assert view.info == {"managed": True, "caller": "4:+1", "sample_rate": 16000}
    # the answering node dies: the media goes on
    assert merged([answered, media], {"a": 3.0}).state == "streaming"


def test_a_hang_up_on_any_node_ends_the_call_and_a_later_media_stop_does_not_revive_it() -> None:
    media = _part("d", opened=2.0, state="stopped")
    callbacks = _part("b", opened=0.0, media=False, state="ended", ended_at=4.0)
    view = merged([media, callbacks], {})
    assert (view.state, view.ended_at) == ("ended", 4.0)


def test_a_stream_that_reconnects_to_another_node_revives_the_call() -> None:
    first = _part("d", opened=2.0, state="ended", ended_at=3.0)
    again = _part("e", opened=5.0)
    first.recent.append(_event("call.ended", 3.0))
    view = merged([first, again], {})
    assert (view.state, view.node, view.ended_at) == ("streaming", "e", None)
    assert [e["type"] for e in view.recent] == []  # the first stream's end is not the call's


def test_one_sora_session_on_two_nodes_goes_on_until_both_end() -> None:
    a = _part("a", opened=1.0, participants={"C1": {"turns": 1}})
    b = _part("b", opened=2.0, state="ended", ended_at=3.0, participants={"C2": {"turns": 2}})
    a.transcript.append({"participant": "C1", "text": "one", "time": 1.5})
    b.transcript.append({"participant": "C2", "text": "two", "time": 1.2})
    view = merged([a, b], {})
    assert view.state == "streaming"
    assert view.participants.keys() == {"C1", "C2"}
    assert [line["text"] for line in view.transcript] == ["two", "one"]
    a.state, a.ended_at = "ended", 6.0
    assert merged([a, b], {}).ended_at == 6.0


def test_no_part_on_a_live_node_that_opened_the_call_means_it_ended() -> None:
    media = _part("d", opened=2.0)
    callbacks = _part("b", opened=0.0, media=False, state="")
    view = merged([media, callbacks], {"d": 7.0})
    assert (view.state, view.ended_at, view.info[NODE_LOST_INFO]) == ("ended", 7.0, "d")
