"""The ACS engine modes' registry `error` events: koe's own error kinds and messages, never another door's codes."""

from __future__ import annotations

import pytest

from koe.server.acs.modes.engine import render
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
    ],
)
def test_engine_errors_are_registry_errors_with_koes_kind(error: ve.VoiceError, code: str) -> None:
    assert render(ev.Error(error, cause="ignored")) == {"type": "error", "code": code, "message": error.message}
