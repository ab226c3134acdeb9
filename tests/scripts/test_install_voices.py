"""scripts/install-voices: voice styles are copied out of the kokoro-js tarball only when the tarball and each voice
match their pinned SHA-256s, all or nothing, once; without npm it warns and leaves Chinese to a Japanese style.
No network: the tarballs here are built by the tests (the real one is fetched by `make setup`)."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-voices"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("install_voices", str(SCRIPT))
    spec = importlib.util.spec_from_loader("install_voices", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


install = _load()


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(f"package/voices/{name}.bin")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def _voices(*names: str) -> tuple[dict[str, bytes], dict[str, str]]:
    blobs = {name: name.encode() * 1000 for name in names}
    return blobs, {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}


def test_the_pinned_voices_are_the_chinese_ones_but_xiaoni() -> None:
    assert sorted(install.VOICES) == [
        "zf_xiaobei", "zf_xiaoxiao", "zf_xiaoyi", "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang",
    ]  # fmt: skip
    assert all(len(sha) == 64 for sha in [install.TARBALL_SHA256, *install.VOICES.values()])


def test_a_tarball_that_does_not_match_its_pin_is_refused(tmp_path: Path) -> None:
    blobs, _pins = _voices("zf_xiaoxiao")
    tarball = _tarball(tmp_path / "kokoro-js-1.2.1.tgz", blobs)
    with pytest.raises(install.Refused, match="not the pinned"):
        install.verify_tarball(tarball)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(tmp_path / "voices"), "--tarball", str(tarball)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "refusing to install" in done.stderr
    assert not (tmp_path / "voices").exists()


def test_voices_are_copied_when_each_matches_its_pin(tmp_path: Path) -> None:
    blobs, pins = _voices("zf_a", "zm_b")
    tarball = _tarball(tmp_path / "voices.tgz", {**blobs, "zf_other": b"not asked for"})
    install.verify_tarball(tarball, hashlib.sha256(tarball.read_bytes()).hexdigest())
    dest = tmp_path / "share" / "koe" / "voices" / "kokoro"
    assert install.missing(dest, pins) == ["zf_a", "zm_b"]
    assert install.extract(tarball, dest, pins) == ["zf_a", "zm_b"]
    assert sorted(path.name for path in dest.iterdir()) == ["zf_a.bin", "zm_b.bin"]
    assert (dest / "zf_a.bin").read_bytes() == blobs["zf_a"]
    assert install.missing(dest, pins) == []


def test_one_corrupt_voice_and_nothing_is_installed(tmp_path: Path) -> None:
    blobs, pins = _voices("zf_a", "zm_b")
    tarball = _tarball(tmp_path / "voices.tgz", {**blobs, "zm_b": b"tampered"})
    with pytest.raises(install.Refused, match=r"package/voices/zm_b\.bin has SHA-256 .* not the pinned"):
        install.extract(tarball, tmp_path / "voices", pins)
    assert not (tmp_path / "voices").exists()
    with pytest.raises(install.Refused, match=r"has no package/voices/zf_c\.bin"):
        install.extract(tarball, tmp_path / "voices", {"zf_a": pins["zf_a"], "zf_c": "0" * 64})


def test_a_damaged_installed_voice_is_installed_again(tmp_path: Path) -> None:
    blobs, pins = _voices("zf_a")
    dest = tmp_path / "voices"
    install.extract(_tarball(tmp_path / "voices.tgz", blobs), dest, pins)
    (dest / "zf_a.bin").write_bytes(b"truncated")
    assert install.missing(dest, pins) == ["zf_a"]


def test_when_every_voice_is_there_nothing_is_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "voices"
    dest.mkdir()
    blobs, pins = _voices("zf_a")
    (dest / "zf_a.bin").write_bytes(blobs["zf_a"])
    monkeypatch.setattr(install, "VOICES", pins)
    monkeypatch.setattr(install, "npm_pack", lambda _workdir: pytest.fail("npm must not run"))
    assert install.main(["--dest", str(dest)]) == 0


def test_without_npm_it_warns_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    assert install.main(["--dest", str(tmp_path / "voices")]) == 0
    assert "npm is not installed" in capsys.readouterr().err
    assert not (tmp_path / "voices").exists()
