"""Isolation and jobs: everything that reads user files runs in a fresh worker process with resource limits.

Two ways in:

- `run_isolated` (and `inspect_isolated`, `check_data_isolated`, `run_recipe_isolated` on top of it) runs one
  function in a worker and waits for its JSON result: the dashboard's upload / inspect path and the CLI use it,
  so hostile bytes are never parsed in the server or the CLI process.
- `JobRunner` queues pipeline runs in the run store and starts at most `max_workers` workers, one active job
  per owner by default.

A worker is a new Python interpreter (``subprocess``, not ``fork``: nothing of the server's memory is shared),
started with a marker on its command line, its own session, a minimal environment and ``PR_SET_PDEATHSIG`` so
it dies with its parent. Before it reads anything it caps its address space, CPU time, file size and core dumps.
The parent enforces a wall-clock timeout and kills the worker's process group when it passes. A crash (a
segfault in a native parser), an out-of-memory or a timeout becomes one clear error for that request or job;
the server and other users carry on. Results come back as JSON only (never pickle), so a compromised worker
cannot hand the server an object that runs code. See SECURITY.md for what this does and does not protect.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import BadInputError, FeatherweightError, StepFailedError, UnsupportedModelError
from core.jobs.store import ACTIVE, WORKER_MARKER, RunStore, write_atomic

logger = logging.getLogger("featherweight.jobs")

CANCEL_FLAG = "cancel.flag"
OUTCOME = "outcome.json"
ISOLATION_ENV = "FEATHERWEIGHT_ISOLATION"  # "off" runs in-process: for debugging only, never on a server
MAX_REPLY_BYTES = 256 * 2**20  # a model card of a 100k-node graph is a few MiB
LOG_TAIL_BYTES = 64 * 1024
_ERROR_CLASSES = {cls.__name__: cls for cls in (FeatherweightError, BadInputError, UnsupportedModelError,
                                                StepFailedError)}
# Variables a worker inherits; everything else (tokens, cloud credentials, ...) stays with the server.
_ENV_KEEP = {"PATH", "HOME", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP", "TZ", "USER", "LOGNAME", "VIRTUAL_ENV",
             "SYSTEMROOT", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE"}
_ENV_KEEP_PREFIXES = ("FEATHERWEIGHT_", "LC_", "OMP_", "MKL_", "OPENBLAS_", "ORT_", "RAY_")
_ROOT = str(Path(__file__).resolve().parent.parent)  # the directory holding core/ and sample_models/


# --------------------------------------------------------------------------------------------------------------
# Limits


@dataclass(frozen=True)
class ResourceLimits:
    """Per-worker limits. Defaults suit a 2-core, 24 GiB server shared by a workshop."""

    address_space_mb: int = 8192  # torch + onnxruntime + their thread arenas map ~1-3 GiB before any model
    cpu_seconds: int = 1800
    file_size_mb: int = 2048
    wall_seconds: float = 1800.0
    threads: int = 1  # torch / BLAS threads in the worker; benchmark threads come from the recipe

    @classmethod
    def from_env(cls, prefix: str = "FEATHERWEIGHT_WORKER", base: "ResourceLimits | None" = None) \
            -> "ResourceLimits":
        """`base` (default: the defaults), overridden by ``{prefix}_{MEMORY_MB,CPU_S,FILE_MB,WALL_S,THREADS}``.

        Raises:
            BadInputError: a variable is set to something that is not a positive number.
        """
        base = base or cls()

        def get(name, default, cast):
            var = f"{prefix}_{name}"
            raw = os.environ.get(var, "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise BadInputError(f"{var}={raw!r} must be a positive number")
            return value

        return cls(address_space_mb=get("MEMORY_MB", base.address_space_mb, int),
                   cpu_seconds=get("CPU_S", base.cpu_seconds, int),
                   file_size_mb=get("FILE_MB", base.file_size_mb, int),
                   wall_seconds=get("WALL_S", base.wall_seconds, float),
                   threads=get("THREADS", base.threads, int))

    @classmethod
    def for_inspect(cls) -> "ResourceLimits":
        """Limits for checking one upload (load + model card): FEATHERWEIGHT_INSPECT_* override them."""
        # 4 GiB of address space holds torch (for .pt files) plus a 512 MiB ONNX file parsed, checked and
        # serialized again for the card; a valid upload takes seconds, so two minutes is generous.
        return cls.from_env("FEATHERWEIGHT_INSPECT", cls(address_space_mb=4096, cpu_seconds=120, file_size_mb=256,
                                                         wall_seconds=120.0))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _apply_limits(limits: ResourceLimits, *, ray: bool = False) -> None:
    """Cap this process (called first thing in a worker): address space, CPU time, file size, no core dumps.

    With `ray`, the address-space and file-size caps are left off: Ray's local runtime (child processes of the
    worker) maps and sizes a shared-memory object store of several GiB.
    """
    import resource

    mb = 2**20
    caps = [(resource.RLIMIT_CPU, limits.cpu_seconds), (resource.RLIMIT_CORE, 0)]
    if not ray:
        caps += [(resource.RLIMIT_AS, limits.address_space_mb * mb), (resource.RLIMIT_FSIZE, limits.file_size_mb * mb)]
    for which, value in caps:
        soft, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        if which == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY:
            hard = cap + 5  # SIGXCPU at the soft limit, SIGKILL 5 s later if it is ignored
        resource.setrlimit(which, (cap, hard))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(limits.threads)


# --------------------------------------------------------------------------------------------------------------
# Starting a worker


# Runs in the new interpreter, before anything else: die with the parent, then hand over to `_child_main`.
# (core/__init__.py loads its re-exports lazily, so importing core.jobs.queue here stays cheap.)
# A worker starts in its caller's working directory, so a relative path means there what it means to the caller
# (the CLI makes every path absolute first anyway); `-c` puts that directory first on sys.path, where a stray
# `numpy.py` would shadow the real one, so it is dropped before anything else is imported.
_BOOTSTRAP = r"""
import sys
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]
import os
marker, root, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: die with the process that started us
except Exception:
    pass
