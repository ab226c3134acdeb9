"""The HTTP/1.1 side of the Sora listener, sans-I/O on `h11`: one request per connection, then close.

A connection that does not start with the HTTP/2 preface is HTTP/1.1. `Http1Exchange.feed(data)` returns the
complete `Http1Request` (or None while more bytes are needed); `reply(response)` gives the bytes to write before
closing. A request with `Upgrade: h2c` and `HTTP2-Settings` comes back with `upgrade_settings` set: the listener then
answers 101 and carries on in HTTP/2, with the request (and its body, read whole first) as stream 1. Oversize or
malformed input raises `Http1Error`, whose `response` is the answer to send.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

from koe.net.h2types import Response

MAX_HTTP1_BODY_BYTES = 1 << 20
"""An `Upgrade: h2c` request's body is read whole before switching; larger ones are refused."""
MAX_HTTP1_HEADER_BYTES = 64 * 1024
SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
BAD_REQUEST = Response(400, b'{"message":"Bad Request"}\n')
_RAW_400 = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 26\r\n"
    b'connection: close\r\n\r\n{"message":"Bad Request"}\n'
)
_UPGRADE_ONLY = frozenset({"connection", "upgrade", "http2-settings", "host", "content-length", "transfer-encoding"})


class Http1Error(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Http1Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    """Lower-case names."""
    body: bytes
    rest: bytes
    """Bytes after the request: after an upgrade, the client's HTTP/2 preface and frames."""
    upgrade_settings: str | None = None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def h2_headers(self) -> list[tuple[str, str]]:
        """The request as HTTP/2 stream 1's header list (pseudo-headers first, upgrade headers dropped)."""
        authority = dict(self.headers).get("host", "")
        pseudo = [(":method", self.method), (":path", self.target), (":scheme", "http"), (":authority", authority)]
        return pseudo + [h for h in self.headers if h[0] not in _UPGRADE_ONLY]


class Http1Exchange:
    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HTTP1_HEADER_BYTES)
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._seen = False

    def feed(self, data: bytes) -> Http1Request | None:
        if not self._seen and data and not data[:1].isupper():
            raise Http1Error(BAD_REQUEST)  # not an HTTP method: no point waiting for a request line
        self._seen = self._seen or bool(data)
        try:
            self._h11.receive_data(data)
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    if len(self._body) > MAX_HTTP1_BODY_BYTES:
                        raise Http1Error(Response(413, b'{"message":"Request Entity Too Large"}\n'))
                    return None
                if isinstance(event, h11.Request):
                    self._request = event
                elif isinstance(event, h11.Data):
                    self._body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return self._complete()
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        except h11.RemoteProtocolError as exc:
            raise Http1Error(Response(exc.error_status_hint, BAD_REQUEST.body)) from exc

    def _complete(self) -> Http1Request:
        event = self._request
        assert event is not None
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
        values = dict(headers)
        upgrade = values.get("upgrade", "").lower() == "h2c" and "http2-settings" in values
        return Http1Request(
            event.method.decode("latin-1"),
            event.target.decode("latin-1"),
            headers,
            bytes(self._body),
            self._h11.trailing_data[0],
            values["http2-settings"] if upgrade else None,
        )

    def reply(self, response: Response) -> bytes:
        headers = [*response.headers, ("content-length", str(len(response.body))), ("connection", "close")]
        try:
            out = self._h11.send(h11.Response(status_code=response.status, headers=headers)) or b""
            out += self._h11.send(h11.Data(data=response.body)) or b""
            out += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 saw no request to answer (garbage from the first byte)
            return _RAW_400
        return out
