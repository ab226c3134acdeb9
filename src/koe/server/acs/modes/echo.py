"""The `echo` mode: each caller's audio played straight back (a line test, and the relay benchmark's "AI off" path)."""

from __future__ import annotations

import numpy as np

from koe.audio.mix import mix
from koe.protocols.acs import AudioData, DtmfData
from koe.server.acs.modes.base import ModeContext


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
