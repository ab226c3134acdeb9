"""Clients that insist on TLS, unmodified against koe served over TLS (`koe serve --tls`), each through a whole
text turn: the Azure OpenAI client, which always builds `wss://…/openai/realtime` from its `azure_endpoint`, given
nothing else (no `websocket_base_url`), trusting the local CA through `SSL_CERT_FILE`; and the `openai` npm
package's `OpenAIRealtimeWS`, which refuses anything but `wss://`, trusting it through `NODE_EXTRA_CA_CERTS`; and the
`azure-ai-voicelive` SDK given an `https://` endpoint, as the call-center accelerator gives it.

The LLM is the chat-completions stand-in (`REPLY_WORDS`): what is checked is the turn's structure and that the
stand-in's words came through, not what a model says."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines
from koe.net.tls import TlsFiles, ensure_local_tls
from tests.conftest import REPO
from tests.engines.openai_standin import REPLY_WORDS, StandIn
from tests.server.acs.support import koe_server
from tests.server.realtime.support import API_KEY, realtime_settings

pytestmark = pytest.mark.timeout(90)

NODE_DIR = Path(__file__).resolve().parents[2] / "node"
TURN_TIMEOUT_S = 45
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def local_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_local_tls(tmp_path_factory.mktemp("tls"))[0]


@pytest.fixture(scope="module")
async def tls_base(local_tls: TlsFiles) -> AsyncIterator[str]:
    """koe over TLS, its LLM the stand-in (no other engine is needed for a text turn)."""
    async with StandIn(reply=list(REPLY_WORDS)) as standin:
        llm = OpenAICompatibleLLM(standin.base_url, "standin-model", api_key="sk-test")
        try:
            async with koe_server(realtime_settings(), replace(Engines(), llm=llm), tls=local_tls) as (base, _app):
                yield base
        finally:
            await llm.aclose()


async def test_azure_openai_client_with_only_its_endpoint(
    tls_base: str, local_tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openai import AsyncAzureOpenAI

    monkeypatch.setenv("SSL_CERT_FILE", str(local_tls.ca_cert))  # what `koe tls init` tells a Python client to set
    client = AsyncAzureOpenAI(azure_endpoint=tls_base, api_key=API_KEY, api_version="2024-10-01-preview")
    text, kinds = "", []
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await conn.session.update(session={"modalities": ["text"], "instructions": "Answer in one sentence."})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
        )
        await conn.response.create()

        async def receive() -> str:
            nonlocal text
            async for event in conn:
                kinds.append(event.type)
                if event.type == "response.text.delta":
                    text += event.delta
                elif event.type == "error":
                    raise AssertionError(f"error event: {event.error}")
                elif event.type == "response.done":
                    return event.response.status or ""
            raise AssertionError("the connection closed before response.done")

        status = await asyncio.wait_for(receive(), TURN_TIMEOUT_S)
    await client.close()
    assert status == "completed"
    assert kinds[0] == "session.created"
    assert {"response.created", "response.text.done"} <= set(kinds)
    assert text == "".join(REPLY_WORDS)


async def test_voice_live_sdk_with_an_https_endpoint(tls_base: str, local_tls: TlsFiles) -> None:
    """The call-center accelerator's client; in a process of its own, since aiohttp reads SSL_CERT_FILE at import."""
    env = {**os.environ, "KOE_BASE_URL": tls_base, "KOE_API_KEY": API_KEY, "SSL_CERT_FILE": str(local_tls.ca_cert)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.server.realtime.voicelive_text_turn", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TURN_TIMEOUT_S + 15)
    assert process.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["status"] == "completed"
    assert result["seen"][0] == "session.created"
    assert result["text"] == "".join(REPLY_WORDS)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (make test installs it)")
async def test_node_openai_realtime_websocket_client(tls_base: str, local_tls: TlsFiles) -> None:
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail(f"the openai npm package is not installed: npm ci --prefix {NODE_DIR} (make test does it)")
    env = {
        **os.environ,
        "KOE_BASE_URL": tls_base,
        "KOE_API_KEY": API_KEY,
        "NODE_EXTRA_CA_CERTS": str(local_tls.ca_cert),
    }
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "realtime_turn.mjs"), cwd=NODE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TURN_TIMEOUT_S + 15)
    assert process.returncode == 0, (out.decode(), err.decode())
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["url"].startswith("wss://127.0.0.1:")
    assert result["status"] == "completed"
    assert result["seen"][0] == "session.created"
    assert "response.output_text.done" in result["seen"]
    assert result["text"] == "".join(REPLY_WORDS)
