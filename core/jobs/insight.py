"""Insight jobs: a sensitivity scan, a tuning search or a diagnosis (profile + scaling) run as JobRunner jobs of
their own kind, in a worker process like any recipe run, writing into the run's directory:

    sensitivity  -> sensitivity.json
    tune         -> results.json (same format as `featherweight run`), tune.json, best.yaml
    diagnose     -> diagnostics.json (CPU panel, per-operator profiles and findings, scaling table)

What each kind checks, runs and reports is one entry of `core.jobs.kinds.JOB_KINDS`. What the job does is saved as
``inputs/insight.json`` (``{"kind", "config"}``), so a worker, and any page that lists runs, can tell an insight job
from a recipe run with `job_kind`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from core.errors import BadInputError
from core.io.model import load_model
from core.io.sandbox import ResourceLimits, phase, run_isolated, send
from core.jobs.kinds import DIAGNOSTICS_FILE, JOB_KINDS, diagnose, job_kind_of
from core.pipeline.build import progress_forwarder
from core.spec.configs import DiagnoseConfig
from core.spec.recipe import Recipe

KINDS = tuple(JOB_KINDS)  # the insight kinds, in the registry's order (core.jobs.kinds)
SPEC_FILE = "insight.json"

def _check(kind: str, config: dict) -> dict:
    """Validate a job's config by building its config object; returns the normalized dict."""
    return job_kind_of(kind).check(config)


def submit_job(runner, owner: str, kind: str, config: dict, *, model_spec: str, data_spec: str | None,
               label: str = "", uploads: dict | None = None) -> str:
    """Queue an insight job on a JobRunner; returns the run id.

    Args:
        runner: a core.jobs.queue.JobRunner.
        owner: who submits (admission is per owner, as for recipe runs).
        kind / config: what to do (validated here, so a bad config never reaches a worker).
        model_spec / data_spec: "sample:NAME" or "inputs/FILENAME" for a file in `uploads`.
        uploads: file name -> bytes saved into the run's inputs/ folder.

    Raises:
        BadInputError: an unknown kind, a bad config, or a full queue / an owner with a job already running.
    """
    normalized = _check(kind, config)
    if uploads and SPEC_FILE in uploads:
        raise BadInputError(f"an uploaded file may not be named {SPEC_FILE}")
    recipe_yaml = Recipe(model=model_spec, data=data_spec).to_yaml()
    inputs = dict(uploads or {})
    inputs[SPEC_FILE] = json.dumps({"kind": kind, "config": normalized}, indent=2).encode("utf-8")
    return runner.submit(owner, recipe_yaml, model_spec, data_spec, label=label or f"{kind} · {model_spec}",
                         inputs=inputs, kind=kind)


def job_kind(run_dir: str | Path) -> str:
    """"run" for a recipe run, else the insight kind saved with the job."""
    spec = load_job_spec(run_dir)
    return spec.get("kind", "run") if spec else "run"


def load_job_spec(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "inputs" / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def runs_of_kind(store, owner: str | None, kinds: tuple, limit: int = 50, with_results: bool = False) -> list:
    """The owner's runs (newest first) whose job kind is in `kinds` ("run" = a recipe run); with
    `with_results`, only those with a results.json (what the diagnostics can open)."""
    out = []
    for record in store.list(owner, limit=limit * 4):
        directory = store.run_dir(record.id)
        if job_kind(directory) not in kinds:
            continue
        if with_results and not (directory / "results.json").exists():
            continue
        out.append(record)
        if len(out) >= limit:
            break
    return out


def load_diagnostics(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / DIAGNOSTICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_job(kind: str, run_dir: str | Path, model_spec: str, data_spec: str | None, *,
            on_progress: Callable | None = None, should_stop: Callable[[], bool] = lambda: False) -> str:
    """Run an insight job in the current (worker) process; returns "completed" or "cancelled".

    Raises:
        BadInputError: the job's spec is missing or invalid, or its inputs are rejected.
    """
    run_dir = Path(run_dir)
    spec = load_job_spec(run_dir)
    if spec is None or spec.get("kind") != kind:
        raise BadInputError(f"the job's {SPEC_FILE} is missing or is not a {kind} job")
    config = spec.get("config") or {}
    return job_kind_of(kind).run(config, model_spec, data_spec, run_dir, on_progress, should_stop)


# --------------------------------------------------------------------------------------------------------------
# The CLI's path: the same work in a worker process with the job limits (as `featherweight run` does)


def worker_entry(kind: str, model_spec: str, data_spec: str | None, config: dict, out_dir: str) -> dict:
    """Inside an isolated worker: run a sensitivity scan or a tuning search; progress goes to the parent."""
    job = job_kind_of(kind)
    if job.summary is None:
        cli = ", ".join(name for name, k in JOB_KINDS.items() if k.summary is not None)
        raise BadInputError(f"{kind!r} cannot run from the command line; allowed: {cli}")

    def on_progress(event):
        send({"t": "progress", "event": event.to_dict()})

    if model_spec and not model_spec.startswith("sample:"):
        phase(f"reading {Path(model_spec).name}")
        load_model(model_spec)  # refuse a hostile file before the search imports torch
    phase(f"running the {kind}")
    return job.summary(config, model_spec, data_spec, out_dir, on_progress)


def run_isolated_job(kind: str, model_spec: str, data_spec: str | None, config: dict, out_dir: str | Path, *,
                     on_progress: Callable | None = None) -> dict:
    """A sensitivity scan or tuning search in a worker with the job limits (FEATHERWEIGHT_WORKER_*).

    Returns:
        A short JSON summary (see `worker_entry`); the files are in `out_dir`.

    Raises:
        FeatherweightError: bad model, data or config; or the worker crashed, ran out of memory or time.
    """
    config = _check(kind, config)
    limits = ResourceLimits.from_env()
    timeout = None
    if kind == "tune":  # the search stops itself at its budget; the margin covers loading and the last variant
        timeout = min(limits.wall_seconds, float(config["budget_s"]) * 1.5 + 120.0)
    return run_isolated("core.jobs.insight:worker_entry", kind, model_spec, data_spec, config, str(out_dir),
                        limits=limits, timeout=timeout, on_message=progress_forwarder(on_progress))


__all__ = ["DIAGNOSTICS_FILE", "DiagnoseConfig", "KINDS", "SPEC_FILE", "diagnose", "job_kind", "load_diagnostics",
           "load_job_spec", "run_isolated_job", "run_job", "runs_of_kind", "submit_job"]
