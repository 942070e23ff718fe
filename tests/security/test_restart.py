"""Queued runs survive a restart (issue 25, finding 8): a server killed with jobs waiting leaves them queued, and
the next server queues them again, in their order, and runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from core.jobs.queue import JobRunner
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
    """After a SIGKILLed server: the run that was running is interrupted (its worker died with the server); the
    two queued runs are queued again at places 1 and 2 and both complete (before: both became interrupted)."""
    store = RunStore(tmp_path / "home")
    server = subprocess.run([sys.executable, "-c", SERVER, str(store.root), RECIPE], capture_output=True, text=True,
                            timeout=120)
    assert server.returncode == -signal.SIGKILL, server.stderr
    first, second, third = server.stdout.split()
    assert store.get(second).status == store.get(third).status == "queued"
    time.sleep(0.3)  # the dead server's worker follows it (parent-death signal)
    restarted = JobRunner(store, max_workers=1, poll_s=0.1)
    try:
        assert store.get(first).status == "interrupted"
        assert store.get(second).status != "interrupted" and store.get(third).status != "interrupted"
        assert restarted.requeued == [second, third]
        positions = [restarted.status(run_id).queue_position for run_id in (second, third)]
        assert positions in ([1, 2], [None, 1]), positions  # the second may already have started
        for run_id in (second, third):
            assert restarted.wait(run_id, 180).state == "completed", store.get(run_id).error
            assert store.results(run_id)["variants"][0]["status"] == "ok"
        assert store.get(second).updated_at < store.get(third).updated_at
    finally:
        restarted.shutdown()


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
