"""Whether this CPU can run the llama.cpp that koe compiled: call `missing_llama_features()` before loading it.

koe builds llama.cpp for x86-64-v3 (`[tool.uv.extra-build-variables]` in pyproject.toml), not for the build
machine's own CPU: the same machine code, and so the same model output, on every CPU that runs it, and a venv that
still works when copied to another machine. A CPU without one of these instructions would kill the whole server
with SIGILL at the first token, so the embedded LLM checks first and reports itself unavailable instead.
"""

from __future__ import annotations

import platform
from pathlib import Path

LLAMA_X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")
"""The /proc/cpuinfo flags of the instruction sets llama.cpp is compiled with (x86-64-v3); the build's
`-DGGML_<FLAG>=ON` options in pyproject.toml name the same ones (a test keeps the two in step)."""
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def missing_llama_features(machine: str | None = None, cpuinfo: str | None = None) -> list[str]:
    """The required instruction sets this CPU lacks (empty when it has them all, or when it is not x86-64)."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return []
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return []  # not Linux, or /proc hidden: nothing to check against; llama.cpp runs or fails on its own
    flags = cpu_flags(cpuinfo)
    return [flag for flag in LLAMA_X86_FEATURES if flag not in flags]
