"""Translating between the Realtime protocol's model and the voice engine's: session settings, response overrides,
conversation items (both ways) and the engine's errors. Pure functions; the Realtime door calls them.

`engine_config()` is where Realtime settings meet koe's engines: the input transcription's `language` (a tag, or
Voice Live's `en,zh` list) is the session's, checked against the STT (`koe.server.language`; an `invalid_value`
error otherwise); the voice is `choose_voice()`'s for that language (OpenAI's names and Azure's `ja-JP-NanamiNeural`
alike; a warning on the Azure dialect names the local voice that speaks for an Azure one), semantic VAD variants
map onto koe's semantic end of utterance, and the output format sets the rate koe synthesizes at. `realtime_error()`
is the one place the engine's errors (`koe.voice.errors`) become OpenAI's codes and wording (spec §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.audio.resample import resample
from koe.engines.base import STT, TTS, ToolSpec
from koe.engines.voice_names import OPENAI_VOICES, choose_voice
from koe.languages import AUTO
from koe.protocols import realtime as rt
from koe.protocols.realtime import errors as codes
from koe.protocols.realtime.formats import AudioFormat, decode_audio, encode_audio
from koe.server.language import UnsupportedLanguage, session_language
from koe.voice import config as vc
from koe.voice import errors as ve
from koe.voice.conversation import Item, Part

SEMANTIC_TYPES = frozenset(
    {
        "semantic_vad",
        "azure_semantic_vad",
        "azure_semantic_vad_en",
        "azure_semantic_vad_multilingual",
        "azure_multilingual_semantic_vad",
    }
)


@dataclass(frozen=True, slots=True)
class Mapped:
    config: vc.SessionConfig
    warnings: tuple[rt.RealtimeWarning, ...] = ()


def turn_detection(td: rt.TurnDetection | None) -> vc.TurnDetection | None:
    if td is None:
        return None
    eou = td.end_of_utterance_detection
    eou_timeout = None
    if eou is not None:
        eou_timeout = eou.timeout_ms
    eagerness = td.eagerness if td.eagerness in ("low", "medium", "high") else "auto"
    return vc.TurnDetection(
        type="semantic_vad" if td.type in SEMANTIC_TYPES else "server_vad",
        threshold=td.threshold,
        prefix_padding_ms=td.prefix_padding_ms,
        silence_duration_ms=td.silence_duration_ms,
        speech_duration_ms=max(32, min(td.speech_duration_ms, 300)),
        idle_timeout_ms=td.idle_timeout_ms,
        create_response=td.create_response,
        interrupt_response=td.interrupt_response,
        auto_truncate=td.auto_truncate,
        remove_filler_words=td.remove_filler_words,
        eagerness=eagerness,  # type: ignore[arg-type]  # narrowed to the literal values just above
        eou_timeout_ms=eou_timeout,
    )


def tools(config_tools: tuple[rt.session.Tool, ...]) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(tool.name, tool.description, dict(tool.parameters))
        for tool in config_tools
        if isinstance(tool, rt.session.FunctionTool)
    )


def tool_choice(choice: rt.session.ToolChoice) -> str:
    return choice.name if isinstance(choice, rt.session.ToolChoiceFunction) else choice


def max_tokens(value: rt.session.MaxTokens | None) -> int | None:
    return value if isinstance(value, int) else None


def voice(
    requested: rt.Voice, tts: TTS | None, language: str | None = None
) -> tuple[str | None, rt.RealtimeWarning | None]:
    """The installed voice for a requested Realtime voice in a session of `language` (`choose_voice`: OpenAI's
    names speak the session's language, Azure's the nearest voice of theirs), and a warning when it had to guess."""
    if tts is None:
        return None, None
    detects = language is not None and language.lower() == AUTO
    if (language is None or detects) and requested.name.strip().lower() in (*OPENAI_VOICES, ""):
        return None, None  # no voice and no language named: each reply's text picks its voice (koe.voice.planning)
    choice = choose_voice(tts, requested.name, None if detects else language)
    note = choice.note
    if note is None and not choice.exact and choice.requested.lower() not in OPENAI_VOICES and choice.requested:
        note = f"voice {choice.requested!r} is not installed here; {choice.voice!r} speaks for it"
    if note is None:
        return choice.voice, None
    return choice.voice, rt.RealtimeWarning(
        f"{note} (installed voices: {', '.join(tts.voices())})", param="session.voice"
    )


def language(config: rt.SessionConfig, stt: STT | None, dialect: rt.Dialect = rt.Dialect.GA) -> str | None:
    """The session's transcription language (`koe.server.language`): the input transcription's `language` (a tag, a
    code, or Voice Live's `en,zh` list), else GA's `languages` list; an `invalid_value` error for one koe cannot
    hear. None: the configured `stt.language`."""
    transcription = config.input_audio_transcription
    if transcription is None:
        return None
    named = transcription.language
    listed = transcription.options.get("languages")
    if not named and isinstance(listed, list) and all(isinstance(entry, str) for entry in listed):
        named = ",".join(str(entry) for entry in listed)
    try:
        return session_language(named, stt)
    except UnsupportedLanguage as exc:
        raise rt.RealtimeError(str(exc), code=codes.INVALID_VALUE, param=LANGUAGE_PARAMS[dialect]) from exc


LANGUAGE_PARAMS = {
    rt.Dialect.GA: "session.audio.input.transcription.language",
    rt.Dialect.BETA: "session.input_audio_transcription.language",
    rt.Dialect.AZURE: "session.input_audio_transcription.language",
}


def engine_config(
    config: rt.SessionConfig, tts: TTS | None, stt: STT | None = None, dialect: rt.Dialect = rt.Dialect.GA
) -> Mapped:
    """The engine's settings for a Realtime session; `rt.RealtimeError` for a language koe cannot hear."""
    spoken = language(config, stt, dialect)
    chosen, warning = voice(config.voice, tts, spoken)
    transcription = config.input_audio_transcription
    echo = config.input_audio_echo_cancellation
    mapped = vc.SessionConfig(
        mode="transcribe" if config.type == "transcription" else "converse",
        turn_detection=turn_detection(config.turn_detection),
        language=spoken,
        transcription=transcription is not None,
        transcription_prompt=transcription.prompt if transcription else None,
        noise_suppression=config.input_audio_noise_reduction is not None,
        echo_cancellation=echo is not None,  # the session starts with koe's `audio.echo_cancellation`
        instructions=config.instructions or None,
        voice=chosen,
        output_audio=config.audio_output,
        output_rate=config.output_audio_format.rate,
        tools=tools(config.tools),
        tool_choice=tool_choice(config.tool_choice),
        # The Realtime default (0.8) is tuned for large models; unless a client asks for another value, koe's own
        # `llm.temperature` applies, which suits the small embedded model.
        temperature=None if config.temperature == rt.session.DEFAULT_TEMPERATURE else config.temperature,
        max_output_tokens=max_tokens(config.max_response_output_tokens),
    )
    return Mapped(mapped, (warning,) if warning else ())


def response_options(
    overrides: rt.ResponseOverrides,
    settings: rt.SessionConfig,
    tts: TTS | None,
    input_fmt: AudioFormat,
    language: str | None = None,
) -> tuple[vc.ResponseOptions, tuple[rt.RealtimeWarning, ...]]:
    """Engine options for one `response.create`; `settings` is `overrides.settings(session config)`, `language`
    the session's (for the voice)."""
    chosen, warning = voice(settings.voice, tts, language)
    input_ids: tuple[str, ...] | None = None
    extra: list[Item] = []
    if overrides.input is not None:
        input_ids = ()
        for entry in overrides.input:
            if isinstance(entry, rt.ItemReference):
                input_ids += (entry.id,)
            else:
                extra.append(engine_item(entry, input_fmt, settings.output_audio_format))
    options = vc.ResponseOptions(
        instructions=settings.instructions,
        voice=chosen,
        output_audio=settings.audio_output,
        tools=tools(settings.tools) if overrides.tools is not None else None,
        tool_choice=tool_choice(overrides.tool_choice) if overrides.tool_choice is not None else None,
        temperature=overrides.temperature,
        max_output_tokens=max_tokens(settings.max_response_output_tokens),
        in_conversation=overrides.conversation != "none",
        input_item_ids=input_ids,
        extra_input=tuple(extra),
        metadata=dict(overrides.metadata) if overrides.metadata is not None else None,
    )
    return options, (warning,) if warning else ()


# --- items -----------------------------------------------------------------------------------------------------


def engine_item(item: rt.ConversationItem, input_fmt: AudioFormat, output_fmt: AudioFormat) -> Item:
    """A client's item as the engine keeps it (audio decoded; user audio at the engine's 16 kHz)."""
    item_id = item.id or rt.new_item_id()
    if isinstance(item, rt.FunctionCallItem):
        return Item(
            item_id,
            "function_call",
            None,
            (),
            item.status,
            call_id=item.call_id or rt.new_call_id(),
            name=item.name,
            arguments=item.arguments,
        )
    if isinstance(item, rt.FunctionCallOutputItem):
        return Item(item_id, "function_call_output", None, (), item.status, call_id=item.call_id, output=item.output)
    parts: list[Part] = []
    for part in item.content:
        if part.type in ("input_text", "text"):
            parts.append(Part(part.type, text=part.text or ""))
        elif part.type == "input_audio":
            pcm = _decode(part.audio, input_fmt, ENGINE_RATE)
            parts.append(Part("input_audio", transcript=part.transcript, audio=pcm, rate=ENGINE_RATE))
        elif part.type == "audio":
            pcm = _decode(part.audio, output_fmt, output_fmt.rate)
            parts.append(Part("audio", transcript=part.transcript or "", audio=pcm, rate=output_fmt.rate))
        # input_image: the embedded models read no images; the item keeps its text parts.
    return Item(item_id, "message", item.role, tuple(parts), item.status)


def _decode(audio: bytes | None, fmt: AudioFormat, rate: int) -> Pcm | None:
    if not audio:
        return None
    return resample(decode_audio(audio, fmt), fmt.rate, rate)


def protocol_item(
    item: Item, input_fmt: AudioFormat, output_fmt: AudioFormat, include_audio: bool = False
) -> rt.ConversationItem:
    """An engine item as the Realtime protocol renders it (audio encoded in the session's formats on request)."""
    if item.type == "function_call":
        return rt.FunctionCallItem(item.name, item.arguments, item.call_id, item.id, item.status)
    if item.type == "function_call_output":
        return rt.FunctionCallOutputItem(item.call_id, item.output, item.id, item.status)
    parts: list[rt.ContentPart] = []
    for part in item.content:
        if part.type in ("input_text", "text"):
            parts.append(rt.ContentPart(part.type, text=part.text))
        else:
            fmt = input_fmt if part.type == "input_audio" else output_fmt
            audio = None
            if include_audio and part.audio is not None and part.rate:
                audio = encode_audio(resample(part.audio, part.rate, fmt.rate), fmt)
            parts.append(rt.ContentPart(part.type, audio=audio, transcript=part.transcript))
    role = item.role or "user"
    return rt.MessageItem(role, tuple(parts), item.id, item.status)


# --- errors ----------------------------------------------------------------------------------------------------


def realtime_error(error: ve.VoiceError) -> rt.RealtimeError:
    """The engine's error as the Realtime API reports it: OpenAI's code, type and exact message."""
    if isinstance(error, ve.CommitTooShort):
        return rt.RealtimeError(
            "Error committing input audio buffer: buffer too small. Expected at least "
            f"{error.minimum_ms}ms of audio, but buffer only has {error.buffered_ms:.2f}ms of audio.",
            code=codes.INPUT_AUDIO_BUFFER_COMMIT_EMPTY,
        )
    if isinstance(error, ve.ResponseInProgress):
        return rt.RealtimeError(
            f"Conversation already has an active response in progress: {error.response_id or 'unknown'}. Wait "
            "until the response is finished before creating a new one.",
            code=codes.CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
        )
    if isinstance(error, ve.NoResponseToCancel):
        return rt.RealtimeError("Cancellation failed: no active response found", code=codes.RESPONSE_CANCEL_NOT_ACTIVE)
    if isinstance(error, ve.InvalidItem):
        return rt.RealtimeError(error.message, code=codes.INVALID_VALUE, param=error.param)
    if isinstance(error, ve.LimitExceeded):
        return rt.RealtimeError(error.message, code=LIMIT_CODES[error.bound], param=error.param)
    if isinstance(error, ve.ResponseFailed):
        return rt.RealtimeError(error.message, code=FAILURE_CODES[error.reason], error_type=codes.SERVER_ERROR)
    if isinstance(error, ve.InternalError):
        # OpenAI's code for its own failures is the name of their type.
        return rt.RealtimeError(error.message, code=codes.SERVER_ERROR, error_type=codes.SERVER_ERROR)
    assert_never(error)


LIMIT_CODES: dict[ve.Bound, str] = {
    "item_chars": "string_above_max_length",
    "items": "array_above_max_length",
    "conversation_chars": "context_length_exceeded",
}
"""OpenAI's own codes for a string, an array and a context that are too long."""
FAILURE_CODES: dict[ve.FailureReason, str] = {
    "busy": "engine_busy",
    "unavailable": "engine_unavailable",
    "timeout": "engine_timeout",
    "context_length": "context_length_exceeded",
    "engine": "engine_error",
}
"""koe's codes for a failed response, as its REST API spells them (docs/operations.md)."""