if os.getppid() != parent:
    os._exit(70)
sys.path.insert(0, root)
from core.jobs.queue import _child_main
_child_main()
"""


def _worker_env(limits: ResourceLimits) -> dict:
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MiB of address space per thread arena otherwise
    env["PYTHONFAULTHANDLER"] = "1"  # a native crash leaves a Python stack in the server log
    # onnxruntime (1.32 on Linux) otherwise keeps a device id and a telemetry event store in
    # ~/.cache/Microsoft/DeveloperTools/.onnxruntime: a run writes only its output and the sample cache.
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(limits.threads)
    return env


def _start_worker(request: dict, limits: ResourceLimits, *, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  cwd: str | None = None) -> subprocess.Popen:
    """Start a worker interpreter (in `cwd`, default this process's working directory) and hand it `request`
    (JSON) on stdin."""
    command = [sys.executable, "-c", _BOOTSTRAP, WORKER_MARKER, _ROOT, str(os.getpid())]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                               env=_worker_env(limits), cwd=cwd, start_new_session=True, close_fds=True)
    try:
        process.stdin.write(json.dumps(request).encode("utf-8"))
        process.stdin.close()
    except OSError:  # the worker died at once; its exit status tells why
        pass
    return process


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        try:
            process.kill()
        except OSError:
            pass


def _wait4(process: subprocess.Popen, block: bool) -> tuple[int | None, float]:
    """Reap the worker: (exit code or -signal, or None while it runs; its peak RSS in MiB)."""
    if process.returncode is not None:
        return process.returncode, 0.0
    try:
        pid, status, usage = os.wait4(process.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        process.returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
        return process.returncode, 0.0
    if pid == 0:
        return None, 0.0
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def describe_exit(code: int | None, limits: ResourceLimits, phase: str, log_tail: str = "") -> str:
    """One line saying why a worker ended without a result."""
    while_ = f" while {phase}" if phase else ""
    if code is None:
        return f"the worker did not finish{while_}"
    if code < 0:
        sig = -code
        if sig == signal.SIGKILL:
            return (f"the worker was killed{while_} (out of memory, or stopped by the server; the worker may use "
                    f"{limits.address_space_mb:,} MiB)")
        if sig == signal.SIGXCPU:
            return f"the worker used more than {limits.cpu_seconds} s of CPU time{while_} and was stopped"
        if sig == signal.SIGXFSZ:
            return f"the worker tried to write a file over {limits.file_size_mb:,} MiB{while_} and was stopped"
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT):
            return (f"the worker crashed ({_signal_name(code)}){while_}; the file is probably malformed or "
                    "hostile, and was refused")
        return f"the worker died from {_signal_name(code)}{while_}"
    if _looks_out_of_memory(log_tail):
        return f"the worker ran out of memory{while_} (it may use {limits.address_space_mb:,} MiB)"
    return f"the worker exited with code {code}{while_} without a result (details in the server log)"


_OOM_WORDS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "can't allocate memory", "Failed to allocate",
              "failed to map segment", "out of memory", "std::bad_alloc", "memory allocation failed")


def _looks_out_of_memory(text: str) -> bool:
    return any(word in text for word in _OOM_WORDS)


# --------------------------------------------------------------------------------------------------------------
# run_isolated: one function in a worker, a JSON result back


def _isolation_disabled() -> bool:
    return os.environ.get(ISOLATION_ENV, "").strip().lower() in ("off", "0", "false", "no")


def run_isolated(fn_name: str, *args, limits: ResourceLimits | None = None, timeout: float | None = None,
                 on_message: Callable[[dict], None] | None = None, stats: dict | None = None) -> Any:
    """Run ``fn_name(*args)`` in a fresh worker process with resource limits and return its JSON result.

    Args:
        fn_name: a name from `ISOLATED_FUNCTIONS`, or ``"package.module:function"`` (server code only: it
            names code to import, never something a user typed).
        args: JSON-serializable arguments.
        limits: the worker's limits (default `ResourceLimits.for_inspect()`).
        timeout: wall-clock seconds before the worker is killed (default ``limits.wall_seconds``).
        on_message: called in this thread with each progress message the worker sends.
        stats: a dict to fill with ``wall_s``, ``peak_rss_mb`` and ``exit_code`` of the worker.

    Returns:
        What the function returned (JSON types).

    Raises:
        FeatherweightError (or the subclass the worker raised): the function refused its input; or the worker
            crashed, ran out of memory or time. Reading user input -> BadInputError; later -> StepFailedError.
            The message is one line; details (the worker's stderr) go to the ``featherweight.jobs`` log.
    """
    limits = limits or ResourceLimits.for_inspect()
    timeout = float(timeout if timeout is not None else limits.wall_seconds)
    stats = stats if stats is not None else {}
    if _isolation_disabled():
        return _run_in_process(fn_name, args, on_message)
    request = {"entry": fn_name, "args": list(args), "limits": limits.to_dict()}
    started = time.monotonic()
    process = _start_worker(request, limits)
    current_phase = ""
    result: dict | None = None
    reported_peak: float | None = None
    log = bytearray()
    pending = bytearray()
    timed_out = False
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "reply")
    selector.register(process.stderr, selectors.EVENT_READ, "log")
    try:
        while selector.get_map():
            remaining = started + timeout - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(min(remaining, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                if key.data == "log":
                    log += chunk
                    del log[:-LOG_TAIL_BYTES]
                    continue
                pending += chunk
                if len(pending) > MAX_REPLY_BYTES:
                    raise StepFailedError(f"the worker sent a reply over {MAX_REPLY_BYTES // 2**20} MiB; stopped")
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    message = _parse_message(line)
                    if message is None:
                        continue
                    kind = message.get("t")
                    if kind == "phase" and isinstance(message.get("phase"), str):
                        current_phase = message["phase"][:200]
                    elif kind in ("result", "error"):
                        result = message
                    elif kind == "stats" and isinstance(message.get("peak_rss_mb"), (int, float)):
                        reported_peak = float(message["peak_rss_mb"])
                    elif kind == "progress" and on_message is not None:
                        on_message(message)
        if timed_out:
            _kill_group(process)
        code, peak = _wait4(process, block=timed_out)
        # Both pipes are closed; a worker normally exits at once. One that closed them and keeps running gets
        # until the deadline, never a blocking wait.
        while code is None and time.monotonic() < started + timeout:
            time.sleep(0.01)
            code, peak = _wait4(process, block=False)
        if code is None:
            timed_out = True
            _kill_group(process)
            code, peak = _wait4(process, block=True)
    except BaseException:
        _kill_group(process)
        _wait4(process, block=True)
        raise
    finally:
        selector.close()
        for stream in (process.stdout, process.stderr):
            stream.close()
    # The worker's own VmHWM when it could report it; else the kernel's figure, which also counts the parent's
    # image at fork time (an upper bound).
    stats.update(wall_s=round(time.monotonic() - started, 3), exit_code=code,
                 peak_rss_mb=reported_peak if reported_peak is not None else round(peak, 1))
    tail = log.decode("utf-8", "replace")
    reading = current_phase.startswith("reading") or not current_phase
    error_class = BadInputError if reading else StepFailedError
    if timed_out:
        _log_failure(fn_name, f"timed out after {timeout:g} s", tail)
        while_ = f" while {current_phase}" if current_phase else ""
        raise error_class(f"the worker took longer than {timeout:g} s{while_} and was stopped")
    if result is not None and result.get("t") == "result":
        logger.debug("isolated %s: %.2f s, peak %.0f MiB", fn_name, stats["wall_s"], stats["peak_rss_mb"])
        return result.get("value")
    if result is not None and result.get("t") == "error":
        cls = _ERROR_CLASSES.get(result.get("kind"), StepFailedError)
        if result.get("internal"):
            _log_failure(fn_name, str(result.get("message")), tail)
        raise cls(_one_line(result.get("message")))
    _log_failure(fn_name, f"exit {code}", tail)
    raise error_class(describe_exit(code, limits, current_phase, tail))


def _parse_message(line: bytes) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _one_line(text: Any, limit: int = 1000) -> str:
    text = " ".join(str(text or "the worker failed without saying why").split())
    return text[:limit]


def _log_failure(fn_name: str, what: str, tail: str) -> None:
    logger.warning("isolated %s failed (%s); worker stderr tail:\n%s", fn_name, what, tail[-8000:] or "(empty)")


def _run_in_process(fn_name: str, args, on_message) -> Any:
    """ISOLATION=off: the same function and JSON round trip, in this process (debugging only)."""
    fn = _resolve(fn_name)
    global _SEND
    previous = _SEND
    _SEND = (lambda message: on_message(message) if on_message and message.get("t") == "progress" else None)
    try:
        return json.loads(json.dumps(fn(*args), default=str))
    finally:
        _SEND = previous


# --------------------------------------------------------------------------------------------------------------
# Inside the worker


_SEND: Callable[[dict], None] | None = None


def send(message: dict) -> None:
    """From inside a worker: send a message (JSON) to the parent. Does nothing outside a worker."""
    if _SEND is not None:
        _SEND(message)


def phase(text: str) -> None:
    """From inside a worker: say what it is doing now, so that a crash or timeout message can name it."""
    send({"t": "phase", "phase": text})


def _resolve(fn_name: str) -> Callable:
    if fn_name in ISOLATED_FUNCTIONS:
        return ISOLATED_FUNCTIONS[fn_name]
    module_name, _, attr = fn_name.partition(":")
    if not module_name or not attr:
        raise StepFailedError(f"unknown isolated function {fn_name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), attr)


def _child_main() -> None:
    """Entry point of every worker: read the request, cap resources, run it, reply with one JSON line."""
    global _SEND
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the reply channel
    lock = threading.Lock()

    def write(message: dict) -> None:
        data = (json.dumps(message, default=str) + "\n").encode("utf-8")
        with lock:
            view = memoryview(data)
            while view:
                written = os.write(reply_fd, view)
                view = view[written:]

    _SEND = write
    request = json.loads(sys.stdin.buffer.read(1 << 20) or b"{}")
    limits = ResourceLimits(**request.get("limits", {}))
    entry = request.get("entry", "")
    args = request.get("args", [])
    ray = (entry == "run_recipe" and len(args) > 4 and args[4] == "ray") or \
        (entry == "job" and bool(args) and isinstance(args[0], dict) and args[0].get("executor") == "ray")
    _apply_limits(limits, ray=ray)
    current = {"phase": ""}

    def track(message):
        if message.get("t") == "phase":
            current["phase"] = message.get("phase", "")
        write(message)

    _SEND = track
    try:
        value = _resolve(entry)(*args)
        write({"t": "result", "value": value})
    except FeatherweightError as exc:
        write({"t": "error", "kind": type(exc).__name__ if type(exc).__name__ in _ERROR_CLASSES
               else "FeatherweightError", "message": _one_line(exc)})
    except BaseException as exc:  # noqa: BLE001 - the reply must say something for every failure
        traceback.print_exc()
        where = f" while {current['phase']}" if current["phase"] else ""
        reading = current["phase"].startswith("reading") or not current["phase"]
        kind = "BadInputError" if reading else "StepFailedError"
        if isinstance(exc, MemoryError) or _looks_out_of_memory(f"{type(exc).__name__}: {exc}"):
            message = f"the worker ran out of memory{where} (it may use {limits.address_space_mb:,} MiB)"
        elif isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}{where}" + (f": {exc.filename}" if exc.filename else "")
        else:
            message = f"internal error{where}: {type(exc).__name__} (details in the server log)"
        write({"t": "error", "kind": kind, "message": message, "internal": True})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        peak = _own_peak_rss_mb()
        if peak is not None:
            write({"t": "stats", "peak_rss_mb": peak})
    os._exit(0)  # skip interpreter teardown: nothing left to flush, and native atexit hooks can crash


def _own_peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---- the functions a worker runs


def _inspect_entry(spec: str, display: str | None = None) -> dict:
    from core.io.model import load_model, model_card

    name = display or spec
    phase(f"reading {name}")
    model = load_model(spec)
    phase(f"describing {name}")
    card = model_card(model)
    if display:
        card["source"] = display
    return card


def _check_data_entry(model_spec: str, data_spec: str | None, seed: int = 0) -> dict:
    from core.io.data import load_data
    from core.io.model import load_model

    phase(f"reading {Path(model_spec).name if not model_spec.startswith('sample:') else model_spec}")
    model = load_model(model_spec)
    phase(f"reading {Path(data_spec).name if data_spec and not data_spec.startswith('sample:') else data_spec}")
    return load_data(data_spec, model, seed=seed).summary()


def _run_recipe_entry(recipe_path: str, out_dir: str, model: str | None = None, data: str | None = None,
                      executor: str = "local", ray_address: str | None = None) -> dict:
    from core.io.model import load_model
    from core.spec.recipe import Recipe

    phase("reading the recipe")
    recipe = Recipe.load(recipe_path)
    model_spec = model or recipe.model
    data_spec = data if data is not None else recipe.data
    # Refuse hostile files before the pipeline imports torch (the run reads them again: they are small next to
    # what the run does).
    if model_spec and not model_spec.startswith("sample:"):
        phase(f"reading {Path(model_spec).name}")
        checked = load_model(model_spec)
        if data_spec and not data_spec.startswith("sample:"):
            from core.io.data import load_data

            phase(f"reading {Path(data_spec).name}")
            load_data(data_spec, checked, seed=recipe.seed, sequence_length=recipe.benchmark.sequence_length)
    phase("running the recipe")
    from core.pipeline.run import run_recipe

    def on_progress(event):
        send({"t": "progress", "event": event.to_dict()})

    result = run_recipe(recipe, out_dir, model_spec=model, data_spec=data, on_progress=on_progress,
                        executor=executor, ray_address=ray_address)
    return {"status": result.status, "variants": len(result.variants),
            "failed": [v.name for v in result.variants if v.status == "failed"]}


def _selftest_segfault() -> None:
    """Crash the way a buggy native parser would (tests and operators check isolation with it)."""
    import ctypes

    phase("reading selftest.bin")
    ctypes.string_at(0)


def _selftest_sleep(seconds: float) -> None:
    phase("reading selftest.bin")
    time.sleep(float(seconds))


def _selftest_allocate(mb: int) -> int:
    phase("reading selftest.bin")
    block = bytearray(int(mb) * 2**20)
    return len(block)


def _job_entry(spec: dict, limits: dict) -> None:
    worker_main(JobSpec(**spec), ResourceLimits(**limits))


def _learn_entry(source: dict, what: str, params: dict) -> Any:
    """A Learn explainer's view (core.teach.explainers.EXPLAINERS[what]) of an uploaded, sample or local model, computed
    here; uploads arrive as files in a private temporary directory, read back into the bytes the page had."""
    from core.teach import explainers as learn

    fields = dict(source)
    for kind in ("model", "data"):
        path = fields.pop(f"{kind}_path", None)
        if path:
            fields[f"{kind}_content"] = Path(path).read_bytes()
    phase(f"reading {fields.get('label') or 'the model'}")
    return learn.encode_view(learn.explain(learn.LearnSource(**fields), what, params, on_point=lambda point: send(
        {"t": "progress", "point": learn.encode_view(point)}), on_loaded=lambda: phase(f"explaining ({what})")))


def _learn_run_estimates_entry(store_root: str, run_id: str, results: dict) -> Any:
    """Each finished variant's estimated size beside its measured one, from the run's own model file."""
    from core.teach import explainers as learn

    phase(f"reading run {run_id}'s model")
    proto = learn.run_baseline_proto(RunStore(store_root), run_id, results)
    phase("estimating the run's variants")
    return learn.encode_view(learn.estimate_vs_measured(results, proto))


def _compute_profile_entry(path: str) -> dict:
    """The compute profile (core.results.cost.model_compute_profile) of a run's ONNX file (with its external data)."""
    import onnx

    from core.results.cost import model_compute_profile

    phase(f"reading {Path(path).name}")
    proto = onnx.load(path)
    phase(f"profiling {Path(path).name}")
    return model_compute_profile(proto)


ISOLATED_FUNCTIONS: dict[str, Callable] = {
    "inspect": _inspect_entry,
    "check_data": _check_data_entry,
    "run_recipe": _run_recipe_entry,
    "job": _job_entry,
    "learn": _learn_entry,
    "learn-run-estimates": _learn_run_estimates_entry,
    "compute-profile": _compute_profile_entry,
    "selftest-segfault": _selftest_segfault,
    "selftest-sleep": _selftest_sleep,
    "selftest-allocate": _selftest_allocate,
}


# --------------------------------------------------------------------------------------------------------------
# The helpers the dashboard and the CLI call


def _upload_dir(data: bytes, filename: str) -> tuple[str, Path]:
    """Write uploaded bytes to a private temporary directory under a safe name; return (dir, path)."""
    from core.io.model import LoadLimits

    caps = LoadLimits.from_env()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadInputError(f"{filename}: expected the file's bytes")
    if len(data) > caps.max_file_bytes:
        raise BadInputError(f"{Path(filename).name} is {len(data) / 2**20:,.1f} MiB; the limit is "
                            f"{caps.max_file_bytes / 2**20:,.0f} MiB")
    name = Path(str(filename)).name
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem).strip("._") or "upload"
    suffix = "".join(c for c in Path(name).suffix.lower() if c.isalnum() or c == ".")
    directory = tempfile.mkdtemp(prefix="featherweight-upload-")
    path = Path(directory) / f"{stem[:100]}{suffix}"
    path.write_bytes(bytes(data))
    return directory, path


def inspect_isolated(source: str | bytes, filename: str | None = None, *, limits: ResourceLimits | None = None,
                     timeout: float | None = None, stats: dict | None = None) -> dict:
    """Validate a model and build its card in a worker: nothing of the file is parsed in this process.

    Args:
        source: ``sample:NAME``, a file path, or an upload's bytes (then `filename` gives the format).
        filename: the upload's name (required with bytes).
        limits / timeout / stats: as for `run_isolated` (default `ResourceLimits.for_inspect()`).

    Returns:
        The model card (as `core.io.model.model_card`).

    Raises:
        BadInputError: the file is refused, or the worker crashed, ran out of memory or time reading it.
        UnsupportedModelError: a valid file Featherweight cannot use.
    """
    from core.io.model import _check_suffix

    if isinstance(source, (bytes, bytearray, memoryview)):
        if not filename:
            raise BadInputError("an uploaded model needs its file name (for the format)")
        _check_suffix(Path(filename).name)
        directory, path = _upload_dir(source, filename)
        try:
            return run_isolated("inspect", str(path), Path(filename).name, limits=limits, timeout=timeout,
                                stats=stats)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    if not isinstance(source, str) or not source.strip():
        raise BadInputError("no model given: pass a path or sample:NAME")
    if not source.startswith("sample:"):
        _check_suffix(Path(source).name)
    return run_isolated("inspect", source, limits=limits, timeout=timeout, stats=stats)


def check_data_isolated(model: str | bytes, data: str | bytes | None, *, model_filename: str | None = None,
                        data_filename: str | None = None, seed: int = 0, limits: ResourceLimits | None = None,
                        timeout: float | None = None, stats: dict | None = None) -> dict:
    """Load a model and bind data to it in a worker; return the dataset summary (`Dataset.summary()`).

    `model` / `data` are specs (``sample:NAME``, a path; data may be None for synthetic inputs) or uploaded
    bytes with their file names.

    Raises:
        BadInputError: a file is refused, or the data does not fit the model (one line naming both shapes).
    """
    directories = []
    try:
        if isinstance(model, (bytes, bytearray, memoryview)):
            directory, path = _upload_dir(model, model_filename or "model.onnx")
            directories.append(directory)
            model = str(path)
        if isinstance(data, (bytes, bytearray, memoryview)):
            directory, path = _upload_dir(data, data_filename or "data.npz")
            directories.append(directory)
            data = str(path)
        return run_isolated("check_data", model, data, seed, limits=limits, timeout=timeout, stats=stats)
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)


