"""Reply length (issue 13, must hold 2): koe's own spoken-turn cap ends a reply at a sentence end and reports it
`completed`; `incomplete` with `max_output_tokens` comes only from a cap the client set, and "inf" (None) sets none.

`TurnCap` is checked on its own, then through a session whose LLM is the stand-in telling its six-sentence story
(`STORY_WORDS`, one word per delta), and once on the embedded model stopped by koe's own `llm.max_tokens`."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig
from koe.voice.conversation import Item, Part
from koe.voice.session import Session
from koe.voice.turn_cap import TurnCap
from tests.engines.openai_standin import STORY, pieces, scripted_engines
from tests.voice.test_session import INSTRUCTIONS, Recorder

SENTENCES = [sentence + "." for sentence in STORY.removesuffix(".").split(". ")]


def said(cap: TurnCap, deltas: list[str]) -> str:
    out = ""
    for delta in deltas:
        out += cap.feed(delta)
        if cap.ended:
            break
    return out


def test_no_cap_passes_everything() -> None:
    assert said(TurnCap(None), pieces(STORY)) == STORY


def test_past_the_cap_the_reply_ends_at_the_next_sentence_end() -> None:
    words = pieces(STORY)
    first = len(SENTENCES[0].split())
    for tokens in (1, 5, first - 1):
        assert said(TurnCap(tokens), words) == SENTENCES[0], tokens
    assert said(TurnCap(first + 1), words) == " ".join(SENTENCES[:2])


def test_a_sentence_that_ends_right_at_the_cap_ends_the_reply() -> None:
    first = len(SENTENCES[0].split())
    assert said(TurnCap(first), pieces(STORY)) == SENTENCES[0]
    cap = TurnCap(2)
    assert said(cap, ["Yes.", " ", "And", " then"]) == "Yes. "
    assert cap.ended


def test_japanese_and_chinese_sentences_end_at_their_own_marks() -> None:
    assert said(TurnCap(1), ["はい", "、わかりました", "。", "それでは"]) == "はい、わかりました。"
    assert said(TurnCap(1), ["好的", "，我明白了", "！", "那么"]) == "好的，我明白了！"


@pytest.mark.parametrize(
    ("deltas", "closing"),
    [(["The boats", " sailed", " and"], "The boats sailed and."), (["The boats,", " "], "The boats, "),
     (["Done."], "Done."), (["天気は", "晴れ"], "天気は晴れ。")],
)  # fmt: skip
def test_a_reply_stopped_by_koes_own_limit_ends_as_a_sentence(deltas: list[str], closing: str) -> None:
    # (Save where a comma was already said: that cannot be unsaid, and a stop after it would read ", .")
    for tokens in (None, 1):
        cap = TurnCap(tokens)
        text = said(cap, deltas)
        assert not cap.ended
        assert (text + cap.close()).rstrip() == closing.rstrip(), (tokens, text)
        assert cap.close() == ""


async def _reply(engines: Engines, turn_tokens: int | None, **options: object) -> ev.ResponseDone:
    async with scripted_engines(engines) as scripted:
        session = Session(scripted, SessionConfig(turn_detection=None), default_instructions=INSTRUCTIONS,
                          turn_tokens=turn_tokens)  # fmt: skip
        recorder = Recorder(session)
        session.create_item(Item("item_q", "message", "user", (Part("input_text", text="Tell me a story."),)))
        session.create_response(ResponseOptions(output_audio=False, **options))  # type: ignore[arg-type]
        done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
        await recorder.close()
    assert isinstance(done, ev.ResponseDone)
    return done


async def test_koes_cap_ends_the_reply_complete_at_a_sentence_end(engines: Engines) -> None:
    done = await _reply(engines, turn_tokens=len(SENTENCES[0].split()) + 3)
    assert (done.status, done.reason) == ("completed", None)
    assert done.output[0].text == " ".join(SENTENCES[:2])
    assert done.output[0].status == "completed"


async def test_no_cap_of_the_clients_lets_the_whole_reply_through(engines: Engines) -> None:
    done = await _reply(engines, turn_tokens=None)  # "inf": the client sets no cap, and koe none either
    assert (done.status, done.reason, done.output[0].text) == ("completed", None, STORY)


async def test_a_longer_cap_of_the_clients_leaves_koes_own_to_end_the_reply_complete(engines: Engines) -> None:
    done = await _reply(engines, turn_tokens=2, max_output_tokens=400)
    assert (done.status, done.reason, done.output[0].text) == ("completed", None, SENTENCES[0])


async def test_a_cap_the_client_set_ends_the_reply_incomplete(engines: Engines) -> None:
    # The embedded model honours max_tokens (the stand-in streams its story whatever it says). The client's cap
    # is shorter than koe's own, so the client's decides.
    session = Session(engines, SessionConfig(turn_detection=None), default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    session.create_item(Item("item_l", "message", "user", (Part("input_text", text="Describe Paris in detail."),)))
    session.create_response(ResponseOptions(output_audio=False, max_output_tokens=3))
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone) and (done.status, done.reason) == ("incomplete", "max_output_tokens")
    assert done.output[0].status == "incomplete"
    await recorder.close()


async def test_the_embedded_model_at_its_own_limit_ends_complete_and_as_a_sentence(engines: Engines) -> None:
    llm = copy.copy(engines.require("llm"))
    llm.max_tokens = 6  # type: ignore[attr-defined]  # the embedded model's `llm.max_tokens`, made tiny
    session = Session(replace(engines, llm=llm), SessionConfig(turn_detection=None),
                      default_instructions=INSTRUCTIONS, turn_tokens=None)  # fmt: skip
    recorder = Recorder(session)
    session.create_item(Item("item_l", "message", "user", (Part("input_text", text="Describe Paris in detail."),)))
    session.create_response(ResponseOptions(output_audio=False))
    done = await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone))
    assert isinstance(done, ev.ResponseDone) and (done.status, done.reason) == ("completed", None)
    text = done.output[0].text.rstrip()
    assert text and text[-1] in ".!?", text
    await recorder.close()
