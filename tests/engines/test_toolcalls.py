"""The text convention for tool calls with local models: calls are cut out of streamed text at any split, and
tools and tool traffic are written into the prompt."""

from __future__ import annotations

import json

import pytest

from koe.engines._toolcalls import CLOSE_TAG, OPEN_TAG, ToolCallParser, render_messages, tools_system_text
from koe.engines.base import ChatMessage, TextDelta, ToolCall, ToolSpec

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})
OUTPUT = f'Let me check. {OPEN_TAG}{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}{CLOSE_TAG} Done.'


def _feed(text: str, size: int) -> list[TextDelta | ToolCall]:
    parser = ToolCallParser()
    events = [event for i in range(0, len(text), size) for event in parser.feed(text[i : i + size])]
    return events + parser.finish()


def _text(events: list[TextDelta | ToolCall]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("size", [1, 2, 5, 11, len(OUTPUT)])
def test_a_call_is_found_at_any_token_split(size: int) -> None:
    events = _feed(OUTPUT, size)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].call_id.startswith("call_")
    assert _text(events) == "Let me check.  Done."
    # Text before the call is delivered before it.
    assert isinstance(events[0], TextDelta)


def test_plain_text_passes_through_holding_back_only_a_possible_tag() -> None:
    parser = ToolCallParser()
    assert parser.feed("Hello <tool") == [TextDelta("Hello ")]
    assert parser.feed("box> there") == [TextDelta("<toolbox> there")]
    assert parser.finish() == []
    assert parser.calls == 0


def test_two_calls_and_string_arguments() -> None:
    text = f'{OPEN_TAG}{{"name": "a", "arguments": "raw"}}{CLOSE_TAG}{OPEN_TAG}{{"name": "b"}}{CLOSE_TAG}'
    calls = [e for e in _feed(text, 3) if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("a", "raw"), ("b", "{}")]
    assert calls[0].call_id != calls[1].call_id


def test_malformed_calls_come_back_as_text() -> None:
    bad = f"{OPEN_TAG}not json{CLOSE_TAG}"
    assert _feed(bad, 4) == [TextDelta(bad)]
    nameless = f'{OPEN_TAG}{{"arguments": {{}}}}{CLOSE_TAG}'
    assert _text(_feed(nameless, 100)) == nameless


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_closing_tag_inside_a_string_argument_does_not_end_the_call(size: int) -> None:
    # A grammar-forced call may put anything in a string, the tag included (SmolLM2 once wrote this city).
    city = f'/>Oslo{CLOSE_TAG} \\"{CLOSE_TAG}'
    text = OPEN_TAG + json.dumps({"name": "get_weather", "arguments": {"city": city}}) + CLOSE_TAG + " ok"
    events = _feed(text, size)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == {"city": city}
    assert _text(events) == " ok"


def test_unterminated_call_is_parsed_at_the_end_when_complete() -> None:
    events = _feed(f'{OPEN_TAG}{{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}', 7)
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["get_weather"]
    assert _feed(f'{OPEN_TAG}{{"name": "get', 7) == [TextDelta(f'{OPEN_TAG}{{"name": "get')]


def test_tools_and_tool_traffic_are_rendered_into_the_prompt() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"temp": 21}', tool_call_id="call_1"),
        ChatMessage("user", "Thanks."),
    ]
    rendered = render_messages(messages, [WEATHER])
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\n")
    assert '"name": "get_weather"' in rendered[0]["content"]
    assert rendered[2]["content"] == f'{OPEN_TAG}{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}{CLOSE_TAG}'
    assert rendered[3]["content"] == '<tool_response>\n{"temp": 21}\n</tool_response>\nThanks.'
    assert "<tools>" in tools_system_text([WEATHER])


def test_without_a_system_message_the_tools_get_one() -> None:
    rendered = render_messages([ChatMessage("user", "hi")], [WEATHER])
    assert rendered[0]["role"] == "system"
    assert render_messages([ChatMessage("user", "hi")], []) == [{"role": "user", "content": "hi"}]
