"""The contract of an ACS mode: one `Pipeline` per media connection, built from a `ModeContext`.

`koe.server.acs.modes.MODES[mode](context)` builds it; the door then calls `await start()`, `audio(frame)` for
every `AudioData` (sync and cheap), `dtmf(frame)`, and `await finish(hung_up=…)` when the stream ends. Pipelines
reach the caller through `context.writer` (outbound `AudioData`/`StopAudio`) and report results with
`context.publish(event)` (see `koe.server.calls.registry` for the event types).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from koe.config import Settings
from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, DtmfData
from koe.server.acs.writer import OutboundWriter
from koe.voice.config import Limits


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
    limits: Limits = field(default_factory=Limits)
    """The bounds of an engine mode's voice session (`koe.server.limits.session_limits`)."""
    language: str | None = None
    """The call's language (`?language=` on the transport URL, else `acs.language`; checked by the door): a tag,
    `auto`, or None for `stt.language`."""


class Pipeline(Protocol):
    async def start(self) -> None: ...

    def audio(self, frame: AudioData) -> None: ...

    def dtmf(self, frame: DtmfData) -> None: ...

    async def finish(self, hung_up: bool) -> None: ...
