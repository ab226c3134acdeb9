"""The `session` object of a `session.update` (or `transcription_session.update`), checked and put in canonical form.

`parse_session(value, dialect)` returns a `SessionPatch` (only the keys sent, flat Azure names, GA `audio.*` moved to
them) and the warnings for what it accepted but ignores. It raises `RealtimeError` for wrong types and unknown
values, naming the parameter as the client spelled it (`session.audio.input.format.type` in GA).

Dialects differ in what they accept: the OpenAI dialects take only OpenAI-shaped values, since whatever they set is
echoed back and strict clients validate the echo against the openai types (spec §7). The azure dialect also takes
every Azure setting of spec §3, and answers the unsupported ones with warnings, never errors (MUST 6).
"""

from __future__ import annotations

from collections.abc import Callable

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._extras import SESSION_EXTRAS, Extra, store_extra
from koe.protocols.realtime._json import Json, JsonObject
from koe.protocols.realtime._turn_detection import parse_turn_detection
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.errors import UNKNOWN_PARAMETER, UNSUPPORTED_FEATURE, RealtimeWarning
from koe.protocols.realtime.formats import (
    AZURE_OUTPUT_NAMES,
    GA_FORMAT_TYPES,
    OPENAI_FORMAT_NAMES,
    PCM16_RATES,
    codec_from_ga_type,
    output_format_from_name,
    output_format_name,
)
from koe.protocols.realtime.session import (
    SessionPatch,
)

AZURE_VOICE_TYPES = (
    "openai",
    "azure-standard",
    "azure-custom",
    "azure-personal",
    "avatar-voice-sync",
    "azure-realtime-native",
)
_NOISE_TYPES = ("near_field", "far_field")
_AZURE_NOISE_TYPES = (*_NOISE_TYPES, "azure_deep_noise_suppression")
_TOOL_CHOICES = ("auto", "none", "required")
_AZURE_MODALITIES = ("text", "audio", "animation", "avatar")

_READ_ONLY = ("id", "object", "expires_at", "client_secret", "agent", "model")
"""Response-only fields a client may echo back from `session.created`; ignored without a word."""


def parse_session(value: Json, dialect: Dialect, param: str = "session") -> tuple[SessionPatch, list[RealtimeWarning]]:
    """The canonical patch and the warnings for one `session` object; raises `RealtimeError` if it is invalid."""
    parser = _SessionParser(dialect)
    session = j.as_object(value, param)
    if dialect is Dialect.GA:
        parser.ga(session, param)
    else:
        parser.flat(session, param)
    return SessionPatch(parser.out), parser.warnings


