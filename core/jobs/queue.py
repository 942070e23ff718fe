"""The job queue: `JobRunner` queues pipeline runs and insight jobs in the run store and starts at most
`max_workers` sandboxed workers (`core.io.sandbox.start_worker`), one active job per owner by default. A worker
runs `core.jobs.entries.job_entry`, named, never imported here; what each job kind does is `core.jobs.kinds`.
Each queued job's spec is saved with its run (``job.json``), so a new runner on the same store (a restarted
server) queues again, in their order, the jobs a dead one left waiting.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError
from core.format import hide_paths, one_line
from core.io.disk import DiskLimits, tree_bytes
from core.io.files import write_atomic
from core.io.pool import WorkerPool
from core.io.sandbox import (LOG_TAIL_BYTES, ResourceLimits, describe_exit, kill_group, log_failure, start_worker,
                             wait_worker)
from core.jobs.store import ACTIVE, RunStore
from core.io.safety import LoadLimits
from core.spec.recipe import Recipe

logger = logging.getLogger("featherweight.jobs")

CANCEL_FLAG = "cancel.flag"
OUTCOME = "outcome.json"
JOB_FILE = "job.json"  # the queued job's JobSpec, so that a restarted server can queue it again
RUN_INPUTS = ("recipe.yaml", "inputs", JOB_FILE)  # what a run was given: kept when it starts over
MAX_RESTARTS = 1  # a run a server restart interrupted starts over this many times, then is left interrupted
DISK_CHECK_S = 2.0  # how often a running job's owner is held to the disk quota (`_over_quota`)


# --------------------------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs: the run directory (holding recipe.yaml) and the model / data specs."""

    run_id: str
    run_dir: str
    model: str
    data: str | None
    limits: dict | None = None  # this job's ResourceLimits, when they differ from the runner's
    kind: str = "run"  # "run": the recipe; else an insight job (core.jobs.kinds.JOB_KINDS)
    executor: str = "local"  # "ray": the worker drives the run's variants as tasks on a Ray cluster
    ray_address: str | None = None
    core: int | None = None  # the core the worker pins itself to (`worker_core`), None: unpinned
    restarts: int = 0  # times a server restart started this job over (at most MAX_RESTARTS)


@dataclass
class JobStatus:
    """A run's state as the dashboard shows it."""

    run_id: str
    state: str  # queued | running | completed | failed | cancelled | interrupted
    queue_position: int | None  # 1 = next to start
    progress: dict | None
    error: str | None


def _read_outcome(path: Path) -> tuple[str, str | None] | None:
    """The worker's outcome.json, validated (the worker is not trusted to say anything but these)."""
    try:
        outcome = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(outcome, dict) or outcome.get("status") not in ("completed", "failed", "cancelled"):
        return None
    error = outcome.get("error")
    return outcome["status"], (one_line(error, 500) if error else None)


