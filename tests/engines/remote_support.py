"""A koe model node on loopback for the remote STT and TTS tests: `model_node(engines)` serves the engines with
every door off (only the REST API: /v1/audio/*, /v1/chat/completions, /v1/models), behind a key, as
docs/cluster.md describes; `door_engines(base)` are the engines of a door node that uses it for STT and TTS."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from koe.config import Settings, load_settings
from koe.engines.registry import Engines, load_engines
from tests.server.acs.support import koe_server

MODEL_KEY = "koe-model-node-key"
DOORS_OFF: dict[str, Any] = {"acs": {"enabled": False}, "sora": {"enabled": False}, "realtime": {"enabled": False}}


def model_node_settings() -> Settings:
    return load_settings(overrides={"server": {"api_keys": [MODEL_KEY]}, **DOORS_OFF})


@contextlib.asynccontextmanager
async def model_node(engines: Engines) -> AsyncIterator[str]:
    """The model node's OpenAI base URL (`http://127.0.0.1:PORT/v1`)."""
    async with koe_server(model_node_settings(), engines) as (base, _app):
        yield f"{base}/v1"


def remote_overrides(base_url: str, key: str = MODEL_KEY) -> dict[str, Any]:
    """A door node's `stt` and `tts` sections that point at `base_url`."""
    remote = {"backend": "remote", "base_url": base_url, "api_key": key, "timeout_s": 20.0}
    return {"stt": remote, "tts": remote}


def door_engines(base_url: str, local: Engines) -> Engines:
    """Remote STT and TTS through the registry, as `koe serve` loads them; the VAD and LLM are `local`'s."""
    loaded = load_engines(load_settings(overrides=remote_overrides(base_url)), kinds=("stt", "tts"))
    loaded.vad, loaded.llm = local.vad, local.llm
    loaded.status.update({kind: local.status[kind] for kind in ("vad", "llm")})
    return loaded


def dead_url() -> str:
    """An OpenAI base URL on a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
