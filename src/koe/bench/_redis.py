"""A throwaway `redis-server` on a free loopback port, for `koe bench cluster` and the cluster tests.

`server = RedisServer(); server.start()` runs Debian's `/usr/bin/redis-server` (the `redis-server` package, which
`make test` installs) with nothing saved to disk, and returns once it answers PING; `server.url` is its address;
`stop()` ends it (SIGTERM), `kill()` kills it at once, and `start()` again restarts it on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from koe.bench._child import process_cpu_s
from koe.net.inprocess import free_port

REDIS_SERVER = Path("/usr/bin/redis-server")
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class RedisMissing(RuntimeError):
    """No redis-server binary on this machine."""


def redis_server_binary() -> Path:
    if REDIS_SERVER.is_file():
        return REDIS_SERVER
    found = shutil.which("redis-server")
    if found is None:
        raise RedisMissing(
            f"{REDIS_SERVER} not found: install Debian's redis-server package (`make test` does, "
            "or `scripts/ensure-apt redis-server`)"
        )
    return Path(found)


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="koe-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning", "--dir", self._dir.name,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start on port {self.port}: {error.strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {READY_TIMEOUT_S} s")
            time.sleep(0.02)

    def cpu_s(self) -> float:
        """CPU time the running server has used so far."""
        return process_cpu_s(self.process.pid) if self.process is not None else 0.0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
