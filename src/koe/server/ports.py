"""Every port `koe serve` will listen on, checked before the models load.

`port_problems(settings)` lists what would stop a listener from binding, one line each, naming the setting that
chooses the port: the main port (`server.port`), the Sora door's (`sora.port`) and the ACS media listener's
(`acs.media_port`). `koe serve` prints them and exits non-zero, so a second koe on the same machine fails in a
second with one clear line instead of loading every model and then dying with a traceback.

Each port is bound once, as the listener will bind it (`SO_REUSEADDR`, as asyncio and Hypercorn set it on POSIX,
so a port left in TIME_WAIT by a koe that just stopped is not refused), and released at once. Port 0 (any free
port) needs no check. Two listeners configured on the same host and port are refused too.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from koe.config import Settings


@dataclass(frozen=True, slots=True)
class Listen:
    """One listener `koe serve` starts: where, and the setting (and its variable) that chooses the port."""

    host: str
    port: int
    setting: str
    variable: str


def listeners(settings: Settings) -> list[Listen]:
    """The listeners these settings start, main port first."""
    server, sora, acs = settings.server, settings.sora, settings.acs
    found = [Listen(server.host, server.port, "server.port", "KOE_SERVER__PORT or koe serve --port")]
    if sora.enabled:
        found.append(Listen(sora.host, sora.port, "sora.port", "KOE_SORA__PORT"))
    if acs.enabled and acs.media_port:
        found.append(Listen(acs.media_host or server.host, acs.media_port, "acs.media_port", "KOE_ACS__MEDIA_PORT"))
    return found


def port_problems(settings: Settings) -> list[str]:
    """Why a listener could not bind, one line each (empty when every port is free)."""
    problems: list[str] = []
    taken: dict[tuple[str, int], Listen] = {}
    for listen in listeners(settings):
        if listen.port == 0:
            continue
        earlier = taken.get((listen.host, listen.port))
        if earlier is not None:
            problems.append(
                f"{listen.setting} and {earlier.setting} both choose {listen.host}:{listen.port}: "
                f"give {listen.setting} another port ({listen.variable})"
            )
            continue
        taken[(listen.host, listen.port)] = listen
        reason = bind_error(listen.host, listen.port)
        if reason is not None:
            problems.append(
                f"cannot listen on {listen.host}:{listen.port} ({listen.setting}): {reason}; stop what holds it or "
                f"choose another port with {listen.setting} ({listen.variable})"
            )
    return problems


def bind_error(host: str, port: int) -> str | None:
    """Why binding host:port fails (as a listener binds it), or None when it can be bound."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the host {host!r} does not resolve ({exc.strerror})"
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return _said(exc)
    return None


def _said(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another koe, or another server, listens there)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this machine has that address"
    return exc.strerror or str(exc)
