"""Jobs: limits, admission, several owners at once, and nothing lost when a worker or the server is killed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core.errors import BadInputError
from core.jobs.queue import JobRunner, _read_outcome
from core.io.sandbox import ResourceLimits
from core.jobs.store import RunStore

pytestmark = pytest.mark.timeout(240)

# digits-mlp on synthetic inputs (no data: no scikit-learn import in the worker), with a tiny benchmark.
RECIPE = """model: sample:digits-mlp
benchmark: {batch_sizes: [1], threads: 1, warmup: 1, runs: 5}
variants: []
"""
MODEL, DATA = "sample:digits-mlp", None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def runner(store):
    runner = JobRunner(store, max_workers=2, per_owner=1, max_queue=8, poll_s=0.1)
    yield runner
    runner.shutdown()


def _wait_until(predicate, timeout: float = 60.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def _fingerprint(store: RunStore, run_id: str) -> dict:
    directory = store.run_dir(run_id)
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_limits_fail_the_job_clearly_and_the_runner_serves_the_next(runner, store):
    """A job over a tiny address-space cap and one over its wall clock fail with clear messages; the next job
    from the same owner runs to completion."""
    tiny = runner.submit("limits", RECIPE, MODEL, DATA, limits=ResourceLimits(address_space_mb=600))
    assert runner.wait(tiny, 120).state == "failed"
    assert "out of memory" in store.get(tiny).error and "600 MiB" in store.get(tiny).error
    slow = runner.submit("limits", RECIPE, MODEL, DATA, limits=ResourceLimits(wall_seconds=1.0))
    status = runner.wait(slow, 120)
    assert status.state == "failed" and "took longer than 1 s" in status.error
    assert runner.worker_pid(slow) is None
    ok = runner.submit("limits", RECIPE, MODEL, DATA)
    assert runner.wait(ok, 180).state == "completed"
    assert store.results(ok)["variants"][0]["status"] == "ok"


def test_several_owners_at_once_each_see_only_their_runs(runner, store):
    """Three owners' jobs share two workers and all finish; a fourth waits in line and is cancelled; each owner
    lists only their own runs; one owner cannot queue a second job while one is active."""
    owners = ["alice", "bob", "carol"]
    runs = {owner: runner.submit(owner, RECIPE, MODEL, DATA) for owner in owners}
    with pytest.raises(BadInputError, match="already have 1 job"):
        runner.submit("alice", RECIPE, MODEL, DATA)
    dave = runner.submit("dave", RECIPE, MODEL, DATA)
    _wait_until(lambda: runner.running_count() == 2)
    assert runner.running_count() <= runner.max_workers
    queued = [r for r in [*runs.values(), dave] if runner.status(r).state == "queued"]
    assert [runner.status(r).queue_position for r in queued] == list(range(1, len(queued) + 1))
    runner.cancel(dave, owner="dave")
    assert runner.status(dave).state == "cancelled" or runner.wait(dave, 60).state == "cancelled"
    for owner, run_id in runs.items():
        status = runner.wait(run_id, 180)
        assert status.state == "completed", (owner, status.error)
    for owner, run_id in runs.items():
        assert [r.id for r in store.list(owner)] == [run_id]
        assert store.manifest(run_id)["status"] == "completed"
        assert (store.run_dir(run_id) / "variants" / "baseline" / "model.onnx").exists()
    with pytest.raises(BadInputError, match="no run"):
        store.get(runs["alice"], owner="bob")


def test_a_job_over_the_variant_quota_is_refused(tmp_path):
    """A workshop host caps variants per job; a bigger sweep is refused with a message naming the limit."""
    store = RunStore(tmp_path)
    small = JobRunner(store, max_variants=2, poll_s=0.1)
    try:
        sweep = RECIPE.replace("variants: []", "sweep: {name: g, steps: [{technique: quantize, "
                                               "mode: [dynamic, static, fp16]}]}")
        with pytest.raises(BadInputError, match="3 variants; this server runs at most 2"):
            small.submit("quota", sweep, MODEL, DATA)
        assert store.list("quota") == []
    finally:
        small.shutdown()


def _completed_runs(store: RunStore) -> dict:
    return {r.id: _fingerprint(store, r.id) for r in store.list() if r.status == "completed"}


def test_killing_a_worker_mid_job_loses_nothing(runner, store):
    """SIGKILL of a worker mid-run fails only that run, with a clear message; earlier runs are byte-identical."""
    if not _completed_runs(store):
        assert runner.wait(runner.submit("earlier", RECIPE, MODEL, DATA), 180).state == "completed"
    before = _completed_runs(store)
    victim = runner.submit("victim", RECIPE.replace("runs: 5", "runs: 100000"), MODEL, DATA)
    _wait_until(lambda: store.progress(victim) is not None, timeout=120)
    os.kill(runner.worker_pid(victim), signal.SIGKILL)
    status = runner.wait(victim, 60)
    assert status.state == "failed" and "killed" in status.error
    assert _completed_runs(store) == before
    assert store.manifest(victim)["status"] == "failed"


SERVER = """
import os, signal, sys, time
from core.jobs.queue import JobRunner
from core.jobs.store import RunStore
runner = JobRunner(RunStore(sys.argv[1]), poll_s=0.05)
run_id = runner.submit("crash", sys.argv[2], "sample:digits-mlp", None)
while runner.worker_pid(run_id) is None:
    time.sleep(0.05)
