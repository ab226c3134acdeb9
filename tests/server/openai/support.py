"""Shared pieces of the OpenAI-compatible API tests: settings with a key, and the official async client on a
live koe server."""

from __future__ import annotations

from typing import Any

import openai

from koe.config import Settings, load_settings

API_KEY = "koe-api-test-key"


def api_settings(**api: Any) -> Settings:
    return load_settings(
        overrides={"server": {"api_keys": [API_KEY]}, "api": api, "llm": {"max_tokens": 24}, "sora": {"enabled": False}}
    )


def client(base_url: str, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60)
