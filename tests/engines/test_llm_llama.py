"""The embedded LLM (SmolLM2-135M-Instruct on llama.cpp): answers stream one token per delta and end with honest
counts, and closing a stream stops the generation. What the model says is its own (it changes with the CPU and the
llama.cpp build), so no test here looks at the words; a generation of known length comes from a tool call forced by
koe's grammar."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from koe.engines.base import ChatMessage, ChatRequest, EngineError, Finished, LLMEvent, TextDelta, ToolSpec
from koe.engines.llm_llama import TOOL_STRING_MAX_CHARS, LlamaLLM, tool_call_grammar
from koe.engines.pool import Cancelled
from koe.engines.registry import Engines

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
STORY_CHARS = 2000
WRITE_STORY = ToolSpec(
    "write_story",
    "Write down a story",
    {"type": "object", "properties": {"story": {"type": "string", "minLength": STORY_CHARS}}, "required": ["story"]},
)
"""A forced call to this tool is at least STORY_CHARS characters long, whatever the model puts in it: the grammar
koe builds from the schema will not let the call close before."""


def _llm(engines: Engines) -> LlamaLLM:
    llm = engines.require("llm")
    assert isinstance(llm, LlamaLLM)
    return llm


async def test_a_short_question_gets_an_answer_streamed_token_by_token(engines: Engines) -> None:
    llm = _llm(engines)
    request = ChatRequest(
        [ChatMessage("system", SYSTEM), ChatMessage("user", "What is the capital of France?")],
        temperature=0.0,
        max_tokens=40,
    )
    events = [event async for event in llm.stream(request)]
    *deltas, finished = events
    assert all(isinstance(e, TextDelta) and e.text for e in deltas), events
    assert "".join(e.text for e in deltas if isinstance(e, TextDelta)).strip()
    assert isinstance(finished, Finished)
    # Streamed, not delivered at once: each generated token is its own delta, and the count says so.
    assert len(deltas) == finished.completion_tokens
    assert 0 < finished.completion_tokens <= 40
    assert finished.reason == ("length" if finished.completion_tokens == 40 else "stop"), finished
    prompt = llm.prompt(request).encode("utf-8")
    assert finished.prompt_tokens == len(llm._llama.tokenize(prompt, add_bos=False, special=True))


def test_prompt_uses_the_models_chat_template(engines: Engines) -> None:
    prompt = _llm(engines).prompt(ChatRequest([ChatMessage("system", "S"), ChatMessage("user", "U")]))
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nS<|im_end|>" in prompt
    assert "<|im_start|>user\nU<|im_end|>" in prompt


async def test_an_unfinished_message_warms_the_prompt_of_every_longer_one(engines: Engines) -> None:
    """A caller still speaking: the prompt up to the words heard so far is evaluated now, and the reply's prompt,
    which goes on with the rest of the turn, finds all of it in llama.cpp's cache."""
    llm = _llm(engines)
    history = [ChatMessage("system", SYSTEM), ChatMessage("user", "Hello."), ChatMessage("assistant", "Hi there!")]
    heard = ChatRequest([*history, ChatMessage("user", "What is the capital")])
    final = ChatRequest([*history, ChatMessage("user", "What is the capital of France?")])
    unfinished = llm.unfinished_prompt(heard)
    assert unfinished.endswith("<|im_start|>user\nWhat is the capital")
    assert llm.prompt(final).startswith(unfinished)

    def tokens(text: str) -> list[int]:
        return list(llm._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    await llm.warm(heard, unfinished=True)
    cached = list(llm._llama._input_ids)
    wanted = tokens(llm.prompt(final))
    shared = next((i for i, (a, b) in enumerate(zip(cached, wanted, strict=False)) if a != b), len(cached))
    assert shared >= len(tokens(unfinished)), (shared, len(tokens(unfinished)))


def test_generation_stops_at_the_next_token_once_cancelled(engines: Engines) -> None:
    cancelled = Cancelled()
    request = ChatRequest([ChatMessage("user", "Tell me a story.")], max_tokens=40, temperature=0.0)
    events = _llm(engines).stream_sync(request, cancelled)
    first = next(events)
    assert isinstance(first, TextDelta)
    cancelled.set()
    finished = next(events)
    assert isinstance(finished, Finished) and (finished.reason, finished.completion_tokens) == ("cancelled", 1)
    assert next(events, None) is None


async def test_closing_the_stream_early_frees_the_worker(engines: Engines, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = _llm(engines)
    produced: list[LLMEvent] = []
    generate = llm.stream_sync

    def recorded(request: ChatRequest, cancelled: Cancelled | None = None) -> Iterator[LLMEvent]:
        for event in generate(request, cancelled):
            produced.append(event)
            yield event

    monkeypatch.setattr(llm, "stream_sync", recorded)
    # A forced call to WRITE_STORY runs for hundreds of tokens, and nothing of it reaches the reader before its end.
    request = ChatRequest(
        [ChatMessage("user", "Write me a story.")],
        tools=(WRITE_STORY,),
        tool_choice="write_story",
        max_tokens=STORY_CHARS,
        temperature=0.0,
    )
    reader = asyncio.create_task(_drain(llm.stream(request)))
    await _until(lambda: llm.pool.active == 1, "the generation to start")
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await _until(lambda: llm.pool.active == 0, "the worker to stop")
    # The generation ended as cancelled, long before the grammar would have let the call close.
    assert len(produced) == 1, produced
    finished = produced[0]
    assert isinstance(finished, Finished) and finished.reason == "cancelled"
    assert finished.completion_tokens < STORY_CHARS // 20
    # The next request is served.
    short = ChatRequest([ChatMessage("user", "Say hi.")], max_tokens=3, temperature=0.0)
    events = [e async for e in llm.stream(short)]
    assert isinstance(events[-1], Finished)
    assert llm.pool.active == 0


async def test_bad_requests_are_engine_errors(engines: Engines) -> None:
    with pytest.raises(EngineError, match="at least one message"):
        [e async for e in _llm(engines).stream(ChatRequest([]))]
    too_long = ChatRequest([ChatMessage("user", "word " * 3000)])
    with pytest.raises(EngineError, match="no longer fits the model's 2048-token context"):
        [e async for e in _llm(engines).stream(too_long)]


async def test_a_forced_call_cut_by_its_budget_is_never_said_as_text(engines: Engines) -> None:
    # A call to WRITE_STORY needs STORY_CHARS characters; 20 tokens cannot hold it. What was generated is part of
    # an unfinished call, not words for the caller: the reply ends at its limit with nothing said.
    request = ChatRequest(
        [ChatMessage("user", "Write me a story.")],
        tools=(WRITE_STORY,),
        tool_choice="write_story",
        max_tokens=20,
        temperature=0.0,
    )
    events = [event async for event in _llm(engines).stream(request)]
    assert [type(event) for event in events] == [Finished], events
    assert events[0] == Finished("length", events[0].prompt_tokens, 20)  # type: ignore[union-attr]


def test_forced_grammars_bound_free_strings_and_refuse_control_characters() -> None:
    free = ToolSpec("note", "", {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
    grammar = tool_call_grammar([free], "required")
    assert grammar is not None
    # A string with no bound of its own gets TOOL_STRING_MAX_CHARS at most (one optional char per place)...
    assert grammar.count("(char") == TOOL_STRING_MAX_CHARS
    # ...and no raw control character (JSON forbids them in strings), so the call always parses.
    assert 'char ::= [^"\\\\\\x00-\\x1F\\x7F]' in grammar
    # A string that sets its own bounds keeps them, and a minimum beyond the default raises the bound with it.
    assert tool_call_grammar([WRITE_STORY], "required").count("(char") == 0  # type: ignore[union-attr]
    city = ToolSpec("c", "", {"type": "object", "properties": {"c": {"type": "string", "maxLength": 3}}})
    assert tool_call_grammar([city], "c").count("(char") == 3  # type: ignore[union-attr]


async def _drain(stream: AsyncIterator[LLMEvent]) -> None:
    async for _event in stream:
        pass


async def _until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")
