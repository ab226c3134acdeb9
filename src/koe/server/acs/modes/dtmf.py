"""DTMF tones as the agent's conversation input: the keys a caller presses become one user text item.

`DtmfCollector(timeout_s, on_digits)`: `press(tone)` for every `DtmfData`; once no tone has come for `timeout_s`,
or right after `#`, or at `MAX_TONES`, `on_digits(text)` gets the keys pressed so far as `"DTMF: 1 2 #"`. `close()`
drops a pending timer (keys still waiting are dropped with the call). The agent pipeline
(`koe.server.acs.modes.engine`) adds the text as a user item and, with `acs.dtmf = "reply"`, answers it.

Why a text item: every LLM koe runs reads text, and the prefix tells it (and whoever reads the conversation) that
these are keys, not words. ACS sends one tone per `DtmfData`; its docs show digits, and the webhook path spells the
others out (`asterisk`, `pound`), so both spellings are read (`symbol()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_TONES = 32
"""Keys kept for one item; a caller holding a key down (or a buggy sender) cannot grow it further."""
PREFIX = "DTMF:"
TERMINATOR = "#"
_NAMES = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "asterisk": "*",
    "star": "*",
    "pound": "#",
    "hash": "#",
}
_SYMBOLS = frozenset("0123456789*#ABCD")


def symbol(tone: str) -> str | None:
    """The key of an ACS tone (`"5"`, `"#"`, `"pound"`, `"a"`), or None for anything that names no key."""
    text = tone.strip()
    if text.upper() in _SYMBOLS:
        return text.upper()
    return _NAMES.get(text.lower())


def item_text(keys: list[str]) -> str:
    return f"{PREFIX} {' '.join(keys)}"


class DtmfCollector:
    def __init__(self, timeout_s: float, on_digits: Callable[[str], None]) -> None:
        self.timeout_s = timeout_s
        self._on_digits = on_digits
        self._keys: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def press(self, tone: str) -> bool:
        """Take one tone; False (and nothing kept) when it names no key."""
        key = symbol(tone)
        if key is None:
            return False
        self._keys.append(key)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if key == TERMINATOR or len(self._keys) >= MAX_TONES:
            self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self.flush)
        return True

    def flush(self) -> None:
        """Hand over the keys pressed so far, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        keys, self._keys = self._keys, []
        if keys:
            self._on_digits(item_text(keys))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._keys = []
