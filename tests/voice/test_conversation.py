"""Conversation items: ordering, errors, truncation to what was heard, and the LLM's view of them."""

from __future__ import annotations

import numpy as np
import pytest

from koe.voice.conversation import Conversation, ConversationError, Item, Part, chat_messages, truncate_part


def _text(item_id: str, role: str, text: str) -> Item:
    kind = "input_text" if role == "user" else "text"
    return Item(item_id, "message", role, (Part(kind, text=text),))  # type: ignore[arg-type]


def _spoken(item_id: str) -> Item:
    rate = 24000
    clauses = (("Sure, I can help with that.", 1000.0), ("The pharmacy opens at nine.", 1500.0))
    audio = np.ones(int(rate * 2.5), dtype=np.int16)
    part = Part("audio", transcript=" ".join(c for c, _ in clauses), audio=audio, rate=rate, clauses=clauses)
    return Item(item_id, "message", "assistant", (part,))


def test_add_appends_inserts_after_and_at_root() -> None:
    conversation = Conversation()
    assert conversation.add(_text("a", "user", "one")) is None
    assert conversation.add(_text("b", "user", "two")) == "a"
    assert conversation.add(_text("c", "user", "between"), previous_item_id="a") == "a"
    assert conversation.add(_text("z", "user", "first"), previous_item_id="root") is None
    assert [item.id for item in conversation.items] == ["z", "a", "c", "b"]


def test_errors_name_the_parameter() -> None:
    conversation = Conversation()
    conversation.add(_text("a", "user", "one"))
    with pytest.raises(ConversationError) as missing:
        conversation.get("nope")
    assert missing.value.param == "item_id"
    with pytest.raises(ConversationError) as bad_previous:
        conversation.add(_text("b", "user", "x"), previous_item_id="nope")
    assert bad_previous.value.param == "previous_item_id"
    with pytest.raises(ConversationError):
        conversation.add(_text("a", "user", "duplicate"))
    with pytest.raises(ConversationError) as not_assistant:
        conversation.truncate("a", 0, 100)
    assert not_assistant.value.param == "item_id"


def test_truncate_keeps_heard_clauses_and_the_heard_share_of_the_next() -> None:
    conversation = Conversation()
    conversation.add(_spoken("s"))
    item = conversation.truncate("s", 0, 1750)
    part = item.content[0]
    assert part.transcript == "Sure, I can help with that. The pharmacy"
    assert part.audio is not None and part.audio.size == 24000 * 1750 // 1000
    assert item.status == "incomplete"
    assert conversation.get("s").content[0].transcript == part.transcript


def test_truncate_past_the_end_is_a_no_op() -> None:
    conversation = Conversation()
    original = _spoken("s")
    conversation.add(original)
    assert conversation.truncate("s", 0, 10_000) is original


def test_truncate_at_zero_leaves_nothing() -> None:
    part = truncate_part(_spoken("s").content[0], 0)
    assert part.transcript == "" and part.audio is not None and part.audio.size == 0


def test_chat_messages_use_transcripts_and_structured_tool_traffic() -> None:
    items = [
        Item("u", "message", "user", (Part("input_audio", transcript="What's the weather?"),)),
        Item("f", "function_call", None, (), call_id="call_1", name="get_weather", arguments='{"city":"Paris"}'),
        Item("o", "function_call_output", None, (), call_id="call_1", output='{"temp": 21}'),
        _spoken("a"),
        Item("silent", "message", "user", (Part("input_audio", transcript=None),)),
    ]
    messages = chat_messages(items, "Be brief.")
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[1].content == "What's the weather?"
    assert messages[2].tool_calls[0].name == "get_weather"
    assert messages[3].tool_call_id == "call_1"
    assert messages[4].content.startswith("Sure, I can help")
