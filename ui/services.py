"""Shared services and cached reads: the server process's one JobRunner per store root, the session's owner id,
the session's owner-filtered view of the run store (the only way a page reaches runs, results and run
directories), and cached loaders keyed so that page switches and slider moves never recompute a run."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path

import streamlit as st

from core.errors import BadInputError
from core.io.pool import Requester, acting_for, process_pool
from core.jobs.queue import JobRunner
from core.session import OWNER_KEY, RunLauncher, owner_from_cookie
from core.jobs.store import ACTIVE, GALLERY_OWNER, RunStore, default_root
from core.io.files import write_atomic
from ui.process_cache import process_cached

XSRF_COOKIE = "_streamlit_xsrf"
SERVER_FILE = "server.json"  # in the store root: which process serves it, and how many runners it started
ADDRESS_LIMIT_VAR = "FEATHERWEIGHT_JOBS_PER_ADDRESS"
# Active jobs per client address (any number of browsers or cookies from it). 4: a client that mints cookies gets
# 4 of the queue's 32 places instead of all of them; a room behind one NAT needs more (README, "Workshop mode").
DEFAULT_JOBS_PER_ADDRESS = 4

# The server process's launchers, one per store root. A module-level, lock-guarded registry and not an
# st.cache_resource: any websocket client can send `clear_cache`, which empties every st.cache_resource; a cached
# runner was then rebuilt, and the new runner's recover() marked other users' queued runs interrupted.
_LOCK = threading.Lock()
_QUOTA_LOCK = threading.Lock()  # a quota check with its record; apart from _LOCK, so that a submission (which
# writes the upload) never holds up a page waiting for process_launcher()
_LAUNCHERS: dict[str, RunLauncher] = {}
_STARTS: dict[str, int] = {}  # runners started per root in this process (server.json says it: 1 on a server)
_ADDRESS_OF: dict[str, str] = {}  # run id -> the client address that submitted it (runs of this process only)
# (store root, run id) -> the run's owner, which never changes: a page's many visibility checks cost no query.
# Forgotten when a page deletes the run; cleared when full. Without it an Optimize render took ~100 ms longer
# (340-380 ms vs 190-250 ms on the loaded 2-core box, 10 reruns each).
_OWNERS: dict[tuple[str, str], str] = {}
_OWNERS_MAX = 20_000


def process_launcher() -> RunLauncher:
    """The server process's RunLauncher for the current store root (FEATHERWEIGHT_HOME), created once: its
    JobRunner's recover() runs once per process and store, whatever a client sends.

    `$FEATHERWEIGHT_HOME/server.json` records the process, a runner id and `runners_started` (1 on a server).
    Unscoped (every owner's runs): for tests, operators and shutdown. Pages use `launcher()` and `store()`, which
    see only the session's runs (tests/security/test_isolation_layer.py checks that pages never call this).
    """
    root = str(default_root().resolve())
    with _LOCK:
        found = _LAUNCHERS.get(root)
        if found is None:
            # The runner's job workers and every isolated call of this process share one pool (core.io.pool).
            found = _LAUNCHERS[root] = RunLauncher(JobRunner(RunStore(root), pool=process_pool()))
            _STARTS[root] = _STARTS.get(root, 0) + 1
            runner = found.runner
            try:
                write_atomic(Path(root) / SERVER_FILE, json.dumps({
                    "pid": os.getpid(), "runner_id": uuid.uuid4().hex, "started_at": time.time(),
                    "runners_started": _STARTS[root], "max_workers": runner.max_workers,
                    "interactive_workers": process_pool().limits.interactive_workers,
                    "max_queue": runner.max_queue, "jobs_per_session": runner.per_owner,
                    "jobs_per_address": os.environ.get(ADDRESS_LIMIT_VAR) or DEFAULT_JOBS_PER_ADDRESS,
                    "recovered": len(runner.recovered), "restarted": len(runner.restarted)}, indent=2))
            except OSError:
                pass  # a read-only store still serves; server.json only describes it
    return found


def shutdown_all() -> None:
    """Stop every JobRunner this process started (tests; a server shutting down) and forget them."""
    with _LOCK:
        launchers = list(_LAUNCHERS.values())
        _LAUNCHERS.clear()
        _ADDRESS_OF.clear()
        _OWNERS.clear()
    for found in launchers:
        found.runner.shutdown()


def shared_history() -> bool:
    """Whether every user sees every run (FEATHERWEIGHT_SHARED_HISTORY=1), or only their own (the default: on a
    shared server, runs hold other people's uploaded models)."""
    return os.environ.get("FEATHERWEIGHT_SHARED_HISTORY") == "1"


def jobs_per_address() -> int:
    """Active jobs one client address may hold (FEATHERWEIGHT_JOBS_PER_ADDRESS; 0 = no limit).

    Raises:
        BadInputError: the variable is not a whole number.
    """
    raw = os.environ.get(ADDRESS_LIMIT_VAR, "").strip()
    if not raw:
        return DEFAULT_JOBS_PER_ADDRESS
    if not raw.isdigit():
        raise BadInputError(f"{ADDRESS_LIMIT_VAR}={raw!r} must be a whole number (0 = no limit)")
    return int(raw)


def client_address() -> str | None:
    """The session's client address: Streamlit's TCP peer, or the X-Forwarded-For of a proxy on loopback (uvicorn
    trusts FORWARDED_ALLOW_IPS, 127.0.0.1 by default); None for a loopback client and outside a session."""
    try:
        return st.context.ip_address
    except Exception:  # noqa: BLE001 - no client context (AppTest, bare mode)
        return None


class SessionRuns:
    """The run store as one session sees it: its owner's runs only (everyone's with FEATHERWEIGHT_SHARED_HISTORY=1),
    plus the reference gallery's runs, which every session may read and none may change.

    Another owner's run behaves as if it did not exist ("no run"), whatever id a widget or a URL carries; the one
    write is `delete`, of the session's own runs. There is no other way from a page to the store.
    """

    def __init__(self, runs: RunStore, owner: str, shared: bool):
        self._runs = runs
        self._owner = owner
        self._shared = shared

    @property
    def root(self) -> Path:
        return self._runs.root

    def _may_read(self, owner: str | None) -> bool:
        return owner is None or owner == self._owner or self._shared or owner == GALLERY_OWNER

    def list(self, owner: str | None = None, limit: int = 200) -> list:
        """The session's runs, newest first (`owner`: another owner's only with shared history)."""
        if not self._may_read(owner):
            return []
        return self._runs.list(owner if owner is not None else (None if self._shared else self._owner), limit=limit)

    def get(self, run_id: str, owner: str | None = None):
        """A run's record; BadInputError "no run" for a run the session may not see."""
        if not self._may_read(owner):
            raise BadInputError(f"no run {run_id!r}")
        if owner is None and not self._shared and self.can_view(run_id):
            return self._runs.get(run_id)  # the session's own, or a reference run of the gallery
        return self._runs.get(run_id, owner if owner is not None else (None if self._shared else self._owner))

    def can_view(self, run_id: str) -> bool:
        """Whether the run exists (or existed: a run deleted elsewhere is still "viewable", with no files) and is
        the session's (or shared)."""
        key = (str(self._runs.root), run_id)
        owner = _OWNERS.get(key)
        if owner is None:
            try:
                owner = self._runs.get(run_id).owner
            except BadInputError:
                return False
            if len(_OWNERS) >= _OWNERS_MAX:
                _OWNERS.clear()
            _OWNERS[key] = owner
        return self._shared or owner == self._owner or owner == GALLERY_OWNER

    def is_reference(self, run_id: str) -> bool:
        """Whether the run is one of the gallery's reference runs (read-only, the same for every visitor)."""
        return self.can_view(run_id) and _OWNERS.get((str(self._runs.root), run_id)) == GALLERY_OWNER

    def gallery(self, limit: int = 200) -> list:
        """The reference gallery's completed runs, newest first (`make demo` builds them)."""
        return [r for r in self._runs.list(GALLERY_OWNER, limit=limit) if r.status == "completed"]

    def run_dir(self, run_id: str) -> Path:
        """The run's directory, only for a run the session may see (else BadInputError "no run")."""
        if not self.can_view(run_id):
            raise BadInputError(f"no run {run_id!r}")
        return self._runs.run_dir(run_id)

    def results(self, run_id: str) -> dict | None:
        return self._runs.results(run_id) if self.can_view(run_id) else None

    def progress(self, run_id: str) -> dict | None:
        return self._runs.progress(run_id) if self.can_view(run_id) else None

    def active(self) -> list:
        """Every queued or running run, oldest first: the session's own in full, other owners' reduced to their
        status (the sidebar counts them; their ids, labels and models stay theirs)."""
        return [r if r.owner == self._owner else
                dataclasses.replace(r, id="", owner="", label="", model="", data=None, error=None, pid=None)
                for r in self._runs.active()]

    def delete(self, run_id: str, owner: str | None = None) -> None:
        """Delete one of the session's own finished runs (never another owner's, shared history or not)."""
        self._runs.delete(run_id, self._owner)
        _OWNERS.pop((str(self._runs.root), run_id), None)


class SessionRunner:
    """The job runner as one session uses it: submits as the session's owner (and client address), reads and
    cancels only runs the session may see."""

    def __init__(self, runner: JobRunner, runs: SessionRuns, owner: str, address: str | None):
        self._runner = runner
        self._owner = owner
        self._address = address
        self.store = runs

    @property
    def max_workers(self) -> int:
        return self._runner.max_workers

    @property
    def max_variants(self) -> int:
        return self._runner.max_variants

    def running_count(self) -> int:
        return self._runner.running_count()

    def submit(self, owner: str, *args, **kwargs) -> str:
        """JobRunner.submit as the session's owner, within the per-address quota."""
        _same_owner(owner, self._owner)
        with _QUOTA_LOCK:  # the check and the record: two sessions of one address cannot both take the last place
            _check_address_quota(self._runner.store, self._address)
            run_id = self._runner.submit(self._owner, *args, **kwargs)
            _record_address(run_id, self._address)
        return run_id

    def status(self, run_id: str, owner: str | None = None):
        if (owner is not None and owner != self._owner) or not self.store.can_view(run_id):
            raise BadInputError(f"no run {run_id!r}")
        return self._runner.status(run_id)

    def cancel(self, run_id: str, owner: str | None = None) -> None:
        self._runner.cancel(run_id, self._owner)


class SessionLauncher:
    """The RunLauncher as one session uses it (see SessionRunner)."""

    def __init__(self, launcher: RunLauncher, owner: str, address: str | None):
        self._launcher = launcher
        self._owner = owner
        self._address = address
        self.store = SessionRuns(launcher.store, owner, shared_history())
        self.runner = SessionRunner(launcher.runner, self.store, owner, address)

    def active_run_of(self, owner: str | None = None) -> str | None:
        return self._launcher.active_run_of(self._owner)

    def launch(self, owner: str, recipe, model, data):
        """RunLauncher.launch as the session's owner, within the per-address quota (an identical or a refused
        second run of the owner attaches to the one in progress, so it takes no new place)."""
        _same_owner(owner, self._owner)
        with _QUOTA_LOCK:
            if self._launcher.active_run_of(self._owner) is None:
                _check_address_quota(self._launcher.store, self._address)
            launch = self._launcher.launch(self._owner, recipe, model, data)
            if not launch.reused:
                _record_address(launch.run_id, self._address)
        return launch


def _same_owner(given: str, session_owner: str) -> None:
    if given != session_owner:
        raise BadInputError("a session submits jobs only as its own owner")


def _check_address_quota(runs: RunStore, address: str | None) -> None:
    """Raise BadInputError when `address` already holds its share of active jobs (callers hold _QUOTA_LOCK)."""
    limit = jobs_per_address()
    if address is None or limit == 0:
        return
    active = 0
    for run_id, where in list(_ADDRESS_OF.items()):
        if where != address:
            continue
        try:
            status = runs.get(run_id).status
        except BadInputError:
            status = None
        if status in ACTIVE:
            active += 1
        else:
            _ADDRESS_OF.pop(run_id, None)
    if active >= limit:
        raise BadInputError(f"your address {address} already has {active} job(s) queued or running (at most "
                            f"{limit} per address, {ADDRESS_LIMIT_VAR}); wait for one to finish")


def _record_address(run_id: str, address: str | None) -> None:
    if address is not None:
        _ADDRESS_OF[run_id] = address


def launcher() -> SessionLauncher:
    """The session's launcher: submits as this session's owner, sees only the runs this session may open."""
    return SessionLauncher(process_launcher(), owner_id(), client_address())


def store() -> SessionRuns:
    """The run store as this session sees it (SessionRuns): the only way a page reaches runs."""
    return SessionRuns(process_launcher().store, owner_id(), shared_history())


def visible_runs(limit: int = 200) -> list:
    """The runs this session may open, newest first."""
    return store().list(limit=limit)


def can_view(run_id: str) -> bool:
    """Whether this session may open `run_id`."""
    return store().can_view(run_id)


def run_dir(run_id: str) -> Path:
    """The directory of a run this session may open (BadInputError "no run" otherwise)."""
    return store().run_dir(run_id)


def serve_visitor() -> None:
    """Make this script run's worker requests (upload checks, views, Graph, side by side) this session's: its owner
    and client address count against the worker pool's per-session and per-address caps (core.io.pool), and while a
    request waits for a free worker the page says where it is in the line."""
    _WAITING.note = None  # a note of an earlier run of this thread is not this run's element
    acting_for(Requester(owner_id(), client_address(), _show_place_in_line))


_WAITING = threading.local()  # the "waiting for a worker" note of this script thread, while one is shown


def _show_place_in_line(place: int, busy: int) -> None:
    note = getattr(_WAITING, "note", None)
    if place == 0:  # the request got its worker
        if note is not None:
            note.empty()
            _WAITING.note = None
        return
    if note is None:
        note = _WAITING.note = st.empty()
    ahead = "you are next" if place == 1 else f"{place - 1} request(s) ahead of yours"
    note.info(f"Waiting for a free worker: {ahead} ({busy} busy on this server).", icon=":material/schedule:")


def owner_id() -> str:
    """Who this session is to the job queue: the same id for every tab of one browser (derived from the
    per-browser XSRF cookie, hashed), else a random id for this session."""
    if OWNER_KEY not in st.session_state:
        cookie = None
        try:
            cookie = st.context.cookies.get(XSRF_COOKIE)
        except Exception:  # noqa: BLE001 - no client context (AppTest, bare mode)
            cookie = None
        st.session_state[OWNER_KEY] = owner_from_cookie(cookie) or f"session-{uuid.uuid4().hex[:16]}"
    return st.session_state[OWNER_KEY]


def results_mtime(run_id: str) -> float:
    """The modification time of a run's results.json (0 before it exists, or for a run the session may not
    open): part of every cache key."""
    try:
        return (run_dir(run_id) / "results.json").stat().st_mtime
    except (OSError, BadInputError):
        return 0.0


def _readable_root(run_id: str) -> str | None:
    """The store root when the session may open `run_id` (the cached readers below are keyed by it), else None."""
    view = store()
    return str(view.root) if view.can_view(run_id) else None


@process_cached(max_entries=64)
def _results(root: str, run_id: str, mtime: float) -> dict | None:
    return RunStore(root).results(run_id)


def run_results(run_id: str) -> dict | None:
    """A run's results.json (None for a run the session may not open), re-read only when the file changes."""
    root = _readable_root(run_id)
    return _results(root, run_id, results_mtime(run_id)) if root else None


@process_cached(max_entries=64)
def _frame(root: str, run_id: str, mtime: float):
    from core.results.table import results_frame

    results = _results(root, run_id, mtime)
    return results_frame(results) if results else None


def run_frame(run_id: str):
    """The results table with ratios, cached on run id + results mtime (None for a run the session may not open)."""
    root = _readable_root(run_id)
    return _frame(root, run_id, results_mtime(run_id)) if root else None


@process_cached(max_entries=64)
def _points(root: str, run_id: str, mtime: float):
    from core.results.runtimes import runtime_frame

    results = _results(root, run_id, mtime)
    return runtime_frame(results) if results else None


def run_points(run_id: str):
    """The bake-off's points, one row per variant x runtime (core.results.runtimes.runtime_frame), cached like
    run_frame (None for a run the session may not open)."""
    root = _readable_root(run_id)
    return _points(root, run_id, results_mtime(run_id)) if root else None


@process_cached(max_entries=64)
def _latency(root: str, run_id: str, mtime: float):
    from core.results.compare import latency_table

    return latency_table((_results(root, run_id, mtime) if root else None) or {})


def run_latency(run_id: str):
    """The latency table (empty for a run the session may not open)."""
    root = _readable_root(run_id)
    return _latency(root or "", run_id, results_mtime(run_id) if root else 0.0)


@process_cached(max_entries=32)
def _summary_image(root: str, run_id: str, mtime: float, variant: str, batch_size: int, image_format: str) -> bytes:
    from core.results.summary import run_summary
    from core.views.summary import summary_image

    results = _results(root, run_id, mtime) or {}
    return summary_image(run_summary(results, variant, batch_size, run_id=run_id), image_format)


def run_summary_image(run_id: str, variant: str, batch_size: int, image_format: str) -> bytes:
    """The one-screen summary of a run's variant as PNG or PDF (rendered with kaleido, cached on the results file).

    Raises:
        BadInputError: a run this session may not open; StepFailedError: the image could not be rendered.
    """
    root = _readable_root(run_id)
    if root is None:
        raise BadInputError(f"no run {run_id!r}")
    return _summary_image(root, run_id, results_mtime(run_id), variant, int(batch_size), image_format)


@process_cached(max_entries=32)
def _side_by_side(root: str, run_id: str, variant: str, mtime: float, count: int):
    from core.analysis.side_by_side import side_by_side_isolated

    return side_by_side_isolated(Path(root) / "runs" / run_id, variant, count)  # user models: in a worker


def run_side_by_side(run_id: str, variant: str, count: int = 8):
    """Side-by-side predictions of a variant and the baseline (BadInputError for a run the session may not open)."""
    root = _readable_root(run_id)
    if root is None:
        raise BadInputError(f"no run {run_id!r}")
    return _side_by_side(root, run_id, variant, results_mtime(run_id), count)


def decoder_export(run_id: str, variant_name: str):
    """A decoder variant of a run as one zip (model, external data, genai_config.json, tokenizer): checked now, as
    this session (may it open the run? is the folder inside it?), and returned as a call that writes the zip beside
    the folder on first use (`core.io.decoder.export_zip`) and gives its bytes, for a deferred download (which runs
    outside the script, without the session).

    Raises:
        BadInputError: a run the session may not open, a variant without a model, a path outside the run.
    """
    from core.io.decoder import export_zip
    from core.io.files import inside_run
    from core.results.compare import variant

    folder = run_dir(run_id)
    entry = variant(run_results(run_id) or {}, variant_name) or {}
    artifact = inside_run(folder, entry.get("artifact") or "") if entry.get("status") == "ok" else None
    if artifact is None:
        raise BadInputError(f"variant {variant_name!r} of run {run_id} has no model to export")
    return lambda: export_zip(artifact.parent).read_bytes()


@process_cached(max_entries=32)
def sample_card(name: str) -> dict:
    """A sample model's card (computed once per server: loading a sample imports torch)."""
    from core.session import sample_card as compute

    return compute(name)


@process_cached(max_entries=64)
def sample_data_summary(model_spec: str, data_spec: str) -> dict:
    """The summary of a sample dataset bound to a sample model."""
    from core.session import ModelChoice, bind_data

    return bind_data(ModelChoice(model_spec, model_spec, {}), data_spec)


def data_summary(model_choice, spec: str) -> dict:
    """Cached for sample models; computed for uploads (their bytes are not a good cache key)."""
    from core.session import bind_data

    if model_choice.spec.startswith("sample:"):
        return sample_data_summary(model_choice.spec, spec)
    return bind_data(model_choice, spec)


RUN_PARAM = "run"  # the open run in the URL, so a reload (or a shared link) reopens it


def restore_session() -> None:
    """After a reload: reopen the run named in the URL, else this browser's latest run."""
    from core.session import RUN_KEY

    if RUN_KEY in st.session_state:
        return
    run_id = st.query_params.get(RUN_PARAM)
    if run_id and can_view(run_id):
        st.session_state[RUN_KEY] = run_id
        return
    if run_id:
        del st.query_params[RUN_PARAM]  # a run this session may not open (or gone): the URL does not keep it
    mine = store().list(limit=1)
    st.session_state[RUN_KEY] = mine[0].id if mine else None


def open_run(run_id: str | None) -> None:
    """Make `run_id` the session's open run and put it in the URL (a run the session may not open: none)."""
    from core.session import RUN_KEY

    if run_id and not can_view(run_id):
        run_id = None
    st.session_state[RUN_KEY] = run_id
    if run_id:
        st.query_params[RUN_PARAM] = run_id
    elif RUN_PARAM in st.query_params:
        del st.query_params[RUN_PARAM]


def runs_of_kind(kinds: tuple, *, with_results: bool = False, limit: int = 50) -> list:
    """This session's runs (newest first) whose job kind is in `kinds` ("run" = a recipe run, "sensitivity",
    "tune", "diagnose"); with `with_results`, only those that wrote a results.json."""
    from core.jobs.insight import runs_of_kind as of_kind

    view = store()
    return of_kind(view, None, kinds, limit=limit, with_results=with_results)


def comparable_runs() -> list:
    """Recipe runs with something to draw: still running, or with at least one measured variant; then the
    reference gallery's runs."""
    from core.jobs.store import ACTIVE

    return [r for r in runs_of_kind(("run",), limit=200)
            if r.status in ACTIVE or any(v.get("status") == "ok"
                                         for v in (run_results(r.id) or {}).get("variants") or [])] \
        + gallery_runs()


def gallery_runs() -> list:
    """The reference gallery's runs (every visitor sees the same, read-only), newest first."""
    return store().gallery()


def is_reference_run(run_id: str) -> bool:
    """Whether `run_id` is a reference run of the gallery."""
    return store().is_reference(run_id)


def runs_with_variants() -> list:
    """Finished runs and tuning jobs whose results.json lists variants (what an estimate can be checked on)."""
    from core.jobs.store import ACTIVE

    return [r for r in runs_of_kind(("run", "tune"), with_results=True, limit=20)
            if r.status not in ACTIVE and (run_results(r.id) or {}).get("variants")]


@process_cached(max_entries=16)
def _run_estimates(root: str, run_id: str, mtime: float, _runs):
    from core.jobs.entries import run_estimates_isolated

    return run_estimates_isolated(_runs, run_id, _runs.results(run_id) or {})  # the run's model: in a worker


def run_estimates(run_id: str):
    """Each variant of a run, its size estimated from the baseline's layers beside the measured one (a frame),
    computed in a worker and cached on the run's results (BadInputError for a run the session may not open)."""
    root = _readable_root(run_id)
    if root is None:
        raise BadInputError(f"no run {run_id!r}")
    with st.spinner("Estimating the run's variants…"):
        return _run_estimates(root, run_id, results_mtime(run_id), store())


def submit_insight_job(kind: str, config: dict, model, data, label: str) -> str:
    """Queue an insight job ("sensitivity", "tune") for the session's model and data; returns its run id.

    Raises:
        FeatherweightError: a bad config, or the queue or this session's quota is full.
    """
    from core.jobs.insight import submit_job

    uploads = {}
    if model.is_upload:
        uploads[model.filename] = model.content
    if data.is_upload:
        uploads[data.filename] = data.content
    return submit_job(launcher().runner, owner_id(), kind, config, model_spec=model.spec, data_spec=data.spec,
                      label=label, uploads=uploads)


def submit_diagnosis(config: dict, record, label: str) -> str:
    """Queue a diagnosis (profile or scaling) of the finished run `record`; returns the job's run id."""
    from core.jobs.insight import submit_job

    # A diagnosis reads the source run's model files; the job's own model spec only labels it (and must be one
    # the server accepts without an upload, so an uploaded model is named by its run).
    model_spec = record.model if (record.model or "").startswith("sample:") else f"sample:run-{record.id}"
    return submit_job(launcher().runner, owner_id(), "diagnose", config, model_spec=model_spec, data_spec=None,
                      label=label)


# --------------------------------------------------------------------------------------------------------------
# Workshop mode: the session's own lesson progress, and the teacher's view behind the workshop token


def lesson_progress():
    """This session's place on the lesson path (`core.workshop.Progress`)."""
    from core.workshop import load_progress

    return load_progress(store().root, owner_id())


def open_lesson(lesson_id: str):
    """Record that this session has lesson `lesson_id` open."""
    from core.workshop import open_lesson as record

    return record(store().root, owner_id(), lesson_id)


def lesson_passed(lesson_id: str):
    """Record that this session's answer to lesson `lesson_id` was checked right."""
    from core.workshop import mark_passed

    return mark_passed(store().root, owner_id(), lesson_id)


def set_attendee_name(name: str):
    """The name this session's attendee gives the teacher."""
    from core.workshop import set_name

    return set_name(store().root, owner_id(), name)


def lesson_runs(limit: int = 20) -> list[tuple]:
    """This session's recipe runs since the teacher last reset it, newest first, each with its results.json."""
    from core.workshop import runs_since_reset

    runs = runs_since_reset(runs_of_kind(("run",), limit=limit), lesson_progress())
    return [(record, run_results(record.id)) for record in runs]


def apply_workshop_reset() -> bool:
    """Drop what this session holds when the teacher reset it since it last looked (see core.workshop)."""
    from core.workshop import apply_reset

    try:
        reset = apply_reset(st.session_state, store().root, owner_id())
    except (OSError, BadInputError):
        return False
    if reset:  # the Learn page's own state (the lesson open, answers, checks) goes too
        for key in [k for k in st.session_state if str(k).startswith("learn_")]:
            del st.session_state[key]
    return reset


def workshop_room(token: str) -> dict:
    """The teacher's view of the room (`core.workshop.room_overview`): counts, attendee codes, the queue and the
    load, never anyone's models or data.

    Raises:
        BadInputError: `token` is not the workshop token (or workshop mode is off).
    """
    from core.workshop import require_teacher, room_overview

    require_teacher(token)
    found = process_launcher()
    runner = found.runner
    return room_overview(found.store, queue_length=runner.queue_length(), running=runner.running_count(),
                         workers=runner.max_workers)


def reset_attendee(token: str, code: str) -> str:
    """Reset one attendee's session (cancel their jobs, forget their saved model, data, recipe and lesson progress).

    Raises:
        BadInputError: `token` is not the workshop token, or no attendee has `code`.
    """
    from core.workshop import require_teacher, reset_attendee as reset

    require_teacher(token)
    found = process_launcher()
    return reset(found.store, code, cancel=found.runner.cancel)
