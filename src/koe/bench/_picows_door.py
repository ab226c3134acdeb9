"""The ACS echo path on picows (a Cython WebSocket server), for the relay benchmark's stack comparison only.

`serve_picows(port, stop)` answers `/acs/media` like the door in echo mode: every frame goes through the same
`InboundStream` rules, and each non-silent mixed frame goes back as the documented outbound `AudioData`. No ASGI,
no Starlette: it shows what the door's own work costs once the WebSocket stack's overhead is small. picows is not a
koe dependency; install it to include this stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

from koe.protocols.acs import AudioData, InboundStream, MalformedFrame, ProtocolViolation
from koe.protocols.acs_outbound import build_audio_data


async def serve_picows(port: int, stop: asyncio.Event) -> None:
    from picows import WSCloseCode, WSListener, WSMsgType, ws_create_server

    class _Door(WSListener):
        def on_ws_connected(self, transport: Any) -> None:
            self.stream = InboundStream()

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()
                return
            if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return
            try:
                message = self.stream.receive(frame.get_payload_as_bytes())
            except MalformedFrame:
                return
            except ProtocolViolation as exc:
                transport.send_close(exc.close_code, exc.reason.encode())
                transport.disconnect()
                return
            if isinstance(message, AudioData) and not message.silent and message.participant_raw_id is None:
                transport.send(WSMsgType.TEXT, build_audio_data(message.data).encode())

    server = await ws_create_server(lambda _request: _Door(), "127.0.0.1", port)
    async with server:
        await stop.wait()
