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
        self._header = b""

    def feed(self, data: bytes) -> tuple[bytes, Stop | None]:
        """The part of `data` before a stopping frame (all of it when there is none), and why it stopped."""
        if self.stopped:
            return b"", self.stopped
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            had = len(self._header)
            take = min(FRAME_HEADER_BYTES - had, n - pos)
            self._header += data[pos : pos + take]
            frame_start = pos - had  # negative when the header began in an earlier chunk
            pos += take
            if len(self._header) < FRAME_HEADER_BYTES:
                break
            length = int.from_bytes(self._header[:3], "big")
            kind = self._header[3]
            self._header = b""
            if length > self.max_frame_bytes:
                self.stopped, self.oversize_length = "oversize", length
            elif kind == GOAWAY:
                self.stopped = "goaway"
            if self.stopped:
                return data[: max(frame_start, 0)], self.stopped
            self._skip = length
        return data, None