class _SessionParser:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.azure = dialect is Dialect.AZURE
        self.out: dict[str, Json] = {}
        self.warnings: list[RealtimeWarning] = []

    def warn(self, param: str, message: str, code: str = UNSUPPORTED_FEATURE) -> None:
        self.warnings.append(RealtimeWarning(message, code, param))

    def unknown(self, param: str) -> None:
        self.warn(param, f"Unknown parameter: '{param}'. It was ignored.", UNKNOWN_PARAMETER)

    def flat(self, session: JsonObject, path: str) -> None:
        handlers: dict[str, Callable[[Json, str], None]] = {
            "modalities": self.modalities,
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": self.input_audio_format,
            "output_audio_format": self.output_audio_format,
            "turn_detection": self.turn_detection,
            "input_audio_transcription": self.transcription,
            "input_audio_noise_reduction": self.noise_reduction,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_tokens,
            "speed": self.speed,
        }
        if self.azure:
            handlers["input_audio_sampling_rate"] = self.sampling_rate
            handlers["input_audio_echo_cancellation"] = self.echo_cancellation
        self._dispatch(session, path, handlers)

    def ga(self, session: JsonObject, path: str) -> None:
        handlers: dict[str, Callable[[Json, str], None]] = {
            "type": self.session_type,
            "output_modalities": self.output_modalities,
            "instructions": self.instructions,
            "audio": self.ga_audio,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "max_output_tokens": self.max_tokens,
        }
        self._dispatch(session, path, handlers)

    def _dispatch(self, obj: JsonObject, path: str, handlers: dict[str, Callable[[Json, str], None]]) -> None:
        self.dispatch(obj, path, handlers, SESSION_EXTRAS[self.dialect], self.out)

    def dispatch(
        self,
        obj: JsonObject,
        path: str,
        handlers: dict[str, Callable[[Json, str], None]],
        extras: dict[str, Extra],
        kept: dict[str, Json],
    ) -> None:
        """Run the handler of each key; check and keep the `extras` in `kept`; warn about the rest."""
        for key, value in obj.items():
            param = j.join(path, key)
            if key in handlers:
                handlers[key](value, param)
            elif key in extras:
                kept[key] = store_extra(extras[key], value, param)
                if extras[key].warning and value is not None:
                    self.warn(
                        param, f"'{param}' is not supported by this server and was ignored. {extras[key].warning}"
                    )
            elif key not in _READ_ONLY:
                self.unknown(param)

    # -- GA nesting --------------------------------------------------------------------------------------------

    def session_type(self, value: Json, param: str) -> None:
        self.out["type"] = j.as_choice(value, param, ("realtime", "transcription"))

    def output_modalities(self, value: Json, param: str) -> None:
        if value is None:
            self.out["modalities"] = None
            return
        chosen = [
            j.as_choice(v, j.join(param, i), ("text", "audio")) for i, v in enumerate(j.as_str_list(value, param))
        ]
        self.out["modalities"] = ["text", "audio"] if "audio" in chosen else ["text"]

    def ga_audio(self, value: Json, param: str) -> None:
        if value is None:
            return
        audio = j.as_object(value, param)
        for key, part in audio.items():
            sub = j.join(param, key)
            if part is None:
                continue
            handlers: dict[str, Callable[[Json, str], None]]
            if key == "input":
                handlers = {
                    "format": self.ga_input_format,
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection,
                    # koe's own: GA has no echo cancellation setting; the value takes Azure's shape (or null).
                    "koe_echo_cancellation": self.echo_cancellation,
                }
            elif key == "output":
                handlers = {"format": self.ga_output_format, "voice": self.voice, "speed": self.speed}
            else:
                self.unknown(sub)
                continue
            self._dispatch_nested(j.as_object(part, sub), sub, handlers)

    def _dispatch_nested(self, obj: JsonObject, path: str, handlers: dict[str, Callable[[Json, str], None]]) -> None:
        for key, value in obj.items():
            if key in handlers:
                handlers[key](value, j.join(path, key))
            else:
                self.unknown(j.join(path, key))

    def _ga_format(self, value: Json, param: str) -> tuple[str, int] | None:
        if value is None:
            return None
        fmt = j.as_object(value, param)
        codec = codec_from_ga_type(j.as_choice(j.require(fmt, "type", param), j.join(param, "type"), GA_FORMAT_TYPES))
        assert codec is not None  # as_choice admitted only GA_FORMAT_TYPES
        rate = fmt.get("rate")
        if codec != "pcm16":
            return codec, 8000
        if rate is not None and j.as_int(rate, j.join(param, "rate")) != 24000:
            raise j.value_error(j.join(param, "rate"), rate, ("24000",))
        return codec, 24000

    def ga_input_format(self, value: Json, param: str) -> None:
        fmt = self._ga_format(value, param)
        self.out["input_audio_format"] = None if fmt is None else fmt[0]
        self.out["input_audio_sampling_rate"] = None if fmt is None else fmt[1]

    def ga_output_format(self, value: Json, param: str) -> None:
        fmt = self._ga_format(value, param)
        self.out["output_audio_format"] = None if fmt is None else fmt[0]

    # -- one setting each --------------------------------------------------------------------------------------

    def modalities(self, value: Json, param: str) -> None:
        allowed = _AZURE_MODALITIES if self.azure else ("text", "audio")
        if value is not None:
            for i, item in enumerate(j.as_str_list(value, param)):
                j.as_choice(item, j.join(param, i), allowed)
            value = list(dict.fromkeys(value))
        self.out["modalities"] = value

    def instructions(self, value: Json, param: str) -> None:
        self.out["instructions"] = None if value is None else j.as_str(value, param)

    def voice(self, value: Json, param: str) -> None:
        if value is None or isinstance(value, str):
            self.out["voice"] = value
            return
        if self.dialect is Dialect.BETA:
            raise j.type_error(param, "a string", value)
        voice = j.as_object(value, param)
        if self.dialect is Dialect.GA:
            j.as_str(j.require(voice, "id", param), j.join(param, "id"))
            self.out["voice"] = {"id": voice["id"]}
            return
        j.as_choice(j.require(voice, "type", param), j.join(param, "type"), AZURE_VOICE_TYPES)
        for key in ("name", "model"):
            if key in voice:
                j.as_str(voice[key], j.join(param, key))
        self.out["voice"] = dict(voice)

    def input_audio_format(self, value: Json, param: str) -> None:
        self.out["input_audio_format"] = None if value is None else j.as_choice(value, param, OPENAI_FORMAT_NAMES)

    def sampling_rate(self, value: Json, param: str) -> None:
        if value is not None and j.as_int(value, param) not in PCM16_RATES:
            raise j.value_error(param, value, [str(r) for r in PCM16_RATES])
        self.out["input_audio_sampling_rate"] = value

    def output_audio_format(self, value: Json, param: str) -> None:
        if value is None:
            self.out["output_audio_format"] = None
            return
        name = j.as_str(value, param)
        fmt = output_format_from_name(name)
        if fmt is None or (not self.azure and name not in OPENAI_FORMAT_NAMES):
            raise j.value_error(param, name, AZURE_OUTPUT_NAMES if self.azure else OPENAI_FORMAT_NAMES)
        self.out["output_audio_format"] = output_format_name(fmt)

    def turn_detection(self, value: Json, param: str) -> None:
        self.out["turn_detection"] = parse_turn_detection(value, param, azure=self.azure, warn=self.warn)

    def transcription(self, value: Json, param: str) -> None:
        if value is None:
            self.out["input_audio_transcription"] = None
            return
        obj = j.as_object(value, param)
        for key in ("model", "language", "prompt"):
            j.opt_str(obj, key, param)
        self.out["input_audio_transcription"] = dict(obj)

    def noise_reduction(self, value: Json, param: str) -> None:
        if value is None:
            self.out["input_audio_noise_reduction"] = None
            return
        obj = j.as_object(value, param)
        allowed = _AZURE_NOISE_TYPES if self.azure else _NOISE_TYPES
        kind = obj.get("type")
        self.out["input_audio_noise_reduction"] = {"type": None if kind is None else j.as_choice(kind, param, allowed)}

    def echo_cancellation(self, value: Json, param: str) -> None:
        if value is None:
            self.out["input_audio_echo_cancellation"] = None
            return
        obj = j.as_object(value, param)
        out: dict[str, Json] = {"type": j.opt_str(obj, "type", param) or "server_echo_cancellation"}
        if obj.get("reference_source") is not None:
            source = j.join(param, "reference_source")
            out["reference_source"] = j.as_choice(obj["reference_source"], source, ("server", "client"))
        if obj.get("channels") is not None:
            channels = j.as_int(obj["channels"], j.join(param, "channels"), minimum=1, maximum=2)
            out["channels"] = channels
        self.out["input_audio_echo_cancellation"] = out

    def tools(self, value: Json, param: str) -> None:
        if value is None:
            self.out["tools"] = None
            return
        if not isinstance(value, list):
            raise j.type_error(param, "an array", value)
        self.out["tools"] = [self.tool(tool, j.join(param, i)) for i, tool in enumerate(value)]

    def tool(self, value: Json, param: str) -> Json:
        tool = j.as_object(value, param)
        kind = j.opt_str(tool, "type", param) or "function"
        if kind == "function":
            name = j.as_str(j.require(tool, "name", param), j.join(param, "name"))
            description = j.opt_str(tool, "description", param) or ""
            parameters = tool.get("parameters")
            if parameters is not None:
                j.as_object(parameters, j.join(param, "parameters"))
            return {"type": "function", "name": name, "description": description, "parameters": parameters or {}}
        if not self.azure and not (kind == "mcp" and self.dialect is Dialect.GA):
            raise j.value_error(
                j.join(param, "type"), kind, ("function", "mcp") if self.dialect is Dialect.GA else ("function",)
            )
        self.warn(param, f"'{kind}' tools are not supported by this server; the tool was ignored.")
        return dict(tool)

    def tool_choice(self, value: Json, param: str) -> None:
        if value is None or (isinstance(value, str) and value in _TOOL_CHOICES):
            self.out["tool_choice"] = value
        elif isinstance(value, str):  # the older Azure reference also allows a bare function name
            self.out["tool_choice"] = {"type": "function", "name": value}
        else:
            choice = j.as_object(value, param)
            kind = j.as_str(j.require(choice, "type", param), j.join(param, "type"))
            if kind == "mcp":
                self.warn(param, "MCP tool choice is not supported; 'auto' is used.")
                self.out["tool_choice"] = "auto"
                return
            j.as_choice(kind, j.join(param, "type"), ("function",))
            self.out["tool_choice"] = {
                "type": "function",
                "name": j.as_str(j.require(choice, "name", param), j.join(param, "name")),
            }

    def parallel_tool_calls(self, value: Json, param: str) -> None:
        self.out["parallel_tool_calls"] = None if value is None else j.as_bool(value, param)

    def temperature(self, value: Json, param: str) -> None:
        # Azure documents [0.6, 1.2] and its SDK [0, 1]; OpenAI beta allowed up to 2. Accept the union.
        self.out["temperature"] = None if value is None else j.as_float(value, param, minimum=0.0, maximum=2.0)

    def max_tokens(self, value: Json, param: str) -> None:
        if value is not None and value != "inf":
            if isinstance(value, str):
                raise j.value_error(param, value, ("inf",))
            value = j.as_int(value, param, minimum=1)
        self.out["max_response_output_tokens"] = value

    def speed(self, value: Json, param: str) -> None:
        self.out["speed"] = None if value is None else j.as_float(value, param, minimum=0.25, maximum=4.0)