def worker_core(max_workers: int, taken) -> int | None:
    """The core a new worker pins itself to: with no more workers than cores, each gets a core of its own (the
    first this process may use that no running worker holds), so one job's timing shares its core with no other
    job's build; with more workers than cores, None (unpinned: the store's core lock still lets one timing phase
    run per core)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if max_workers > len(cores):
        return None
    return next((core for core in cores if core not in set(taken)), None)


def _allowed_spec(kind: str, spec: str | None, inputs: dict, allow_local_paths: bool) -> None:
    if spec is None or spec == "" or spec.startswith("sample:") or allow_local_paths:
        return
    if spec.startswith("inputs/") and Path(spec).name in inputs and "/" not in spec[len("inputs/"):]:
        return
    raise BadInputError(f"{kind} {spec[:100]!r} is not allowed on this server: choose a sample (sample:NAME) or "
                        "upload the file")


JOB_EXECUTOR_ENV = "FEATHERWEIGHT_JOB_EXECUTOR"


def _job_executor(executor: str | None, ray_address: str | None) -> tuple[str, str | None]:
    """The runner's executor and Ray address, from the arguments or the environment.

    Raises:
        BadInputError: an unknown executor, or "ray" without an address.
    """
    # core.pipeline.ray loads the pipeline (pandas): imported when a runner is made, not when this module is.
    from core.pipeline.ray import RAY_ADDRESS_ENV

    executor = (executor or os.environ.get(JOB_EXECUTOR_ENV, "").strip() or "local").lower()
    if executor not in ("local", "ray"):
        raise BadInputError(f"{JOB_EXECUTOR_ENV}={executor!r} is not an executor; allowed: local, ray")
    if executor == "local":
        return executor, None
    address = ray_address or os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not address:
        raise BadInputError(f"{JOB_EXECUTOR_ENV}=ray needs {RAY_ADDRESS_ENV}: the address of a running Ray "
                            "cluster (ray start --head prints it); a server does not start Ray for each job")
    try:
        import ray  # noqa: F401 - only to fail at start-up, not in every job
    except ImportError:
        raise BadInputError(f"{JOB_EXECUTOR_ENV}=ray needs Ray: pip install -e '.[ray]'") from None
    return executor, address


class JobRunner:
    """A bounded pool of worker processes fed from a FIFO queue, with per-owner admission.

    Args:
        store: the run store (one runner per store).
        max_workers: workers at once (FEATHERWEIGHT_WORKERS, default 1).
        max_queue: queued jobs at most (FEATHERWEIGHT_MAX_QUEUE, default 32).
        per_owner: active (queued or running) jobs per owner (FEATHERWEIGHT_JOBS_PER_SESSION, default 1).
        max_variants: variants in one job at most (FEATHERWEIGHT_MAX_VARIANTS, default 64): a big sweep holds a
            worker for its whole length while everyone behind it waits.
        limits: each worker's limits (FEATHERWEIGHT_WORKER_*).
        allow_local_paths: let model / data specs name files on the server (FEATHERWEIGHT_ALLOW_LOCAL_PATHS=1);
            off by default, so that a user of a shared server can name only samples and their own uploads.
        executor: where a run's variants are built (FEATHERWEIGHT_JOB_EXECUTOR, default "local"): "local" in the
            job's worker process; "ray" as tasks on the Ray cluster at `ray_address` (FEATHERWEIGHT_RAY_ADDRESS,
            required: a server never starts a Ray runtime per job). The worker still loads the model and measures
            the baseline; insight jobs always run in the worker.
        pool: the process's worker pool (`core.io.pool.process_pool()` on a server): a job worker starts only when
            the pool's job lane has a slot, so jobs and the interactive workers (upload checks, Graph, Learn, ...)
            together stay within the configured limits. Without one, `max_workers` alone bounds the jobs.
    """

    def __init__(self, store: RunStore, *, max_workers: int | None = None, max_queue: int | None = None,
                 per_owner: int | None = None, max_variants: int | None = None,
                 limits: ResourceLimits | None = None, poll_s: float = 0.2, allow_local_paths: bool | None = None,
                 executor: str | None = None, ray_address: str | None = None, pool: WorkerPool | None = None):
        def setting(value, var, default):
            if value is not None:
                number = value
            else:
                raw = os.environ.get(var, "").strip()
                number = int(raw) if raw.isdigit() else default
            if not isinstance(number, int) or number < 1:
                raise BadInputError(f"{var}={number!r} must be a positive integer")
            return number

        self.store = store
        self.pool = pool
        self.max_workers = setting(max_workers if max_workers is not None or pool is None
                                   else pool.limits.job_workers, "FEATHERWEIGHT_WORKERS", 1)
        self.max_queue = setting(max_queue, "FEATHERWEIGHT_MAX_QUEUE", 32)
        self.per_owner = setting(per_owner, "FEATHERWEIGHT_JOBS_PER_SESSION", 1)
        self.max_variants = setting(max_variants, "FEATHERWEIGHT_MAX_VARIANTS", 64)
        self.limits = limits or ResourceLimits.from_env()
        self.allow_local_paths = (os.environ.get("FEATHERWEIGHT_ALLOW_LOCAL_PATHS") == "1"
                                  if allow_local_paths is None else allow_local_paths)
        self.executor, self.ray_address = _job_executor(executor, ray_address)
        self.disk = DiskLimits.from_env()
        self.poll_s = poll_s
        self.logs_dir = Path(store.root) / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._queue: collections.deque[JobSpec] = collections.deque()
        self._running: dict[str, tuple[subprocess.Popen, float, JobSpec]] = {}
        self._cancel_at: dict[str, float] = {}
        self._disk_watch: dict[str, list] = {}  # run id -> [bytes the owner's other runs keep, last check]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.restarted: list[str] = []  # runs a dead server left running, started over (`_start_over`)
        self.recovered = store.recover(keep_queued=lambda record: self._load_spec(record.id) is not None,
                                       restart=self._start_over)
        self.requeued = self._requeue()
        self._thread = threading.Thread(target=self._dispatch, name="featherweight-jobs", daemon=True)
        self._thread.start()

    # ---- public API

    def submit(self, owner: str, recipe_yaml: str, model: str, data: str | None, *, label: str = "",
               inputs: dict[str, bytes] | None = None, limits: ResourceLimits | None = None,
               kind: str = "run") -> str:
        """Queue a run; uploaded files in `inputs` (name -> bytes) are saved into the run's inputs/ folder and
        `model`/`data` may refer to them as ``inputs/NAME``. `kind` other than "run" queues an insight job
        (core.jobs.insight.submit_job prepares those).

        Raises:
            BadInputError: a bad spec or input name, more than `max_variants` variants, the owner already has
                `per_owner` active jobs, or the queue is full.
        """
        inputs = dict(inputs or {})
        caps = LoadLimits.from_env()
        for name, content in inputs.items():
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") \
                    or name.startswith(".") or "\0" in name:
                raise BadInputError(f"invalid upload name {name!r}")
            if len(content) > caps.max_file_bytes:
                raise BadInputError(f"{name} is over the {caps.max_file_bytes / 2**20:,.0f} MiB limit")
        if not model:
            raise BadInputError("no model given: choose a sample or upload a model")
        # The registry pulls in the analyses (pandas, onnx): imported on the first submit, not when the dashboard
        # starts (ui.services builds a JobRunner on its first render).
        from core.jobs.kinds import JOB_KINDS

        if kind != "run" and kind not in JOB_KINDS:
            raise BadInputError(f"job kind {kind!r} is not supported; allowed: run, {', '.join(JOB_KINDS)}")
        recipe = Recipe.from_text(recipe_yaml)
        if kind == "run" and len(recipe.variants) > self.max_variants:
            raise BadInputError(f"the recipe has {len(recipe.variants)} variants; this server runs at most "
                                f"{self.max_variants} in one job (FEATHERWEIGHT_MAX_VARIANTS): split the sweep")
        _allowed_spec("model", model, inputs, self.allow_local_paths)
        _allowed_spec("data", data, inputs, self.allow_local_paths)
        if data is None:
            _allowed_spec("data", recipe.data, inputs, self.allow_local_paths)
        with self._lock:
            active = [r for r in self.store.list(owner, limit=10_000) if r.status in ACTIVE]
            if len(active) >= self.per_owner:
                raise BadInputError(f"you already have {len(active)} job(s) queued or running; wait for it to "
                                    "finish or cancel it")
            if len(self._queue) >= self.max_queue:
                raise BadInputError(f"the server's queue is full ({self.max_queue} jobs); try again shortly")
            kept = self.store.owner_bytes(owner) + sum(len(content) for content in inputs.values())
            if kept > self.disk.owner_bytes:
                raise BadInputError(f"your runs keep {kept / 2**20:,.1f} MiB on this server, over the "
                                    f"{self.disk.owner_bytes / 2**20:,.0f} MiB each visitor may keep "
                                    "(FEATHERWEIGHT_OWNER_DISK_MB): delete old runs on the History page")
            record = self.store.create(owner, recipe_yaml, label=label, model=model, data=data)
        run_dir = self.store.run_dir(record.id)
        try:
            for name, content in inputs.items():
                write_atomic(run_dir / "inputs" / name, bytes(content))
        except OSError as exc:
            self.store.set_status(record.id, "failed", f"could not save the upload: {exc.strerror or exc}")
            self.store.discard_outputs(record.id)
            raise BadInputError(f"could not save the upload: {exc.strerror or exc}") from None

        def resolve(spec):
            # The worker runs in the run directory, so ``inputs/NAME`` stays relative (and results.json shows
            # it, not the server's path); other local paths (allowed only on private servers) become absolute.
            if not spec or spec.startswith(("sample:", "inputs/")):
                return spec
            return str(Path(spec).resolve())

        data_spec = data if data is not None else recipe.data
        on_ray = kind == "run" and self.executor == "ray"
        spec = JobSpec(record.id, str(run_dir), resolve(model), resolve(data_spec),
                       limits.to_dict() if limits else None, kind, executor="ray" if on_ray else "local",
                       ray_address=self.ray_address if on_ray else None)
        write_atomic(run_dir / JOB_FILE, json.dumps(dataclasses.asdict(spec), indent=1))
        with self._lock:
            self._queue.append(spec)
        return record.id

    def _load_spec(self, run_id: str) -> JobSpec | None:
        """A queued run's saved JobSpec (None when it has none or it does not read back as one)."""
        try:
            saved = json.loads((self.store.run_dir(run_id) / JOB_FILE).read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(JobSpec)}
            spec = JobSpec(**{k: v for k, v in saved.items() if k in known})
        except (OSError, ValueError, TypeError, BadInputError):
            return None
        if spec.run_id != run_id or not isinstance(spec.kind, str):
            return None
        return dataclasses.replace(spec, run_dir=str(self.store.run_dir(run_id)))

    def _start_over(self, record) -> bool:
        """A run a dead server left running starts over from its saved spec and inputs, once (a second restart
        while it runs leaves it interrupted): what it wrote is cleared and its restart counted in its spec."""
        spec = self._load_spec(record.id)
        if spec is None or spec.restarts >= MAX_RESTARTS:
            return False
        spec = dataclasses.replace(spec, restarts=spec.restarts + 1, core=None)
        self.store.clear_outputs(record.id, keep=RUN_INPUTS)
        write_atomic(self.store.run_dir(record.id) / JOB_FILE, json.dumps(dataclasses.asdict(spec), indent=1))
        self.restarted.append(record.id)
        logger.info("started over after a restart: %s (restart %d of %d)", record.id, spec.restarts, MAX_RESTARTS)
        return True

    def _requeue(self) -> list[str]:
        """Queue again, oldest first, the runs a previous server left queued or running (`_start_over`: their inputs
        and spec are saved)."""
        requeued = []
        for record in self.store.active():
            if record.status != "queued":
                continue
            spec = self._load_spec(record.id)
            if spec is None:
                continue
            self._queue.append(spec)
            requeued.append(record.id)
        if requeued:
            logger.info("queued again after a restart: %s", ", ".join(requeued))
        return requeued

    def cancel(self, run_id: str, owner: str | None = None) -> None:
        """Cancel a queued run at once; ask a running one to stop (killed if it has not within 10 s).

        With `owner`, only that owner's run (else BadInputError "no run").
        """
        self.store.get(run_id, owner)
        with self._lock:
            for spec in list(self._queue):
                if spec.run_id == run_id:
                    self._queue.remove(spec)
                    self.store.set_status(run_id, "cancelled", "cancelled before it started")
                    return
            if run_id in self._running:
                (Path(self._running[run_id][2].run_dir) / CANCEL_FLAG).touch()
                self._cancel_at.setdefault(run_id, time.monotonic())

    def status(self, run_id: str, owner: str | None = None) -> JobStatus:
        """The run's state and, while queued, its place in the queue (1 = next to start)."""
        record = self.store.get(run_id, owner)
        with self._lock:
            position = next((i + 1 for i, s in enumerate(self._queue) if s.run_id == run_id), None)
        return JobStatus(run_id, record.status, position, self.store.progress(run_id), record.error)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def worker_pid(self, run_id: str) -> int | None:
        """The process id of the run's worker while it runs (for operators and tests)."""
        with self._lock:
            entry = self._running.get(run_id)
            return entry[0].pid if entry else None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop dispatching and kill running workers (their runs become interrupted)."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            for run_id, (process, _, _) in list(self._running.items()):
                kill_group(process)
                wait_worker(process, block=True)
                self._release_slot()
                self.store.set_status(run_id, "interrupted", "the server stopped before this run finished")
            self._running.clear()
            self._disk_watch.clear()
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
                logger.exception("job dispatcher error")
            self._stop.wait(self.poll_s)

    def _release_slot(self) -> None:
        if self.pool is not None:
            self.pool.release_job()

    def _limits_of(self, spec: JobSpec) -> ResourceLimits:
        return ResourceLimits(**spec.limits) if spec.limits else self.limits

    def _start_next(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_workers and not self._stop.is_set():
                if self.pool is not None and not self.pool.try_acquire_job():
                    break
                spec = self._queue.popleft()
                spec = dataclasses.replace(spec, core=worker_core(
                    self.max_workers, [running[2].core for running in self._running.values()]))
                limits = self._limits_of(spec)
                # Started by name: the generic sandbox imports none of its callers, and this module none of the
                # worker's entries.
                request = {"entry": "core.jobs.entries:job_entry", "args": [dataclasses.asdict(spec), limits.to_dict()],
                           "limits": limits.to_dict(), "ray": spec.executor == "ray", "core": spec.core}
                try:
                    with open(self.logs_dir / f"{spec.run_id}.log", "ab") as log:
                        process = start_worker(request, limits, stdout=log, stderr=log, cwd=spec.run_dir)
                except OSError as exc:
                    self._release_slot()
                    self.store.set_status(spec.run_id, "failed", f"could not start a worker: {exc.strerror or exc}")
                    self.store.discard_outputs(spec.run_id)
                    continue
                self._running[spec.run_id] = (process, time.monotonic(), spec)
                self.store.set_status(spec.run_id, "running", pid=process.pid)
                others = self.store.owner_bytes(self.store.get(spec.run_id).owner) - self._run_bytes(spec.run_id)
                self._disk_watch[spec.run_id] = [others, time.monotonic()]

    def _reap(self) -> None:
        with self._lock:
            for run_id, (process, started, spec) in list(self._running.items()):
                limits = self._limits_of(spec)
                now = time.monotonic()
                overdue = now - started > limits.wall_seconds
                cancel_overdue = run_id in self._cancel_at and now - self._cancel_at[run_id] > 10
                code, peak = wait_worker(process, block=False)
                over_quota = code is None and self._over_quota(run_id, now)
                if code is None and not (overdue or cancel_overdue or over_quota):
                    continue
                if code is None:
                    kill_group(process)
                    code, peak = wait_worker(process, block=True)
                outcome = _read_outcome(Path(spec.run_dir) / OUTCOME)
                if outcome is not None:
                    status, error = outcome
                elif overdue:
                    status, error = "failed", (f"timed out: the run took longer than {limits.wall_seconds:g} s "
                                               "and was stopped")
                elif over_quota:
                    status, error = "failed", (f"over the disk quota: your runs came to keep more than the "
                                               f"{self.disk.owner_bytes / 2**20:,.0f} MiB each visitor may keep "
                                               "on this server, and this run was stopped (delete older runs in "
                                               "History, or ask for a smaller sweep)")
                elif cancel_overdue:
                    status, error = "cancelled", "cancelled by the user"
                else:
                    tail = _tail(self.logs_dir / f"{run_id}.log")
                    status, error = "failed", describe_exit(code, limits, "", tail)
                    log_failure(f"job {run_id}", f"exit {code}", tail)
                logger.info("job %s %s in %.1f s, worker peak %.0f MiB", run_id, status, now - started, peak)
                self.store.set_status(run_id, status, hide_paths(error) if error else error)  # visitors see it
                if status == "failed":  # a refused upload or a failed run leaves nothing that fills the disk
                    self.store.discard_outputs(run_id)
                self._running.pop(run_id)
                self._release_slot()
                self._cancel_at.pop(run_id, None)
                self._disk_watch.pop(run_id, None)

    def _run_bytes(self, run_id: str) -> int:
        return tree_bytes(self.store.run_dir(run_id)) + tree_bytes(self.logs_dir / f"{run_id}.log")

    def _over_quota(self, run_id: str, now: float) -> bool:
        """Whether a running job has taken its owner past the disk quota (checked every DISK_CHECK_S: what the
        owner's other runs kept when it started, plus what this one has written so far, its log included). The
        quota is checked at submit too; this catches a run that writes its way past it."""
        watch = self._disk_watch.get(run_id)
        if watch is None or now - watch[1] < DISK_CHECK_S:
            return False
        watch[1] = now
        return watch[0] + self._run_bytes(run_id) > self.disk.owner_bytes


def _tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


__all__ = ["CANCEL_FLAG", "JOB_EXECUTOR_ENV", "JOB_FILE", "JobRunner", "JobSpec", "JobStatus", "MAX_RESTARTS",
           "OUTCOME", "RUN_INPUTS", "worker_core"]
