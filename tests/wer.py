"""Word and character error rates for checking transcripts against the fixture texts (see koe.bench.scoring)."""

from __future__ import annotations

from koe.bench.scoring import cer, characters, normalize, wer

__all__ = ["cer", "characters", "normalize", "wer"]
