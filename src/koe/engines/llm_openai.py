"""The remote LLM: any OpenAI-compatible `POST {base_url}/chat/completions` with `stream: true`.

Works with OpenAI, Azure OpenAI (an `*.azure.com` base URL is sent the `api-key` header and `llm.api_version`),
Ollama, vLLM, the llama.cpp server and koe's own endpoint. Server-sent events are parsed incrementally; tool call
fragments are assembled per `index` and emitted whole. A failure says which endpoint failed and how: refused
connection (`EngineUnavailable`), no answer within `llm.timeout_s` (`EngineTimeout`), an error status with the
server's own message, or a stream that ended without `[DONE]`. `check()` tells /healthz whether the endpoint
serves: from the last request's outcome, or a cheap probe at most every `HEALTH_TTL_S` (`koe.engines._remote`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from koe.engines._remote import RemoteHealth, error_text, failure, remote_client, status_error
from koe.engines.base import (
    ChatMessage,
    ChatRequest,
    EngineError,
    Finished,
    FinishReason,
    LLMEvent,
    Pool,
    TextDelta,
    ToolCall,
)


class SSEParser:
    """Incremental `text/event-stream` parser: feed decoded text, get the `data` of each complete event."""

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, text: str) -> Iterator[str]:
        self._buffer += text
        while True:
            newline = self._buffer.find("\n")
            if newline < 0:
                return
            line = self._buffer[:newline].rstrip("\r")
            self._buffer = self._buffer[newline + 1 :]
            if not line:
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
            elif line.startswith(":"):
                continue  # a comment, used as a keep-alive
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        item["tool_call_id"] = message.tool_call_id
    return item


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAICompatibleLLM:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_version: str | None = None,
        temperature: float = 0.6,
        max_tokens: int = 96,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"openai-compatible:{model}@{self.base_url}"
        self.load_s = 0.0
        self.timeout_s = timeout_s
        self.pool: Pool | None = None
        """None: requests queue at the remote server, not here."""
        self._params = {"api-version": api_version} if api_version else {}
        self._client = remote_client(self.base_url, api_key, timeout_s, accept="text/event-stream", transport=transport)
        self._health = RemoteHealth("LLM", self._client, self.base_url, self._params)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [message_to_openai(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.temperature if request.temperature is None else request.temperature,
            "max_tokens": request.max_tokens or self.max_tokens,
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
            if request.tool_choice in ("auto", "none", "required"):
                body["tool_choice"] = request.tool_choice
            else:
                body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        if not request.messages:
            raise EngineError("a chat request needs at least one message")
        url = f"{self.base_url}/chat/completions"
        answered = refused = False
        problem: str | None = None
        """What this request showed of the server's health, recorded for `check()`; a refusal of the request
        itself (a 4xx) shows a server that works."""
        try:
            async with self._client.stream("POST", url, json=self.body(request), params=self._params) as response:
                answered = True
                if response.status_code >= 400:
                    refused = response.status_code < 500
                    raise await status_error("LLM", url, response)
                async for event in self._events(response):
                    yield event
        except httpx.HTTPError as exc:
            error = failure("LLM", url, exc, "llm.timeout_s", self.timeout_s)
            problem = str(error)
            raise error from exc
        except EngineError as exc:  # an error status, or a stream that is not the chat-completions format
            problem = None if refused else str(exc)
            raise
        finally:
            if answered or problem is not None:  # a stream closed before any answer says nothing either way
                self._health.record(problem)

    async def check(self) -> str | None:
        """The last request's outcome when it is recent, else a probe (`GET {base_url}/models`), kept a while."""
        return await self._health.check()

    async def warm(self, request: ChatRequest, *, unfinished: bool = False) -> None:
        """Nothing to do: a remote server keeps (or does not keep) its own prompt cache."""

    async def _events(self, response: httpx.Response) -> AsyncIterator[LLMEvent]:
        parser = SSEParser()
        calls: dict[int, _PartialCall] = {}
        reason: FinishReason = "stop"
        usage: dict[str, int] = {}
        produced = 0
        async for text in response.aiter_text():
            for data in parser.feed(text):
                if data == "[DONE]":
                    for call in _complete(calls):
                        yield call
                    yield Finished(
                        "tool_calls" if produced and calls else reason,
                        usage.get("prompt_tokens", 0),
                        usage.get("completion_tokens", produced),
                    )
                    return
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise EngineError(f"the LLM endpoint sent an event that is not JSON: {data[:200]!r}") from exc
                if "error" in chunk:
                    raise EngineError(f"the LLM endpoint reported an error: {error_text(data.encode())}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        produced += 1
                        yield TextDelta(delta["content"])
                    for fragment in delta.get("tool_calls") or ():
                        produced += 1
                        partial = calls.setdefault(int(fragment.get("index", 0)), _PartialCall())
                        partial.call_id = fragment.get("id") or partial.call_id
                        function = fragment.get("function") or {}
                        partial.name = function.get("name") or partial.name
                        partial.arguments.append(function.get("arguments") or "")
                    finish = choice.get("finish_reason")
                    if finish in ("stop", "length", "tool_calls"):
                        reason = finish
        raise EngineError("the LLM stream ended without [DONE]: the connection was cut mid-answer")

    async def aclose(self) -> None:
        await self._client.aclose()


def _complete(calls: dict[int, _PartialCall]) -> list[ToolCall]:
    return [
        ToolCall(call.call_id or f"call_{index}", call.name, "".join(call.arguments) or "{}")
        for index, call in sorted(calls.items())
    ]