def run_recipe_isolated(recipe_path: str, out_dir: str, *, model: str | None = None, data: str | None = None,
                        executor: str = "local", ray_address: str | None = None,
                        on_progress: Callable | None = None, limits: ResourceLimits | None = None) -> dict:
    """`featherweight run` in a worker with the job limits (FEATHERWEIGHT_WORKER_*); progress comes back live.

    Returns:
        ``{"status", "variants", "failed"}``.

    Raises:
        FeatherweightError: bad recipe, model or data; or the worker crashed, ran out of memory or time.
    """
    limits = limits or ResourceLimits.from_env()
    return run_isolated("run_recipe", str(recipe_path), str(out_dir), model, data, executor, ray_address,
                        limits=limits, on_message=progress_forwarder(on_progress))


def learn_limits() -> ResourceLimits:
    """Limits for one Learn explainer (load + view; the sweep and live distillation train for up to a minute or
    two on the samples): FEATHERWEIGHT_LEARN_* override them."""
    return ResourceLimits.from_env("FEATHERWEIGHT_LEARN", ResourceLimits(address_space_mb=4096, cpu_seconds=600,
                                                                         file_size_mb=256, wall_seconds=600.0))


def explain_isolated(source, what: str, params: dict | None = None, *, on_point: Callable | None = None,
                     limits: ResourceLimits | None = None, stats: dict | None = None) -> Any:
    """A Learn explainer's view (`core.teach.explainers.EXPLAINERS`) computed in a worker: the model and data of `source`
    (a `core.teach.explainers.LearnSource`: sample, path or uploaded bytes) are parsed there, never in this process.

    Args:
        on_point: for "sweep" and "distill", called in this thread with each row / epoch point as it comes.

    Returns:
        The view, decoded (`core.teach.explainers.decode_view`): arrays and frames as the in-process function returns them.

    Raises:
        FeatherweightError: the file is refused, the view fails, or the worker crashed or ran out of time/memory.
    """
    from core.teach import explainers as learn

    request = {"key": source.key, "label": source.label, "model_spec": source.model_spec,
               "model_filename": source.model_filename, "data_spec": source.data_spec,
               "data_filename": source.data_filename}
    directories = []

    def forward(message: dict) -> None:
        if on_point is not None and message.get("t") == "progress" and "point" in message:
            on_point(learn.decode_view(message["point"]))

    try:
        for kind in ("model", "data"):
            content = getattr(source, f"{kind}_content")
            if content is not None:
                directory, path = _upload_dir(content, getattr(source, f"{kind}_filename") or f"{kind}.bin")
                directories.append(directory)
                request[f"{kind}_path"] = str(path)
        value = run_isolated("learn", request, what, dict(params or {}), limits=limits or learn_limits(),
                             on_message=forward, stats=stats)
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
    return learn.decode_view(value)


