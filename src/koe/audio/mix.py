"""Mixing several PCM16 signals into one, with saturation instead of wrap-around."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import Pcm


def mix(signals: Sequence[Pcm], gains: Sequence[float] | None = None) -> Pcm:
    """Sum `signals` (each optionally scaled by its gain), padding shorter ones with silence, clipped to int16."""
    if not signals:
        return np.zeros(0, dtype=np.int16)
    if gains is not None and len(gains) != len(signals):
        raise ValueError(f"got {len(gains)} gains for {len(signals)} signals")
    length = max(signal.size for signal in signals)
    acc: npt.NDArray[np.float64] = np.zeros(length, dtype=np.float64)
    for index, signal in enumerate(signals):
        gain = 1.0 if gains is None else gains[index]
        acc[: signal.size] += signal.astype(np.float64) * gain
    out: Pcm = np.clip(np.rint(acc), -32768, 32767).astype(np.int16)
    return out
