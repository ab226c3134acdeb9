"""A session's bounds (`koe.voice.config.Limits`): a client's item too long, or one that would take the conversation
past its item count or its text, is refused with `LimitExceeded` and the session goes on; a reply's prompt holds
the newest turns within `prompt_chars`; audio beyond the conversation's bound is shed from the oldest items, whose
transcripts stay. No model is needed: nothing here generates."""

from __future__ import annotations

import numpy as np

from koe.engines.base import ChatMessage
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import Limits, ResponseOptions, SessionConfig
from koe.voice.conversation import Conversation, Item, Part, audio_part
from koe.voice.errors import LimitExceeded
from koe.voice.planning import newest_within
from koe.voice.session import Session


def _text(item_id: str, text: str) -> Item:
    return Item(item_id, "message", "user", (Part("input_text", text=text),))


def _errors(events: list[ev.Event]) -> list[LimitExceeded]:
    return [event.error for event in events if isinstance(event, ev.Error) and isinstance(event.error, LimitExceeded)]


async def _drain(session: Session) -> list[ev.Event]:
    await session.close()
    return [event async for event in session.events()]


async def test_client_items_past_the_bounds_are_refused_and_the_session_goes_on() -> None:
    limits = Limits(conversation_items=3, item_chars=50, conversation_chars=100)
    session = Session(Engines(), SessionConfig(turn_detection=None), limits=limits)
    session.create_item(_text("long", "x" * 51))
    for n in range(2):
        session.create_item(_text(f"ok{n}", "y" * 40))
    session.create_item(_text("too_much_text", "z" * 30))  # 80 + 30 > 100
    session.create_item(_text("ok2", "z" * 10))
    session.create_item(_text("one_too_many", "w"))
    session.create_response(ResponseOptions(extra_input=(_text("extra", "v" * 60),)))
    refused = _errors(await _drain(session))
    assert [(e.bound, e.limit, e.actual) for e in refused] == [
        ("item_chars", 50, 51),
        ("conversation_chars", 100, 110),
        ("items", 3, 4),
        ("item_chars", 50, 60),
    ]
    assert [item.id for item in session.conversation.items] == ["ok0", "ok1", "ok2"]
    assert refused[0].param == "item.content" and "limits.item_chars" in refused[0].message


def test_a_prompt_keeps_the_system_message_and_the_newest_turns_that_fit() -> None:
    messages = [ChatMessage("system", "s" * 10)] + [ChatMessage("user", str(n) * 10) for n in range(10)]
    kept = newest_within(messages, 45)
    assert [m.content[0] for m in kept] == ["s", "7", "8", "9"]
    # The last message always stays, even alone past the budget: the model's context decides then.
    assert [m.content for m in newest_within([ChatMessage("user", "u" * 100)], 10)] == ["u" * 100]


def test_audio_past_the_bound_is_shed_from_the_oldest_items_and_their_words_stay() -> None:
    conversation = Conversation(max_audio_ms=2500)
    second = np.zeros(16000, dtype=np.int16)
    for n in range(4):
        conversation.add(Item(f"turn{n}", "message", "user", (audio_part(second, 16000, transcript=f"turn {n}"),)))
    kept = [part.audio is not None for item in conversation.items for part in item.content]
    assert kept == [False, False, True, True]
    assert [item.text for item in conversation.items] == ["turn 0", "turn 1", "turn 2", "turn 3"]