print(run_id, runner.worker_pid(run_id), flush=True)
time.sleep(1.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_server_killed_mid_job_starts_the_run_over_after_restart(store, runner):
    """A server process SIGKILLed mid-job takes its worker with it (parent-death signal); a new JobRunner on the
    same store starts the orphan run over from its saved spec (before: it was left interrupted) and keeps every
    earlier run intact."""
    before = _completed_runs(store)
    recipe = RECIPE.replace("runs: 5", "runs: 100000")
    server = subprocess.run([sys.executable, "-c", SERVER, str(store.root), recipe], capture_output=True, text=True,
                            timeout=120)
    assert server.returncode == -signal.SIGKILL, server.stderr
    run_id, worker = server.stdout.split()
    _wait_until(lambda: not _pid_alive(int(worker)), timeout=20)
    assert store.get(run_id).status == "running"  # nobody was left to record the end
    restarted = JobRunner(store, poll_s=0.1)
    try:
        assert restarted.restarted == [run_id] and run_id not in restarted.recovered
        assert store.get(run_id).status in ("queued", "running") and store.manifest(run_id) is None
        _wait_until(lambda: restarted.worker_pid(run_id) is not None, timeout=30)  # running again
        restarted.cancel(run_id)  # it would run for minutes
        assert restarted.wait(run_id, 60).state == "cancelled"
        assert _completed_runs(store) == before
    finally:
        restarted.shutdown()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b") ")[1][:1] != b"Z"
    except OSError:
        return False


def test_uploaded_files_run_in_the_worker_and_hostile_ones_fail_the_job(runner, store, hostile_files,
                                                                         payload_marker, valid_files):
    """The dashboard's path: uploads are saved into the run and read by the worker; a hostile upload fails only
    its own job with the refusal line, and results name the upload, not a server path."""
    recipe = RECIPE.replace("sample:digits-mlp", "inputs/mine.onnx")
    evil = hostile_files["payload_legacy.pt"].path.read_bytes()
    bad = runner.submit("uploader", recipe, "inputs/evil.pt", None, inputs={"evil.pt": evil})
    status = runner.wait(bad, 120)
    assert status.state == "failed" and "pickled code" in status.error and "\n" not in status.error
    assert not payload_marker.exists()
    good = runner.submit("uploader", recipe, "inputs/mine.onnx", None, inputs={"mine.onnx": valid_files[".onnx"]})
    assert runner.wait(good, 180).state == "completed"
    results = store.results(good)
    assert results["model"] == "mine.onnx" and str(store.root) not in json.dumps(results)


def test_submit_refuses_server_paths_and_bad_upload_names(runner):
    """On a shared server a spec names only a sample or this run's own upload; upload names are plain names."""
    for model in ("/etc/passwd.onnx", "../other/model.onnx", "inputs/../../x.onnx", "inputs/missing.onnx"):
        with pytest.raises(BadInputError, match="not allowed"):
            runner.submit("paths", RECIPE, model, DATA)
    with pytest.raises(BadInputError, match="not allowed"):
        runner.submit("paths", RECIPE.replace("variants: []", "data: /etc/shadow.csv\nvariants: []"), MODEL, None)
    for name in ("..", ".hidden.onnx", "a/b.onnx", ""):
        with pytest.raises(BadInputError, match="invalid upload name"):
            runner.submit("paths", RECIPE, f"inputs/{name}", None, inputs={name: b"x"})
    assert not [r for r in runner.store.list("paths")]


def test_worker_outcome_is_validated(tmp_path):
    """A worker's outcome.json is trusted only for a known final status and a short one-line error."""
    path = tmp_path / "outcome.json"
    for content in ("", "{", "[]", json.dumps({"status": "queued"}), json.dumps({"status": 3})):
        path.write_text(content)
        assert _read_outcome(path) is None
    path.write_text(json.dumps({"status": "failed", "error": "bad\nthing " * 200}))
    status, error = _read_outcome(path)
    assert status == "failed" and "\n" not in error and len(error) <= 500
    assert _read_outcome(tmp_path / "missing.json") is None


def test_env_settings_are_validated(monkeypatch):
    """Limits and pool sizes from the environment must be positive numbers; a typo is one clear error."""
    monkeypatch.setenv("FEATHERWEIGHT_WORKER_MEMORY_MB", "lots")
    with pytest.raises(BadInputError, match="FEATHERWEIGHT_WORKER_MEMORY_MB"):
        ResourceLimits.from_env()
    monkeypatch.setenv("FEATHERWEIGHT_WORKER_MEMORY_MB", "2048")
    monkeypatch.setenv("FEATHERWEIGHT_INSPECT_WALL_S", "7.5")
    assert ResourceLimits.from_env().address_space_mb == 2048
    assert ResourceLimits.for_inspect().wall_seconds == 7.5
    monkeypatch.setenv("FEATHERWEIGHT_MAX_NODES", "-3")
    from core.io.safety import LoadLimits

    with pytest.raises(BadInputError, match="FEATHERWEIGHT_MAX_NODES"):
        LoadLimits.from_env()
