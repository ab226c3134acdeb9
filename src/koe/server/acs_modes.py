"""What the ACS door does with a call's audio: one `Pipeline` per media connection, chosen by mode.

`MODES[mode](context)` builds it; the door then calls `await start()`, `audio(frame)` for every `AudioData` (sync
and cheap), `dtmf(frame)`, and `await finish(hung_up=…)` when the stream ends. Pipelines reach the caller through
`context.writer` (outbound `AudioData`/`StopAudio`) and report results with `context.publish(event)` (see
`koe.server.calls` for the event types).

- `echo`: plays each caller's audio straight back (a line test, and the relay benchmark's "AI off" path).
- `transcribe`, `agent`: the koe voice engine (`koe.server.acs_engine`).
- `bridge`: a remote Realtime endpoint (`koe.server.acs_bridge`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from koe.audio.mix import mix
from koe.config import Settings
from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, DtmfData
from koe.server.acs_writer import OutboundWriter


class ModeUnavailable(Exception):
    """The mode cannot serve this call (an engine is missing, the remote is unreachable): close with 1011."""


@dataclass
class ModeContext:
    settings: Settings
    engines: Engines
    call_id: str
    rate: int
    """The stream's negotiated rate, both directions."""
    writer: OutboundWriter
    publish: Callable[[dict[str, Any]], None]


class Pipeline(Protocol):
    async def start(self) -> None: ...

    def audio(self, frame: AudioData) -> None: ...

    def dtmf(self, frame: DtmfData) -> None: ...

    async def finish(self, hung_up: bool) -> None: ...


class EchoPipeline:
    """Plays what the callers say back to them. Mixed frames echo at once; unmixed channels are mixed per timestamp
    first. Silent frames are not echoed."""

    def __init__(self, context: ModeContext) -> None:
        self.context = context
        self._stamp = ""
        self._group: list[bytes] = []

    async def start(self) -> None:
        return None

    def audio(self, frame: AudioData) -> None:
        if frame.silent:
            return  # echo what was said; silence would only keep a lingering caller waiting for quiet
        if frame.participant_raw_id is None:
            self.context.writer.audio(frame.data)
            return
        if frame.timestamp != self._stamp:
            self._flush()
            self._stamp = frame.timestamp
        self._group.append(frame.data)

    def dtmf(self, frame: DtmfData) -> None:
        return None

    async def finish(self, hung_up: bool) -> None:
        self._flush()

    def _flush(self) -> None:
        chunks = [np.frombuffer(data, dtype="<i2") for data in self._group if data]
        self._group = []
        if chunks:
            self.context.writer.audio(mix(chunks).astype("<i2").tobytes())


def _lazy(module: str, name: str) -> Callable[[ModeContext], Pipeline]:
    def build(context: ModeContext) -> Pipeline:
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ModeUnavailable(f"this koe build cannot serve that mode yet ({exc})") from exc
        pipeline: Pipeline = factory(context)
        return pipeline

    return build


MODES: dict[str, Callable[[ModeContext], Pipeline]] = {
    "echo": EchoPipeline,
    "transcribe": _lazy("koe.server.acs_engine", "TranscribePipeline"),
    "agent": _lazy("koe.server.acs_engine", "AgentPipeline"),
    "bridge": _lazy("koe.server.acs_bridge", "BridgePipeline"),
}
