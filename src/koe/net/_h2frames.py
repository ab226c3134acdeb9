"""HTTP/2 frame boundaries, tracked ahead of `h2` (sans-I/O): a fast path for DATA, and two cases `h2` handles badly.

Feed every byte the client sends (preface included) to `FrameScanner.feed()`. It returns the input as `pieces` in
order, each either bytes to pass on to `h2` or a whole plain `DataFrame` (no padding, no END_STREAM) that the
listener may handle itself: an audio packet then costs a few slices instead of a trip through `h2`'s state
machines (the listener hands it back to `h2` when its stream is not one it streams). It also reports the frame that
stops the connection, if one was met:
- a client GOAWAY: `h2` closes its state machine on receiving it, after which nothing can be sent, yet a client may
  send END_STREAM then GOAWAY at once (the captured Sora stand-in does) and still expects its responses;
- a frame longer than `max_frame_bytes`: `h2` would buffer up to 16 MiB waiting for it, where it is a
  FRAME_SIZE_ERROR at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

FRAME_HEADER_BYTES = 9
GOAWAY = 0x7
PREFACE_BYTES = 24

_HEADER = struct.Struct(">HBBBI")  # length (high 16 bits, low 8 bits), type, flags, stream id
_DATA = 0x0
_END_STREAM = 0x1
_PADDED = 0x8

Stop = Literal["goaway", "oversize"]


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    payload: bytes
    header: bytes

    @property
    def raw(self) -> bytes:
        """The whole frame, header included, for handing it to `h2` after all."""
        return self.header + self.payload


Piece = bytes | DataFrame


class FrameScanner:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.stopped: Stop | None = None
        self.oversize_length = 0
        self._skip = PREFACE_BYTES  # the preface precedes the frames in every mode, the h2c upgrade included
        self._held = b""

    def feed(self, data: bytes) -> tuple[list[Piece], Stop | None]:
        """The input up to a stopping frame as `h2` bytes and whole plain DATA frames, and why it stopped.

        A frame header cut by the chunk's end is held back until it is whole, so a GOAWAY is never half passed on.
        """
        if self.stopped:
            return [], self.stopped
        data, self._held = self._held + data, b""
        pieces: list[Piece] = []
        plain_from = 0  # start of the bytes not yet put in a piece
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            if n - pos < FRAME_HEADER_BYTES:
                self._held = data[pos:]
                n = pos
                break
            high, low, kind, flags, stream_id = _HEADER.unpack_from(data, pos)
            length = high << 8 | low
            if length > self.max_frame_bytes:
                self.stopped, self.oversize_length = "oversize", length
            elif kind == GOAWAY:
                self.stopped = "goaway"
            if self.stopped:
                n = pos
                break
            end = pos + FRAME_HEADER_BYTES + length
            if kind == _DATA and length and not flags & (_END_STREAM | _PADDED) and end <= len(data):
                if plain_from < pos:
                    pieces.append(data[plain_from:pos])
                body = pos + FRAME_HEADER_BYTES
                pieces.append(DataFrame(stream_id & 0x7FFFFFFF, data[body:end], data[pos:body]))
                pos = plain_from = end
                continue
            self._skip = length
            pos += FRAME_HEADER_BYTES
        if plain_from < n:
            pieces.append(data[plain_from:n])
        return pieces, self.stopped
