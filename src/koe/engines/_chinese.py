"""Chinese text in the script the caller reads, with OpenCC: call `to_script(text, script, region)`.

Whisper writes Chinese in simplified or traditional characters as it likes, even when told the language. OpenCC
converts whole phrases, not only characters (頭髮/头发 and 發展/发展 share 发), with dictionaries bundled in its
wheel. Simplified is `t2s`; traditional is `s2tw` for Taiwan, `s2hk` for Hong Kong and Macau (their own character
variants), `s2t` (OpenCC's standard forms) otherwise. Characters already in the wanted script pass through.
"""

from __future__ import annotations

import threading
from typing import Any

from koe.languages import Script

_CONFIGS = {("Hans", ""): "t2s", ("Hant", "TW"): "s2tw", ("Hant", "HK"): "s2hk", ("Hant", "MO"): "s2hk"}
_converters: dict[str, Any] = {}
_lock = threading.Lock()


def opencc_config(script: Script, region: str = "") -> str:
    """The OpenCC conversion for a script and (for traditional characters) a region."""
    if script == "Hans":
        return "t2s"
    return _CONFIGS.get((script, region.upper()), "s2t")


def to_script(text: str, script: Script, region: str = "") -> str:
    if not text:
        return text
    config = opencc_config(script, region)
    with _lock:  # building a converter reads its dictionaries (about 0.1 s): once per config
        converter = _converters.get(config)
        if converter is None:
            import opencc

            converter = _converters[config] = opencc.OpenCC(config)
    converted: str = converter.convert(text)
    return converted
