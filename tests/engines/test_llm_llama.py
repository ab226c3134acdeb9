"""The embedded LLM (SmolLM2-135M-Instruct on llama.cpp): a short question gets a relevant streamed answer."""

from __future__ import annotations

import pytest

from koe.engines.base import ChatMessage, ChatRequest, EngineError, Finished, TextDelta
from koe.engines.llm_llama import LlamaLLM
from koe.engines.registry import Engines

SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def _llm(engines: Engines) -> LlamaLLM:
    llm = engines.require("llm")
    assert isinstance(llm, LlamaLLM)
    return llm


async def test_answers_a_short_question_relevantly(engines: Engines) -> None:
    request = ChatRequest(
        [ChatMessage("system", SYSTEM), ChatMessage("user", "What is the capital of France?")],
        temperature=0.0,
        max_tokens=40,
    )
    events = [event async for event in _llm(engines).stream(request)]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Paris" in text
    assert sum(isinstance(e, TextDelta) for e in events) > 1  # streamed, not delivered at once
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.reason in ("stop", "length")
    assert finished.prompt_tokens > 10
    assert 0 < finished.completion_tokens <= 40


def test_prompt_uses_the_models_chat_template(engines: Engines) -> None:
    prompt = _llm(engines).prompt(ChatRequest([ChatMessage("system", "S"), ChatMessage("user", "U")]))
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nS<|im_end|>" in prompt
    assert "<|im_start|>user\nU<|im_end|>" in prompt


async def test_closing_the_stream_early_frees_the_worker(engines: Engines) -> None:
    llm = _llm(engines)
    request = ChatRequest([ChatMessage("user", "Count from one to fifty.")], max_tokens=200, temperature=0.0)
    stream = llm.stream(request)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    # The next request is served: the worker stopped generating instead of finishing 200 tokens first.
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