def run_estimates_isolated(store: RunStore, run_id: str, results: dict) -> Any:
    """`core.teach.explainers.estimate_vs_measured` for a run, with the run's model file read in a worker (a DataFrame).

    Raises:
        FeatherweightError: the model cannot be found (outside the run directory: refused) or loaded.
    """
    from core.teach import explainers as learn

    return learn.decode_view(run_isolated("learn-run-estimates", str(store.root), run_id, results,
                                          limits=learn_limits()))


def compute_profile_isolated(path: str) -> dict:
    """`core.results.cost.model_compute_profile` of an ONNX file, parsed in a worker with the upload limits."""
    return run_isolated("compute-profile", str(path), limits=ResourceLimits.for_inspect())


def progress_forwarder(on_progress) -> Callable[[dict], None]:
    """An `on_message` for run_isolated that turns the worker's progress messages into ProgressEvents for
    `on_progress` (None: drop them). A malformed event from the worker is dropped, never trusted."""

    def forward(message: dict) -> None:
        if on_progress is None or message.get("t") != "progress":
            return
        from core.pipeline.run import ProgressEvent

        event = message.get("event")
        try:
            names = {f.name for f in dataclasses.fields(ProgressEvent)}
            on_progress(ProgressEvent(**{k: v for k, v in event.items() if k in names}))
        except (TypeError, AttributeError, ValueError, KeyError):
            pass

    return forward


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
    kind: str = "run"  # "run": the recipe; else an insight job (core.jobs.insight.KINDS: sensitivity, tune, diagnose)
    executor: str = "local"  # "ray": the worker drives the run's variants as tasks on a Ray cluster
    ray_address: str | None = None


