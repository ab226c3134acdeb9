"""Mixing: sums with gains, pads the shorter signals, and saturates instead of wrapping around."""

from __future__ import annotations

import numpy as np
import pytest

from koe.audio.mix import mix


def test_sum_pads_shorter_signals() -> None:
    a = np.array([100, 200, 300], dtype=np.int16)
    b = np.array([1, 2], dtype=np.int16)
    assert mix([a, b]).tolist() == [101, 202, 300]


def test_gains_scale_each_signal() -> None:
    a = np.array([1000, -1000], dtype=np.int16)
    b = np.array([1000, 1000], dtype=np.int16)
    assert mix([a, b], gains=[0.5, 0.25]).tolist() == [750, -250]


def test_saturates_at_int16_limits() -> None:
    loud = np.array([30000, -30000, 20000], dtype=np.int16)
    out = mix([loud, loud, loud])
    assert out.dtype == np.int16
    assert out.tolist() == [32767, -32768, 32767]
    # int16 arithmetic would have wrapped 60000 round to a negative number
    assert (loud + loud).tolist()[0] < 0


def test_empty_and_mismatched_input() -> None:
    assert mix([]).size == 0
    with pytest.raises(ValueError, match="2 gains for 1 signals"):
        mix([np.zeros(4, dtype=np.int16)], gains=[1.0, 1.0])
