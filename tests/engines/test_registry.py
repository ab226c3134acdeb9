"""`Engines`: a backend by kind or the reason it is missing, and the pools of the loaded backends."""

from __future__ import annotations

import pytest

from koe.engines.base import ChatMessage, ChatRequest, EngineUnavailable
from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines, EngineStatus


def test_a_missing_engine_is_refused_with_the_reason_it_failed_to_load() -> None:
    engines = Engines(status={"tts": EngineStatus("tts", error="no voice installed")})
    with pytest.raises(EngineUnavailable, match="the tts engine is unavailable: no voice installed"):
        engines.require("tts")
    with pytest.raises(EngineUnavailable, match="the stt engine is unavailable: it was not loaded"):
        engines.require("stt")
    assert engines.get("vad") is None


async def test_a_remote_llm_has_no_pool_and_nothing_to_warm() -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:9", "remote-model")  # never contacted
    try:
        engines = Engines(llm=llm)
        assert engines.require("llm") is llm
        assert llm.pool is None
        assert engines.pools() == []
        await llm.warm(ChatRequest([ChatMessage("system", "You are brief.")]))
    finally:
        await llm.aclose()


def test_the_loaded_backends_pools_are_reported(engines: Engines) -> None:
    pools = engines.pools()
    assert {pool.name for pool in pools} >= {"stt", "tts"}
    assert set(engines.health()["pools"]) == {pool.name for pool in pools}
