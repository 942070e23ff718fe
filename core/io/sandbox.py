"""The sandbox: one function, named ``"module:function"``, run in a fresh worker process with resource limits.

`run_isolated` starts a worker and waits for its JSON result; the dashboard's upload / inspect path and the CLI
call it (through `core.jobs.entries`), so hostile bytes are never parsed in the server or the CLI process. The
function is resolved by name inside the worker, so this module imports none of its callers; `core.jobs.queue`
starts its job workers with the same `start_worker`.

A worker is a new Python interpreter (``subprocess``, not ``fork``: nothing of the server's memory is shared),
started with a marker on its command line, its own session, a minimal environment and ``PR_SET_PDEATHSIG`` so
it dies with its parent. Before it reads anything it caps its address space, CPU time, file size and core dumps.
The parent enforces a wall-clock timeout and kills the worker's process group when it passes. A crash (a
segfault in a native parser), an out-of-memory or a timeout becomes one clear error for that request or job;
the server and other users carry on. Results come back as JSON only (never pickle), so a compromised worker
cannot hand the server an object that runs code. See SECURITY.md for what this does and does not protect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import selectors
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
from core.format import hide_paths, one_line
from core.io.pool import current_requester, process_pool
from core.io.safety import LoadLimits


# Put on every worker's command line, so that recovery can tell our workers from a reused process id.
WORKER_MARKER = "featherweight-worker"

logger = logging.getLogger("featherweight.jobs")


ISOLATION_ENV = "FEATHERWEIGHT_ISOLATION"  # "off" runs in-process: for debugging only, never on a server


# The most a worker's reply may hold, read into the server's memory. A model card is capped at a few hundred KiB
# (core.measure.card); the largest Learn view (a weight histogram source of shapes-cnn's biggest tensor, 1.2M
# floats as JSON) is ~25 MiB.
MAX_REPLY_BYTES = 64 * 2**20


LOG_TAIL_BYTES = 64 * 1024


_ERROR_CLASSES = {cls.__name__: cls for cls in (FeatherweightError, BadInputError, UnsupportedModelError,
                                                StepFailedError)}


# Variables a worker inherits; everything else (tokens, cloud credentials, ...) stays with the server.
_ENV_KEEP = {"PATH", "HOME", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP", "TZ", "USER", "LOGNAME", "VIRTUAL_ENV",
             "SYSTEMROOT", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE"}


_ENV_KEEP_PREFIXES = ("FEATHERWEIGHT_", "LC_", "OMP_", "MKL_", "OPENBLAS_", "ORT_", "RAY_")


_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding core/ and sample_models/


INTERACTIVE_NICE = 10  # what upload checks and views add to their niceness (ResourceLimits.nice)


@dataclass(frozen=True)
class ResourceLimits:
    """Per-worker limits. Defaults suit a 2-core, 24 GiB server shared by a workshop."""

    address_space_mb: int = 8192  # torch + onnxruntime + their thread arenas map ~1-3 GiB before any model
    cpu_seconds: int = 1800
    file_size_mb: int = 2048
    wall_seconds: float = 1800.0
    threads: int = 1  # torch / BLAS threads in the worker; benchmark threads come from the recipe
    # Added to the worker's niceness: interactive workers (upload checks, views) run at 10, so on a busy machine a
    # job's worker, which measures latency, keeps its CPU (CFS weights: nice 0 gets ~90% of a core shared with a
    # nice-10 process).
    nice: int = 0

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
                   threads=get("THREADS", base.threads, int), nice=base.nice)

    @classmethod
    def for_inspect(cls) -> "ResourceLimits":
        """Limits for checking one upload (load + model card): FEATHERWEIGHT_INSPECT_* override them."""
        # 4 GiB of address space holds torch (for .pt files) plus a 512 MiB ONNX file parsed, checked and
        # serialized again for the card; a valid upload takes seconds, so two minutes is generous.
        return cls.from_env("FEATHERWEIGHT_INSPECT", cls(address_space_mb=4096, cpu_seconds=120, file_size_mb=256,
                                                         wall_seconds=120.0, nice=INTERACTIVE_NICE))

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
    if limits.nice > 0:
        os.nice(limits.nice)


# Runs in the new interpreter, before anything else: die with the parent, then hand over to `child_main`.
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
from core.io.sandbox import child_main
child_main()
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


def start_worker(request: dict, limits: ResourceLimits, *, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        try:
            process.kill()
        except OSError:
            pass


def wait_worker(process: subprocess.Popen, block: bool) -> tuple[int | None, float]:
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
    if looks_out_of_memory(log_tail):
        return f"the worker ran out of memory{while_} (it may use {limits.address_space_mb:,} MiB)"
    return f"the worker exited with code {code}{while_} without a result (details in the server log)"


_OOM_WORDS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "can't allocate memory", "Failed to allocate",
              "failed to map segment", "out of memory", "std::bad_alloc", "memory allocation failed")


def looks_out_of_memory(text: str) -> bool:
    return any(word in text for word in _OOM_WORDS)


def _isolation_disabled() -> bool:
    return os.environ.get(ISOLATION_ENV, "").strip().lower() in ("off", "0", "false", "no")


def run_isolated(fn_name: str, *args, limits: ResourceLimits | None = None, timeout: float | None = None,
                 on_message: Callable[[dict], None] | None = None, stats: dict | None = None,
                 ray: bool = False, max_reply_bytes: int = MAX_REPLY_BYTES) -> Any:
    """Run ``fn_name(*args)`` in a fresh worker process with resource limits and return its JSON result.

    The worker takes a slot of the process's worker pool (`core.io.pool`, the interactive lane) for its whole life,
    waiting in the pool's fair line when none is free; the thread's requester (`core.io.pool.acting_for`) hears its
    place in the line, and an error raised for it names no server path (its folders are cut to the file's name).

    Args:
        fn_name: ``"package.module:function"`` (server code only: it names code to import, never something a
            user typed), or one of the sandbox's own `SELFTESTS`.
        args: JSON-serializable arguments.
        limits: the worker's limits (default `ResourceLimits.for_inspect()`).
        timeout: wall-clock seconds before the worker is killed (default ``limits.wall_seconds``).
        on_message: called in this thread with each progress message the worker sends.
        stats: a dict to fill with ``wall_s``, ``peak_rss_mb`` and ``exit_code`` of the worker.
        ray: the function drives a local Ray runtime, whose object store needs the address-space and file-size
            caps left off (the CPU-time and wall-clock limits still apply).
        max_reply_bytes: the most the worker may send back (progress messages included); more is an error.

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
    with worker_slot():
        return _run_worker(fn_name, args, limits, timeout, on_message, stats, ray, max_reply_bytes)


@contextlib.contextmanager
def worker_slot():
    """Hold a slot of the process's worker pool (the interactive lane) for the block, for the thread's requester
    (`core.io.pool.acting_for`), who hears its place in the line while it waits. Re-entrant, so a caller can take
    it before it writes an upload's temporary files (a request waiting in line holds no disk) and `run_isolated`
    inside uses it. An error raised for a requester names no server path (folders cut to the file's name)."""
    requester = current_requester()
    try:
        with process_pool().interactive_slot(requester):
            yield
    except FeatherweightError as exc:
        if requester is None:
            raise
        raise type(exc)(hide_paths(str(exc))) from None


def _run_worker(fn_name: str, args: tuple, limits: ResourceLimits, timeout: float, on_message, stats: dict,
                ray: bool, max_reply_bytes: int) -> Any:
    """`run_isolated`'s body once it holds a slot: start the worker, relay its messages, read its reply."""
    request = {"entry": fn_name, "args": list(args), "limits": limits.to_dict(), "ray": bool(ray)}
    started = time.monotonic()
    process = start_worker(request, limits)
    current_phase = ""
    result: dict | None = None
    reported_peak: float | None = None
    log = bytearray()
    pending = bytearray()
    received = 0
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
                received += len(chunk)
                if received > max_reply_bytes:
                    raise StepFailedError(f"the worker sent a reply over {max_reply_bytes / 2**20:,.0f} MiB; "
                                          "stopped")
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
            kill_group(process)
        code, peak = wait_worker(process, block=timed_out)
        # Both pipes are closed; a worker normally exits at once. One that closed them and keeps running gets
        # until the deadline, never a blocking wait.
        while code is None and time.monotonic() < started + timeout:
            time.sleep(0.01)
            code, peak = wait_worker(process, block=False)
        if code is None:
            timed_out = True
            kill_group(process)
            code, peak = wait_worker(process, block=True)
    except BaseException:
        kill_group(process)
        wait_worker(process, block=True)
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
        log_failure(fn_name, f"timed out after {timeout:g} s", tail)
        while_ = f" while {current_phase}" if current_phase else ""
        raise error_class(f"the worker took longer than {timeout:g} s{while_} and was stopped")
    if result is not None and result.get("t") == "result":
        logger.debug("isolated %s: %.2f s, peak %.0f MiB", fn_name, stats["wall_s"], stats["peak_rss_mb"])
        return result.get("value")
    if result is not None and result.get("t") == "error":
        cls = _ERROR_CLASSES.get(result.get("kind"), StepFailedError)
        if result.get("internal"):
            log_failure(fn_name, str(result.get("message")), tail)
        raise cls(one_line(result.get("message")))
    log_failure(fn_name, f"exit {code}", tail)
    raise error_class(describe_exit(code, limits, current_phase, tail))


def _parse_message(line: bytes) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def log_failure(fn_name: str, what: str, tail: str) -> None:
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


_SEND: Callable[[dict], None] | None = None


def send(message: dict) -> None:
    """From inside a worker: send a message (JSON) to the parent. Does nothing outside a worker."""
    if _SEND is not None:
        _SEND(message)


def phase(text: str) -> None:
    """From inside a worker: say what it is doing now, so that a crash or timeout message can name it."""
    send({"t": "phase", "phase": text})


def _pin(core) -> None:
    """Pin the worker to `core` (the job queue gives each worker its own, `core.jobs.queue.worker_core`) before it
    imports anything: threads started later (torch's, onnxruntime's) inherit the affinity. None: unpinned."""
    if isinstance(core, int) and not isinstance(core, bool):
        try:
            os.sched_setaffinity(0, {core})
        except (AttributeError, OSError, ValueError):
            pass  # no affinity interface, or a core this machine lacks: run unpinned


def _resolve(fn_name: str) -> Callable:
    if fn_name in SELFTESTS:
        return SELFTESTS[fn_name]
    module_name, _, attr = fn_name.partition(":")
    if not module_name or not attr:
        raise StepFailedError(f"unknown isolated function {fn_name!r}")
    return getattr(importlib.import_module(module_name), attr)


def child_main() -> None:
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
    _apply_limits(limits, ray=bool(request.get("ray")))
    _pin(request.get("core"))
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
               else "FeatherweightError", "message": one_line(exc)})
    except BaseException as exc:  # noqa: BLE001 - the reply must say something for every failure
        traceback.print_exc()
        where = f" while {current['phase']}" if current["phase"] else ""
        reading = current["phase"].startswith("reading") or not current["phase"]
        kind = "BadInputError" if reading else "StepFailedError"
        if isinstance(exc, MemoryError) or looks_out_of_memory(f"{type(exc).__name__}: {exc}"):
            message = f"the worker ran out of memory{where} (it may use {limits.address_space_mb:,} MiB)"
        elif isinstance(exc, OSError) and exc.strerror:  # the file's name, never the server's folders
            message = f"{exc.strerror}{where}" + (f": {Path(str(exc.filename)).name}" if exc.filename else "")
        else:
            message = f"internal error{where}: {type(exc).__name__} (details in the server log)"
        write({"t": "error", "kind": kind, "message": message, "internal": True})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        peak = own_peak_rss_mb()
        if peak is not None:
            write({"t": "stats", "peak_rss_mb": peak})
    os._exit(0)  # skip interpreter teardown: nothing left to flush, and native atexit hooks can crash


def own_peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def selftest_segfault() -> None:
    """Crash the way a buggy native parser would (tests and operators check isolation with it)."""
    import ctypes

    phase("reading selftest.bin")
    ctypes.string_at(0)


def selftest_sleep(seconds: float) -> None:
    phase("reading selftest.bin")
    time.sleep(float(seconds))


def selftest_allocate(mb: int) -> int:
    phase("reading selftest.bin")
    block = bytearray(int(mb) * 2**20)
    return len(block)


def upload_dir(data: bytes, filename: str) -> tuple[str, Path]:
    """Write uploaded bytes to a private temporary directory under a safe name; return (dir, path)."""
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


# The sandbox's own checks, by short name (operators and tests check isolation with them).
SELFTESTS: dict[str, Callable] = {
    "selftest-segfault": selftest_segfault,
    "selftest-sleep": selftest_sleep,
    "selftest-allocate": selftest_allocate,
}
