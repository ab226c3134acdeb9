"""The body of a `response.create` (beta/Azure flat form, GA nested form) as one `ResponseOverrides`.

`parse_response_create(event, dialect)` reads `event["response"]` plus Azure's top-level `additional_instructions`.
Settings shared with the session (voice, formats, tools, tool choice, temperature, token limit) go through the
session parser, so they are checked exactly as in `session.update` and name the same kind of `param`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._extras import RESPONSE_EXTRAS, metadata
from koe.protocols.realtime._json import Json, JsonObject
from koe.protocols.realtime._session_parse import _SessionParser
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.errors import RealtimeWarning
from koe.protocols.realtime.formats import output_format_from_name
from koe.protocols.realtime.items import ConversationItem, ItemReference, parse_item
from koe.protocols.realtime.responses import ResponseOverrides
from koe.protocols.realtime.session import ToolChoiceFunction
from koe.protocols.realtime.session_update import tool_from_json, voice_from_json


def parse_response_create(event: JsonObject, dialect: Dialect) -> tuple[ResponseOverrides, list[RealtimeWarning]]:
    """The overrides of one `response.create` event; raises `RealtimeError` for invalid values."""
    reader = _ResponseReader(dialect)
    body = event.get("response")
    if body is not None:
        reader.read(j.as_object(body, "response"))
    azure = dialect is Dialect.AZURE
    if azure and event.get("additional_instructions") is not None:
        reader.fields["additional_instructions"] = j.as_str(event["additional_instructions"], "additional_instructions")
    reader.fields.setdefault("cancel_previous", azure)  # Voice Live's default (spec §5G)
    return ResponseOverrides(**reader.fields), reader.session.warnings


class _ResponseReader:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.session = _SessionParser(dialect)
        self.fields: dict[str, Any] = {}
        self.extras: dict[str, Json] = {}

    def read(self, body: JsonObject) -> None:
        s = self.session
        handlers: dict[str, Callable[[Json, str], None]] = {
            "instructions": s.instructions,
            "tools": s.tools,
            "tool_choice": s.tool_choice,
            "conversation": self.conversation,
            "input": self.input,
            "metadata": self.metadata,
        }
        if self.dialect is Dialect.GA:
            handlers.update(
                output_modalities=s.output_modalities,
                max_output_tokens=s.max_tokens,
                audio=self.ga_audio,
                parallel_tool_calls=s.parallel_tool_calls,
            )
        else:
            handlers.update(
                modalities=s.modalities,
                voice=s.voice,
                output_audio_format=s.output_audio_format,
                temperature=s.temperature,
                max_response_output_tokens=s.max_tokens,
            )
        if self.dialect is Dialect.AZURE:
            handlers.update(
                max_output_tokens=s.max_tokens,
                cancel_previous=self.flag,
                commit=self.flag,
                input_items=self.input,
                append_input_items=self.append_input_items,
                parallel_tool_calls=s.parallel_tool_calls,
            )
        s.dispatch(body, "response", handlers, RESPONSE_EXTRAS[self.dialect], self.extras)
        self._collect()

    def _collect(self) -> None:
        out = self.session.out
        if out.get("modalities") is not None:
            self.fields["modalities"] = tuple(out["modalities"])
        if out.get("instructions") is not None:
            self.fields["instructions"] = out["instructions"]
        if out.get("voice") is not None:
            self.fields["voice"] = voice_from_json(out["voice"])
        if out.get("output_audio_format") is not None:
            self.fields["output_audio_format"] = output_format_from_name(out["output_audio_format"])
        if out.get("tools") is not None:
            self.fields["tools"] = tuple(tool_from_json(t) for t in out["tools"])
        choice = out.get("tool_choice")
        if choice is not None:
            self.fields["tool_choice"] = choice if isinstance(choice, str) else ToolChoiceFunction(choice["name"])
        for source, target in (
            ("parallel_tool_calls", "parallel_tool_calls"),
            ("temperature", "temperature"),
            ("max_response_output_tokens", "max_output_tokens"),
        ):
            if out.get(source) is not None:
                self.fields[target] = out[source]
        if self.extras:
            self.fields["extras"] = self.extras

    def ga_audio(self, value: Json, param: str) -> None:
        if value is None:
            return
        audio = j.as_object(value, param)
        for key, part in audio.items():
            sub = j.join(param, key)
            if key != "output":
                self.session.unknown(sub)
            elif part is not None:
                for name, field in j.as_object(part, sub).items():
                    if name == "voice":
                        self.session.voice(field, j.join(sub, name))
                    elif name == "format":
                        self.session.ga_output_format(field, j.join(sub, name))
                    else:
                        self.session.unknown(j.join(sub, name))

    def conversation(self, value: Json, param: str) -> None:
        # Any other string names a conversation; a session has exactly one, so it means "auto".
        self.fields["conversation"] = "none" if value == "none" else "auto"
        if value is not None:
            j.as_str(value, param)

    def _items(self, value: Json, param: str, *, allow_reference: bool) -> tuple[ConversationItem | ItemReference, ...]:
        if not isinstance(value, list):
            raise j.type_error(param, "an array", value)
        return tuple(
            parse_item(item, self.dialect, j.join(param, i), allow_reference=allow_reference)
            for i, item in enumerate(value)
        )

    def input(self, value: Json, param: str) -> None:
        if value is not None:
            self.fields["input"] = self._items(value, param, allow_reference=True)

    def append_input_items(self, value: Json, param: str) -> None:
        if value is not None:
            self.fields["append_input_items"] = self._items(value, param, allow_reference=False)

    def flag(self, value: Json, param: str) -> None:
        if value is not None:
            self.fields[param.rsplit(".", 1)[-1]] = j.as_bool(value, param)

    def metadata(self, value: Json, param: str) -> None:
        if value is not None:
            self.fields["metadata"] = metadata(value, param)
