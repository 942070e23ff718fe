"""Runs survive a restart (issue 25, finding 8): a server killed with jobs waiting leaves them queued, and the next
server queues them again, in their order, and runs them; the run that was running starts over, once."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest

from core.jobs.queue import JOB_FILE, MAX_RESTARTS, JobRunner, JobSpec
from core.jobs.store import RunStore

pytestmark = pytest.mark.timeout(240)

RECIPE = """model: sample:digits-mlp
benchmark: {batch_sizes: [1], threads: 1, warmup: 1, runs: 5}
variants: []
"""

# One worker: the first job runs (and never ends by itself), the next two wait; then the server dies.
SERVER = """
import os, signal, sys, time
from core.jobs.queue import JobRunner
from core.jobs.store import RunStore
runner = JobRunner(RunStore(sys.argv[1]), max_workers=1, poll_s=0.05)
slow = sys.argv[2].replace("runs: 5", "runs: 1000000")
first = runner.submit("alice", slow, "sample:digits-mlp", None)
second = runner.submit("bob", sys.argv[2], "sample:digits-mlp", None)
third = runner.submit("carol", sys.argv[2], "sample:digits-mlp", None)
while runner.worker_pid(first) is None:
    time.sleep(0.05)
print(first, second, third, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_queued_runs_are_queued_again_in_order_after_a_restart_and_complete(tmp_path):
    """After a SIGKILLed server: the run that was running starts over (its worker died with the server; before:
    it was interrupted), cleared of what it wrote, ahead of the two queued runs, which are queued again in their
    order (before: interrupted too) and complete."""
    store = RunStore(tmp_path / "home")
    server = subprocess.run([sys.executable, "-c", SERVER, str(store.root), RECIPE], capture_output=True, text=True,
                            timeout=120)
    assert server.returncode == -signal.SIGKILL, server.stderr
    first, second, third = server.stdout.split()
    assert store.get(first).status == "running"  # nobody was left to record its end
    assert store.get(second).status == store.get(third).status == "queued"
    time.sleep(0.3)  # the dead server's worker follows it (parent-death signal)
    written = {p.name for p in store.run_dir(first).iterdir()}
    restarted = JobRunner(store, max_workers=1, poll_s=0.1)
    try:
        assert restarted.restarted == [first] and first not in restarted.recovered
        assert restarted.requeued == [first, second, third]
        assert not any((store.run_dir(first) / name).exists() for name in written - {"recipe.yaml", "inputs",
                                                                                       "job.json"})
        assert json.loads((store.run_dir(first) / "job.json").read_text())["restarts"] == 1
        positions = [restarted.status(run_id).queue_position for run_id in (second, third)]
        assert positions in ([1, 2], [None, 1]), positions
        assert restarted.status(first).state in ("queued", "running")
        restarted.cancel(first)  # it never ends by itself
        assert restarted.wait(first, 60).state == "cancelled"
        for run_id in (second, third):
            assert restarted.wait(run_id, 180).state == "completed", store.get(run_id).error
            assert store.results(run_id)["variants"][0]["status"] == "ok"
        assert store.get(second).updated_at < store.get(third).updated_at
    finally:
        restarted.shutdown()


def test_a_run_interrupted_by_a_second_restart_is_left_interrupted(tmp_path):
    """A run starts over once: one that a restart already started over and that a server's death stops again is
    interrupted, and says so (a run that keeps meeting restarts cannot hold a worker forever)."""
    store = RunStore(tmp_path / "home")
    record = store.create("erin", RECIPE, model="sample:digits-mlp")
    spec = JobSpec(record.id, str(store.run_dir(record.id)), "sample:digits-mlp", None, restarts=MAX_RESTARTS)
    (store.run_dir(record.id) / JOB_FILE).write_text(json.dumps(dataclasses.asdict(spec)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_status(record.id, "running", pid=dead.pid)  # its worker is gone, as after a server's death
    runner = JobRunner(store, poll_s=0.1)
    try:
        assert record.id in runner.recovered and runner.restarted == []
        assert store.get(record.id).status == "interrupted" and "server stopped" in store.get(record.id).error
    finally:
        runner.shutdown()


def test_a_queued_run_without_a_saved_spec_is_still_marked_interrupted(tmp_path):
    """A run queued by a version that saved no job spec cannot be run again: it says so, as before."""
    store = RunStore(tmp_path / "home")
    old = store.create("dave", RECIPE)
    runner = JobRunner(store, poll_s=0.1)
    try:
        assert old.id in runner.recovered and store.get(old.id).status == "interrupted"
        assert runner.requeued == []
    finally:
        runner.shutdown()
