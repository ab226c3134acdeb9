"""Reading any audio file PyAV understands (WAV, Ogg/Opus, MP3, FLAC…) as mono PCM16, and writing WAV.

`read_audio(path, rate)` decodes, downmixes and resamples in one pass. A file that is not audio, or has no audio
stream, raises `AudioFormatError` with the file name and the reason.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from koe.audio.pcm import AudioFormatError, Pcm, check_rate


def read_audio(source: str | Path | BinaryIO | bytes, rate: int) -> Pcm:
    """Decode the first audio stream of `source` to mono PCM16 at `rate`."""
    check_rate(rate)
    name = str(source) if isinstance(source, str | Path) else "uploaded audio"
    handle: str | BinaryIO = (
        io.BytesIO(source) if isinstance(source, bytes) else (str(source) if isinstance(source, Path) else source)
    )
    chunks: list[Pcm] = []
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.audio:
                raise AudioFormatError(f"{name} has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
    except av.error.FFmpegError as exc:
        raise AudioFormatError(f"cannot decode {name} as audio: {exc}") from exc
    except (UnicodeDecodeError, IndexError, ValueError) as exc:  # PyAV raises these for some garbage input
        if isinstance(exc, AudioFormatError):
            raise
        raise AudioFormatError(f"cannot decode {name} as audio: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks)


def write_wav(target: str | Path | BinaryIO, pcm: Pcm, rate: int) -> None:
    with wave.open(str(target) if isinstance(target, str | Path) else target, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def wav_bytes(pcm: Pcm, rate: int) -> bytes:
    buffer = io.BytesIO()
    write_wav(buffer, pcm, rate)
    return buffer.getvalue()
