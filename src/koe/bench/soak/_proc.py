"""What a process holds, read from `/proc` (Linux): resident memory and open file descriptors.

`usage(pid)` returns both at once; the asyncio task count comes from the server itself (`koe_asyncio_tasks`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_KIB = 1024


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    open_fds: int


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * _KIB / (1 << 20)
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: is the process a zombie?")


def open_fds(pid: int) -> int:
    """File descriptors process `pid` holds open (sockets, files, pipes, eventfds)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def usage(pid: int) -> Usage:
    return Usage(round(rss_mb(pid), 1), open_fds(pid))


def within(first: float, last: float, fraction: float) -> bool:
    """Whether `last` is at most `fraction` above `first` (a fall is not a leak)."""
    return last <= first * (1 + fraction)
