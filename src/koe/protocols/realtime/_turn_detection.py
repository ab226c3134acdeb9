"""The `turn_detection` object of a session, checked and normalized (spec §3.1, §11.13).

`parse_turn_detection(value, param, azure=..., warn=...)` returns the canonical object (null turns detection off) or
raises `RealtimeError`. The OpenAI dialects know `server_vad` and `semantic_vad` with their fields; the azure dialect
adds `azure_semantic_vad` (`_en`, `_multilingual`, and the how-to's `azure_multilingual_semantic_vad` spelling),
speech duration, filler words, languages, auto-truncation and end-of-utterance detection, including the legacy EOU
`threshold` and `timeout` (seconds) the Voice Live quickstart still sends. Unknown fields become warnings.
"""

from __future__ import annotations

from collections.abc import Callable

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._json import Json
from koe.protocols.realtime.errors import UNKNOWN_PARAMETER, UNSUPPORTED_FEATURE
from koe.protocols.realtime.session import AZURE_SEMANTIC_VAD_TYPES, OPENAI_TURN_DETECTION_TYPES, TURN_DETECTION_TYPES

Warn = Callable[[str, str, str], None]
"""`warn(param, message, code)`."""

_EAGERNESS = ("low", "medium", "high", "auto")
_THRESHOLD_LEVELS = ("low", "medium", "high", "default")
_MS_PER_SECOND = 1000
_MAX_EOU_TIMEOUT_S = 3600.0
_OPENAI_FIELDS = (
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "idle_timeout_ms",
    "create_response",
    "interrupt_response",
    "eagerness",
)
_AZURE_FIELDS = (
    *_OPENAI_FIELDS,
    "speech_duration_ms",
    "auto_truncate",
    "remove_filler_words",
    "languages",
    "end_of_utterance_detection",
    "appended_text_after_truncation",
)
_LEGACY_FIELDS = ("neg_threshold", "window_size", "distinct_ci_phones", "require_vowel")
"""Fields of the 2025 Azure reference the current service dropped; accepted and ignored."""
_SEMANTIC_ONLY = ("appended_text_after_truncation", "languages")


def _unknown(warn: Warn, param: str) -> None:
    warn(param, f"Unknown parameter: '{param}'. It was ignored.", UNKNOWN_PARAMETER)


def parse_turn_detection(value: Json, param: str, *, azure: bool, warn: Warn) -> Json:
    if value is None:
        return None
    td = j.as_object(value, param)
    out: dict[str, Json] = {}
    kinds = TURN_DETECTION_TYPES if azure else OPENAI_TURN_DETECTION_TYPES
    for key, field in td.items():
        sub = j.join(param, key)
        if key not in (_AZURE_FIELDS if azure else _OPENAI_FIELDS):
            if not (azure and key in _LEGACY_FIELDS):
                _unknown(warn, sub)
        elif field is None:
            out[key] = None
        elif key == "type":
            kind = "azure_semantic_vad_multilingual" if field == "azure_multilingual_semantic_vad" else field
            out[key] = j.as_choice(kind, sub, kinds)
        elif key == "threshold":
            out[key] = j.as_float(field, sub, minimum=0.0, maximum=1.0)
        elif key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms", "speech_duration_ms"):
            out[key] = j.as_int(field, sub, minimum=0)
        elif key in ("create_response", "interrupt_response", "auto_truncate", "remove_filler_words"):
            out[key] = j.as_bool(field, sub)
        elif key == "eagerness":
            out[key] = j.as_choice(field, sub, _EAGERNESS)
        elif key == "languages":
            out[key] = list(j.as_str_list(field, sub))
        elif key == "appended_text_after_truncation":
            out[key] = j.as_str(field, sub)
        else:
            out[key] = _end_of_utterance(field, sub, warn)
    if out.get("type") not in (None, *AZURE_SEMANTIC_VAD_TYPES):
        for key in _SEMANTIC_ONLY:
            if key in out:
                message = f"'{key}' applies to azure_semantic_vad only and was ignored."
                warn(j.join(param, key), message, UNSUPPORTED_FEATURE)
    return out


def _end_of_utterance(value: Json, param: str, warn: Warn) -> Json:
    eou = j.as_object(value, param)
    out: dict[str, Json] = {"model": j.as_str(j.require(eou, "model", param), j.join(param, "model"))}
    for key, field in eou.items():
        sub = j.join(param, key)
        if key == "model" or field is None:
            continue
        if key == "threshold_level":
            out[key] = j.as_choice(field, sub, _THRESHOLD_LEVELS)
        elif key == "timeout_ms":
            out[key] = j.as_int(field, sub, minimum=0)
        elif key == "threshold":
            out[key] = j.as_float(field, sub)
        elif key == "timeout":  # legacy seconds, still sent by the Voice Live quickstart
            seconds = j.as_float(field, sub, minimum=0.0, maximum=_MAX_EOU_TIMEOUT_S)
            out.setdefault("timeout_ms", round(seconds * _MS_PER_SECOND))
        else:
            _unknown(warn, sub)
    return out
