"""The Sora `relay` service against koe's own Realtime door: Sora → koe (relay) → koe's Realtime API
(`session.type = "transcription"` on the OpenAI GA dialect, and Voice Live) → results back to Sora."""

from __future__ import annotations

import pytest

from koe.engines.registry import Engines
from koe.net.inprocess import free_port
from koe.server.app import create_app
from koe.sim.sora.simulator import SimulatorOptions, SoraSimulator
from tests.conftest import AUDIO
from tests.server.acs.support import serve_app
from tests.server.realtime.support import API_KEY, realtime_settings
from tests.server.sora.support import running_gateway
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("kind", "path"),
    [("openai", "/v1/realtime?model=gpt-realtime"), ("voicelive", "/voice-live/realtime?model=gpt-realtime")],
)
async def test_relay_through_koes_realtime_door(engines: Engines, texts: dict[str, str], kind: str, path: str) -> None:
    port = free_port()
    app = create_app(realtime_settings(), engines)
    async with serve_app(app, port):
        relay = {
            "service": "relay",
            "relay_url": f"ws://127.0.0.1:{port}{path}",
            "relay_kind": kind,
            "relay_model": "whisper-1",
            "relay_api_key": API_KEY,
            "audio_streaming_header": True,
        }
        async with running_gateway(**relay) as gateway:
            sim = SoraSimulator(SimulatorOptions(f"http://127.0.0.1:{gateway.port}", speed=4.0))
            await sim.create_session("sora", audio_streaming=True)
            ids = {
                name: await sim.connect("sora", language_code="en-US", source=AUDIO / file)
                for name, file in (("short", "short_16k.wav"), ("utterance", "utterance_48k.wav"))
            }
            await sim.wait_idle(90)
            await sim.close()
    for name, connection_id in ids.items():
        (record,) = [r for r in sim.records if r.connection_id == connection_id]
        assert record.status == 200, record.error
        finals = [r for r in record.results if r.get("is_final")]
        assert finals, record.results
        assert wer(texts[name], " ".join(r["message"] for r in finals)) <= 0.2
        for result in record.results:
            assert result["type"] == "koe"
            assert result["connection_id"] == connection_id
            assert result["result_id"]
