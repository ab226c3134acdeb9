"""Joining split weights (koe.engines._weights): parts from installed packages, checked, joined once, atomically.

The generic tests build small packages of their own on sys.path, so every failure mode is cheap to reach; the last
ones check the real multilingual Whisper parts.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from koe.engines._weights import MANIFEST, ModelFile, Part, SplitModel, check, default_cache_dir, prepare
from koe.engines.base import EngineUnavailable

REPO = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two installed 'packages', koe-test-part1 and -part2, each holding half of a 3 MB model file."""
    root = tmp_path / "site"
    blob = os.urandom(3 * 1024 * 1024 + 7)
    halves = (blob[: len(blob) // 2], blob[len(blob) // 2 :])
    for index, half in enumerate(halves, 1):
        package = root / f"koe_test_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.bin.part{index}").write_bytes(half)
    (root / "koe_test_part1" / "data" / "config.json").write_text('{"a": 1}')
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    (tmp_path / "model.json").write_text(
        json.dumps({"sizes": [len(h) for h in halves], "shas": [_sha(h) for h in halves], "sha": _sha(blob)})
    )
    return root


def _model(site: Path) -> SplitModel:
    facts = json.loads((site.parent / "model.json").read_text())
    config = (site / "koe_test_part1" / "data" / "config.json").read_bytes()
    parts = tuple(
        Part(f"koe-test-part{i}", f"data/model.bin.part{i}", facts["sizes"][i - 1], facts["shas"][i - 1])
        for i in (1, 2)
    )
    return SplitModel(
        "test-model-v1",
        (
            ModelFile("model.bin", parts, sum(facts["sizes"]), facts["sha"]),
            ModelFile(
                "config.json",
                (Part("koe-test-part1", "data/config.json", len(config), _sha(config)),),
                len(config),
                _sha(config),
            ),
        ),
    )


def test_parts_are_joined_once_into_the_cache(site: Path, tmp_path: Path) -> None:
    model = _model(site)
    cache = tmp_path / "cache"
    assert check(model) is None
    target = prepare(model, cache)
    assert target == cache / "test-model-v1"
    assert _sha((target / "model.bin").read_bytes()) == model.files[0].sha256
    assert (target / "config.json").read_text() == '{"a": 1}'
    stamp = (target / "model.bin").stat().st_mtime_ns
    assert prepare(model, cache) == target
    assert (target / "model.bin").stat().st_mtime_ns == stamp  # reused, not joined again
    assert [p.name for p in cache.iterdir()] == ["test-model-v1"]  # no temporary left behind


def test_a_missing_part_names_the_package_to_install(site: Path, tmp_path: Path) -> None:
    (site / "koe_test_part2" / "__init__.py").unlink()
    (site / "koe_test_part2" / "data" / "model.bin.part2").unlink()
    (site / "koe_test_part2" / "data").rmdir()
    (site / "koe_test_part2").rmdir()
    importlib.invalidate_caches()
    model = _model(site)
    message = "the package koe-test-part2 is not installed: pip install koe-test-part2"
    assert message in (check(model) or "")
    with pytest.raises(EngineUnavailable, match=message):
        prepare(model, tmp_path / "cache")
    assert not (tmp_path / "cache" / "test-model-v1").exists()


def test_a_corrupt_part_is_a_hash_error_and_nothing_is_cached(site: Path, tmp_path: Path) -> None:
    model = _model(site)
    path = site / "koe_test_part2" / "data" / "model.bin.part2"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, other bytes: only the hash can tell
    path.write_bytes(bytes(data))
    assert check(model) is None  # the cheap check sees sizes only
    with pytest.raises(EngineUnavailable, match=r"model.bin.part2 of koe-test-part2 is corrupt \(SHA-256 mismatch\)"):
        prepare(model, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_truncated_part_is_found_by_its_size(site: Path, tmp_path: Path) -> None:
    model = _model(site)
    path = site / "koe_test_part1" / "data" / "model.bin.part1"
    path.write_bytes(path.read_bytes()[:-1])
    assert "has 1572866 bytes instead of 1572867" in (check(model) or "")
    with pytest.raises(EngineUnavailable, match="pip install --force-reinstall koe-test-part1"):
        prepare(model, tmp_path / "cache")


def test_a_damaged_cache_is_joined_again(site: Path, tmp_path: Path) -> None:
    model = _model(site)
    target = prepare(model, tmp_path / "cache")
    (target / "model.bin").write_bytes(b"short")
    assert prepare(model, tmp_path / "cache") == target
    assert _sha((target / "model.bin").read_bytes()) == model.files[0].sha256
    (target / MANIFEST).unlink()  # a directory some other tool left: not ours until joined
    assert _sha((prepare(model, tmp_path / "cache") / "model.bin").read_bytes()) == model.files[0].sha256


def test_concurrent_first_use_in_several_processes(site: Path, tmp_path: Path) -> None:
    model = _model(site)
    cache = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; sys.path[:0] = [sys.argv[1], sys.argv[2]];"
        "from tests.engines.test_weights import _model; from koe.engines._weights import prepare;"
        "print(prepare(_model(Path(sys.argv[1])), Path(sys.argv[3])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO)))}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(site), str(REPO), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(4)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _out, err in results]
    assert {out.strip() for out, _err in results} == {str(cache / "test-model-v1")}
    assert _sha((cache / "test-model-v1" / "model.bin").read_bytes()) == model.files[0].sha256
    assert [p.name for p in cache.iterdir()] == ["test-model-v1"]


def test_an_unwritable_cache_says_how_to_move_it(site: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineUnavailable, match="set KOE_CACHE_DIR or cache_dir"):
        prepare(_model(site), blocker / "cache")


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KOE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "koe"
    monkeypatch.setenv("KOE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


@pytest.mark.models
def test_the_multilingual_whisper_parts_join_to_their_published_hash(tmp_path: Path) -> None:
    from koe.engines._whisper_models import WHISPER_BASE, multilingual_problem

    assert multilingual_problem() is None
    target = prepare(WHISPER_BASE, tmp_path)
    assert (target / "model.bin").stat().st_size == 145_217_532
    digest = hashlib.sha256()
    with (target / "model.bin").open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert {p.name for p in target.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        MANIFEST,
    }
