"""HTTP/2 frame boundaries, tracked ahead of `h2` (sans-I/O), for the two cases `h2` handles badly.

Feed every byte the client sends (preface included) to `FrameScanner.feed()`; it returns the bytes to pass on to
`h2` and, if one was met, the frame that stops the connection:
- a client GOAWAY: `h2` closes its state machine on receiving it, after which nothing can be sent, yet a client may
  send END_STREAM then GOAWAY at once (the captured Sora stand-in does) and still expects its responses;
- a frame longer than `max_frame_bytes`: `h2` would buffer up to 16 MiB waiting for it, where it is a
  FRAME_SIZE_ERROR at once.
"""

from __future__ import annotations

from typing import Literal

FRAME_HEADER_BYTES = 9
GOAWAY = 0x7
PREFACE_BYTES = 24

Stop = Literal["goaway", "oversize"]


class FrameScanner:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.stopped: Stop | None = None
        self.oversize_length = 0
        self._skip = PREFACE_BYTES  # the preface precedes the frames in every mode, the h2c upgrade included
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, Stop | None]:
        """The part of `data` before a stopping frame (all of it when there is none), and why it stopped.

        A frame header cut by the chunk's end is held back until it is whole, so a GOAWAY is never half passed on.
        """
        if self.stopped:
            return b"", self.stopped
        data, self._held = self._held + data, b""
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            if n - pos < FRAME_HEADER_BYTES:
                self._held = data[pos:]
                return data[:pos], None
            length = int.from_bytes(data[pos : pos + 3], "big")
            kind = data[pos + 3]
            if length > self.max_frame_bytes:
                self.stopped, self.oversize_length = "oversize", length
            elif kind == GOAWAY:
                self.stopped = "goaway"
            if self.stopped:
                return data[:pos], self.stopped
            self._skip = length
            pos += FRAME_HEADER_BYTES
        return data, None
