"""Tool calling for local chat models that have no native tool API: the prompt text and the output parser.

The format is the Hermes/Qwen convention that SmolLM2 and most small instruct models were tuned on: the tools are
listed as JSON inside `<tools>…</tools>` in the system prompt, and the model answers a call with
`<tool_call>{"name": …, "arguments": {…}}</tool_call>`. `ToolCallParser` separates such calls from ordinary text
as tokens stream in, holding back only the few characters that could be the start of a tag.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from koe.engines.base import ChatMessage, TextDelta, ToolCall, ToolSpec

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


def tools_system_text(tools: Sequence[ToolSpec]) -> str:
    specs = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]
    return (
        "You can call these tools when they help answer the user:\n<tools>\n"
        + "\n".join(json.dumps(spec, ensure_ascii=False) for spec in specs)
        + "\n</tools>\nTo call a tool, reply with only "
        + OPEN_TAG
        + '{"name": <tool name>, "arguments": <JSON object>}'
        + CLOSE_TAG
        + ". Otherwise, answer normally."
    )


def render_messages(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """Plain role/content messages for a chat template, with tools and tool traffic written out as text."""
    rendered: list[dict[str, str]] = []
    for message in messages:
        if message.role == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"})
        elif message.role == "assistant" and message.tool_calls:
            calls = "\n".join(
                OPEN_TAG + json.dumps({"name": c.name, "arguments": _json_or_text(c.arguments)}) + CLOSE_TAG
                for c in message.tool_calls
            )
            rendered.append({"role": "assistant", "content": f"{message.content}\n{calls}".strip()})
        else:
            rendered.append({"role": message.role, "content": message.content})
    if tools:
        text = tools_system_text(tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{text}"}
        else:
            rendered.insert(0, {"role": "system", "content": text})
    # Templates expect alternating turns; merge neighbours with the same role rather than fail.
    merged: list[dict[str, str]] = []
    for item in rendered:
        if merged and merged[-1]["role"] == item["role"] and item["role"] != "system":
            merged[-1] = {"role": item["role"], "content": f"{merged[-1]['content']}\n{item['content']}"}
        else:
            merged.append(item)
    return merged


def _json_or_text(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class ToolCallParser:
    """Feed generated text in; get text deltas and completed tool calls out, in order."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self.calls = 0

    def feed(self, text: str) -> list[TextDelta | ToolCall]:
        self._buffer += text
        out: list[TextDelta | ToolCall] = []
        while True:
            if self._in_call:
                end = _closing_tag(self._buffer)
                if end < 0:
                    return out
                body = self._buffer[:end]
                try:
                    out.append(self._call(body))
                except ValueError:  # not a well-formed call after all: it is just text
                    out.append(TextDelta(OPEN_TAG + body + CLOSE_TAG))
                self._buffer = self._buffer[end + len(CLOSE_TAG) :]
                self._in_call = False
                continue
            start = self._buffer.find(OPEN_TAG)
            if start >= 0:
                if start:
                    out.append(TextDelta(self._buffer[:start]))
                self._buffer = self._buffer[start + len(OPEN_TAG) :]
                self._in_call = True
                continue
            keep = _partial_tag_suffix(self._buffer)
            if len(self._buffer) > keep:
                out.append(TextDelta(self._buffer[: len(self._buffer) - keep]))
                self._buffer = self._buffer[len(self._buffer) - keep :]
            return out

    def finish(self) -> list[TextDelta | ToolCall]:
        """Flush at the end of generation. An unterminated call is parsed if its JSON is complete."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            try:
                return [self._call(rest)]
            except ValueError:
                return [TextDelta(OPEN_TAG + rest)]
        return [TextDelta(rest)] if rest else []

    def _call(self, body: str) -> ToolCall:
        data = json.loads(body.strip())
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("a tool call needs a name")
        arguments = data.get("arguments", {})
        self.calls += 1
        return ToolCall(
            call_id=f"call_{uuid.uuid4().hex[:24]}",
            name=data["name"],
            arguments=arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
        )


def _closing_tag(body: str) -> int:
    """Where the closing tag of a call starts in `body`, or -1. A closing tag inside a JSON string is part of the
    string (a grammar-forced argument may contain it), not the end of the call."""
    end = body.find(CLOSE_TAG)
    while end >= 0 and _inside_json_string(body[:end]):
        end = body.find(CLOSE_TAG, end + 1)
    return end


def _inside_json_string(text: str) -> bool:
    inside = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of the opening tag."""
    for size in range(min(len(OPEN_TAG) - 1, len(text)), 0, -1):
        if OPEN_TAG.startswith(text[-size:]):
            return size
    return 0