@dataclass
class JobStatus:
    """A run's state as the dashboard shows it."""

    run_id: str
    state: str  # queued | running | completed | failed | cancelled | interrupted
    queue_position: int | None  # 1 = next to start
    progress: dict | None
    error: str | None


def worker_main(spec: JobSpec, limits: ResourceLimits) -> None:
    """The body of a job worker (limits already applied): run the recipe, write outcome.json atomically."""
    run_dir = Path(spec.run_dir)
    outcome = {"status": "failed", "error": None}
    try:
        import torch

        torch.set_num_threads(limits.threads)
        from core.pipeline.run import run_recipe
        from core.spec.recipe import Recipe

        store = RunStore(run_dir.parent.parent)
        recipe = Recipe.load(run_dir / "recipe.yaml")
        cancel_flag = run_dir / CANCEL_FLAG

        def on_progress(event):
            store.write_progress(spec.run_id, event.to_dict())

        try:
            if spec.kind != "run":
                from core.jobs.insight import run_job

                status = run_job(spec.kind, run_dir, spec.model, spec.data, on_progress=on_progress,
                                 should_stop=cancel_flag.exists)
                outcome = {"status": status, "error": None}
            else:
                result = run_recipe(recipe, run_dir, model_spec=spec.model, data_spec=spec.data,
                                    on_progress=on_progress, should_stop=cancel_flag.exists,
                                    executor=spec.executor, ray_address=spec.ray_address)
                outcome = {"status": "cancelled" if result.status == "cancelled" else "completed", "error": None}
        except FeatherweightError as exc:
            outcome = {"status": "failed", "error": _one_line(exc)}
    except BaseException as exc:  # noqa: BLE001 - anything else is a failed run, logged with its traceback
        traceback.print_exc()
        if isinstance(exc, MemoryError) or _looks_out_of_memory(f"{type(exc).__name__}: {exc}"):
            error = f"the worker ran out of memory (it may use {limits.address_space_mb:,} MiB)"
        else:
            error = f"internal error: {exc.__class__.__name__} (details in the server log)"
        outcome = {"status": "failed", "error": error}
    write_atomic(run_dir / OUTCOME, json.dumps(outcome))


