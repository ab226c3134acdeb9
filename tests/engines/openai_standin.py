"""A stand-in for an OpenAI-compatible `POST /v1/chat/completions` server, on loopback, speaking HTTP/1.1 by hand.

No real OpenAI-compatible server can run here (the llama.cpp server binary is not available), so this follows
OpenAI's documented streaming format byte for byte: `text/event-stream`, one `data: {chat.completion.chunk}` event
per chunk, each chunk carrying `id`, `object`, `created`, `model`, `system_fingerprint` and `choices` (with
`index`, `delta`, `logprobs`, `finish_reason`), `usage: null` until the final usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`. Errors are OpenAI's JSON error bodies.

The reply is chosen by the request's last user message: `tools please` streams two tool calls whose arguments arrive
in fragments, `fail 500` and `fail 401` answer with an error status, `drop` closes the connection mid-stream,
`malformed` sends a chunk that is not JSON, `stall` never answers (as `StandIn(stalled=True)` does for every
request), anything else is streamed back as text: `StandIn.reply`, by default `REPLY_WORDS`. Start it with `async
with StandIn() as server:`.

`scripted_engines()` (a stand-in speaking `STORY_WORDS` as koe's LLM) is how the voice tests get a reply of known
text and length: a barge-in test needs koe to be still speaking when the caller interrupts, and no test can count on
the embedded model's wording for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from koe.engines.registry import Engines

CREATED = 1_735_689_600
FINGERPRINT = "fp_koe_standin"
REPLY_WORDS = ["The", " capital", " of", " France", " is", " Paris", "."]
STORY = (
    "Once upon a time, a small dragon lived in a cave above a quiet village by the sea. "
    "Every morning she flew over the harbour, counting the fishing boats as they sailed out past the lighthouse. "
    "The children in the village waved at her from the beach, and she answered with little puffs of warm smoke. "
    "One winter the sea froze over, and the boats could not leave the harbour for many long weeks. "
    "So the dragon breathed on the ice, slowly and gently, until the water was free and the boats could sail again. "
    "From that day on, the village kept a lantern burning for her in the window of every house."
)


def pieces(text: str) -> list[str]:
    """`text` as the stand-in streams it: one chunk per word, each after the first with its leading space."""
    return [word if index == 0 else f" {word}" for index, word in enumerate(text.split(" "))]


STORY_WORDS = pieces(STORY)
"""Six sentences, about half a minute of Piper's speech: longer than any reply a voice test waits through."""
ERRORS = {
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    401: (
        "Incorrect API key provided: sk-wrong. You can find your API key at the dashboard.",
        "invalid_request_error",
        "invalid_api_key",
    ),
}
TOOL_CALLS = [
    ("call_weather0", "get_weather", ['{"ci', 'ty": "Pa', 'ris", "unit"', ': "celsius"}']),
    ("call_time0001", "get_time", ['{"zone":', ' "Europe/Paris"}']),
]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StandIn:
    host: str = "127.0.0.1"
    reply: list[str] = field(default_factory=lambda: list(REPLY_WORDS))
    requests: list[Received] = field(default_factory=list)
    stalled: bool = False
    """Read every request and never answer (a server that hangs); the prompt `stall` does it for one request."""
    _server: asyncio.Server | None = None
    _hanging: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}/v1"

    async def __aenter__(self) -> StandIn:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for hanging in self._hanging:
            hanging.cancel()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            if self.stalled or _prompt(request) == "stall":
                await self._hang()
                return
            await _respond(request, writer, self.reply)
        except ConnectionError:
            pass  # the client stopped reading (a cancelled reply) and closed the connection
        finally:
            writer.close()

    async def _hang(self) -> None:
        hanging = asyncio.get_running_loop().create_future()
        self._hanging.add(hanging)
        try:
            await hanging
        except asyncio.CancelledError:
            pass
        finally:
            self._hanging.discard(hanging)


def _prompt(request: Received) -> str:
    messages = request.body.get("messages") or []
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


async def _read_request(reader: asyncio.StreamReader) -> Received:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, path, _version = head[0].split(" ", 2)
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, path, headers, json.loads(body) if body else {})


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, usage: bool = False) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-koestandin0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return chunk


def _event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _http_chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


async def _respond(request: Received, writer: asyncio.StreamWriter, reply: list[str]) -> None:
    if request.method != "POST" or request.path.split("?")[0] != "/v1/chat/completions":
        await _error(writer, 404, ("Invalid URL (POST /v1/chat/completions expected)", "invalid_request_error", None))
        return
    prompt = _prompt(request)
    for status, error in ERRORS.items():
        if prompt == f"fail {status}":
            await _error(writer, status, error)
            return
    model = request.body["model"]
    usage = bool(request.body.get("stream_options", {}).get("include_usage"))
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
        b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )
    events = [_chunk(model, {"role": "assistant", "content": ""}, usage=usage)]
    finish = "stop"
    if prompt == "tools please":
        finish = "tool_calls"
        for index, (call_id, name, fragments) in enumerate(TOOL_CALLS):
            opening = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            events.append(_chunk(model, {"tool_calls": [opening]}, usage=usage))
            for fragment in fragments:
                events.append(
                    _chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}, usage=usage)
                )
    else:
        events += [_chunk(model, {"content": word}, usage=usage) for word in reply]
    events.append(_chunk(model, {}, finish, usage=usage))
    if usage:
        completion = len(events) - 2
        events.append(
            {
                "id": "chatcmpl-koestandin0001",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [],
                "usage": {"prompt_tokens": 21, "completion_tokens": completion, "total_tokens": 21 + completion},
            }
        )
    for number, event in enumerate(events):
        if prompt == "malformed" and number == 2:
            writer.write(_http_chunk(b'data: {"id": "chatcmpl-koestandin0001", "choices": [{"delta": {"cont\n\n'))
            await writer.drain()
            return  # a chunk that is not JSON, then the connection closes
        if prompt == "drop" and number == 4:
            await writer.drain()
            return  # the connection closes without the terminating zero-length chunk or [DONE]
        writer.write(_http_chunk(_event(event)))
        await writer.drain()
    writer.write(_http_chunk(_event("[DONE]")) + b"0\r\n\r\n")
    await writer.drain()


async def _error(writer: asyncio.StreamWriter, status: int, error: tuple[str, str, str | None]) -> None:
    message, kind, code = error
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}, indent=2).encode()
    reason = {401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


@contextlib.asynccontextmanager
async def scripted_engines(engines: Engines, reply: list[str] = STORY_WORDS) -> AsyncIterator[Engines]:
    """`engines` with koe's remote LLM client on a stand-in in place of the embedded model: every reply is `reply`,
    while VAD, Whisper and Piper stay the real ones."""
    from koe.engines.llm_openai import OpenAICompatibleLLM

    async with StandIn(reply=list(reply)) as server:
        llm = OpenAICompatibleLLM(server.base_url, "standin-model", api_key="sk-test")
        try:
            yield replace(engines, llm=llm)
        finally:
            await llm.aclose()
