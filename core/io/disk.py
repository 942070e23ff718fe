"""Bounded disk: the size of a folder, least-recently-used eviction for the caches, per-upload staging folders
that vanish on any refusal, and the caps (`DiskLimits`) that a shared server sets for each."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError

STAGING_PREFIX = ".staging-"  # <root>/.staging-<pid>-<token>: one upload's files until they are accepted
MIB = 2**20


@dataclass(frozen=True)
class DiskLimits:
    """What a server keeps on disk at most. Every cap is in bytes; FEATHERWEIGHT_*_MB variables set them."""

    # 4 GiB holds eight checkpoints at the 512 MiB upload cap; the cache is rebuilt from an upload when needed.
    decoder_cache_bytes: int = 4096 * MIB
    # The samples' ONNX exports (digits ~0.6 MB, shapes-cnn ~4 MB, minilm ~90 MB): only a torch or onnx upgrade
    # adds new ones, so 2 GiB never evicts a current one.
    sample_cache_bytes: int = 2048 * MIB
    # Graph views (one folder of JSON per variant drawn, ~0.1-5 MB); an evicted view is rebuilt on the next visit.
    view_cache_bytes: int = 512 * MIB
    # Each owner's runs: uploads, artifacts and logs. A digits-cnn run of the default recipe takes ~3 MB; a
    # decoder run with its upload up to ~1.5 GB.
    owner_bytes: int = 2048 * MIB

    VARIABLES = {"decoder_cache_bytes": "FEATHERWEIGHT_DECODER_CACHE_MB",
                 "sample_cache_bytes": "FEATHERWEIGHT_SAMPLE_CACHE_MB",
                 "view_cache_bytes": "FEATHERWEIGHT_VIEW_CACHE_MB", "owner_bytes": "FEATHERWEIGHT_OWNER_DISK_MB"}

    def __post_init__(self):
        for name in self.VARIABLES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BadInputError(f"DiskLimits.{name}={value!r} must be a positive number of bytes")

    @classmethod
    def from_env(cls) -> "DiskLimits":
        """The defaults, overridden by FEATHERWEIGHT_DECODER_CACHE_MB, _SAMPLE_CACHE_MB, _VIEW_CACHE_MB and
        _OWNER_DISK_MB.

        Raises:
            BadInputError: a variable that is not a positive whole number of MiB (named).
        """
        values = {}
        for name, var in cls.VARIABLES.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                if not raw.isdigit() or int(raw) <= 0:
                    raise BadInputError(f"{var}={raw!r} must be a positive whole number of MiB")
                values[name] = int(raw) * MIB
        return cls(**values)


def tree_bytes(path: str | Path) -> int:
    """Bytes of the regular files under `path` (the file's own size for a file; 0 when it is gone). Links are not
    followed, so a link cannot make a folder count another's files."""
    path = Path(path)
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    except OSError:
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += stat.st_size
    return total


def last_used(path: Path) -> float:
    """When `path` was last used: its modification time (`mark_used` sets it; 0 when it is gone)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def mark_used(path: Path) -> None:
    """Record that `path` (a cached file or folder) was just used, for the least-recently-used order."""
    try:
        os.utime(path)
    except OSError:
        pass


def remove(path: Path) -> None:
    """Delete a file or a folder tree; a path already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def evict_least_recent(entries, max_bytes: int, *, keep=(), in_use=lambda path: False) -> list[Path]:
    """Delete the least recently used of `entries` (files or folders) until they total at most `max_bytes`.

    Args:
        entries: the cache's entries.
        max_bytes: the cap.
        keep: entries never evicted (the one just added: it stays even when it alone passes the cap).
        in_use: a predicate for entries another process is using (skipped).

    Returns:
        The entries removed, oldest first.
    """
    keep = {Path(p) for p in keep}
    sized = [(last_used(Path(p)), Path(p), tree_bytes(p)) for p in entries]
    total = sum(size for _, _, size in sized)
    removed = []
    for _, path, size in sorted(sized, key=lambda row: row[0]):
        if total <= max_bytes:
            break
        if path in keep or in_use(path):
            continue
        remove(path)
        total -= size
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts as gone once reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_staging(root: str | Path) -> list[Path]:
    """Remove staging folders under `root` whose process has died (killed mid-extraction: it could not clean up)."""
    removed = []
    try:
        children = list(Path(root).iterdir())
    except OSError:
        return removed
    for child in children:
        if not child.name.startswith(STAGING_PREFIX):
            continue
        pid = child.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            remove(child)
            removed.append(child)
    return removed


@contextlib.contextmanager
def staging_folder(root: str | Path):
    """A fresh folder ``<root>/.staging-<pid>-<token>`` for one upload's files, removed when the block raises
    (any refusal or error). On success the caller moves it into place (then nothing is left to remove).

    Yields:
        The folder's path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sweep_staging(root)
    folder = root / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
    folder.mkdir()
    try:
        yield folder
    finally:
        if folder.exists():  # refused, or failed: nothing of the upload stays
            remove(folder)


__all__ = ["DiskLimits", "STAGING_PREFIX", "evict_least_recent", "last_used", "mark_used", "pid_alive", "remove",
           "staging_folder", "sweep_staging", "tree_bytes"]
