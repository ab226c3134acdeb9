"""A server under benchmark in a child process (`python -m koe.server.benchserve …`), so the load generator shares
neither its event loop nor its GIL, and its CPU time can be read on its own.

`Child(kind, *args, cpu=…, env=…)` starts it on a free loopback port (`child.port`) and returns once it prints
`READY`; `cpu_s()` is the CPU time it has used so far; `stop()` ends it with SIGTERM (then SIGKILL). `write_toml()`
writes a config file for a child that takes one (`node`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from koe.net.inprocess import free_port


class ChildFailed(RuntimeError):
    """The benchmark server exited or did not become ready."""


class Child:
    def __init__(self, kind: str, *args: str, cpu: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "koe.server.benchserve", kind, *_with_port(args, self.port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, start_new_session=True
        )
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.process.pid, {cpu})
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the child loads its engines first: this may take seconds
        if not line.startswith("READY"):
            self.stop()
            raise ChildFailed(f"the benchmark server ({kind}) did not start: {line.strip() or 'it exited'}")

    def cpu_s(self) -> float:
        """CPU time the child has used so far (user + system)."""
        return process_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _with_port(args: tuple[str, ...], port: int) -> list[str]:
    """The arguments with `{port}` replaced by the child's port."""
    return [str(port) if arg == "{port}" else arg for arg in args]


def process_cpu_s(pid: int) -> float:
    """CPU time process `pid` has used so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_toml(path: Path, values: dict[str, Any]) -> Path:
    """A koe config file from nested dicts of strings, numbers and booleans (JSON's scalars are TOML's)."""
    path.write_text(_toml(values), encoding="utf-8")
    return path


def _toml(values: dict[str, Any], prefix: str = "") -> str:
    lines = [f"[{prefix}]"] if prefix else []
    lines += [f"{key} = {orjson.dumps(value).decode()}" for key, value in values.items() if not isinstance(value, dict)]
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(lines) + "\n"
