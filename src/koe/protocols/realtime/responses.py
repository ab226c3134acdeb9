"""Responses: the `response` object of `response.created` / `response.done`, and the overrides of `response.create`.

The door keeps one `Response` per generation, updates it with `dataclasses.replace` as items are produced and the
status changes, and renders it with `render_response()` (done by `ServerEvents.response_created/done`). Every
response must end with `response.done` carrying `status`, `status_details` and `usage` (spec MUST 8):
`cancelled_details("turn_detected")` / `cancelled_details("client_cancelled")` build the two cancellations.

`ResponseOverrides` is what a `response.create` asked for; `ResponseOverrides.settings(config)` gives the session
config this one response runs with (Azure `additional_instructions` appended to the instructions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from koe.protocols.realtime._json import Json
from koe.protocols.realtime._session_render import format_value, voice_value
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.formats import PCM16_24K, AudioFormat, ga_format
from koe.protocols.realtime.items import ConversationItem, ItemReference, render_item
from koe.protocols.realtime.session import (
    DEFAULT_TEMPERATURE,
    DEFAULT_VOICE,
    MaxTokens,
    SessionConfig,
    Tool,
    ToolChoice,
    Voice,
)

ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]
RESPONSE_OBJECT = "realtime.response"


@dataclass(frozen=True, slots=True)
class StatusDetails:
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: str | None = None
    """cancelled: `turn_detected` or `client_cancelled`; incomplete: `max_output_tokens` or `content_filter`."""
    error: Mapping[str, Json] | None = None
    """failed: `{"type", "code", "message"}`."""


def cancelled_details(reason: Literal["turn_detected", "client_cancelled"]) -> StatusDetails:
    return StatusDetails("cancelled", reason)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response. koe counts LLM tokens as text and estimates audio tokens from duration."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    def to_json(self) -> dict[str, Any]:
        cached = self.cached_text_tokens + self.cached_audio_tokens
        return {
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {
                "cached_tokens": cached,
                "text_tokens": self.input_text_tokens,
                "audio_tokens": self.input_audio_tokens,
                "image_tokens": self.input_image_tokens,
                "cached_tokens_details": {
                    "text_tokens": self.cached_text_tokens,
                    "audio_tokens": self.cached_audio_tokens,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": self.output_text_tokens, "audio_tokens": self.output_audio_tokens},
        }


@dataclass(frozen=True, slots=True)
class Response:
    id: str
    status: ResponseStatus = "in_progress"
    status_details: StatusDetails | None = None
    output: tuple[ConversationItem, ...] = ()
    usage: Usage | None = None
    conversation_id: str | None = None
    """None for an out-of-band response (`conversation: "none"`)."""
    modalities: tuple[str, ...] = ("text", "audio")
    voice: Voice = field(default_factory=lambda: Voice(DEFAULT_VOICE))
    output_audio_format: AudioFormat = PCM16_24K
    temperature: float = DEFAULT_TEMPERATURE
    max_output_tokens: MaxTokens = "inf"
    metadata: Mapping[str, str] | None = None

    @classmethod
    def start(cls, response_id: str, settings: SessionConfig, **kwargs: Any) -> Response:
        """An in-progress response that runs with `settings` (from `ResponseOverrides.settings()`)."""
        return cls(
            id=response_id,
            modalities=settings.modalities,
            voice=settings.voice,
            output_audio_format=settings.output_audio_format,
            temperature=settings.temperature,
            max_output_tokens=settings.max_response_output_tokens,
            **kwargs,
        )


def render_response(response: Response, dialect: Dialect) -> dict[str, Any]:
    usage = response.usage
    if usage is None and response.status != "in_progress":
        usage = Usage()  # response.done always carries usage (spec MUST 8)
    details = response.status_details
    out: dict[str, Any] = {
        "id": response.id,
        "object": RESPONSE_OBJECT,
        "status": response.status,
        "status_details": None if details is None else _details(details),
        "output": [render_item(item, dialect) for item in response.output],
        "usage": None if usage is None else usage.to_json(),
        "conversation_id": response.conversation_id,
    }
    audio = "audio" in response.modalities
    if dialect is Dialect.GA:
        out["output_modalities"] = ["audio"] if audio else ["text"]
        fmt = ga_format(response.output_audio_format)
        out["audio"] = {"output": {"format": fmt, "voice": voice_value(response.voice, dialect)}}
    else:
        out["modalities"] = [m for m in response.modalities if dialect is Dialect.AZURE or m in ("text", "audio")]
        out["voice"] = voice_value(response.voice, dialect)
        out["output_audio_format"] = format_value(response.output_audio_format, dialect)
        out["temperature"] = response.temperature
    out["max_output_tokens"] = response.max_output_tokens
    if response.metadata is not None:
        out["metadata"] = dict(response.metadata)
    return out


def _details(details: StatusDetails) -> dict[str, Any]:
    out: dict[str, Any] = {"type": details.type}
    if details.reason is not None:
        out["reason"] = details.reason
    if details.error is not None:
        out["error"] = dict(details.error)
    return out


@dataclass(frozen=True, slots=True)
class ResponseOverrides:
    """What one `response.create` asked for; None everywhere means "as the session says"."""

    modalities: tuple[str, ...] | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    """Azure: appended to the instructions for this response only."""
    voice: Voice | None = None
    output_audio_format: AudioFormat | None = None
    tools: tuple[Tool, ...] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    max_output_tokens: MaxTokens | None = None
    conversation: str = "auto"
    """`auto` adds the output to the conversation; `none` makes an out-of-band response."""
    input: tuple[ConversationItem | ItemReference, ...] | None = None
    """Replaces the conversation as the model's context for this response (GA/beta `input`, Azure `input_items`)."""
    append_input_items: tuple[ConversationItem, ...] | None = None
    """Azure: items added to the conversation before generating."""
    metadata: Mapping[str, str] | None = None
    cancel_previous: bool = False
    """Cancel a running response instead of failing with `conversation_already_has_active_response`; Azure's
    default is true (spec §5G), the OpenAI dialects have no such option."""
    commit: bool | None = None
    """Azure: commit the input audio buffer first."""
    extras: Mapping[str, Json] = field(default_factory=dict)
    """Accepted fields koe ignores (Azure `pre_generated_assistant_message`, `interim_response`, GA `prompt`...)."""

    def settings(self, config: SessionConfig) -> SessionConfig:
        """The session config with this response's overrides applied."""
        instructions = config.instructions if self.instructions is None else self.instructions
        if self.additional_instructions:
            instructions = (
                f"{instructions}\n\n{self.additional_instructions}" if instructions else self.additional_instructions
            )
        changes: dict[str, Any] = {"instructions": instructions}
        for name, target in (
            ("modalities", "modalities"),
            ("voice", "voice"),
            ("output_audio_format", "output_audio_format"),
            ("tools", "tools"),
            ("tool_choice", "tool_choice"),
            ("parallel_tool_calls", "parallel_tool_calls"),
            ("temperature", "temperature"),
            ("max_output_tokens", "max_response_output_tokens"),
        ):
            value = getattr(self, name)
            if value is not None:
                changes[target] = value
        return replace(config, **changes)
