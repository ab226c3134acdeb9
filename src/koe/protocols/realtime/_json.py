"""Typed reads from decoded JSON objects that raise `RealtimeError` naming the offending parameter.

Every reader takes the value and its dotted path (e.g. `session.turn_detection.threshold`), so an error says exactly
which parameter was wrong, as OpenAI's own errors do (`param: "session.turn_detection.threshold"`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from koe.protocols.realtime.errors import INVALID_VALUE, MISSING_REQUIRED_PARAMETER, RealtimeError

Json = Any
"""A decoded JSON value (dict, list, str, int, float, bool or None)."""
JsonObject = Mapping[str, Json]


_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def describe(value: Json) -> str:
    """How OpenAI names a JSON value's type in error messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    return _JSON_TYPE_NAMES.get(type(value), "a value")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_error(param: str, expected: str, value: Json) -> RealtimeError:
    return RealtimeError(
        f"Invalid type for '{param}': expected {expected}, but got {describe(value)} instead.",
        code=INVALID_VALUE,
        param=param,
    )


def value_error(param: str, value: Json, allowed: Collection[str] | None = None, reason: str = "") -> RealtimeError:
    message = f"Invalid value: {value!r}."
    if allowed:
        message += " Supported values are: " + ", ".join(f"'{a}'" for a in allowed) + "."
    if reason:
        message += " " + reason
    return RealtimeError(message, code=INVALID_VALUE, param=param)


def missing(param: str) -> RealtimeError:
    return RealtimeError(f"Missing required parameter: '{param}'.", code=MISSING_REQUIRED_PARAMETER, param=param)


def require(obj: JsonObject, key: str, path: str) -> Json:
    if key not in obj:
        raise missing(join(path, key))
    return obj[key]


def as_object(value: Json, param: str) -> JsonObject:
    if not isinstance(value, dict):
        raise type_error(param, "an object", value)
    return value


def as_str(value: Json, param: str) -> str:
    if not isinstance(value, str):
        raise type_error(param, "a string", value)
    return value


def as_bool(value: Json, param: str) -> bool:
    if not isinstance(value, bool):
        raise type_error(param, "a boolean", value)
    return value


def as_int(value: Json, param: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    # JSON writers in some languages emit 500.0 for an integer; accept whole decimals like OpenAI does.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(param, "an integer", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise value_error(param, value, reason=f"Expected a value {bounds}.")
    return value


def as_float(value: Json, param: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise type_error(param, "a decimal", value)
    number = float(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise value_error(param, value, reason=f"Expected a value between {minimum} and {maximum}.")
    return number


def as_choice(value: Json, param: str, allowed: Collection[str]) -> str:
    text = as_str(value, param)
    if text not in allowed:
        raise value_error(param, text, allowed)
    return text


def as_str_list(value: Json, param: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise type_error(param, "an array", value)
    return tuple(as_str(v, join(param, i)) for i, v in enumerate(value))


def opt_str(obj: JsonObject, key: str, path: str) -> str | None:
    """A string that may be absent or null (both give None)."""
    value = obj.get(key)
    return None if value is None else as_str(value, join(path, key))
