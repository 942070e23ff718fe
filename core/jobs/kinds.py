"""One registry of job kinds: each insight kind maps to its config check, what a queued job runs, and the summary
the command line gets (`JOB_KINDS`). The queue, the worker and the CLI path look a kind up here; nothing else
lists the kinds.

    sensitivity  -> sensitivity.json
    tune         -> results.json (same format as `featherweight run`), tune.json, best.yaml
    diagnose     -> diagnostics.json (CPU panel, per-operator profiles and findings, scaling table)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.analysis.diagnose import cpu_panel, diagnose_run
from core.analysis.scaling import run_scaling
from core.analysis.sensitivity import SensitivityConfig, resolution_caption, scan_to_dir
from core.analysis.tuner import TuneConfig, tune_to_dir
from core.errors import BadInputError
from core.io.files import write_atomic
from core.spec.configs import DiagnoseConfig

DIAGNOSTICS_FILE = "diagnostics.json"


@dataclass(frozen=True)
class JobKind:
    """What one kind of insight job is: how its config is checked, what a worker runs, what the CLI reports.

    check(config) -> the normalized config dict (raises BadInputError).
    run(config, model_spec, data_spec, run_dir, on_progress, should_stop) -> "completed" | "cancelled".
    summary(config, model_spec, data_spec, out_dir, on_progress) -> a short JSON summary; None: not from the CLI.
    """

    name: str
    check: Callable[[dict], dict]
    run: Callable[..., str]
    summary: Callable[..., dict] | None = None


def diagnose(config: DiagnoseConfig, source_dir: Path, out_dir: Path, should_stop=lambda: False) -> dict:
    """Profile and/or time variants of the finished run in `source_dir`; write out_dir/diagnostics.json."""
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


def _run_sensitivity(config: dict, model_spec: str, data_spec: str | None, run_dir: Path, on_progress,
                     should_stop) -> str:
    result = scan_to_dir(model_spec, data_spec, SensitivityConfig.from_dict(config), run_dir,
                         on_progress=on_progress, should_stop=should_stop)
    return "cancelled" if result.status == "cancelled" else "completed"


def _sensitivity_summary(config: dict, model_spec: str, data_spec: str | None, out_dir, on_progress) -> dict:
    result = scan_to_dir(model_spec, data_spec, SensitivityConfig.from_dict(config), out_dir, on_progress=on_progress)
    return {"status": result.status, "metric": result.metric, "resolution": resolution_caption(result),
            "layers": [{"name": layer.name, "drop": layer.drop, "sqnr_db": layer.sqnr_db, "rank": layer.rank,
                        "tied": layer.tied} for layer in result.layers]}


def _run_tune(config: dict, model_spec: str, data_spec: str | None, run_dir: Path, on_progress, should_stop) -> str:
    outcome = tune_to_dir(model_spec, data_spec, TuneConfig.from_dict(config), run_dir,
                          on_progress=on_progress, should_stop=should_stop)
    return "cancelled" if outcome.status == "stopped" else "completed"


def _tune_summary(config: dict, model_spec: str, data_spec: str | None, out_dir, on_progress) -> dict:
    outcome = tune_to_dir(model_spec, data_spec, TuneConfig.from_dict(config), out_dir, on_progress=on_progress)
    return {"status": outcome.status, "best": outcome.best, "summary": outcome.summary,
            "elapsed_s": outcome.elapsed_s}


def _run_diagnose(config: dict, model_spec: str, data_spec: str | None, run_dir: Path, on_progress,
                  should_stop) -> str:
    diagnose(DiagnoseConfig.from_dict(config), run_dir.parent / config["source_run"], run_dir, should_stop=should_stop)
    return "cancelled" if should_stop() else "completed"


JOB_KINDS: dict[str, JobKind] = {
    "sensitivity": JobKind("sensitivity", lambda c: SensitivityConfig.from_dict(c).to_dict(), _run_sensitivity,
                           _sensitivity_summary),
    "tune": JobKind("tune", lambda c: TuneConfig.from_dict(c).to_dict(), _run_tune, _tune_summary),
    "diagnose": JobKind("diagnose", lambda c: DiagnoseConfig.from_dict(c).to_dict(), _run_diagnose),
}


def job_kind_of(kind: str) -> JobKind:
    """The registered kind named `kind`.

    Raises:
        BadInputError: no such kind (the message lists the kinds there are).
    """
    if kind not in JOB_KINDS:
        raise BadInputError(f"job kind {kind!r} is not supported; allowed: {', '.join(JOB_KINDS)}")
    return JOB_KINDS[kind]


__all__ = ["DIAGNOSTICS_FILE", "JOB_KINDS", "JobKind", "diagnose", "job_kind_of"]
