"""The embedded LLM's CPU check (`koe.engines._cpu`): what the compiled llama.cpp needs, and the build options."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from koe.engines import _cpu
from koe.engines._cpu import LLAMA_X86_FEATURES, cpu_flags, missing_llama_features
from koe.engines.base import EngineUnavailable
from koe.engines.llm_llama import LlamaLLM

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse sse2 ssse3 sse4_1 {extra}
bogomips\t: 4000.00
"""


def _build_options() -> dict[str, str]:
    variables = tomllib.loads(PYPROJECT.read_text())["tool"]["uv"]["extra-build-variables"]
    return dict(re.findall(r"-D(\w+)=(\w+)", variables["llama-cpp-python"]["CMAKE_ARGS"]))


def test_the_build_is_not_native_and_enables_exactly_the_checked_features() -> None:
    options = _build_options()
    assert options["GGML_NATIVE"] == "OFF"
    enabled = {name.removeprefix("GGML_").lower() for name, value in options.items() if value == "ON"}
    assert enabled == {"sse42", *(flag for flag in LLAMA_X86_FEATURES if flag != "sse4_2")}
    assert options["GGML_AVX512"] == "OFF"


def test_a_cpu_with_every_feature_passes() -> None:
    info = CPUINFO.format(extra="sse4_2 avx avx2 fma f16c bmi2 avx512f")
    assert cpu_flags(info) >= set(LLAMA_X86_FEATURES)
    assert missing_llama_features("x86_64", info) == []


def test_an_older_cpu_is_named_by_what_it_lacks() -> None:
    assert missing_llama_features("x86_64", CPUINFO.format(extra="sse4_2 avx")) == ["avx2", "fma", "f16c", "bmi2"]


def test_other_architectures_are_not_checked() -> None:
    assert missing_llama_features("aarch64", "") == []


def test_loading_on_a_cpu_without_avx2_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpu, "CPUINFO", Path("/nonexistent"))
    assert missing_llama_features("x86_64") == []  # nothing to read: not refused
    monkeypatch.setattr("koe.engines.llm_llama.missing_llama_features", lambda: ["avx2", "fma"])
    with pytest.raises(EngineUnavailable, match=r"lacks avx2, fma: use a remote LLM"):
        LlamaLLM.load()
