"""Settings koe accepts and echoes back but does not act on (avatar, tracing, metadata, ...), and how each is checked.

They are no-ops (spec MUST 6, §11.10), yet `session.updated` repeats them, and strict clients validate that echo
against the openai types: so each one is checked for the shape its dialect defines before it is kept. An `Extra`
with a `warning` makes the parser report it (sent as an Azure `warning`); an empty one is accepted silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._json import Json
from koe.protocols.realtime.dialect import Dialect

Checker = Callable[[Json, str], Json]

MAX_METADATA_PAIRS = 16
_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
_AZURE_EFFORTS = ("none", *_EFFORTS)
_GA_INCLUDE = ("item.input_audio_transcription.logprobs",)
_AZURE_INCLUDE = (*_GA_INCLUDE, "item.input_audio_transcription.phrases", "file_search_call.results")


@dataclass(frozen=True, slots=True)
class Extra:
    check: Checker
    warning: str = ""


def _object(value: Json, param: str) -> Json:
    return dict(j.as_object(value, param))


def _choice(allowed: tuple[str, ...]) -> Checker:
    return lambda value, param: j.as_choice(value, param, allowed)


def _choices(allowed: tuple[str, ...]) -> Checker:
    def check(value: Json, param: str) -> Json:
        return [j.as_choice(v, j.join(param, i), allowed) for i, v in enumerate(j.as_str_list(value, param))]

    return check


def _str_list(value: Json, param: str) -> Json:
    return list(j.as_str_list(value, param))


def _optional_fields(obj: dict[str, Json], param: str, checks: dict[str, Checker]) -> dict[str, Json]:
    for key, check in checks.items():
        if obj.get(key) is not None:
            obj[key] = check(obj[key], j.join(param, key))
    return obj


def _tracing(value: Json, param: str) -> Json:
    if value == "auto":
        return value
    obj = dict(j.as_object(value, param))
    return _optional_fields(obj, param, {"group_id": j.as_str, "workflow_name": j.as_str, "metadata": _object})


def _truncation(value: Json, param: str) -> Json:
    if value in ("auto", "disabled"):
        return value
    if isinstance(value, str):
        raise j.value_error(param, value, ("auto", "disabled", "retention_ratio"))
    obj = dict(j.as_object(value, param))
    j.as_choice(j.require(obj, "type", param), j.join(param, "type"), ("retention_ratio",))
    ratio = j.require(obj, "retention_ratio", param)
    obj["retention_ratio"] = j.as_float(ratio, j.join(param, "retention_ratio"), minimum=0.0, maximum=1.0)
    limits = obj.get("token_limits")
    if limits is not None:
        obj["token_limits"] = _optional_fields(
            dict(j.as_object(limits, j.join(param, "token_limits"))),
            j.join(param, "token_limits"),
            {"post_instructions": lambda v, p: j.as_int(v, p, minimum=0)},
        )
    return obj


def _prompt(value: Json, param: str) -> Json:
    obj = dict(j.as_object(value, param))
    j.as_str(j.require(obj, "id", param), j.join(param, "id"))
    variables = obj.get("variables")
    if variables is not None:
        # Template variables may also be input parts; koe ignores prompts, so plain strings are all it keeps.
        vparam = j.join(param, "variables")
        obj["variables"] = {k: j.as_str(v, j.join(vparam, k)) for k, v in j.as_object(variables, vparam).items()}
    return _optional_fields(obj, param, {"version": j.as_str})


def _reasoning(value: Json, param: str) -> Json:
    return _optional_fields(dict(j.as_object(value, param)), param, {"effort": _choice(_EFFORTS)})


def metadata(value: Json, param: str) -> Json:
    obj = j.as_object(value, param)
    if len(obj) > MAX_METADATA_PAIRS:
        raise j.value_error(param, f"<{len(obj)} keys>", reason=f"At most {MAX_METADATA_PAIRS} keys are allowed.")
    return {key: j.as_str(v, j.join(param, key)) for key, v in obj.items()}


_REASONING_NOTE = "Reasoning effort has no effect on this server."
_INTERIM_NOTE = "Interim responses are not supported."

SESSION_EXTRAS: dict[Dialect, dict[str, Extra]] = {
    Dialect.AZURE: {
        "animation": Extra(_object, "Avatar animation output is not supported."),
        "avatar": Extra(_object, "Avatars are not supported."),
        "output_audio_timestamp_types": Extra(_str_list, "Word timestamps are not supported."),
        "interim_response": Extra(_object, _INTERIM_NOTE),
        "include": Extra(_choices(_AZURE_INCLUDE), "Transcription logprobs and phrases are not supported."),
        "reasoning_effort": Extra(_choice(_AZURE_EFFORTS), _REASONING_NOTE),
        "metadata": Extra(metadata),
    },
    Dialect.BETA: {"tracing": Extra(_tracing)},
    Dialect.GA: {
        "tracing": Extra(_tracing),
        "truncation": Extra(_truncation),
        "prompt": Extra(_prompt, "Stored prompts are not supported."),
        "include": Extra(_choices(_GA_INCLUDE)),
        "reasoning": Extra(_reasoning, _REASONING_NOTE),
    },
}
"""Per dialect, the session fields accepted and echoed but not acted on."""

RESPONSE_EXTRAS: dict[Dialect, dict[str, Extra]] = {
    Dialect.AZURE: {
        "pre_generated_assistant_message": Extra(_object, "Pre-generated assistant messages are not supported."),
        "interim_response": Extra(_object, _INTERIM_NOTE),
        "invoke_input": Extra(_object, "Agent invocation input is not supported."),
        "reasoning_effort": Extra(_choice(_AZURE_EFFORTS)),
    },
    Dialect.BETA: {},
    Dialect.GA: {"prompt": Extra(_prompt, "Stored prompts are not supported."), "reasoning": Extra(_reasoning)},
}
"""Per dialect, the `response.create` fields accepted but not acted on."""


def store_extra(extra: Extra, value: Json, param: str) -> Json:
    """The checked value to keep (null stays null, which clears it)."""
    return None if value is None else extra.check(value, param)
