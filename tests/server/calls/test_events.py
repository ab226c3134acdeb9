"""Call events (`koe.server.calls.events`): engine events as the registry shows them, one mapping for every door."""

from __future__ import annotations

import pytest

from koe.server.calls.events import call_event
from koe.voice import errors as ve
from koe.voice import events as ev


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ve.InternalError("internal error: boom"), "internal"),
        (ve.InvalidItem("only assistant messages can be truncated", "item_id"), "invalid_item"),
        (ve.CommitTooShort(12.0, 100), "commit_too_short"),
        (ve.ResponseInProgress("resp_1"), "response_in_progress"),
        (ve.NoResponseToCancel(), "no_response_to_cancel"),
        (ve.LimitExceeded("conversation_chars", 100, 120), "limit_exceeded"),
        (ve.ResponseFailed("the LLM endpoint answered 500", "engine", "resp_1"), "response_failed"),
    ],
)
def test_engine_errors_are_registry_errors_with_koes_kind(error: ve.VoiceError, code: str) -> None:
    assert call_event(ev.Error(error, cause="ignored")) == {"type": "error", "code": code, "message": error.message}


def test_a_transcript_carries_the_doors_language_when_it_has_one() -> None:
    done = ev.TranscriptCompleted("+1555", "item_1", "こんにちは", 0, 900, "ja", 0.9)
    assert call_event(done) == {
        "type": "transcript.completed",
        "participant": "+1555",
        "item_id": "item_1",
        "text": "こんにちは",
        "audio_start_ms": 0,
        "audio_end_ms": 900,
        "language": "ja",
    }
    assert call_event(done, "ja-JP") == {**call_event(done), "language": "ja-JP"}  # type: ignore[dict-item]


def test_events_callers_do_not_see_map_to_nothing() -> None:
    assert call_event(ev.InputCleared(None)) is None
