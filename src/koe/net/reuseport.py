"""A listening port shared by several processes (`SO_REUSEPORT`): call `shared_socket(host, port)`.

The kernel spreads new connections over every socket bound to the port this way; `koe serve --workers N`
(`koe.server.workers`) binds each of its listeners like this in every worker.
"""

from __future__ import annotations

import socket


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with `SO_REUSEPORT` (and `SO_REUSEADDR`), not yet listening."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
