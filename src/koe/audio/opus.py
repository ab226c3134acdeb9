"""Opus packets: encode PCM16 into 20 ms packets and decode packets back, with libopus through PyAV.

`OpusDecoder.decode()` is the entry point for untrusted packets from the wire. A packet libopus cannot decode
raises `OpusError` and leaves the decoder usable for the next one; it never takes the process down.
"""

from __future__ import annotations

import contextlib

import av
import av.error
import numpy as np

from koe.audio.pcm import Pcm, Reframer, samples_for_ms

OPUS_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = samples_for_ms(OPUS_RATE, FRAME_MS)
MAX_PACKET_BYTES = 1275 * 3 + 7
"""RFC 6716 §3.4 [R5]: no valid Opus packet is longer than 1275 bytes per frame, three frames' worth in all."""
SILENT_PACKET = b"\xfc\xff\xfe"
"""A 20 ms CELT packet that decodes to silence (TOC 0xFC: config 31, mono, code 0)."""
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class OpusError(ValueError):
    """An Opus packet could not be decoded, or PCM could not be encoded; the message says why."""


class OpusEncoder:
    """Encodes mono PCM16 into single-frame Opus packets of `frame_ms`, buffering partial frames."""

    def __init__(
        self,
        rate: int = OPUS_RATE,
        bitrate: int = 32000,
        frame_ms: int = FRAME_MS,
        application: str = "voip",
        complexity: int | None = None,
    ) -> None:
        if rate not in OPUS_RATES:
            raise OpusError(f"Opus encodes at {OPUS_RATES} Hz, not {rate}")
        if frame_ms not in (10, 20, 40, 60):
            raise OpusError(f"unsupported Opus frame duration {frame_ms} ms")
        self.rate = rate
        self.frame_samples = samples_for_ms(rate, frame_ms)
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        options = {"application": application, "frame_duration": str(frame_ms)}
        if complexity is not None:
            options["compression_level"] = str(complexity)
        ctx.options = options
        self._ctx = ctx
        self._reframer = Reframer(self.frame_samples)
        self._pts = 0

    @property
    def lookahead_samples(self) -> int:
        """The encoder's algorithmic delay at 48 kHz: decoded audio lags the input by this much (Ogg pre-skip)."""
        return 312

    def encode(self, pcm: Pcm) -> list[bytes]:
        """Add samples; return the packets for every whole frame so far."""
        packets: list[bytes] = []
        for frame in self._reframer.push(np.asarray(pcm, dtype=np.int16)):
            packets.extend(self._encode_frame(frame))
        return packets

    def flush(self) -> list[bytes]:
        """Encode the remaining partial frame (zero-padded) and drain the encoder."""
        packets: list[bytes] = []
        for frame in self._reframer.flush(pad=True):
            packets.extend(self._encode_frame(frame))
        with contextlib.suppress(av.error.EOFError):
            packets.extend(bytes(packet) for packet in self._ctx.encode(None))
        return packets

    def _encode_frame(self, frame: Pcm) -> list[bytes]:
        av_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frame).reshape(1, -1), format="s16", layout="mono")
        av_frame.sample_rate = self.rate
        av_frame.pts = self._pts
        self._pts += frame.size
        try:
            return [bytes(packet) for packet in self._ctx.encode(av_frame)]
        except av.error.FFmpegError as exc:
            raise OpusError(f"Opus encoding failed: {exc}") from exc


class OpusDecoder:
    """Decodes Opus packets to mono PCM16 at `rate` (libopus resamples internally to 8–48 kHz)."""

    def __init__(self, rate: int = OPUS_RATE) -> None:
        if rate not in OPUS_RATES:
            raise OpusError(f"Opus decodes at {OPUS_RATES} Hz, not {rate}")
        self.rate = rate
        self._ctx = self._open()

    def _open(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = self.rate
        ctx.layout = "mono"
        return ctx

    def decode(self, packet: bytes) -> Pcm:
        """Decode one packet. Raises `OpusError` for an empty, oversize or malformed packet."""
        if not packet:
            # An empty packet would put the codec into its end-of-stream state.
            raise OpusError("empty Opus packet")
        if len(packet) > MAX_PACKET_BYTES:
            raise OpusError(f"Opus packet of {len(packet)} bytes exceeds the {MAX_PACKET_BYTES}-byte maximum")
        try:
            frames = self._ctx.decode(av.Packet(packet))
        except av.error.FFmpegError as exc:
            # libopus may leave the context in an error or EOF state: start a fresh one for the next packet.
            self._ctx = self._open()
            raise OpusError(f"undecodable Opus packet (TOC 0x{packet[0]:02x}, {len(packet)} bytes): {exc}") from exc
        if not frames:
            return np.zeros(0, dtype=np.int16)
        chunks = [_to_int16_mono(frame) for frame in frames]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _to_int16_mono(frame: av.AudioFrame) -> Pcm:
    data = frame.to_ndarray()
    if frame.format.name in ("s16", "s16p"):
        samples = data.reshape(-1) if data.shape[0] == 1 else data[0]
        return np.asarray(samples, dtype=np.int16)
    samples = data.reshape(-1) if data.shape[0] == 1 else data[0]
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


def packet_duration_samples(packet: bytes, rate: int = OPUS_RATE) -> int:
    """Samples one packet decodes to, from its TOC byte and frame count (RFC 6716 §3.1), or 0 if malformed."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame_us = (10_000, 20_000, 40_000, 60_000)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame_us = (10_000, 20_000)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame_us = (2_500, 5_000, 10_000, 20_000)[config & 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(packet) < 2:
            return 0
        count = packet[1] & 0x3F
    return rate * frame_us * count // 1_000_000
