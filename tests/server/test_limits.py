"""The admission rule (`koe.server.limits`): sessions per door, per API key and transcription streams are counted
once for every door, a session past any of them is refused naming the setting, and a released place is free again.
The doors' answers in their own protocols are in tests/server/test_overload.py."""

from __future__ import annotations

from koe.config import load_settings
from koe.server.limits import Admission, Refusal, Ticket, session_lifetime_s, session_limits
from koe.server.metrics import METRICS


def _admission(**limits: object) -> Admission:
    stt = {"max_streams": limits.pop("max_streams")} if "max_streams" in limits else {}
    return Admission(load_settings(overrides={"limits": limits, "stt": stt}))


def test_each_door_has_its_own_count() -> None:
    admission = _admission(realtime_sessions=2, acs_sessions=1, max_streams=None)
    first, second = admission.admit("realtime"), admission.admit("realtime")
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    third = admission.admit("realtime")
    assert isinstance(third, Refusal) and third.limit == "limits.realtime_sessions"
    assert "koe already serves 2 realtime sessions" in third.message
    assert isinstance(admission.admit("acs"), Ticket)  # another door is not full
    first.release()
    first.release()  # idempotent
    assert isinstance(admission.admit("realtime"), Ticket)


def test_a_key_past_its_share_is_refused_and_other_keys_are_not() -> None:
    admission = _admission(sessions_per_key=1, max_streams=None)
    assert isinstance(admission.admit("realtime", key=0), Ticket)
    refused = admission.admit("acs", key=0)  # the limit is per key across the doors
    assert isinstance(refused, Refusal) and refused.limit == "limits.sessions_per_key"
    assert isinstance(admission.admit("realtime", key=1), Ticket)
    assert isinstance(admission.admit("realtime"), Ticket)  # no key (a loopback client): not counted per key


def test_transcription_streams_are_bounded_across_doors() -> None:
    admission = _admission(max_streams=2)
    with admission.admit("sora", transcribes=True) as sora:  # type: ignore[union-attr]
        assert isinstance(sora, Ticket)
        assert isinstance(admission.admit("acs", transcribes=True), Ticket)
        before = METRICS.registry.get_sample_value(
            "koe_sessions_refused_total", {"door": "realtime", "limit": "stt.max_streams"}
        )
        refused = admission.admit("realtime", transcribes=True)
        assert isinstance(refused, Refusal) and refused.limit == "stt.max_streams"
        after = METRICS.registry.get_sample_value(
            "koe_sessions_refused_total", {"door": "realtime", "limit": "stt.max_streams"}
        )
        assert (after or 0) == (before or 0) + 1
        assert isinstance(admission.admit("acs"), Ticket)  # echo and bridge calls do not transcribe
    assert admission.streams == 1


def test_session_bounds_and_lifetimes_come_from_the_settings() -> None:
    settings = load_settings(
        overrides={"limits": {"item_chars": 10, "conversation_audio_s": 2.5, "session_lifetime_s": 60}}
    )
    limits = session_limits(settings)
    assert (limits.item_chars, limits.conversation_audio_ms) == (10, 2500)
    assert session_lifetime_s(settings, "acs") == session_lifetime_s(settings, "realtime") == 60
    realtime = load_settings(overrides={"limits": {"session_lifetime_s": 60}, "realtime": {"session_lifetime_s": 5}})
    assert (session_lifetime_s(realtime, "realtime"), session_lifetime_s(realtime, "sora")) == (5, 60)
