"""The WebDriver BiDi messages the Firefox tests rely on (tests/browser/bidi.py), from text alone: the message kinds of
the spec's transport section, `script.LocalValue` and `script.RemoteValue`, `script.EvaluateResult`, and
`log.entryAdded`."""

from __future__ import annotations

import json
import math

import pytest

from tests.browser.bidi import (
    CommandFailure,
    Commands,
    CommandSuccess,
    Event,
    LogEntry,
    ScriptException,
    local_value,
    log_entry,
    parse_message,
    remote_value,
    script_result,
)


def test_commands_are_numbered_in_order() -> None:
    commands = Commands()
    first = commands.encode("session.new", {"capabilities": {}})
    second = commands.encode("browsingContext.getTree", {})
    assert (first[0], second[0]) == (1, 2)
    assert json.loads(second[1]) == {"id": 2, "method": "browsingContext.getTree", "params": {}}


def test_message_kinds() -> None:
    assert parse_message('{"type":"success","id":3,"result":{"context":"c1"}}') == CommandSuccess(3, {"context": "c1"})
    failure = '{"type":"error","id":4,"error":"no such frame","message":"gone","stacktrace":""}'
    assert parse_message(failure) == CommandFailure(4, "no such frame", "gone")
    # A command the browser could not read comes back with a null id.
    unread = '{"type":"error","id":null,"error":"invalid argument","message":"?"}'
    assert parse_message(unread) == CommandFailure(None, "invalid argument", "?")
    event = parse_message(b'{"type":"event","method":"log.entryAdded","params":{"level":"error"}}')
    assert event == Event("log.entryAdded", {"level": "error"})
    with pytest.raises(ValueError, match="not a WebDriver BiDi message"):
        parse_message('{"id":1}')


def test_local_values() -> None:
    assert local_value(None) == {"type": "null"}
    assert local_value(True) == {"type": "boolean", "value": True}
    assert local_value(3) == {"type": "number", "value": 3}
    assert local_value(-0.0) == {"type": "number", "value": "-0"}
    assert local_value(math.nan) == {"type": "number", "value": "NaN"}
    assert local_value(-math.inf) == {"type": "number", "value": "-Infinity"}
    assert local_value({"a": [1, "x"]}) == {
        "type": "object",
        "value": [
            ["a", {"type": "array", "value": [{"type": "number", "value": 1}, {"type": "string", "value": "x"}]}]
        ],
    }
    with pytest.raises(TypeError):
        local_value(object())


def test_remote_values() -> None:
    nested = {
        "type": "object",
        "value": [
            ["status", {"type": "string", "value": "listening"}],
            ["played", {"type": "number", "value": 1250}],
            ["ratio", {"type": "number", "value": "Infinity"}],
            ["turns", {"type": "array", "value": [{"type": "boolean", "value": False}, {"type": "null"}]}],
            ["missing", {"type": "undefined"}],
        ],
    }
    assert remote_value(nested) == {
        "status": "listening",
        "played": 1250,
        "ratio": math.inf,
        "turns": [False, None],
        "missing": None,
    }
    keyed = {
        "type": "map",
        "value": [[{"type": "number", "value": 1}, {"type": "bigint", "value": "9007199254740993"}]],
    }
    assert remote_value(keyed) == {1: 9007199254740993}
    # A node stays a reference, which can be handed back to the browser (input.performActions, script arguments).
    node = {"type": "node", "sharedId": "f2b0-1", "value": {"nodeType": 1, "localName": "button"}}
    assert remote_value(node) is node
    # Beyond the serialization depth an object has no value.
    assert remote_value({"type": "object"}) == {}


def test_evaluate_results() -> None:
    success = {"type": "success", "realm": "r1", "result": {"type": "string", "value": "koe · voice console"}}
    assert script_result(success) == "koe · voice console"
    thrown = {
        "type": "exception",
        "realm": "r1",
        "exceptionDetails": {
            "text": "TypeError: window.koeTestSockets is undefined",
            "lineNumber": 2,
            "columnNumber": 17,
            "exception": {"type": "error"},
            "stackTrace": {"callFrames": []},
        },
    }
    with pytest.raises(ScriptException, match=r"koeTestSockets is undefined \(line 2\)"):
        script_result(thrown)


def test_log_entries() -> None:
    uncaught = {
        "type": "javascript",
        "level": "error",
        "source": {"realm": "r1", "context": "c1"},
        "text": "ReferenceError: x is not defined",
        "timestamp": 1,
    }
    assert log_entry(uncaught) == LogEntry("javascript", "error", "ReferenceError: x is not defined", "c1")
    from_a_worklet = {"type": "console", "level": "warn", "source": {"realm": "r2"}, "text": None, "timestamp": 2}
    assert log_entry(from_a_worklet) == LogEntry("console", "warn", "", None)
