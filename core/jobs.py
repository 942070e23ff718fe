"""Job execution: pipeline runs in spawned worker processes with resource limits, behind a bounded queue.

The dashboard never runs a pipeline in its script thread. `JobRunner.submit` queues a run in the store; a
dispatcher thread starts at most `max_workers` workers, each a fresh spawned Python process with limits on
address space, CPU time and file size, and a wall-clock timeout. A worker that crashes, runs out of memory or
times out marks only its own run failed.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError
from core.store import ACTIVE, RunStore

CANCEL_FLAG = "cancel.flag"
OUTCOME = "outcome.json"


@dataclass(frozen=True)
class ResourceLimits:
    """Per-worker limits. Defaults suit a 2-core, 24 GiB server shared by a workshop."""

    address_space_mb: int = 8192  # torch + onnxruntime map ~2 GiB of address space before any model loads
    cpu_seconds: int = 1800
    file_size_mb: int = 2048
    wall_seconds: float = 1800.0
    threads: int = 1  # torch / BLAS threads in the worker; benchmark threads come from the recipe

    @classmethod
    def from_env(cls) -> "ResourceLimits":
        """Defaults, overridden by FEATHERWEIGHT_WORKER_{MEMORY_MB,CPU_S,FILE_MB,WALL_S}."""
        def get(name, default, cast):
            value = os.environ.get(name)
            return cast(value) if value else default

        base = cls()
        return cls(address_space_mb=get("FEATHERWEIGHT_WORKER_MEMORY_MB", base.address_space_mb, int),
                   cpu_seconds=get("FEATHERWEIGHT_WORKER_CPU_S", base.cpu_seconds, int),
                   file_size_mb=get("FEATHERWEIGHT_WORKER_FILE_MB", base.file_size_mb, int),
                   wall_seconds=get("FEATHERWEIGHT_WORKER_WALL_S", base.wall_seconds, float))


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs: the run directory (holding recipe.yaml) and the model / data specs."""

    run_id: str
    run_dir: str
    model: str
    data: str | None


@dataclass
class JobStatus:
    """A run's state as the dashboard shows it."""

    run_id: str
    state: str  # queued | running | completed | failed | cancelled | interrupted
    queue_position: int | None  # 1 = next to start
    progress: dict | None
    error: str | None


def _apply_limits(limits: ResourceLimits) -> None:
    import resource

    mb = 2**20
    for which, value in ((resource.RLIMIT_AS, limits.address_space_mb * mb),
                         (resource.RLIMIT_CPU, limits.cpu_seconds),
                         (resource.RLIMIT_FSIZE, limits.file_size_mb * mb)):
        soft, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (cap, hard))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(limits.threads)


def worker_main(spec: JobSpec, limits: ResourceLimits) -> None:
    """Entry point of a worker process: apply limits, run the recipe, write outcome.json."""
    _apply_limits(limits)
    run_dir = Path(spec.run_dir)
    outcome = {"status": "failed", "error": None}
    try:
        import torch

        torch.set_num_threads(limits.threads)
        from core.errors import FeatherweightError
        from core.pipeline import run_recipe
        from core.recipe import Recipe
        from core.store import RunStore

        store = RunStore(run_dir.parent.parent)
        recipe = Recipe.load(run_dir / "recipe.yaml")
        cancel_flag = run_dir / CANCEL_FLAG

        def on_progress(event):
            store.write_progress(spec.run_id, event.to_dict())

        try:
            result = run_recipe(recipe, run_dir, model_spec=spec.model, data_spec=spec.data,
                                on_progress=on_progress, should_stop=cancel_flag.exists)
            outcome = {"status": "cancelled" if result.status == "cancelled" else "completed", "error": None}
        except FeatherweightError as exc:
            outcome = {"status": "failed", "error": str(exc)}
        except MemoryError:
            outcome = {"status": "failed", "error": f"out of memory (the worker limit is "
                                                    f"{limits.address_space_mb:,} MiB)"}
    except Exception as exc:  # noqa: BLE001 - anything else is a failed run, logged with its traceback
        (run_dir / "worker-error.log").write_text(traceback.format_exc(), encoding="utf-8")
        outcome = {"status": "failed", "error": f"internal error: {exc.__class__.__name__} (details in the "
                                                "server log)"}
    (run_dir / OUTCOME).write_text(json.dumps(outcome), encoding="utf-8")


def _exit_reason(exitcode: int | None, limits: ResourceLimits) -> str:
    if exitcode is None:
        return "the worker did not finish"
    if exitcode < 0:
        sig = -exitcode
        if sig == signal.SIGKILL:
            return "the worker was killed (out of memory, or stopped by the server)"
        if sig == signal.SIGXCPU:
            return f"the worker used more than {limits.cpu_seconds} s of CPU time"
        if sig == signal.SIGXFSZ:
            return f"the worker wrote a file over {limits.file_size_mb} MiB"
        if sig == signal.SIGSEGV:
            return "the worker crashed (segmentation fault in a native library, often a malformed model)"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"the worker died from signal {name}"
    return f"the worker exited with code {exitcode} without a result (out of memory?)"


