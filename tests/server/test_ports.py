"""Start-up errors are one clear line before the models load (issue 14, must-hold 6): every listening port is checked
first (`koe.server.ports`), the line names the setting that chooses it, and `koe serve` exits non-zero."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from koe.config import load_settings
from koe.net.inprocess import free_port
from koe.server.ports import bind_error, port_problems

KOE = Path(sys.executable).with_name("koe")
"""The installed `koe` command (it imports the sources on PYTHONPATH first)."""
SERVE_TIMEOUT_S = 60.0
"""Far more than the check needs; loading the models first would take longer on this machine's shared cores."""


@contextmanager
def _occupied(host: str = "127.0.0.1") -> Iterator[int]:
    """A port another server listens on."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((host, 0))
        holder.listen()
        yield holder.getsockname()[1]


def _problems(**overrides: Any) -> list[str]:
    return port_problems(load_settings(overrides=overrides))


def _free(**overrides: Any) -> dict[str, Any]:
    """Settings whose every port is free, with `overrides` on top."""
    ports: dict[str, Any] = {"server": {"port": free_port()}, "sora": {"port": free_port()}}
    for section, values in overrides.items():
        ports[section] = {**ports.get(section, {}), **values}
    return ports


def test_free_ports_pass() -> None:
    assert _problems(**_free(acs={"media_port": free_port()})) == []
    assert _problems(server={"port": 0}, sora={"port": 0}, acs={"media_port": 0}) == []  # any port: nothing to check


@pytest.mark.parametrize(
    ("section", "field", "setting"),
    [("server", "port", "server.port"), ("sora", "port", "sora.port"), ("acs", "media_port", "acs.media_port")],
)
def test_a_taken_port_is_one_line_naming_its_setting(section: str, field: str, setting: str) -> None:
    with _occupied() as port:
        problems = _problems(**_free(**{section: {field: port}}))
    assert len(problems) == 1
    assert problems[0].startswith(f"cannot listen on 127.0.0.1:{port} ({setting}): the address is already in use")
    assert f"choose another port with {setting}" in problems[0]


def test_a_door_that_is_off_is_not_checked() -> None:
    with _occupied() as port:
        assert _problems(**_free(sora={"port": port, "enabled": False})) == []
        assert _problems(**_free(acs={"media_port": port, "enabled": False})) == []


def test_two_listeners_on_one_port_are_refused() -> None:
    port = free_port()
    problems = _problems(**_free(acs={"media_port": port}, sora={"port": port}))
    assert problems == [
        f"acs.media_port and sora.port both choose 127.0.0.1:{port}: give acs.media_port another port "
        "(KOE_ACS__MEDIA_PORT)"
    ]


def test_an_address_of_no_interface_is_named() -> None:
    assert bind_error("192.0.2.1", free_port()) == "no interface of this machine has that address"  # TEST-NET-1


def test_a_port_just_released_is_not_refused() -> None:
    """A koe that just stopped leaves its connections in TIME_WAIT: the listener binds with SO_REUSEADDR, so must
    the check."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    assert bind_error("127.0.0.1", port) is None


def test_koe_serve_on_a_taken_sora_port_exits_with_one_line_before_loading_models() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("KOE_")}
    with _occupied() as port:
        env |= {"KOE_SORA__PORT": str(port), "KOE_SERVER__PORT": str(free_port())}
        started = time.monotonic()
        done = subprocess.run(
            [str(KOE), "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=SERVE_TIMEOUT_S,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"koe: cannot listen on 127.0.0.1:{port} (sora.port): the address is already in use (another koe, or "
        "another server, listens there); stop what holds it or choose another port with sora.port (KOE_SORA__PORT)"
    ]
    assert time.monotonic() - started < SERVE_TIMEOUT_S
