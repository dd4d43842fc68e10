"""The model cache: built artifacts (quantized models, optimized graphs, compiled blobs, calibration tables)
keyed by everything that changes them, so a changed setting builds a new entry and never reuses an old one.

An entry is a folder ``<root>/<model stem>-<model hash>/<kind>-<key>/`` holding the artifact's files and a
``manifest.json`` written last: the full key fields and each file's size and SHA-256. An entry is built in a
temporary folder and renamed into place (atomic on one file system) while holding a file lock, so two
processes building the same entry build it once; a reader that finds a file missing, truncated or altered
logs it and rebuilds the entry.

Where: ``<model_dir>/.cache/`` for a user's writable model directory, so the artifacts travel with the model;
the user cache (``$HPINFER_CACHE_DIR``, default ``~/.cache/hpinfer``) for models shipped inside installed
packages or in read-only folders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import site
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from ..errors import ConfigError

log = logging.getLogger("hpinfer.runtime")

CACHE_FORMAT = 1  # bump when the layout or the way artifacts are built changes: old entries are then never read
MANIFEST = "manifest.json"
ENV_CACHE_DIR = "HPINFER_CACHE_DIR"


def user_cache_dir() -> Path:
    from platformdirs import user_cache_dir as platform_cache_dir

    return Path(os.environ.get(ENV_CACHE_DIR) or platform_cache_dir("hpinfer", appauthor=False))


def _package_dirs() -> List[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    return [Path(d).resolve() for d in dirs]


def _writable(directory: Path) -> bool:
    """Create and remove a probe file: os.access says yes to root even on a read-only mount."""
    probe = directory / f".hpinfer-probe-{uuid.uuid4().hex}"
    try:
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def cache_root(model_path: Path) -> Path:
    """``<model_dir>/.cache`` for a writable user model directory, else the user cache dir."""
    model_dir = model_path.resolve().parent
    shipped = any(model_dir.is_relative_to(d) for d in _package_dirs())
    if not shipped and _writable(model_dir):
        return model_dir / ".cache"
    return user_cache_dir()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's SHA-256, remembered while its size and modification time stay the same."""
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def key_of(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path
    manifest: Dict[str, Any]
    built: bool  # built by this call (False: found valid in the cache)
    seconds: float  # time spent building, or checking the entry

    @property
    def info(self) -> Dict[str, Any]:
        """What the builder reported (e.g. the accuracy drift of a reduced precision)."""
        return self.manifest.get("info", {})


def _problem(entry_dir: Path, fields: Mapping[str, Any]) -> Optional[str]:
    """None if the entry is complete and intact for ``fields``, else what is wrong with it."""
    try:
        manifest = json.loads((entry_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest (an interrupted build)"
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("fields") != json.loads(json.dumps(fields)):
        return "manifest is for other settings"
    for name, expected in manifest.get("files", {}).items():
        path = entry_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} is truncated or altered ({path.stat().st_size} bytes, expected {expected['size']})"
        if _sha256_cached(str(path), expected["size"], path.stat().st_mtime_ns) != expected["sha256"]:
            return f"{name} fails its checksum"
    return None


def _describe_files(directory: Path) -> Dict[str, Dict[str, Any]]:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return files


class ModelCache:
    """Entries for the models whose artifacts live under one root."""

    def __init__(self, root: Path):
        self.root = root

    def entry_dir(self, model_path: Path, kind: str, fields: Mapping[str, Any]) -> Path:
        return self.root / f"{model_path.stem}-{file_sha256(model_path)[:12]}" / f"{kind}-{key_of(fields)[:24]}"

    def get_or_build(
        self, entry_dir: Path, fields: Mapping[str, Any], build: Callable[[Path], Mapping[str, Any]], label: str,
        stale: Optional[str] = None,
    ) -> Entry:
        """The valid entry at ``entry_dir``, built first (once, whoever else is trying) if missing or corrupt.

        ``build(folder)`` writes the artifact's files into ``folder`` and returns facts to keep in the manifest.
        ``stale``: why an entry that is intact as far as its manifest tells could not be used (an engine that
        fails to deserialize it): it is rebuilt.
        """
        from filelock import FileLock, Timeout

        start = time.perf_counter()
        if stale is None and entry_dir.is_dir() and _problem(entry_dir, fields) is None:
            return Entry(entry_dir, _read_manifest(entry_dir), False, time.perf_counter() - start)
        try:
            entry_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot write the model cache at {entry_dir.parent} ({err.strerror or err}); "
                f"set {ENV_CACHE_DIR} to a writable folder"
            ) from None
        lock = FileLock(str(entry_dir.parent / f".{entry_dir.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: waiting for another process that is building %s", label, entry_dir)
            lock.acquire()
        try:
            if entry_dir.is_dir():
                problem = stale or _problem(entry_dir, fields)
                if problem is None:  # another process built it while we waited
                    return Entry(entry_dir, _read_manifest(entry_dir), False, time.perf_counter() - start)
                log.warning("%s: cache entry %s is unusable (%s); rebuilding it", label, entry_dir, problem)
                shutil.rmtree(entry_dir)
            manifest = self._build(entry_dir, fields, build, label)
        finally:
            lock.release()
        return Entry(entry_dir, manifest, True, time.perf_counter() - start)

    def _build(self, entry_dir: Path, fields, build, label: str) -> Dict[str, Any]:
        staging = entry_dir.parent / f".tmp-{entry_dir.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            start = time.perf_counter()
            info = dict(build(staging))
            info["build_seconds"] = round(time.perf_counter() - start, 3)
            manifest = {
                "format": CACHE_FORMAT, "label": label, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "fields": fields, "files": _describe_files(staging), "info": info,
            }
            _write_json_atomic(staging / MANIFEST, manifest)
            os.rename(staging, entry_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("%s: built cache entry %s in %.2fs", label, entry_dir, info["build_seconds"])
        return json.loads(json.dumps(manifest))

    def entries(self) -> Iterator["CachedEntry"]:
        for manifest_path in sorted(self.root.glob(f"*/*/{MANIFEST}")):
            yield CachedEntry.read(manifest_path.parent)

    def clear(self, label: Optional[str] = None) -> List[Path]:
        """Remove every entry (or those of one model), with leftovers of interrupted builds; returns what went."""
        removed = []
        for entry in sorted(self.root.glob("*/*")):
            if entry.is_dir() and (label is None or CachedEntry.read(entry).label == label):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        for model_dir in self.root.glob("*"):
            if model_dir.is_dir() and not any(p.is_dir() for p in model_dir.iterdir()):
                shutil.rmtree(model_dir, ignore_errors=True)  # only lock files were left
        return removed


@dataclass(frozen=True)
class CachedEntry:
    """One entry as ``hpinfer cache list`` shows it."""

    path: Path
    label: str
    kind: str
    size: int
    created: str
    problem: Optional[str]

    @classmethod
    def read(cls, path: Path) -> "CachedEntry":
        try:
            manifest = _read_manifest(path)
        except (OSError, ValueError) as err:
            return cls(path, "?", path.name.rsplit("-", 1)[0], 0, "?", f"unreadable manifest ({err})")
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        problem = _problem(path, manifest.get("fields", {}))
        return cls(path, manifest.get("label", "?"), path.name.rsplit("-", 1)[0], size, manifest.get("created", "?"), problem)


def _read_manifest(entry_dir: Path) -> Dict[str, Any]:
    return json.loads((entry_dir / MANIFEST).read_text(encoding="utf-8"))


def _write_json_atomic(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
