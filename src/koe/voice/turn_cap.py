"""koe's own cap on a spoken turn's length: a reply that runs long ends at the next sentence end, and is complete.

Voice Live and OpenAI Realtime answer in short spoken turns. koe asks for them in its default instructions, and
holds a small model to them with `TurnCap`: once a reply has streamed `tokens` text deltas (a streaming LLM sends
about one token per delta), the text that follows is held back until a sentence ends, and the reply stops there
(`ended`). When the LLM stops at a length limit that the client did not set (koe's `llm.max_tokens`) before any
sentence ended, `close()` ends the held words as a sentence. Either way the response is `completed`: `incomplete`
with `max_output_tokens` belongs to a cap the client set (`max_response_output_tokens`, GA `max_output_tokens`).

Create one per response; feed every text delta through `feed()`, and say only what it returns.
"""

from __future__ import annotations

import re

DEFAULT_TURN_TOKENS = 48
"""About two short spoken sentences (some ten seconds of speech)."""
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]”’]*\s|[。！？]+[」』）”’]*")
_CJK_END = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]$")
_DANGLING = " \t\n,;:—-、，；："
_TAIL_CHARS = 4
_FINAL = ".!?…。！？\"')]”’」』）"


class TurnCap:
    def __init__(self, tokens: int | None) -> None:
        """`tokens`: the deltas a reply may stream before it ends at the next sentence end; None: no cap."""
        self._left = tokens
        self._held = ""
        self._tail = ""
        """The last characters passed on: a sentence that ended right at the cap ends the reply there."""
        self.ended = False
        """The cap was reached and a sentence ended: stop reading the LLM."""

    def feed(self, text: str) -> str:
        """What of `text` to say now ("" while the cap holds it, waiting for the sentence to end)."""
        if self.ended:
            return ""
        if self._left is None or self._left > 0:
            if self._left is not None:
                self._left -= 1
            self._tail = (self._tail + text)[-_TAIL_CHARS:]
            return text
        self._held += text
        said_chars = len(self._tail)
        ends = (m.end() for m in _SENTENCE_END.finditer(self._tail + self._held) if m.end() >= said_chars)
        end = next(ends, None)
        if end is None:
            return ""
        said, self._held = self._held[: end - said_chars], ""
        self.ended = True
        return said.rstrip()

    def close(self) -> str:
        """The LLM stopped at koe's length limit: what ends the reply as a sentence (the held words and a full
        stop, or only the stop)."""
        if self.ended:
            return ""
        self.ended = True
        held, self._held = self._held.rstrip(_DANGLING), ""
        tail = held or self._tail.rstrip()
        if not tail or tail[-1] in _FINAL or tail[-1] in _DANGLING:
            return held  # a comma already said cannot be unsaid: a stop after it would read ", ."
        return held + ("。" if _CJK_END.search(tail) else ".")
