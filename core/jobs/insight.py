"""Insight jobs: a sensitivity scan, a tuning search or a diagnosis (profile + scaling) run as JobRunner jobs of
their own kind, in a worker process like any recipe run, writing into the run's directory:

    sensitivity  -> sensitivity.json
    tune         -> results.json (same format as `featherweight run`), tune.json, best.yaml
    diagnose     -> diagnostics.json (CPU panel, per-operator profiles and findings, scaling table)

What the job does is saved as ``inputs/insight.json`` (``{"kind", "config"}``), so a worker, and any page that
lists runs, can tell an insight job from a recipe run with `job_kind`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import BadInputError
from core.spec.checks import check_bool, check_range

KINDS = ("sensitivity", "tune", "diagnose")
SPEC_FILE = "insight.json"
DIAGNOSTICS_FILE = "diagnostics.json"
RUN_ID_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyz-")  # as core.jobs.store.RunStore.run_dir accepts

def _check(kind: str, config: dict) -> dict:
    """Validate a job's config by building its config object; returns the normalized dict."""
    if kind == "sensitivity":
        from core.analysis.sensitivity import SensitivityConfig

        return SensitivityConfig.from_dict(config).to_dict()
    if kind == "tune":
        from core.analysis.tuner import TuneConfig

        return TuneConfig.from_dict(config).to_dict()
    if kind == "diagnose":
        return DiagnoseConfig.from_dict(config).to_dict()
    raise BadInputError(f"job kind {kind!r} is not supported; allowed: {', '.join(KINDS)}")


@dataclass(frozen=True)
class DiagnoseConfig:
    """What to diagnose: variants of a finished run, profiled at one batch size and/or timed over a grid."""

    source_run: str  # a run id in the same store
    variants: tuple
    batch_size: int | None = None  # profile batch (default: the run's largest)
    profile: bool = True
    scaling_batch_sizes: tuple = ()
    scaling_threads: tuple = (1,)
    runs: int = 20
    threads: int = 1

    def __post_init__(self):
        run = self.source_run
        if not isinstance(run, str) or not run or any(c not in RUN_ID_CHARS for c in run):
            raise BadInputError(f"diagnose.source_run={run!r} is not a run id")
        variants = self.variants
        if isinstance(variants, str) or not variants or not all(isinstance(v, str) for v in variants):
            raise BadInputError(f"diagnose.variants={variants!r} must be a non-empty list of variant names")
        object.__setattr__(self, "variants", tuple(variants))
        if self.batch_size is not None:
            check_range("diagnose.batch_size", self.batch_size, 1, 65536, integer=True)
        check_bool("diagnose.profile", self.profile)
        for name in ("scaling_batch_sizes", "scaling_threads"):
            values = tuple(getattr(self, name) or ())
            for v in values:
                check_range(f"diagnose.{name}", v, 1, 65536, integer=True)
            object.__setattr__(self, name, values)
        if not self.scaling_threads:
            object.__setattr__(self, "scaling_threads", (1,))
        if not self.profile and not self.scaling_batch_sizes:
            raise BadInputError("diagnose needs profile: true or scaling_batch_sizes")
        check_range("diagnose.runs", self.runs, 1, 100000, integer=True)
        check_range("diagnose.threads", self.threads, 1, 256, integer=True)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "DiagnoseConfig":
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise BadInputError(f"unknown key(s) {', '.join(unknown)} in diagnose; allowed: {', '.join(allowed)}")
        if "source_run" not in data or "variants" not in data:
            raise BadInputError("diagnose needs source_run and variants")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as exc:
            raise BadInputError(f"diagnose: {exc}") from None


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
    from core.spec.recipe import Recipe

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
    if kind == "sensitivity":
        from core.analysis.sensitivity import SensitivityConfig, scan_to_dir

        result = scan_to_dir(model_spec, data_spec, SensitivityConfig.from_dict(config), run_dir,
                             on_progress=on_progress, should_stop=should_stop)
        return "cancelled" if result.status == "cancelled" else "completed"
    if kind == "tune":
        from core.analysis.tuner import TuneConfig, tune_to_dir

        outcome = tune_to_dir(model_spec, data_spec, TuneConfig.from_dict(config), run_dir,
                              on_progress=on_progress, should_stop=should_stop)
        return "cancelled" if outcome.status == "stopped" else "completed"
    if kind == "diagnose":
        diagnose(DiagnoseConfig.from_dict(config), run_dir.parent / config["source_run"], run_dir,
                 should_stop=should_stop)
        return "cancelled" if should_stop() else "completed"
    raise BadInputError(f"job kind {kind!r} is not supported; allowed: {', '.join(KINDS)}")


