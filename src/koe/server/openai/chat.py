"""`POST /v1/chat/completions` on koe's LLM engine, as OpenAI's Chat Completions API (streaming and not).

`chat_completions(engines)` gives the handler; `koe.server.openai.api` mounts it behind the key check. The request
is read into an engine `ChatRequest` (messages, tools, `tool_choice`, `temperature`, `max_tokens` or
`max_completion_tokens`); the engine's text deltas and tool calls come back as one `chat.completion`, or as
`chat.completion.chunk` server-sent events ending in `data: [DONE]`. The first engine event is awaited before the
response starts, so a busy or failing engine still gets a proper HTTP status; a failure later in a stream is sent
as an `error` event (which OpenAI's clients raise) and the stream ends without `[DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from koe.engines.base import (
    LLM,
    ChatMessage,
    ChatRequest,
    EngineError,
    Finished,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from koe.engines.registry import Engines
from koe.server.metrics import METRICS
from koe.server.openai._common import ApiError, Handler, engine_failure, invalid, json_body, number

MAX_MESSAGES = 512
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
# Sampling knobs the embedded model has no use for; accepted so that ordinary clients work unchanged.
_IGNORED_WHEN_DEFAULT = {"n": 1, "logprobs": False, "stop": None}


def chat_completions(engines: Engines) -> Handler:
    async def handler(request: Request) -> Response:
        body = await json_body(request)
        chat = parse_chat_request(body)
        llm: LLM = engines.require("llm")
        started = time.perf_counter()
        events = llm.stream(chat).__aiter__()
        try:
            first = await events.__anext__()
        except StopAsyncIteration as exc:
            raise ApiError(500, "the LLM engine ended without an answer", type="server_error") from exc
        METRICS.llm_first_token.labels("api").observe(time.perf_counter() - started)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = bool(isinstance(options, dict) and options.get("include_usage"))
            chunks = _sse(completion_id, llm.name, first, events, usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
        return JSONResponse(await _complete(completion_id, llm.name, first, events))

    return handler


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """The engine request for an OpenAI Chat Completions body; `ApiError` (400) naming the bad field otherwise."""
    for name, default in _IGNORED_WHEN_DEFAULT.items():
        if body.get(name, default) not in (default, None):
            raise invalid(f"{name}={body[name]!r} is not supported by koe (only {default!r})", param=name)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise invalid("only response_format {'type': 'text'} is supported by koe", param="response_format")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("messages must be a non-empty array", param="messages")
    if len(raw_messages) > MAX_MESSAGES:
        raise invalid(f"at most {MAX_MESSAGES} messages are accepted", param="messages")
    messages = [_message(item, index) for index, item in enumerate(raw_messages)]
    tools = _tools(body.get("tools"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise invalid("max_tokens must be a positive integer", param="max_completion_tokens")
    return ChatRequest(
        messages,
        tools=tools,
        temperature=number(body, "temperature", None, 0.0, 2.0),
        max_tokens=limit,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
    )


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(f"{where}: only text content parts are supported, not {kind!r}", param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(f"{where} must be a string or an array of text parts", param=where)


def _message(item: Any, index: int) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise invalid(f"{where} must be an object", param=where)
    role = ROLES.get(str(item.get("role")))
    if role is None:
        raise invalid(f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    content = _text(item.get("content"), f"{where}.content")
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}: a tool message needs tool_call_id", param=f"{where}.tool_call_id")
        return ChatMessage("tool", content, tool_call_id=call_id)
    calls: list[ToolCall] = []
    for n, call in enumerate(item.get("tool_calls") or () if role == "assistant" else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{where}.tool_calls[{n}] needs function.name", param=f"{where}.tool_calls")
        arguments = function.get("arguments")
        calls.append(ToolCall(str(call.get("id") or f"call_{n}"), function["name"], arguments if arguments else "{}"))
    return ChatMessage(role, content, tool_calls=tuple(calls))  # type: ignore[arg-type]  # a value of ROLES


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise invalid("tools must be an array", param="tools")
    tools: list[ToolSpec] = []
    for n, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid(f"tools[{n}] must be {{'type': 'function', 'function': {{'name': …}}}}", param="tools")
        parameters = function.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise invalid(f"tools[{n}].function.parameters must be a JSON Schema object", param="tools")
        tools.append(ToolSpec(function["name"], str(function.get("description") or ""), parameters))
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> str:
    if raw is None:
        return "auto"
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise invalid("tool_choice 'required' needs tools", param="tool_choice")
        return str(raw)
    name = raw.get("function", {}).get("name") if isinstance(raw, dict) and raw.get("type") == "function" else None
    if not isinstance(name, str):
        raise invalid("tool_choice must be auto, none, required or a function", param="tool_choice")
    if name not in {tool.name for tool in tools}:
        raise invalid(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
    return name


def _call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": call.call_id, "type": "function"}
    data["function"] = {"name": call.name, "arguments": call.arguments}
    return data if index is None else {"index": index, **data}


def _usage(done: Finished) -> dict[str, int]:
    total = done.prompt_tokens + done.completion_tokens
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens, "total_tokens": total}


def _reason(done: Finished) -> str:
    return "stop" if done.reason == "cancelled" else done.reason


async def _rest(first: LLMEvent, events: AsyncIterator[LLMEvent]) -> AsyncIterator[LLMEvent]:
    yield first
    async for event in events:
        yield event


async def _complete(completion_id: str, model: str, first: LLMEvent, events: AsyncIterator[LLMEvent]) -> Any:
    text: list[str] = []
    calls: list[ToolCall] = []
    done = Finished("stop")
    async for event in _rest(first, events):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCall):
            calls.append(event)
        else:
            done = event
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    message["refusal"] = None
    if calls:
        message["tool_calls"] = [_call_json(call) for call in calls]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": _reason(done), "logprobs": None}],
        "usage": _usage(done),
    }


async def _sse(
    completion_id: str, model: str, first: LLMEvent, events: AsyncIterator[LLMEvent], include_usage: bool
) -> AsyncIterator[bytes]:
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    base["system_fingerprint"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    try:
        async for event in _rest(first, events):
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, ToolCall):
                yield chunk({"tool_calls": [_call_json(event, calls)]})
                calls += 1
            else:
                yield chunk({}, _reason(event))
                if include_usage:
                    yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(event)}) + b"\n\n"
    except EngineError as exc:
        yield b"data: " + orjson.dumps(engine_failure(exc).body()) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
