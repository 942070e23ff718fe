"""Shared services and cached reads: one JobRunner per server process and store root, the session's owner id,
and cached loaders keyed so that page switches and slider moves never recompute a run."""

from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st

from core.session import OWNER_KEY, RunLauncher, owner_from_cookie

XSRF_COOKIE = "_streamlit_xsrf"
_STARTED: list[RunLauncher] = []  # every launcher this process started, so shutdown_all can stop them


@st.cache_resource(show_spinner=False)
def _launcher(root: str) -> RunLauncher:
    """The JobRunner (a shared service, not user data) for one store root, wrapped in a RunLauncher."""
    from core.jobs import JobRunner
    from core.store import RunStore

    launcher = RunLauncher(JobRunner(RunStore(root)))
    _STARTED.append(launcher)
    return launcher


def shutdown_all() -> None:
    """Stop every JobRunner this process started (tests; a server shutting down) and forget them."""
    while _STARTED:
        _STARTED.pop().runner.shutdown()
    _launcher.clear()


def launcher() -> RunLauncher:
    """The process's RunLauncher for the current store root (FEATHERWEIGHT_HOME)."""
    from core.store import default_root

    return _launcher(str(default_root().resolve()))


def store():
    return launcher().store


def shared_history() -> bool:
    """Whether every user sees every run (FEATHERWEIGHT_SHARED_HISTORY=1), or only their own (the default: on a
    shared server, runs hold other people's uploaded models)."""
    import os

    return os.environ.get("FEATHERWEIGHT_SHARED_HISTORY") == "1"


def visible_runs(limit: int = 200) -> list:
    """The runs this session may open, newest first."""
    return store().list(None if shared_history() else owner_id(), limit=limit)


def can_view(run_id: str) -> bool:
    """Whether this session may open `run_id`."""
    from core.errors import BadInputError

    try:
        store().get(run_id, None if shared_history() else owner_id())
        return True
    except BadInputError:
        return False


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
    """The modification time of a run's results.json (0 before it exists): part of every cache key."""
    try:
        return (store().run_dir(run_id) / "results.json").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def _results(root: str, run_id: str, mtime: float) -> dict | None:
    from core.store import RunStore

    return RunStore(root).results(run_id)


def run_results(run_id: str) -> dict | None:
    """A run's results.json, re-read only when the file changes."""
    return _results(str(store().root), run_id, results_mtime(run_id))


@st.cache_data(show_spinner=False, max_entries=64)
def _frame(root: str, run_id: str, mtime: float):
    from core.results import results_frame

    results = _results(root, run_id, mtime)
    return results_frame(results) if results else None


def run_frame(run_id: str):
    """The results table with ratios, cached on run id + results mtime."""
    return _frame(str(store().root), run_id, results_mtime(run_id))


@st.cache_data(show_spinner=False, max_entries=64)
def _latency(root: str, run_id: str, mtime: float):
    from core.compare import latency_table

    return latency_table(_results(root, run_id, mtime) or {})


def run_latency(run_id: str):
    return _latency(str(store().root), run_id, results_mtime(run_id))


@st.cache_data(show_spinner=False, max_entries=32)
def _side_by_side(root: str, run_id: str, variant: str, mtime: float, count: int):
    from core.compare import side_by_side_isolated

    return side_by_side_isolated(Path(root) / "runs" / run_id, variant, count)  # user models: in a worker


def run_side_by_side(run_id: str, variant: str, count: int = 8):
    return _side_by_side(str(store().root), run_id, variant, results_mtime(run_id), count)


@st.cache_data(show_spinner=False)
def sample_card(name: str) -> dict:
    """A sample model's card (computed once per server: loading a sample imports torch)."""
    from core.session import sample_card as compute

    return compute(name)


@st.cache_data(show_spinner=False)
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
    mine = store().list(owner_id(), limit=1)
    st.session_state[RUN_KEY] = mine[0].id if mine else None


def open_run(run_id: str | None) -> None:
    """Make `run_id` the session's open run and put it in the URL."""
    from core.session import RUN_KEY

    st.session_state[RUN_KEY] = run_id
    if run_id:
        st.query_params[RUN_PARAM] = run_id
    elif RUN_PARAM in st.query_params:
        del st.query_params[RUN_PARAM]