def diagnose(config: DiagnoseConfig, source_dir: Path, out_dir: Path, should_stop=lambda: False) -> dict:
    """Profile and/or time variants of the finished run in `source_dir`; write out_dir/diagnostics.json."""
    from core.analysis.diagnose import cpu_panel, diagnose_run
    from core.io.files import write_atomic
    from core.analysis.scaling import run_scaling

    try:
        results = json.loads((source_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BadInputError(f"run {config.source_run} has no results to diagnose") from None
    out = {"source_run": config.source_run, "cpu": cpu_panel(config.threads), "variants": {}, "scaling": None}
    if config.profile:
        out.update(diagnose_run(source_dir, results, list(config.variants), batch_size=config.batch_size,
                                threads=config.threads, runs=config.runs, should_stop=should_stop))
    if config.scaling_batch_sizes and not should_stop():
        out["scaling"] = run_scaling(source_dir, results, list(config.variants),
                                     batch_sizes=config.scaling_batch_sizes, thread_counts=config.scaling_threads,
                                     should_stop=should_stop)
    write_atomic(Path(out_dir) / DIAGNOSTICS_FILE, json.dumps(out, indent=2))
    return out


# --------------------------------------------------------------------------------------------------------------
# The CLI's path: the same work in a worker process with the job limits (as `featherweight run` does)


def _worker_entry(kind: str, model_spec: str, data_spec: str | None, config: dict, out_dir: str) -> dict:
    """Inside an isolated worker: run a sensitivity scan or a tuning search; progress goes to the parent."""
    from core.io.sandbox import phase, send

    def on_progress(event):
        send({"t": "progress", "event": event.to_dict()})

    if model_spec and not model_spec.startswith("sample:"):
        from core.io.model import load_model

        phase(f"reading {Path(model_spec).name}")
        load_model(model_spec)  # refuse a hostile file before the search imports torch
    phase(f"running the {kind}")
    if kind == "sensitivity":
        from core.analysis.sensitivity import SensitivityConfig, scan_to_dir

        result = scan_to_dir(model_spec, data_spec, SensitivityConfig.from_dict(config), out_dir,
                             on_progress=on_progress)
        return {"status": result.status, "metric": result.metric,
                "layers": [{"name": layer.name, "drop": layer.drop, "sqnr_db": layer.sqnr_db}
                           for layer in result.layers]}
    if kind == "tune":
        from core.analysis.tuner import TuneConfig, tune_to_dir

        outcome = tune_to_dir(model_spec, data_spec, TuneConfig.from_dict(config), out_dir, on_progress=on_progress)
        return {"status": outcome.status, "best": outcome.best, "summary": outcome.summary,
                "elapsed_s": outcome.elapsed_s}
    raise BadInputError(f"{kind!r} cannot run from the command line; allowed: sensitivity, tune")


def run_isolated_job(kind: str, model_spec: str, data_spec: str | None, config: dict, out_dir: str | Path, *,
                     on_progress: Callable | None = None) -> dict:
    """A sensitivity scan or tuning search in a worker with the job limits (FEATHERWEIGHT_WORKER_*).

    Returns:
        A short JSON summary (see `_worker_entry`); the files are in `out_dir`.

    Raises:
        FeatherweightError: bad model, data or config; or the worker crashed, ran out of memory or time.
    """
    from core.io.sandbox import ResourceLimits, run_isolated
    from core.pipeline.build import progress_forwarder

    config = _check(kind, config)
    limits = ResourceLimits.from_env()
    timeout = None
    if kind == "tune":  # the search stops itself at its budget; the margin covers loading and the last variant
        timeout = min(limits.wall_seconds, float(config["budget_s"]) * 1.5 + 120.0)
    return run_isolated("core.jobs.insight:_worker_entry", kind, model_spec, data_spec, config, str(out_dir),
                        limits=limits, timeout=timeout, on_message=progress_forwarder(on_progress))


__all__ = ["DIAGNOSTICS_FILE", "DiagnoseConfig", "KINDS", "SPEC_FILE", "diagnose", "job_kind", "load_diagnostics",
           "load_job_spec", "run_isolated_job", "run_job", "runs_of_kind", "submit_job"]