def _read_outcome(path: Path) -> tuple[str, str | None] | None:
    """The worker's outcome.json, validated (the worker is not trusted to say anything but these)."""
    try:
        outcome = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(outcome, dict) or outcome.get("status") not in ("completed", "failed", "cancelled"):
        return None
    error = outcome.get("error")
    return outcome["status"], (_one_line(error, 500) if error else None)


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
    """

    def __init__(self, store: RunStore, *, max_workers: int | None = None, max_queue: int | None = None,
                 per_owner: int | None = None, max_variants: int | None = None,
                 limits: ResourceLimits | None = None, poll_s: float = 0.2, allow_local_paths: bool | None = None,
                 executor: str | None = None, ray_address: str | None = None):
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
        self.max_workers = setting(max_workers, "FEATHERWEIGHT_WORKERS", 1)
        self.max_queue = setting(max_queue, "FEATHERWEIGHT_MAX_QUEUE", 32)
        self.per_owner = setting(per_owner, "FEATHERWEIGHT_JOBS_PER_SESSION", 1)
        self.max_variants = setting(max_variants, "FEATHERWEIGHT_MAX_VARIANTS", 64)
        self.limits = limits or ResourceLimits.from_env()
        self.allow_local_paths = (os.environ.get("FEATHERWEIGHT_ALLOW_LOCAL_PATHS") == "1"
                                  if allow_local_paths is None else allow_local_paths)
        self.executor, self.ray_address = _job_executor(executor, ray_address)
        self.poll_s = poll_s
        self.logs_dir = Path(store.root) / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._queue: collections.deque[JobSpec] = collections.deque()
        self._running: dict[str, tuple[subprocess.Popen, float, JobSpec]] = {}
        self._cancel_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.recovered = store.recover()
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
        from core.io.model import LoadLimits
        from core.spec.recipe import Recipe

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
        if kind != "run":
            from core.jobs.insight import KINDS

            if kind not in KINDS:
                raise BadInputError(f"job kind {kind!r} is not supported; allowed: run, {', '.join(KINDS)}")
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
            record = self.store.create(owner, recipe_yaml, label=label, model=model, data=data)
        run_dir = self.store.run_dir(record.id)
        try:
            for name, content in inputs.items():
                write_atomic(run_dir / "inputs" / name, bytes(content))
        except OSError as exc:
            self.store.set_status(record.id, "failed", f"could not save the upload: {exc.strerror or exc}")
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
        with self._lock:
            self._queue.append(spec)
        return record.id

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
                _kill_group(process)
                _wait4(process, block=True)
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
                logger.exception("job dispatcher error")
            self._stop.wait(self.poll_s)

    def _limits_of(self, spec: JobSpec) -> ResourceLimits:
        return ResourceLimits(**spec.limits) if spec.limits else self.limits

    def _start_next(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_workers and not self._stop.is_set():
                spec = self._queue.popleft()
                limits = self._limits_of(spec)
                request = {"entry": "job", "args": [dataclasses.asdict(spec), limits.to_dict()],
                           "limits": limits.to_dict()}
                try:
                    with open(self.logs_dir / f"{spec.run_id}.log", "ab") as log:
                        process = _start_worker(request, limits, stdout=log, stderr=log, cwd=spec.run_dir)
                except OSError as exc:
                    self.store.set_status(spec.run_id, "failed", f"could not start a worker: {exc.strerror or exc}")
                    continue
                self._running[spec.run_id] = (process, time.monotonic(), spec)
                self.store.set_status(spec.run_id, "running", pid=process.pid)

    def _reap(self) -> None:
        with self._lock:
            for run_id, (process, started, spec) in list(self._running.items()):
                limits = self._limits_of(spec)
                now = time.monotonic()
                overdue = now - started > limits.wall_seconds
                cancel_overdue = run_id in self._cancel_at and now - self._cancel_at[run_id] > 10
                code, peak = _wait4(process, block=False)
                if code is None and not (overdue or cancel_overdue):
                    continue
                if code is None:
                    _kill_group(process)
                    code, peak = _wait4(process, block=True)
                outcome = _read_outcome(Path(spec.run_dir) / OUTCOME)
                if outcome is not None:
                    status, error = outcome
                elif overdue:
                    status, error = "failed", (f"timed out: the run took longer than {limits.wall_seconds:g} s "
                                               "and was stopped")
                elif cancel_overdue:
                    status, error = "cancelled", "cancelled by the user"
                else:
                    tail = _tail(self.logs_dir / f"{run_id}.log")
                    status, error = "failed", describe_exit(code, limits, "", tail)
                    _log_failure(f"job {run_id}", f"exit {code}", tail)
                logger.info("job %s %s in %.1f s, worker peak %.0f MiB", run_id, status, now - started, peak)
                self.store.set_status(run_id, status, error)
                self._running.pop(run_id)
                self._cancel_at.pop(run_id, None)


def _tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


__all__ = ["CANCEL_FLAG", "ISOLATED_FUNCTIONS", "JobRunner", "JobSpec", "JobStatus", "ResourceLimits",
           "check_data_isolated", "compute_profile_isolated", "describe_exit", "explain_isolated",
           "inspect_isolated", "learn_limits", "phase", "run_estimates_isolated", "run_isolated",
           "run_recipe_isolated", "send", "worker_main"]
