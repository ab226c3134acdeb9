"""A Realtime client that is gone before koe accepts its WebSocket gives its place back: before, the admission
ticket was taken before the accept and left held when the accept failed, and after `stt.max_streams` such clients
(12 by default) every new session was refused (found by `koe bench fuzz` at volume)."""

from __future__ import annotations

from typing import Any

import pytest

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server.limits import Admission
from koe.server.realtime.door import RealtimeDoor


class GoneClient:
    """The ASGI WebSocket as the door sees it, for a client that disconnected during the handshake."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": "/voice-live/realtime",
            "query_string": b"api-version=2026-07-15&model=koe",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "subprotocols": [],
        }

    async def accept(self, subprotocol: str | None = None) -> None:
        raise OSError("the client went away during the handshake")


async def test_a_client_gone_during_the_accept_leaves_no_place_taken() -> None:
    settings = Settings()
    admission = Admission(settings)
    door = RealtimeDoor(settings, Engines(), admission)
    for _ in range(3):
        with pytest.raises(OSError, match="went away"):
            await door.endpoint(GoneClient())  # type: ignore[arg-type]  # only what the door reads of it
    assert admission.streams == 0 and sum(admission.sessions.values()) == 0
