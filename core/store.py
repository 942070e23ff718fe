"""The run store: an SQLite index of runs plus one directory per run, written atomically.

Layout under the store root::

    index.sqlite                  runs(id, owner, label, model, data, status, error, created_at, updated_at, pid)
    runs/<id>/recipe.yaml         what was asked
    runs/<id>/inputs/             uploaded model / data files for this run
    runs/<id>/progress.json       the latest progress event and the variants finished so far
    runs/<id>/variants/<name>/    artifacts
    runs/<id>/results.json        results (rewritten atomically as variants finish)
    runs/<id>/manifest.json       written last: the run is complete when this exists

A run whose worker died mid-way (server restart, kill) is shown as ``interrupted``; earlier runs are intact.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import BadInputError
from core.pipeline import write_atomic

ACTIVE = ("queued", "running")
FINAL = ("completed", "failed", "cancelled", "interrupted")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, label TEXT, model TEXT, data TEXT,
    status TEXT NOT NULL, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, created_at);
"""


def default_root() -> Path:
    """FEATHERWEIGHT_HOME, else ~/.featherweight."""
    return Path(os.environ.get("FEATHERWEIGHT_HOME") or Path.home() / ".featherweight")


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
    """Runs on disk. Safe to share between threads; each call opens its own SQLite connection."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_root()
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.root / "index.sqlite", timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        if not run_id or any(c not in "0123456789abcdefghijklmnopqrstuvwxyz-" for c in run_id):
            raise BadInputError(f"invalid run id {run_id!r}")
        return self.root / "runs" / run_id

    def create(self, owner: str, recipe_yaml: str, *, label: str = "", model: str = "",
               data: str | None = None) -> RunRecord:
        """Register a new queued run and write its recipe."""
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        directory = self.run_dir(run_id)
        (directory / "inputs").mkdir(parents=True)
        write_atomic(directory / "recipe.yaml", recipe_yaml)
        now = time.time()
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (run_id, owner, label or model, model, data, "queued", None, now, now, None))
        return self.get(run_id)

    def get(self, run_id: str) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
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

    def set_status(self, run_id: str, status: str, error: str | None = None, pid: int | None = None) -> None:
        with self._lock, self._connect() as db:
            db.execute("UPDATE runs SET status=?, error=?, updated_at=?, pid=COALESCE(?, pid) WHERE id=?",
                       (status, error, time.time(), pid, run_id))
        if status in FINAL:
            self._write_manifest(run_id, status, error)

    def _write_manifest(self, run_id: str, status: str, error: str | None) -> None:
        directory = self.run_dir(run_id)
        files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json")
        write_atomic(directory / "manifest.json",
                     json.dumps({"id": run_id, "status": status, "error": error, "files": files,
                                 "finished_at": time.time()}, indent=2))

    def delete(self, run_id: str) -> None:
        import shutil

        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))

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

    def recover(self) -> list[str]:
        """Mark runs left queued/running by a dead server or worker as interrupted; return their ids."""
        interrupted = []
        for record in self.list(limit=100000):
            if record.status in ACTIVE and not _alive(record.pid):
                self.set_status(record.id, "interrupted", "the server stopped before this run finished")
                interrupted.append(record.id)
        return interrupted


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie or a reused pid of another program is not our worker
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"python" in fh.read()
    except OSError:
        return True
