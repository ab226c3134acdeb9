"""Opus packets: encode PCM16 into 20 ms packets and decode packets back, with libopus through PyAV.

`OpusDecoder.decode()` is the entry point for untrusted packets from the wire. A packet libopus cannot decode
raises `OpusError` and leaves the decoder usable for the next one; it never takes the process down.
"""

from __future__ import annotations

import contextlib

import av
import av.error
import numpy as np

from koe.audio.pcm import SUPPORTED_RATES, Pcm, Reframer, samples_for_ms
from koe.audio.resample import SteadyResampler

OPUS_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = samples_for_ms(OPUS_RATE, FRAME_MS)
MAX_PACKET_BYTES = 1275 * 3 + 7
"""koe's limit on one packet from the wire: three frames of the largest size RFC 6716 §3.2.1 allows (1275 bytes)
plus framing, i.e. 60 ms at 510 kbit/s. Padding makes longer packets legal, but no voice stream sends them."""
SILENT_PACKET = b"\xfc\xff\xfe"
"""A 20 ms CELT packet that decodes to silence (TOC 0xFC: config 31, mono, code 0)."""
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_HEAD_PRE_SKIP_OFFSET = 10
DEFAULT_LOOKAHEAD = 312


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
        """The encoder's algorithmic delay at 48 kHz: decoded audio lags the input by this much (Ogg pre-skip).

        312 samples for "voip" and "audio", 120 for "lowdelay"; read from the OpusHead libavcodec builds on open.
        """
        if not self._ctx.is_open:
            self._ctx.open()
        head = self._ctx.extradata
        if head is None or len(head) < OPUS_HEAD_PRE_SKIP_OFFSET + 2:
            return DEFAULT_LOOKAHEAD
        return int.from_bytes(head[OPUS_HEAD_PRE_SKIP_OFFSET : OPUS_HEAD_PRE_SKIP_OFFSET + 2], "little")

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
    """Decodes Opus packets to mono PCM16 at `rate`: each packet gives exactly its duration in samples.

    libavcodec's libopus wrapper always outputs 48 kHz, so other rates go through a `SteadyResampler`, which
    delays the audio by `delay_samples` (20 ms at 16 kHz) but keeps one packet's worth of output per packet.
    """

    def __init__(self, rate: int = OPUS_RATE) -> None:
        if rate not in OPUS_RATES or rate == 12000:  # 12 kHz is an Opus rate but not one koe resamples to
            raise OpusError(f"koe decodes Opus to {', '.join(map(str, SUPPORTED_RATES))} Hz, not {rate}")
        self.rate = rate
        self._ctx = self._open()
        self._down = SteadyResampler(OPUS_RATE, rate) if rate != OPUS_RATE else None

    @property
    def delay_samples(self) -> int:
        """How far (at `rate`) the output lags what libopus decoded."""
        return self._down.delay_samples if self._down is not None else 0

    def _open(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = OPUS_RATE
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
        chunks = [_to_int16_mono(frame) for frame in frames]
        pcm = np.zeros(0, dtype=np.int16) if not chunks else chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return self._down.process(pcm) if self._down is not None else pcm


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
