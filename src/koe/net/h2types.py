"""The types the Sora listener and its routes share: a request, a whole response, and the streaming handler pair.

`koe.net.h2listener` re-exports them; see it for how they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Request:
    method: str
    path: str
    """Without the query string, which is ignored."""
    headers: list[tuple[str, str]]
    http_version: str
    """"2" or "1.1"."""
    peer: str = ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("content-type", "application/json")])


class StreamHandler(Protocol):
    def on_data(self, data: bytes) -> None:
        """One request DATA frame (never merged with the next)."""

    def on_end(self) -> None:
        """The request body ended (END_STREAM)."""

    def on_reset(self) -> None:
        """The client reset the stream or the connection dropped; the response can no longer be sent."""


class ResponseStream(Protocol):
    @property
    def closed(self) -> bool: ...

    def start(self, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None: ...

    def send(self, data: bytes) -> None:
        """One DATA frame (or several if `data` exceeds the peer's frame size), flushed promptly."""

    def finish(self) -> None:
        """END_STREAM; if the request body is still coming, also ask the client to stop (RST_STREAM NO_ERROR)."""


Route = Callable[[Request], Response | Callable[[ResponseStream], StreamHandler]]
