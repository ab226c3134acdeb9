"""WebDriver BiDi messages without I/O (https://w3c.github.io/webdriver-bidi/): the commands the browser tests send,
the three kinds of message a browser answers with, and the values that cross between Python and the page.

`Commands().encode(method, params)` numbers a command and returns `(id, text)` to send; `parse_message(text)` turns
what comes back into a `CommandSuccess`, a `CommandFailure` or an `Event`. `local_value(x)` serializes an argument of
`script.callFunction`; `script_result(result)` reads an `EvaluateResult`, raising `ScriptException` when the page
threw; `log_entry(params)` reads a `log.entryAdded` event. Firefox's connection around them is tests/browser/firefox.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class BidiError(Exception):
    """A command the browser refused: `error` is the spec's error code (`no such frame`, `invalid argument`, …)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


class ScriptException(Exception):
    """The page's script threw (or its promise rejected) during `script.evaluate` or `script.callFunction`."""


@dataclass(frozen=True)
class CommandSuccess:
    id: int
    result: dict[str, Any]


@dataclass(frozen=True)
class CommandFailure:
    id: int | None  # null when the browser could not read the command's id
    error: str
    message: str


@dataclass(frozen=True)
class Event:
    method: str
    params: dict[str, Any]


Message = CommandSuccess | CommandFailure | Event


class Commands:
    """Numbers the commands of one connection: a response carries the id of the command it answers."""

    def __init__(self) -> None:
        self._last = 0

    def encode(self, method: str, params: dict[str, Any]) -> tuple[int, str]:
        self._last += 1
        return self._last, json.dumps({"id": self._last, "method": method, "params": params})


def parse_message(text: str | bytes) -> Message:
    message = json.loads(text)
    kind = message.get("type")
    if kind == "success":
        return CommandSuccess(message["id"], message["result"])
    if kind == "error":
        return CommandFailure(message.get("id"), message["error"], message.get("message", ""))
    if kind == "event":
        return Event(message["method"], message["params"])
    raise ValueError(f"not a WebDriver BiDi message: {str(text)[:200]}")


# Numbers JSON cannot carry travel as these strings, both ways.
_SPECIAL_NUMBERS = {"NaN": math.nan, "-0": -0.0, "Infinity": math.inf, "-Infinity": -math.inf}


def local_value(value: Any) -> dict[str, Any]:
    """A Python value as a `script.LocalValue`: None, bool, int, float, str, lists and str-keyed dicts of them."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, int | float):
        number = float(value)
        if math.isnan(number):
            return {"type": "number", "value": "NaN"}
        if math.isinf(number):
            return {"type": "number", "value": "Infinity" if number > 0 else "-Infinity"}
        if number == 0 and math.copysign(1, number) < 0:
            return {"type": "number", "value": "-0"}
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, list | tuple):
        return {"type": "array", "value": [local_value(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "object", "value": [[str(k), local_value(v)] for k, v in value.items()]}
    raise TypeError(f"cannot pass a {type(value).__name__} to the page")


def remote_value(value: dict[str, Any]) -> Any:
    """A `script.RemoteValue` as Python. Values with no Python counterpart (nodes, functions, windows…) come back as
    the RemoteValue itself, whose `sharedId` or `handle` can be passed back to the browser."""
    kind = value["type"]
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "number":
        number = value["value"]
        return _SPECIAL_NUMBERS[number] if isinstance(number, str) else number
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set"):
        return [remote_value(v) for v in value.get("value", [])]
    if kind in ("object", "map"):
        return {(k if isinstance(k, str) else remote_value(k)): remote_value(v) for k, v in value.get("value", [])}
    if kind == "date":
        return value["value"]
    return value


def script_result(result: dict[str, Any]) -> Any:
    """The value of a `script.EvaluateResult`, or `ScriptException` with the page's own description of the error."""
    if result["type"] == "exception":
        details = result["exceptionDetails"]
        raise ScriptException(f"{details.get('text', 'the script threw')} (line {details.get('lineNumber', '?')})")
    return remote_value(result["result"])


@dataclass(frozen=True)
class LogEntry:
    """One `log.entryAdded`: `source` is "console" (console.*) or "javascript" (an uncaught error)."""

    source: str
    level: str  # debug, info, warn, error
    text: str
    context: str | None  # the browsing context it came from, when it came from a page

    def __str__(self) -> str:
        return f"[{self.source} {self.level}] {self.text}"


def log_entry(params: dict[str, Any]) -> LogEntry:
    return LogEntry(
        source=params["type"],
        level=params["level"],
        text=params.get("text") or "",
        context=params.get("source", {}).get("context"),
    )
