"""The language a door's session runs in: call `session_language(value, stt)` with what the client named.

Every door reads its protocol's language the same way (`koe.languages.client_language`: a BCP-47 tag, a Whisper
code, `auto`, or Voice Live's comma-separated list) and then asks the STT engine whether it can hear it, before any
audio is read. A refusal is one `UnsupportedLanguage` whose message says what was wrong and what to send instead;
each door puts it in its own protocol (Sora: 400 `UNSUPPORTED-LANGUAGE-CODE`, Realtime: an `error` event, ACS: a
close, REST: OpenAI's 400).
"""

from __future__ import annotations

from koe.engines.base import STT
from koe.languages import UnsupportedLanguage, client_language

__all__ = ["UnsupportedLanguage", "session_language"]

HEARD = "en, ja, zh-CN, zh-TW, ko and Whisper's other languages with the multilingual model, or auto"


def session_language(value: str | None, stt: STT | None) -> str | None:
    """The session's language as koe's `SessionConfig.language` takes it (None: `stt.language`; `auto`; a tag),
    checked against `stt` when there is one. Raises `UnsupportedLanguage`."""
    try:
        language = client_language(value)
    except UnsupportedLanguage as exc:
        raise UnsupportedLanguage(f"{exc}; name one of {HEARD}") from exc
    if language is not None and stt is not None and not stt.supports_language(language):
        raise UnsupportedLanguage(
            f"the speech model here ({stt.name}) cannot transcribe {value!r}: install koe's multilingual Whisper "
            f"packages or set stt.multilingual_model_path, or name a language it hears"
        )
    return language
