"""The component schemas of koe's OpenAPI document (`koe.server.openapi.document`): request and response bodies of
the REST API and the call registry, shaped as the handlers read and write them."""

from __future__ import annotations

from typing import Any

from koe.server.openai._speech_encode import CONTENT_TYPES
from koe.server.openai._transcript_formats import FORMATS

_NULLABLE_STRING = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "type": _NULLABLE_STRING,
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
            }
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "koe_kind": {"enum": ["chat", "transcription", "voice"]},
            "koe_language": {"type": "string", "description": "A voice's language (ISO 639-1)"},
        },
    },
    "ModelList": {
        "type": "object",
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}},
    },
    "TranscriptionRequest": {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream", "description": "Any audio"},
            "model": {"type": "string", "description": "Any name: koe has one Whisper model"},
            "language": {
                "type": "string",
                "description": "ISO 639-1 or BCP-47 (ja, ja-JP, zh-TW), or auto; one koe cannot hear is a 400 with "
                "code unsupported_language",
            },
            "prompt": {"type": "string"},
            "response_format": {"enum": list(FORMATS), "default": "json"},
            "temperature": {"type": "number"},
            "timestamp_granularities[]": {"type": "array", "items": {"enum": ["word", "segment"]}},
        },
    },
    "Transcription": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "TranscriptionVerbose": {
        "type": "object",
        "required": ["task", "language", "duration", "text"],
        "properties": {
            "task": {"const": "transcribe"},
            "language": {"type": "string"},
            "duration": {"type": "number"},
            "text": {"type": "string"},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        **{name: {"type": "integer"} for name in ("id", "seek")},
                        **{name: {"type": "number"} for name in ("start", "end", "temperature", "avg_logprob")},
                        **{name: {"type": "number"} for name in ("compression_ratio", "no_speech_prob")},
                        "text": {"type": "string"},
                        "tokens": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            },
            "words": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"word": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"}},
                },
            },
        },
    },
    "SpeechRequest": {
        "type": "object",
        "required": ["input", "voice"],
        "properties": {
            "model": {"type": "string", "description": "Any name: koe has one TTS engine"},
            "input": {"type": "string", "maxLength": 4096},
            "voice": {
                "type": "string",
                "description": "An installed voice (see /v1/voices), an Azure voice name, or an OpenAI voice name",
            },
            "language": {
                "type": "string",
                "description": "koe's own: the language an OpenAI voice name speaks (ja, zh-CN, en, or auto)",
            },
            "response_format": {"enum": list(CONTENT_TYPES), "default": "mp3"},
            "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0, "default": 1.0},
            "stream_format": {"const": "audio"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"oneOf": [{"enum": ["auto", "none", "required"]}, {"type": "object"}]},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "Call": {
        "type": "object",
        "required": ["id", "door", "mode", "state"],
        "properties": {
            "id": {"type": "string"},
            "door": {"type": "string"},
            "mode": {"type": "string"},
            "state": {"type": "string"},
            "started_at": {"type": "number"},
            "ended_at": {"type": ["number", "null"]},
            "participants": {"type": "object"},
            "transcript": {"type": "array", "items": {"type": "object"}},
            "partials": {"type": "object"},
            "info": {"type": "object"},
            "node": {"type": "string", "description": "The cluster node holding the call (only in a cluster)"},
        },
    },
}
