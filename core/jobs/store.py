"""The run store: an SQLite index of runs plus one directory per run, written atomically.

Layout under the store root::

    index.sqlite                  runs(id, owner, label, model, data, status, error, created_at, updated_at, pid)
    runs/<id>/recipe.yaml         what was asked
    runs/<id>/inputs/             uploaded model / data files for this run
    runs/<id>/progress.json       the latest progress event and the variants finished so far
    runs/<id>/variants/<name>/    artifacts
    runs/<id>/results.json        results (rewritten atomically as variants finish)
    runs/<id>/manifest.json       written last: the run is final when this exists
    locks/core-<n>.lock           held (flock) by the process timing on core n (`RunStore.timing_cores`)
    logs/<id>.log                 the worker's output (the server log's, never the user's)

Every file is written to a temporary name beside it and ``os.replace``d, so a reader never sees half a file and
a process killed mid-write leaves the previous version. A run whose worker died mid-way (server restart, kill)
is started over once after `recover` when its server can run it again (else shown as ``interrupted``); earlier
runs are never touched. One server (one `JobRunner`) owns a
store at a time. Disk: `owner_bytes` measures what an owner keeps (the job runner's quota), and a failed run keeps
only its records (`discard_outputs`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no cross-process core lock; timing phases run unserialized
    fcntl = None
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import BadInputError
from core.io.disk import remove, tree_bytes
from core.io.files import write_atomic
from core.io.sandbox import WORKER_MARKER
from core.spec.configs import RUN_ID_CHARS

ACTIVE = ("queued", "running")
# How often a timing phase waiting for a core checks again: a phase lasts seconds, so a tenth of a second costs
# nothing and keeps a cancel prompt.
TIMING_LOCK_POLL_S = 0.1
FINAL = ("completed", "failed", "cancelled", "interrupted")
STATUSES = ACTIVE + FINAL
MANIFEST = "manifest.json"
# The owner of the reference gallery's runs (core.jobs.gallery): every visitor may read them, none may change them.
# Browser sessions are "browser-<digest>" or "session-<hex>", so no visitor is this owner.
GALLERY_OWNER = "gallery"
INDEX_FILE = "index.sqlite"
RECORD_SUFFIXES = (".json", ".yaml")  # what a failed run keeps: its recipe, results so far, progress, manifest
RECORD_MAX_BYTES = 2**20
LOG_TAIL_KEPT = 64 * 1024  # of a failed run's log (the error's context for the operator)
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, label TEXT, model TEXT, data TEXT,
    status TEXT NOT NULL, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, created_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


def default_root() -> Path:
    """FEATHERWEIGHT_HOME, else ~/.featherweight; absolute (``~`` expanded, a relative one against the working
    directory), so workers started elsewhere share the same store."""
    return Path(os.environ.get("FEATHERWEIGHT_HOME") or Path.home() / ".featherweight").expanduser().absolute()


@dataclass(frozen=True)
class RunRecord:
    """One row of the run index."""

    id: str
    owner: str
    label: str
    model: str
    data: str | None
    status: str
    error: str | None
    created_at: float
    updated_at: float
    pid: int | None

    def to_dict(self) -> dict:
        return asdict(self)


class RunStore:
    """Runs on disk. Safe to share between threads and processes; each call opens its own SQLite connection."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_root()
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.root / INDEX_FILE, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not run_id or set(run_id) - RUN_ID_CHARS:
            raise BadInputError(f"invalid run id {run_id!r}")
        return self.root / "runs" / run_id

    def create(self, owner: str, recipe_yaml: str, *, label: str = "", model: str = "",
               data: str | None = None) -> RunRecord:
        """Register a new queued run and write its recipe."""
        if not isinstance(owner, str) or not owner:
            raise BadInputError("a run needs an owner")
        for _ in range(16):
            run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
            directory = self.run_dir(run_id)
            try:
                directory.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 16 collisions of 32 random bits in one second
            raise BadInputError("could not allocate a run id; try again")
        (directory / "inputs").mkdir()
        write_atomic(directory / "recipe.yaml", recipe_yaml)
        now = time.time()
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (run_id, owner, label or model, model, data, "queued", None, now, now, None))
        return self.get(run_id)

    def get(self, run_id: str, owner: str | None = None) -> RunRecord:
        """The run's record; with `owner`, only if it is that owner's (else "no run", as if it did not exist)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise BadInputError(f"no run {run_id!r}")
        return RunRecord(**dict(row))

    def list(self, owner: str | None = None, limit: int = 200) -> list[RunRecord]:
        """Runs, newest first; only `owner`'s when given."""
        with self._connect() as db:
            if owner is None:
                rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE owner=? ORDER BY created_at DESC LIMIT ?",
                                  (owner, limit)).fetchall()
        return [RunRecord(**dict(r)) for r in rows]

    def active(self) -> list[RunRecord]:
        """Every queued or running run of every owner, oldest first (the order the queue serves them)."""
        marks = ",".join("?" * len(ACTIVE))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created_at",
                              tuple(ACTIVE)).fetchall()
        return [RunRecord(**dict(r)) for r in rows]

    def set_status(self, run_id: str, status: str, error: str | None = None, pid: int | None = None, *,
                   force: bool = False) -> bool:
        """Move a run to `status`; a final status writes manifest.json first, then the index.

        A run that is already final keeps its status (a late reaper cannot turn a completed run into a failed
        one) unless `force`.

        Returns:
            Whether the status changed.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(STATUSES)}")
        with self._lock:
            if not force:
                current = self.get(run_id).status
                if current in FINAL:
                    return False
            if status in FINAL:
                self._write_manifest(run_id, status, error)
            with self._connect() as db:
                db.execute("UPDATE runs SET status=?, error=?, updated_at=?, pid=COALESCE(?, pid) WHERE id=?",
                           (status, error, time.time(), pid, run_id))
        return True

    def _write_manifest(self, run_id: str, status: str, error: str | None) -> None:
        directory = self.run_dir(run_id)
        files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)
        write_atomic(directory / MANIFEST,
                     json.dumps({"id": run_id, "status": status, "error": error, "files": files,
                                 "finished_at": time.time()}, indent=2))

    def manifest(self, run_id: str) -> dict | None:
        """The run's manifest.json (present once the run is final), or None."""
        try:
            data = json.loads((self.run_dir(run_id) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def delete(self, run_id: str, owner: str | None = None) -> None:
        """Delete a final run (with `owner`, only that owner's).

        Raises:
            BadInputError: no such run (of this owner), or it is still queued or running.
        """
        import shutil

        record = self.get(run_id, owner)
        if record.status in ACTIVE:
            raise BadInputError(f"run {run_id} is still {record.status}; cancel it first")
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    @contextmanager
    def timing_cores(self, candidates: list, count: int, should_stop: Callable[[], bool] = lambda: False,
                     on_wait: Callable[[str], None] | None = None) -> Iterator[list | None]:
        """The cross-process lock of timing phases (a `core.measure.timing` core gate): hold `count` of the
        `candidates` cores (in order of preference), so that only one timing phase runs on a core at a time across
        every worker of this store. Builds, calibration and training take no lock and stay concurrent.

        Waits while the cores are taken (telling `on_wait` once). Each core is an flock() on locks/core-N.lock:
        the kernel releases it when the block ends or the holding process dies, so a killed worker never leaves
        a core locked.

        Yields:
            The cores held, or None when `should_stop` turned true while waiting.
        """
        held: list[tuple[int, int]] = []
        if fcntl is not None:
            folder = self.root / "locks"
            folder.mkdir(exist_ok=True)
            told = False
            while True:
                for core in candidates:
                    fd = os.open(folder / f"core-{int(core)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        os.close(fd)
                        continue
                    held.append((int(core), fd))
                    if len(held) == count:
                        break
                if len(held) == count:
                    break
                _release(held)
                held = []
                if should_stop():
                    break
                if on_wait is not None and not told:
                    told = True
                    on_wait(f"another job is timing on core{'s' if count > 1 else ''} "
                            f"{', '.join(str(c) for c in candidates)}")
                time.sleep(TIMING_LOCK_POLL_S)
        cores = [core for core, _ in held] if fcntl is not None else list(candidates[:count])
        try:
            yield cores if len(cores) == count else None
        finally:
            _release(held)

    def results(self, run_id: str) -> dict | None:
        """The run's results.json (partial while it runs), or None before the baseline is measured."""
        path = self.run_dir(run_id) / "results.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def progress(self, run_id: str) -> dict | None:
        path = self.run_dir(run_id) / "progress.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_progress(self, run_id: str, event: dict) -> None:
        write_atomic(self.run_dir(run_id) / "progress.json", json.dumps(event, default=str))

    def owner_bytes(self, owner: str) -> int:
        """Bytes the owner's runs keep on disk: their folders (uploads, artifacts, results) and their logs."""
        total = 0
        for record in self.list(owner, limit=1_000_000):
            total += tree_bytes(self.run_dir(record.id)) + tree_bytes(self.root / "logs" / f"{record.id}.log")
        return total

    def clear_outputs(self, run_id: str, keep: tuple[str, ...]) -> None:
        """Remove everything in a run's folder but the top-level entries named in `keep` (what it was given), so
        that the run can start over in it."""
        for path in self.run_dir(run_id).iterdir():
            if path.name not in keep:
                remove(path)

    def discard_outputs(self, run_id: str) -> int:
        """Remove what a failed run wrote and was given (uploads, model files, anything but its small JSON / YAML
        records), and cut its log to the last 64 KiB: a refusal or a failure leaves nothing that fills the disk.

        Returns:
            The bytes freed.
        """
        directory = self.run_dir(run_id)
        before = tree_bytes(directory)
        for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_symlink() or path.is_file():
                if path.suffix not in RECORD_SUFFIXES or path.stat().st_size > RECORD_MAX_BYTES or path.is_symlink():
                    remove(path)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        log = self.root / "logs" / f"{run_id}.log"
        try:
            if log.stat().st_size > LOG_TAIL_KEPT:
                with open(log, "rb") as fh:
                    fh.seek(-LOG_TAIL_KEPT, os.SEEK_END)
                    tail = fh.read()
                write_atomic(log, tail)
        except OSError:
            pass
        return before - tree_bytes(directory)

    def recover(self, keep_queued=None, restart=None) -> list[str]:
        """After a restart: settle runs a dead server or worker left queued or running; return the ids of those
        settled as final.

        A run whose manifest says it finished takes that status (the server died between the manifest and the
        index). Otherwise it becomes ``interrupted``, except a queued run for which `keep_queued(record)` is true
        and a running one for which `restart(record)` is true (it has cleared what the run wrote): those are
        ``queued`` again, and the job runner queues them. A worker still alive from a dead server (adopted by init,
        so nobody will collect its result) is killed first. Leftover temporary files are removed. Runs that are
        already final are not touched.
        """
        settled = []
        for record in self.list(limit=1_000_000):
            if record.status not in ACTIVE:
                continue
            if record.status == "queued" and keep_queued is not None and keep_queued(record):
                continue
            if _alive(record.pid):
                if not _orphaned(record.pid):
                    continue  # another live server's worker
                try:
                    os.kill(record.pid, signal.SIGKILL)
                except OSError:
                    pass
            manifest = self.manifest(record.id)
            if manifest and manifest.get("status") in FINAL:
                self.set_status(record.id, manifest["status"], manifest.get("error"))
            elif record.status == "running" and restart is not None and restart(record):
                self.set_status(record.id, "queued")
                continue
            elif record.status == "queued":
                self.set_status(record.id, "interrupted", "the server stopped before this run started")
            else:
                self.set_status(record.id, "interrupted", "the server stopped before this run finished")
            for tmp in self.run_dir(record.id).rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            settled.append(record.id)
        return settled


def _release(held: list) -> None:
    for _, fd in held:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _alive(pid: int | None) -> bool:
    """Whether `pid` is one of our workers, still running (a zombie or a reused id of another program is not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: a reused id, not our worker
    cmdline = _cmdline(pid)
    if cmdline is None:
        return True  # no /proc: trust the signal check
    if not cmdline:
        return False  # a zombie has an empty command line
    return WORKER_MARKER.encode() in cmdline


def _orphaned(pid: int) -> bool:
    """Whether a live worker's parent (the server that started it) is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if ppid in (0, 1):
        return True
    parent = _cmdline(ppid)  # a subreaper (tini, systemd --user) adopted it: not a Python server
    return parent is not None and b"python" not in parent