class JobRunner:
    """A bounded pool of worker processes fed from a FIFO queue, with per-owner admission."""

    def __init__(self, store: RunStore, *, max_workers: int | None = None, max_queue: int | None = None,
                 per_owner: int | None = None, limits: ResourceLimits | None = None, poll_s: float = 0.2):
        env = os.environ.get
        self.store = store
        self.max_workers = max_workers or int(env("FEATHERWEIGHT_WORKERS") or 1)
        self.max_queue = max_queue or int(env("FEATHERWEIGHT_MAX_QUEUE") or 32)
        self.per_owner = per_owner or int(env("FEATHERWEIGHT_JOBS_PER_SESSION") or 1)
        self.limits = limits or ResourceLimits.from_env()
        self.poll_s = poll_s
        self._queue: collections.deque[JobSpec] = collections.deque()
        self._running: dict[str, tuple[multiprocessing.Process, float, JobSpec]] = {}
        self._cancel_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ctx = multiprocessing.get_context("spawn")
        store.recover()
        self._thread = threading.Thread(target=self._dispatch, name="featherweight-jobs", daemon=True)
        self._thread.start()

    # ---- public API

    def submit(self, owner: str, recipe_yaml: str, model: str, data: str | None, *, label: str = "",
               inputs: dict[str, bytes] | None = None) -> str:
        """Queue a run; uploaded files in `inputs` (name -> bytes) are saved into the run's inputs/ folder and
        `model`/`data` may refer to them as ``inputs/NAME``.

        Raises:
            BadInputError: the owner already has the allowed number of active jobs, or the queue is full.
        """
        with self._lock:
            active = [r for r in self.store.list(owner) if r.status in ACTIVE]
            if len(active) >= self.per_owner:
                raise BadInputError(f"you already have {len(active)} job(s) queued or running; wait for it to "
                                    "finish or cancel it")
            if len(self._queue) >= self.max_queue:
                raise BadInputError(f"the server's queue is full ({self.max_queue} jobs); try again shortly")
            record = self.store.create(owner, recipe_yaml, label=label, model=model, data=data)
            run_dir = self.store.run_dir(record.id)
            for name, content in (inputs or {}).items():
                safe = Path(name).name
                (run_dir / "inputs" / safe).write_bytes(content)

            def resolve(spec):
                if spec and spec.startswith("inputs/"):
                    return str(run_dir / "inputs" / Path(spec).name)
                return spec

            self._queue.append(JobSpec(record.id, str(run_dir), resolve(model), resolve(data)))
        return record.id

    def cancel(self, run_id: str) -> None:
        """Cancel a queued run at once; ask a running one to stop (killed if it has not within 10 s)."""
        with self._lock:
            for spec in list(self._queue):
                if spec.run_id == run_id:
                    self._queue.remove(spec)
                    self.store.set_status(run_id, "cancelled", "cancelled before it started")
                    return
            if run_id in self._running:
                (Path(self._running[run_id][2].run_dir) / CANCEL_FLAG).touch()
                self._cancel_at[run_id] = time.monotonic()

    def status(self, run_id: str) -> JobStatus:
        record = self.store.get(run_id)
        with self._lock:
            position = next((i + 1 for i, s in enumerate(self._queue) if s.run_id == run_id), None)
        return JobStatus(run_id, record.status, position, self.store.progress(run_id), record.error)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop dispatching and kill running workers (their runs become interrupted)."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            for run_id, (process, _, _) in list(self._running.items()):
                process.kill()
                process.join(timeout)
                self.store.set_status(run_id, "interrupted", "the server stopped before this run finished")
            self._running.clear()
            for spec in self._queue:
                self.store.set_status(spec.run_id, "interrupted", "the server stopped before this run started")
            self._queue.clear()

    def wait(self, run_id: str, timeout: float = 600.0) -> JobStatus:
        """Block until the run is final (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.state not in ACTIVE:
                return status
            time.sleep(self.poll_s)
        raise TimeoutError(f"run {run_id} did not finish within {timeout} s")

    # ---- dispatcher

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._start_next()
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything a job does
                traceback.print_exc()
            self._stop.wait(self.poll_s)

    def _start_next(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_workers:
                spec = self._queue.popleft()
                process = self._ctx.Process(target=worker_main, args=(spec, self.limits),
                                            name=f"featherweight-{spec.run_id}", daemon=True)
                process.start()
                self._running[spec.run_id] = (process, time.monotonic(), spec)
                self.store.set_status(spec.run_id, "running", pid=process.pid)

    def _reap(self) -> None:
        with self._lock:
            for run_id, (process, started, spec) in list(self._running.items()):
                overdue = time.monotonic() - started > self.limits.wall_seconds
                cancel_overdue = run_id in self._cancel_at and time.monotonic() - self._cancel_at[run_id] > 10
                if process.is_alive() and not (overdue or cancel_overdue):
                    continue
                if process.is_alive():
                    process.kill()
                process.join(5)
                outcome_path = Path(spec.run_dir) / OUTCOME
                if overdue:
                    status, error = "failed", f"timed out after {self.limits.wall_seconds:.0f} s"
                elif cancel_overdue:
                    status, error = "cancelled", "cancelled by the user"
                elif outcome_path.exists():
                    outcome = json.loads(outcome_path.read_text(encoding="utf-8"))
                    status, error = outcome["status"], outcome.get("error")
                else:
                    status, error = "failed", _exit_reason(process.exitcode, self.limits)
                self.store.set_status(run_id, status, error)
                self._running.pop(run_id)
                self._cancel_at.pop(run_id, None)
