"""The run store: one directory per run, atomic files, manifest last, owners apart, recovery after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from core.errors import BadInputError
from core.io.sandbox import WORKER_MARKER
from core.jobs.store import RunStore
from core.io.files import write_atomic

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "store")


def _files(store, run_id):
    directory = store.run_dir(run_id)
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_runs_are_listed_per_owner_newest_first(store):
    """Each owner sees only their runs, newest first; everyone's runs are listed without an owner."""
    a1 = store.create("alice", "variants: []\n", model="sample:digits-mlp")
    time.sleep(0.01)
    b1 = store.create("bob", "variants: []\n", model="sample:digits-cnn")
    time.sleep(0.01)
    a2 = store.create("alice", "variants: []\n", model="sample:digits-cnn", label="second")
    assert [r.id for r in store.list("alice")] == [a2.id, a1.id]
    assert [r.id for r in store.list("bob")] == [b1.id]
    assert [r.id for r in store.list()] == [a2.id, b1.id, a1.id]
    assert a1.status == "queued" and a2.label == "second" and a1.label == "sample:digits-mlp"
    assert (store.run_dir(a1.id) / "recipe.yaml").read_text() == "variants: []\n"
    assert (store.run_dir(a1.id) / "inputs").is_dir()


def test_run_ids_and_owners_are_checked(store):
    """Run ids cannot name paths; another owner's run is "no run", as if it did not exist."""
    run = store.create("alice", "variants: []\n")
    for bad in ("../escape", "A", "", "x/y", "..", None):
        with pytest.raises(BadInputError, match="invalid run id"):
            store.run_dir(bad)
    with pytest.raises(BadInputError, match="no run"):
        store.get(run.id, owner="mallory")
    with pytest.raises(BadInputError, match="no run"):
        store.delete(run.id, owner="mallory")
    assert store.get(run.id, owner="alice").id == run.id


def test_final_status_is_sticky_and_the_manifest_comes_first(store):
    """A final status writes manifest.json (listing the run's files) and cannot be overwritten by a late reaper."""
    run = store.create("alice", "variants: []\n")
    write_atomic(store.run_dir(run.id) / "results.json", json.dumps({"variants": []}))
    assert store.set_status(run.id, "running", pid=os.getpid())
    assert store.manifest(run.id) is None
    assert store.set_status(run.id, "completed")
    manifest = store.manifest(run.id)
    assert manifest["status"] == "completed" and "results.json" in manifest["files"]
    assert "manifest.json" not in manifest["files"]
    assert not store.set_status(run.id, "failed", "late")
    assert store.get(run.id).status == "completed"
    assert store.set_status(run.id, "failed", "forced", force=True) and store.get(run.id).error == "forced"
    with pytest.raises(ValueError, match="unknown run status"):
        store.set_status(run.id, "done")


def test_delete_refuses_active_runs(store):
    """An active run cannot be deleted under its worker; a final one is removed with its directory."""
    run = store.create("alice", "variants: []\n")
    with pytest.raises(BadInputError, match="cancel it first"):
        store.delete(run.id, owner="alice")
    store.set_status(run.id, "cancelled")
    store.delete(run.id, owner="alice")
    assert not store.run_dir(run.id).exists() and store.list("alice") == []


def test_atomic_write_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    """A write that fails before the rename leaves the previous content and no temporary file."""
    target = tmp_path / "results.json"
    write_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new" * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


WRITER = """
import sys
from pathlib import Path
from core.jobs.store import write_atomic
target = Path(sys.argv[1])
blocks = [b"A" * (4 << 20), b"B" * (4 << 20)]
i = 0
while True:
    write_atomic(target, blocks[i % 2])
    if i == 1:
        print("writing", flush=True)
    i += 1
"""


def test_a_writer_killed_mid_write_never_leaves_half_a_file(tmp_path):
    """SIGKILL at an arbitrary moment of repeated 4 MiB writes: the file is always one whole version."""
    target = tmp_path / "artifact.bin"
    write_atomic(target, b"A" * (4 << 20))
    for delay in (0.0, 0.05, 0.13):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=os.getcwd(),
                                  stdout=subprocess.PIPE)
        assert writer.stdout.readline() == b"writing\n"
        time.sleep(delay)
        writer.kill()
        writer.wait()
        content = target.read_bytes()
        assert content in (b"A" * (4 << 20), b"B" * (4 << 20))


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Threads rewriting the same file (progress.json) each use their own temporary file."""
    target = tmp_path / "progress.json"
    errors = []

    def writer(n):
        try:
            for i in range(40):
                write_atomic(target, json.dumps({"writer": n, "i": i, "pad": "x" * 2000}))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads(target.read_text())["i"] == 39
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def _marker_process(*, orphan: bool) -> int:
    """A sleeping process with the worker marker on its command line; as an orphan, its parent has exited."""
    code = "import time; time.sleep(60)"
    if not orphan:
        return subprocess.Popen([sys.executable, "-c", code, WORKER_MARKER]).pid
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}" {WORKER_MARKER} >/dev/null 2>&1 & echo $!'],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_recover_settles_what_a_dead_server_left(store):
    """After a restart: runs of dead workers become interrupted, a run whose manifest says it finished keeps that,
    a live worker of a live server is left alone, an orphaned worker is killed, and final runs do not change."""
    done = store.create("alice", "variants: []\n")
    write_atomic(store.run_dir(done.id) / "results.json", "{}")
    store.set_status(done.id, "completed")
    before = _files(store, done.id)

    queued = store.create("bob", "variants: []\n")
    dead = store.create("carol", "variants: []\n")
    store.set_status(dead.id, "running", pid=_dead_pid())
    write_atomic(store.run_dir(dead.id) / "results.json", "{}")
    (store.run_dir(dead.id) / ".results.json.123.tmp").write_bytes(b"half")
    finished = store.create("dave", "variants: []\n")
    store.set_status(finished.id, "running", pid=_dead_pid())
    store._write_manifest(finished.id, "completed", None)  # the server died between the manifest and the index
    reused = store.create("erin", "variants: []\n")
    store.set_status(reused.id, "running", pid=os.getpid())  # a live pid that is not a worker
    live_pid = _marker_process(orphan=False)
    orphan_pid = _marker_process(orphan=True)
    live = store.create("frank", "variants: []\n")
    store.set_status(live.id, "running", pid=live_pid)
    orphan = store.create("grace", "variants: []\n")
    store.set_status(orphan.id, "running", pid=orphan_pid)
    try:
        time.sleep(0.3)  # let the orphan's shell exit and the sleeper start
        settled = set(RunStore(store.root).recover())
        assert settled == {queued.id, dead.id, finished.id, reused.id, orphan.id}
        assert store.get(queued.id).status == "interrupted" and "started" in store.get(queued.id).error
        assert store.get(dead.id).status == "interrupted" and "finished" in store.get(dead.id).error
        assert store.manifest(dead.id)["status"] == "interrupted"
        assert not list(store.run_dir(dead.id).glob(".*.tmp"))
        assert store.get(finished.id).status == "completed"
        assert store.get(reused.id).status == "interrupted"
        assert store.get(live.id).status == "running"
        assert store.get(orphan.id).status == "interrupted"
        _wait_dead(orphan_pid)
        assert store.get(done.id).status == "completed" and _files(store, done.id) == before
    finally:
        for pid in (live_pid, orphan_pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        subprocess.run(["true"])


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().split(b") ")[1][:1] == b"Z":
                    return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still alive")
