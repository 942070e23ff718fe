"""Accuracy-aware tuner: search techniques and settings for the fastest (or smallest) variant whose quality drop
stays within a budget, inside a time budget, always keeping the best so far.

The search is greedy and small, cheapest first, and adapts to what it measured:

1. static int8 (per-channel, minmax); if it drops too much, the post-training recovery steps in one variant
   (cross-layer equalization, learned weight rounding, bias correction, and SmoothQuant where the graph has
   MatMuls), each unit of each step kept only where validation improves (core.techniques.static), then a
   calibration method per tensor chosen on validation (core.analysis.calibration); then other calibrations, a
   sensitivity scan and the recovered int8 keeping the top-k most sensitive layers in float for k = 1, 2, ...;
   last, with a torch model, quantization-aware fine-tuning (QAT). The summary says which recovery step won back
   how much;
2. a small grid of cheap quantization settings (per-tensor static, dynamic int8 where the model has MatMul/Gemm,
   and for the size objective fp16 / int4);
3. with a torch model: structured pruning with a short fine-tune, followed by the best quantization found,
   binary-searching the amount for the largest one within the drop budget (a per-layer scope is tried once
   where the global one drops too much);
4. what is left of the grid (other calibrations on the best exclusion set).

Every choice is made on the dataset's validation split (`Dataset.selection`: the drop judged against the budget, the
sensitivity ranking, the timing inputs); the accuracy and fidelity written to results.json come from the held-out
test split, which no choice saw, so the published drop of the winner is an honest estimate, not the minimum of many
tries. Speed follows the same rule: each variant is built and scored with `core.pipeline.build.build_variant`,
and for the latency objective chosen on a speed-up timed against the baseline alone on the validation inputs
(`selection_speedup`: interleaved rounds, `core.measure.timing`); the speed-ups written to results.json and quoted
in the summary come from a separate timing of every trial together at the end (the run's timing phase,
`core.pipeline.build.time_variants`), which no choice read, since the figure a variant won on favours the variant
whose timing was lucky. After every variant ``results.json`` (same format as ``featherweight run``),
``tune.json`` (the search log and a plain-language summary) and ``best.yaml`` (a recipe that ``featherweight
run`` reproduces) are rewritten, so a stop or a timeout still leaves a usable answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.analysis.calibration import choose_calibration
from core.errors import BadInputError, FeatherweightError
from core.spec.recipe import MAX_VARIANT_NAME, BenchmarkConfig, PruneConfig, QuantizeConfig, Recipe, Variant
from core.spec.checks import check_bool, check_choice, check_keys, check_range
from core.io import runtime
from core.analysis.diagnose import requantized_excluded
from core.analysis.sensitivity import SensitivityConfig, quality_drop, scan, top_layers, write_sensitivity
from core.format import format_bytes, format_speedup
from core.io.data import load_data
from core.io.files import write_atomic
from core.io.graph import graph_inputs, task_of
from core.io.model import load_model
from core.io.repair import prepare_baseline
from core.measure import quality as measure
from core.measure.timing import Speedup, cpu_clock_for, time_in_rounds, timing_cores
from core.pipeline.build import (ProgressEvent, RunResult, baseline_fidelity, build_variant, measure_variant,
                                 time_variants, write_results)
from core.results.table import resolution_pt, resolution_text

# What the tuner can optimize (compare.OBJECTIVES is something else: what "best" means when picking from a run).
TUNE_OBJECTIVES = ("latency", "size")
# Structured-prune amounts the binary search picks from (it starts in the middle); 0.3-0.5 with 10 epochs of
# fine-tuning kept digits-cnn within 0.4 pt
# (measured: 0.4 -> 0.0 pt, 0.5 global -> 0.37 pt, 0.5 per-layer -> 0.19 pt after static int8).
PRUNE_AMOUNTS = (0.25, 0.4, 0.5, 0.6, 0.75)
# At most this many layers are kept in float by the greedy exclusion: beyond it the float islands (and their
# Quantize/Dequantize boundaries) usually cost more than they save.
MAX_EXCLUDED = 8
# A variant must be this much better than the best so far to replace it on latency, so timing noise between two
# equally fast variants does not decide (ties go to the smaller quality drop).
LATENCY_TIE = 0.03
# QAT in the tuner: 3 epochs (the recipe default); its cost is estimated as this many static builds (measured on
# shapes-mobile: a static build ~5 s, 3 QAT epochs over 8,000 images several minutes on one core).
QAT_EPOCHS = 3
QAT_COST_FACTOR = 40
# The selection timing of one trial: at most this many seconds per side (baseline, variant), a quarter of what is
# left when the budget runs low. 2 s of 25 ms turns is 40 rounds each, enough for a ±5% interval on a quiet box.
SELECTION_MAX_S = 2.0
# The share of the time budget kept for the reported timing of every trial together at the end.
REPORT_TIMING_SHARE = 0.2


@dataclass(frozen=True)
class TuneConfig:
    """What the tuner optimizes: the objective, the quality and time budgets, and what it may try."""

    max_drop_pt: float = 0.5  # quality drop allowed, in points (accuracy, else disagreement, else 1 - cosine)
    objective: str = "latency"  # latency (p50 at batch_size) | size (file bytes)
    batch_size: int = 256
    budget_s: float = 120.0
    threads: int = 1
    allow_prune: bool = True  # structured pruning + fine-tuning (torch models only)
    finetune_epochs: int = 10
    prune_amounts: tuple = PRUNE_AMOUNTS
    seed: int = 0
    warmup: int = 5
    runs: int = 200  # the most timing rounds, in a trial's selection timing and in the reported timing
    max_seconds: float = 2.0  # per model and batch size, in the reported timing (core.measure.quality.time_models)

    def __post_init__(self):
        check_range("tune.max_drop_pt", self.max_drop_pt, 0.0, 100.0)
        check_choice("tune.objective", self.objective, TUNE_OBJECTIVES)
        check_range("tune.batch_size", self.batch_size, 1, 65536, integer=True)
        check_range("tune.budget_s", self.budget_s, 0.0, 86400.0, low_open=True)
        check_range("tune.threads", self.threads, 1, 256, integer=True)
        check_bool("tune.allow_prune", self.allow_prune)
        check_range("tune.finetune_epochs", self.finetune_epochs, 0, 1000, integer=True)
        amounts = tuple(self.prune_amounts)
        for a in amounts:
            check_range("tune.prune_amounts", a, 0.0, 1.0, low_open=True, high_open=True)
        object.__setattr__(self, "prune_amounts", tuple(sorted(float(a) for a in amounts)))
        check_range("tune.seed", self.seed, 0, 2**32 - 1, integer=True)
        check_range("tune.warmup", self.warmup, 0, 100000, integer=True)
        check_range("tune.runs", self.runs, 1, 1000000, integer=True)
        check_range("tune.max_seconds", self.max_seconds, 0.0, 3600.0, low_open=True)

    def benchmark(self) -> BenchmarkConfig:
        sizes = (1, self.batch_size) if self.batch_size != 1 else (1,)
        return BenchmarkConfig(batch_sizes=sizes, threads=self.threads, warmup=self.warmup, runs=self.runs,
                               max_seconds=self.max_seconds)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["prune_amounts"] = list(self.prune_amounts)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TuneConfig":
        check_keys("tune", data, [f.name for f in dataclasses.fields(cls)])
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        for key in ("max_drop_pt", "budget_s", "max_seconds"):
            if isinstance(values.get(key), int) and not isinstance(values.get(key), bool):
                values[key] = float(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise BadInputError(f"tune: {exc}") from None


@dataclass
class Trial:
    """One variant the tuner tried and what it concluded."""

    name: str
    status: str  # ok | failed | cancelled | skipped
    drop_pt: float | None = None  # on the validation split: what the budget judges
    speedup: float | None = None  # what the choice read: the selection timing's ratio at the timing batch
    size_bytes: int | None = None
    within_budget: bool = False
    reason: str = ""
    phase: str = ""
    build_s: float | None = None
    test_drop_pt: float | None = None  # on the held-out test split: reported, never used to choose
    recovery: dict | None = None  # the quantize step's record of its recovery steps (core.techniques.static)
    reported_speedup: dict | None = None  # the final timing of every trial together at the timing batch
    # ({ratio, low, high, rounds, converged}): reported, never used to choose
    speedup_low: float | None = None  # the selection timing's 95% interval around `speedup`
    speedup_high: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TuneOutcome:
    """The tuner's answer: the best variant within budget (or the baseline), every trial, and why."""

    best: str
    best_recipe: Recipe
    trials: list
    summary: list
    status: str  # completed | budget | stopped
    elapsed_s: float
    run: object  # core.pipeline.build.RunResult

    def to_dict(self) -> dict:
        return {"best": self.best, "status": self.status, "elapsed_s": self.elapsed_s, "summary": self.summary,
                "trials": [t.to_dict() for t in self.trials], "best_recipe": self.best_recipe.to_dict()}


# --------------------------------------------------------------------------------------------------------------
# Timing


def selection_speedup(base_session, session, feed: dict, *, max_seconds: float = SELECTION_MAX_S,
                      max_rounds: int = 200, warmup: int = 3, threads: int = 1,
                      should_stop: Callable[[], bool] = lambda: False) -> Speedup | None:
    """The speed-up a choice is made on: `session` against the baseline's on `feed` (validation inputs), timed
    interleaved in rounds on a held core (`core.measure.timing`, the one method): at most `max_rounds` rounds and
    `max_seconds` a side.

    Returns None when stopped before any round.
    """
    with timing_cores(threads, should_stop=should_stop) as cores:
        if cores is None:
            return None
        timed = time_in_rounds({"baseline": lambda: base_session.run(None, feed),
                                "variant": lambda: session.run(None, feed)}, "baseline", warmup=warmup,
                               max_rounds=max_rounds, max_seconds=2 * max_seconds, threads=threads,
                               should_stop=should_stop, cpu_clock=cpu_clock_for(threads))
    return timed.speedup.get("variant")


# --------------------------------------------------------------------------------------------------------------
# The search


class _Search:
    """State of one tuning run: the baseline, the trials, the best so far, and the files to rewrite."""

    def __init__(self, model, dataset, config: TuneConfig, out_dir: Path, model_spec: str, data_spec: str | None,
                 on_progress, should_stop, started: float | None = None):
        self.model, self.dataset, self.config, self.out_dir = model, dataset, config, out_dir
        self.model_spec, self.data_spec = model_spec, data_spec
        self.on_progress, self.user_stop = on_progress, should_stop
        self.started = started if started is not None else time.perf_counter()
        self.deadline = self.started + config.budget_s
        # the search stops early enough to leave the reported timing of every trial its share of the budget
        self.search_deadline = self.deadline - REPORT_TIMING_SHARE * config.budget_s
        self.task = task_of(model)
        self.bench = config.benchmark()
        self.recipe = Recipe(model=model_spec, data=data_spec, seed=config.seed, benchmark=self.bench)
        self.variants: list[Variant] = []
        self.trials: list[Trial] = []
        self.sensitivity = None
        self.run = RunResult(model=model_spec, data=data_spec, recipe=self.recipe.to_dict(),
                             environment={**measure.environment(config.threads), "executor": "local",
                                          "tuner": config.to_dict()},
                             started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             task=self.task, dataset=dataset.summary())
        self.base_session = runtime.make_session(model.onnx_bytes(), config.threads)
        specs = graph_inputs(model.onnx_model)
        sizes, _ = measure.possible_batch_sizes(specs, [config.batch_size])
        self.timing_batch = sizes[0]
        self.selection = dataset.selection  # validation: every choice is scored here, never on dataset.eval
        self.feed = measure.batch_inputs(self.selection.x, specs, self.timing_batch)
        self.baseline_outputs = None  # on the test split, for the reported numbers
        self.selection_outputs = None  # on the validation split, for the choices
        self.selection_accuracy = None
        self.best_name = "baseline"
        self.stopped_by = None

    # ---- clock

    def stop_now(self) -> bool:
        if self.user_stop():
            self.stopped_by = "stopped"
            return True
        if time.perf_counter() >= self.search_deadline:
            self.stopped_by = self.stopped_by or "budget"
            return True
        return False

    def remaining_s(self) -> float:
        """Seconds left for the search (the reported timing's share of the budget kept apart)."""
        return self.search_deadline - time.perf_counter()

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def emit(self, kind: str, message: str, variant: str | None = None, result: dict | None = None) -> None:
        if self.on_progress is None:
            return

        fraction = min(1.0, self.elapsed_s() / max(1e-9, self.config.budget_s))
        self.on_progress(ProgressEvent(kind, variant, len(self.trials), len(self.trials) + 1, message, fraction,
                                       self.elapsed_s(), result))

    # ---- measuring

    def measure_baseline(self, notes: list) -> None:
        self.emit("start", "scoring the baseline", "baseline")
        baseline, self.baseline_outputs, self.selection_outputs = measure_variant(
            "baseline", self.model.onnx_model, self.dataset, None, self.task, self.recipe, self.out_dir,
            lambda: False)
        baseline_fidelity(baseline, self.baseline_outputs, self.task)
        self.selection_accuracy = measure.fidelity(self.selection_outputs, None, self.selection.y, self.task).accuracy
        baseline.split = {**baseline.split, **self.selection_split()}
        baseline.notes.extend(list(self.model.notes) + list(notes))
        baseline.info["tune"] = {"drop_pt": 0.0, "test_drop_pt": 0.0, "speedup": 1.0, "within_budget": True}
        self.run.variants.append(baseline)
        self.trials.append(Trial("baseline", "ok", 0.0, 1.0, baseline.size_bytes, True, "the unmodified model",
                                 "baseline", test_drop_pt=0.0))
        self.write()
        self.emit("variant_done", "baseline measured", "baseline", baseline.to_dict())

    def selection_split(self) -> dict:
        """What results.json's `split` adds for a tuned run: the split the choices were scored on."""
        return {"selection": self.dataset.selection_name, "selection_n": len(self.selection)}

    def resolution(self) -> str:
        """"±1 sample = X pt" on the validation split, where the budget is judged (empty for embeddings)."""
        return resolution_text(len(self.selection)) if self.task == "classification" else ""

    def drop_of(self, result) -> float | None:
        """The drop results.json reports: on the test split (dataset.eval)."""
        base = self.run.variants[0]
        drop, _ = quality_drop(result.accuracy, result.agreement, result.cosine_mean, base.accuracy)
        return drop

    def selection_drop(self, session) -> float | None:
        """The drop the budget judges: the variant against the baseline on the validation split."""
        outputs = runtime.run_batched(session, self.selection.x)
        fid = measure.fidelity(outputs, self.selection_outputs, self.selection.y, self.task)
        drop, _ = quality_drop(fid.accuracy, fid.agreement, fid.cosine_mean, self.selection_accuracy)
        return drop

    def objective_of(self, trial: Trial) -> float:
        """Lower is better: latency relative to the baseline (1 / speed-up), or file bytes."""
        if self.config.objective == "size":
            return float(trial.size_bytes or np.inf)
        return 1.0 / trial.speedup if trial.speedup else np.inf

    def better(self, trial: Trial, incumbent: Trial) -> bool:
        a, b = self.objective_of(trial), self.objective_of(incumbent)
        if self.config.objective == "latency":
            if a < b * (1 - LATENCY_TIE):
                return True
            if a > b * (1 + LATENCY_TIE):
                return False
            return (trial.drop_pt or 0.0) < (incumbent.drop_pt or 0.0) and a <= b * (1 + LATENCY_TIE)
        return a < b or (a == b and (trial.drop_pt or 0.0) < (incumbent.drop_pt or 0.0))

    def trial(self, name: str) -> Trial | None:
        return next((t for t in self.trials if t.name == name), None)

    @property
    def best(self) -> Trial:
        return self.trial(self.best_name)

    def try_variant(self, variant: Variant, phase: str, estimate_s: float = 0.0) -> Trial | None:
        """Build, measure and judge one variant; returns its trial (None when it was already tried)."""
        if any(v.name == variant.name for v in self.variants):
            return self.trial(variant.name)
        if self.stop_now():
            return None
        if estimate_s and estimate_s > self.remaining_s():
            trial = Trial(variant.name, "skipped", reason=f"skipped: needs ~{estimate_s:.0f} s, "
                                                          f"{max(0.0, self.remaining_s()):.0f} s left", phase=phase)
            self.trials.append(trial)
            self.write()
            return trial
        self.emit("step", f"trying {variant.name}", variant.name)
        emit = lambda kind, message, within=0.0, result=None: self.emit("step", message, variant.name)  # noqa: E731
        results = build_variant(self.model, self.dataset, variant, self.recipe, self.baseline_outputs, self.task,
                                self.out_dir, self.stop_now, emit, baseline_selection=self.selection_outputs)
        result = results[0]
        self.variants.append(variant)
        trial = Trial(variant.name, result.status, phase=phase, build_s=result.build_s,
                      size_bytes=result.size_bytes)
        if result.status == "ok":
            session = runtime.make_session((self.out_dir / result.artifact).read_bytes(), self.config.threads)
            trial.drop_pt = self.selection_drop(session)
            trial.test_drop_pt = self.drop_of(result)
            result.split = {**result.split, **self.selection_split()}
            if self.config.objective == "latency":
                self.emit("step", f"timing {variant.name} against the baseline (selection)", variant.name)
                cap_s = min(SELECTION_MAX_S, self.config.max_seconds, max(0.25, self.remaining_s() / 4))
                chosen = selection_speedup(self.base_session, session, self.feed, max_seconds=cap_s,
                                           max_rounds=self.config.runs, warmup=self.config.warmup,
                                           threads=self.config.threads, should_stop=self.user_stop)
                if chosen is not None:
                    trial.speedup, trial.speedup_low, trial.speedup_high = (round(chosen.ratio, 4),
                                                                            round(chosen.low, 4),
                                                                            round(chosen.high, 4))
            else:
                trial.size_bytes = result.size_bytes or self.run.variants[0].size_bytes
            trial.within_budget = trial.drop_pt is not None and trial.drop_pt <= self.config.max_drop_pt + 1e-9
            requantized = self._requantized(variant, result)
            if not trial.within_budget:
                resolution = self.resolution()
                trial.reason = (f"drops {trial.drop_pt:.2f} pt on {self.dataset.selection_name} (budget "
                                f"{self.config.max_drop_pt:g} pt{'; ' + resolution if resolution else ''})")
                if requantized:
                    trial.reason += (f"; onnxruntime quantizes the weights of {', '.join(requantized)} anyway at "
                                     "load time, so keeping them in float did not help")
            elif self.better(trial, self.best):
                trial.reason = f"new best ({self._describe(trial)})"
                self.best_name = trial.name
            else:
                trial.reason = f"within budget but not better than {self.best_name} ({self._describe(trial)} vs " \
                               f"{self._describe(self.best)})"
        elif result.status == "cancelled" and self.stopped_by == "budget":
            result.error = trial.reason = "cancelled: the time budget ran out"
        else:
            trial.reason = result.error or result.status
        trial.recovery = result.info.get("recovery")
        result.info["tune"] = {"drop_pt": trial.drop_pt, "test_drop_pt": trial.test_drop_pt, "speedup": trial.speedup,
                               "within_budget": trial.within_budget, "phase": phase}
        self.trials.append(trial)
        self.run.variants.append(result)
        self.run.recipe = self.recipe.replace(variants=tuple(self.variants)).to_dict()
        self.write()
        self.emit("variant_done", f"{variant.name}: {trial.reason}", variant.name, result.to_dict())
        return trial

    def _requantized(self, variant: Variant, result) -> list[str]:
        """Layers kept in float whose weights onnxruntime quantizes anyway (see core.analysis.diagnose): the
        nodes the quantize step kept in float (it keeps an `exclude` node only where validation improved)."""
        exclude = result.info.get("excluded_nodes")
        if exclude is None:
            exclude = [n for s in variant.steps if isinstance(s, QuantizeConfig) for n in s.exclude]
        if not exclude:
            return []
        try:
            hits = requantized_excluded((self.out_dir / result.artifact).read_bytes(), exclude)
        except Exception:  # noqa: BLE001 - a diagnosis must never fail the search
            return []
        if hits:
            result.info["requantized_excluded"] = hits
        return hits

    def _describe(self, trial: Trial, reported: bool = False) -> str:
        """The trial in a few words: the figure it was chosen on, or with `reported` the final timing's (and the
        selection figure beside it)."""
        if self.config.objective == "size":
            return f"{format_bytes(trial.size_bytes)}, {trial.drop_pt or 0:.2f} pt"
        chosen = (format_speedup({"ratio": trial.speedup, "low": trial.speedup_low, "high": trial.speedup_high})
                  if trial.speedup and trial.speedup_low is not None else f"{trial.speedup or 0:.2f}x")
        if reported and trial.reported_speedup:
            return (f"{format_speedup(trial.reported_speedup)} at batch {self.timing_batch} in the reported timing, "
                    f"chosen on {chosen} in its own; {trial.drop_pt or 0:.2f} pt")
        return f"{chosen} at batch {self.timing_batch}, {trial.drop_pt or 0:.2f} pt"

    def time_all(self) -> None:
        """The reported timing: every trial that built, timed together with the baseline in the run's timing phase
        (what results.json and the summary quote; no choice read it). Skipped when the user stopped the search."""
        if self.stopped_by == "stopped":
            return
        ok = [v for v in self.run.variants if v.status == "ok"]
        sizes = len(self.bench.batch_sizes)
        left = max(1.0, self.deadline - time.perf_counter())
        per_model = max(0.25, min(self.bench.max_seconds, left / max(1, sizes * len(ok))))
        recipe = self.recipe.replace(benchmark=dataclasses.replace(self.bench, max_seconds=per_model))
        self.emit("step", "timing every trial together (the reported speed-ups)", "timing")
        time_variants(self.run, self.out_dir, self.dataset, recipe, should_stop=self.user_stop,
                      report=lambda message, fraction: self.emit("step", message, "timing"),
                      on_batch=self.write)
        results = {v.name: v for v in self.run.variants}
        for trial in self.trials:
            variant = results.get(trial.name)
            reported = (variant.speedup or {}).get(str(self.timing_batch)) if variant is not None else None
            trial.reported_speedup = reported
            if variant is not None and "tune" in variant.info:
                variant.info["tune"]["reported_speedup"] = reported

    # ---- outputs

    def best_recipe(self) -> Recipe:
        variant = next((v for v in self.variants if v.name == self.best_name), None)
        return self.recipe.replace(variants=(variant,) if variant else ())

    def write(self, final: bool = False) -> None:
        self.run.duration_s = round(self.elapsed_s(), 3)
        if final:
            self.run.status = "cancelled" if self.stopped_by == "stopped" else "completed"
        write_results(self.run, self.out_dir)
        write_atomic(self.out_dir / "best.yaml", self.best_recipe().to_yaml())
        log = {"config": self.config.to_dict(), "model": self.model_spec, "data": self.data_spec,
               "best": self.best_name, "status": self.status(final), "elapsed_s": round(self.elapsed_s(), 3),
               "timing_batch": self.timing_batch, "split": self.split_log(), "summary": self.summary(),
               "trials": [t.to_dict() for t in self.trials]}
        write_atomic(self.out_dir / "tune.json", json.dumps(log, indent=2, default=float))

    def split_log(self) -> dict:
        """tune.json's `split`: what the choices were scored on and where the reported numbers come from."""
        return {"selection": self.dataset.selection_name, "selection_n": len(self.selection),
                "selection_resolution_pt": resolution_pt(len(self.selection)) if self.task == "classification"
                else None,
                "quality": "test", "n": len(self.dataset.eval),
                "resolution_pt": resolution_pt(len(self.dataset.eval)) if self.task == "classification" else None}

    def split_lines(self) -> list[str]:
        """Which split chose and which reported, with the size of one sample, for the summary."""
        selection, n_sel, n_test = self.dataset.selection_name, len(self.selection), len(self.dataset.eval)
        classifier = self.task == "classification"
        lines = [f"Chosen on the {selection} split ({n_sel} samples"
                 + (f", {resolution_text(n_sel)}" if classifier else "") + "); the accuracy and fidelity in "
                 f"results.json come from the held-out test split ({n_test} samples"
                 + (f", {resolution_text(n_test)}" if classifier else "") + "), which no choice saw."]
        if selection != "validation":
            lines.append("This data has no separate validation split (too few held-out samples), so the choice and "
                         "the report use the same samples: the reported drop is optimistic.")
        if classifier and n_sel and self.config.max_drop_pt < resolution_pt(n_sel):
            lines.append(f"The {self.config.max_drop_pt:g} pt budget is finer than one {selection} sample "
                         f"({resolution_pt(n_sel):.2f} pt): within budget means no net loss of a single sample.")
        best = self.best
        if best is not None and best.name != "baseline" and best.test_drop_pt is not None:
            lines.append(f"{best.name} drops {best.drop_pt or 0:.2f} pt on {selection} and {best.test_drop_pt:.2f} "
                         "pt on test (the number to quote).")
        return lines

    def status(self, final: bool) -> str:
        if not final:
            return "running"
        return self.stopped_by or "completed"

    def summary(self) -> list[str]:
        """Plain-language lines: what won and why the others did not (or why nothing beat the baseline)."""
        cfg = self.config
        lines = []
        best = self.best
        what = "fastest" if cfg.objective == "latency" else "smallest"
        tried = [t for t in self.trials if t.name != "baseline"]
        if not tried:
            return ["Only the baseline was measured: the time budget ran out before any variant was built."]
        if self.best_name == "baseline":
            lines.append(f"No variant within {cfg.max_drop_pt:g} pt beat the baseline on "
                         f"{'latency at batch ' + str(self.timing_batch) if cfg.objective == 'latency' else 'size'}.")
        else:
            lines.append(f"Best within {cfg.max_drop_pt:g} pt: {best.name} ({self._describe(best, reported=True)}), "
                         f"the {what} of {len(tried)} variants tried.")
        lines.extend(self.split_lines())
        plain = self.trial("int8-static")
        if plain is not None and plain.status == "ok" and self.best_name != "int8-static":
            if plain.within_budget and self.best_name != "baseline":
                ratio = self.objective_of(plain) / max(1e-12, self.objective_of(best))
                lines.append(f"It beats plain static int8 by {ratio:.2f}x on {cfg.objective}.")
            elif not plain.within_budget:
                lines.append(f"Plain static int8 {plain.reason}.")
        elif plain is not None and self.best_name == "int8-static":
            lines.append("Nothing beat plain static int8 within the budget:")
            for t in tried:
                if t.name != "int8-static":
                    lines.append(f"- {t.name}: {t.reason}")
        lines.extend(self.recovery_lines())
        over = [t for t in tried if t.status == "ok" and not t.within_budget]
        if self.best_name == "baseline" and over:
            lines.append("Variants over the quality budget: " + "; ".join(f"{t.name} {t.reason}" for t in over))
        if self.best_name == "baseline":
            slow = [t for t in tried if t.status == "ok" and t.within_budget]
            if slow:
                lines.append("Within budget but no faster/smaller: "
                             + "; ".join(f"{t.name} ({self._describe(t)})" for t in slow))
        if self.model.torch_module is None and cfg.allow_prune:
            lines.append("Structured pruning was not tried: it needs a torch model (this one is ONNX-only).")
        failed = [t for t in tried if t.status == "failed"]
        if failed:
            lines.append("Failed: " + "; ".join(f"{t.name}: {t.reason}" for t in failed))
        if self.stopped_by == "budget":
            left = [t for t in self.trials if t.status in ("skipped", "cancelled")]
            lines.append(f"The time budget ({cfg.budget_s:g} s) ran out"
                         + (f"; not finished: {', '.join(t.name for t in left)}." if left else ".")
                         + " A larger budget may find more.")
        elif self.stopped_by == "stopped":
            lines.append("Stopped by the user; the best so far is kept.")
        else:
            skipped = [t.name for t in self.trials if t.status == "skipped"]
            if skipped:
                lines.append(f"Not tried for lack of time: {', '.join(skipped)}. A larger budget may find more.")
        return lines

    # ---- phases

    def quantize_phase(self) -> QuantizeConfig | None:
        """Static int8, repaired by the recovery steps, calibration and exclusions when it drops too much; returns
        the best quantize config within budget (None when no static int8 variant fits)."""
        base = QuantizeConfig(mode="static", per_channel=True, calibration="minmax")
        plain = self.try_variant(Variant("int8-static", (base,)), "quantize")
        if plain is None:
            return None
        if plain.within_budget:
            return base
        recovered, repaired = self.recovery_phase(base, plain)
        if recovered is not None or self.stop_now():
            return recovered
        for calibration in ("percentile", "entropy"):
            step = dataclasses.replace(base, calibration=calibration)
            t = self.try_variant(Variant(_quant_name(step), (step,)), "quantize", estimate_s=plain.build_s or 0)
            if t is not None and t.within_budget:
                return step
            if t is None:
                return None
        ranking = self.scan()
        if not ranking:
            return None
        start = repaired or base
        for k in range(1, min(MAX_EXCLUDED, len(ranking)) + 1):
            step = dataclasses.replace(start, exclude=tuple(ranking[:k]))
            t = self.try_variant(Variant(_quant_name(step), (step,)), "exclude", estimate_s=plain.build_s or 0)
            if t is None:
                return None
            if t.within_budget:
                return step
        return self.qat_phase(base, plain)

    def recovery_phase(self, base: QuantizeConfig, plain: Trial) -> tuple:
        """The post-training recovery steps, each unit gated on validation inside the quantize step: equalization,
        learned rounding, bias correction (and SmoothQuant with MatMuls) in one variant, then a calibration
        method per tensor on top. Returns (the first config within budget or None, the most recovered config
        tried, which the exclusions then start from)."""
        estimate = 4 * (plain.build_s or 0)
        has_matmul = any(n.op_type == "MatMul" for n in self.model.onnx_model.graph.node)
        recovered = dataclasses.replace(base, equalize=True, weight_rounding="learned", bias_correction=True,
                                        smooth_quant=has_matmul)
        t = self.try_variant(Variant(_quant_name(recovered), (recovered,)), "recovery", estimate_s=estimate)
        if t is None or t.status != "ok":
            return None, None
        if t.within_budget:
            return recovered, recovered
        if self.remaining_s() < 3 * estimate:
            return None, recovered
        self.emit("step", "choosing a calibration method per tensor on validation", "calibration")
        try:
            choice = choose_calibration(self.model, self.dataset, recovered, seed=self.config.seed)
        except FeatherweightError as exc:  # one phase failing (a degenerate range) must not end the search
            self.trials.append(Trial("per-tensor calibration", "failed", reason=str(exc), phase="recovery"))
            self.write()
            return None, recovered
        if not choice.overrides:
            return None, recovered
        step = dataclasses.replace(recovered, calibration_overrides=choice.overrides)
        t = self.try_variant(Variant(_quant_name(step), (step,)), "recovery", estimate_s=estimate)
        return (step if t is not None and t.within_budget else None), step

    def qat_phase(self, base: QuantizeConfig, plain: Trial) -> QuantizeConfig | None:
        """The costliest recovery: quantization-aware fine-tuning (torch models only)."""
        if self.model.torch_module is None:
            return None
        step = QuantizeConfig(mode="qat", per_channel=True, samples=base.samples, epochs=QAT_EPOCHS)
        t = self.try_variant(Variant(_quant_name(step), (step,)), "qat",
                             estimate_s=QAT_COST_FACTOR * (plain.build_s or 0))
        return step if t is not None and t.within_budget else None

    def recovery_lines(self) -> list[str]:
        """Which recovery step won back how much, against plain static int8, on validation: the variants' drops,
        and inside each, what every step kept and what it changed (agreement with fp32, KL to it)."""
        plain = self.trial("int8-static")
        tried = [t for t in self.trials if t.phase in ("recovery", "qat", "exclude") and t.status == "ok"]
        if plain is None or plain.drop_pt is None or not tried:
            return []
        lines = [f"Recovery from plain static int8 ({plain.drop_pt:.2f} pt on {self.dataset.selection_name}):"]
        for t in tried:
            won = plain.drop_pt - (t.drop_pt or 0.0)
            lines.append(f"- {t.name}: {t.drop_pt or 0:.2f} pt, {won:+.2f} pt recovered")
            for step in (t.recovery or {}).get("steps", []):
                lines.append(f"  - {recovery_step_text(step)}")
        return lines

    def scan(self) -> list[str]:
        """Quantization sensitivity ranking (ONNX node names, most sensitive first); written as sensitivity.json."""
        if self.sensitivity is None:
            self.emit("step", "sensitivity scan: quantizing one layer at a time", "sensitivity")
            config = SensitivityConfig(technique="quantize", threads=self.config.threads)
            result = scan(self.model, self.dataset, config, should_stop=self.stop_now)
            result.model, result.data = self.model_spec, self.data_spec
            write_sensitivity(result, self.out_dir)
            self.sensitivity = result
        return top_layers(self.sensitivity, len(self.sensitivity.layers))

    def grid_phase(self, quant: QuantizeConfig | None) -> None:
        """Cheap quantization alternatives: per-tensor static, dynamic int8, and for size fp16 / int4."""
        ops = {n.op_type for n in self.model.onnx_model.graph.node}
        has_matmul = bool(ops & {"MatMul", "Gemm"})
        estimate = (self.trial("int8-static") or Trial("", "")).build_s or 0
        base = quant or QuantizeConfig(mode="static")
        per_tensor = dataclasses.replace(base, per_channel=False)
        candidates = [Variant(_quant_name(per_tensor), (per_tensor,))]
        if has_matmul:
            candidates.append(Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)))
        if self.config.objective == "size":
            candidates.append(Variant("fp16", (QuantizeConfig(mode="fp16"),)))
            if has_matmul:
                candidates.append(Variant("int4", (QuantizeConfig(mode="int4"),)))
        for variant in candidates:
            if self.try_variant(variant, "grid", estimate_s=estimate) is None:
                return

    def prune_phase(self, quant: QuantizeConfig | None) -> None:
        """Structured pruning (+ fine-tune, + the best quantization): a binary search over the sorted amounts for
        the largest one within the drop budget, assuming more pruning never costs less quality. A failing amount
        is retried once with a per-layer scope (often gentler: no layer loses more than `amount`)."""
        if self.model.torch_module is None or not self.config.allow_prune:
            return
        amounts = list(self.config.prune_amounts)
        low, high = 0, len(amounts) - 1
        estimate = 0.0
        layer_tried = False
        while low <= high:
            mid = (low + high) // 2
            scopes = ("global",) if layer_tried else ("global", "layer")
            passed = False
            for scope in scopes:
                t = self.try_variant(self._prune_variant(amounts[mid], scope, quant), "prune",
                                     estimate_s=estimate * 0.8)
                if t is None:
                    return
                estimate = max(estimate, t.build_s or 0.0)
                if t.status == "failed":
                    return  # torch-pruning cannot trace this model: no amount will work
                if t.within_budget:
                    passed = True
                    break
                layer_tried = layer_tried or scope == "layer"
            if passed:
                low = mid + 1
            else:
                high = mid - 1

    def best_static_quant(self, fallback: QuantizeConfig | None) -> QuantizeConfig | None:
        """The quantize step of the best quantize-only static int8 variant within budget (else `fallback`)."""
        best, best_trial = fallback, None
        for variant in self.variants:
            trial = self.trial(variant.name)
            if (len(variant.steps) == 1 and isinstance(variant.steps[0], QuantizeConfig)
                    and variant.steps[0].mode == "static" and trial is not None and trial.within_budget
                    and (best_trial is None or self.better(trial, best_trial))):
                best, best_trial = variant.steps[0], trial
        return best

    def _prune_variant(self, amount: float, scope: str, quant: QuantizeConfig | None) -> Variant:
        prune = PruneConfig(method="structured", amount=amount, scope=scope,
                            finetune_epochs=self.config.finetune_epochs)
        label = f"prune{amount:g}" + ("-layer" if scope == "layer" else "")
        if quant is None:
            return Variant(label, (prune,))
        return Variant(f"{label}+{_quant_label(quant)}", (prune, quant))

    def rest_phase(self, quant: QuantizeConfig | None) -> None:
        """Whatever is left of the small grid: other calibrations with the best exclusion set."""
        base = quant or QuantizeConfig(mode="static")
        estimate = (self.trial("int8-static") or Trial("", "")).build_s or 0
        for calibration in ("percentile", "entropy"):
            if calibration == base.calibration:
                continue
            step = dataclasses.replace(base, calibration=calibration)
            if self.try_variant(Variant(_quant_name(step), (step,)), "grid", estimate_s=estimate) is None:
                return


def recovery_step_text(step: dict) -> str:
    """One recovery step as a line: what it tried, what it kept and what that changed on validation, e.g.
    "equalization: kept 6 of 44 pairs, agreement +0.035, KL 0.0262 -> 0.0236"."""
    unit = step.get("unit", "unit")
    if not step.get("tried") and step.get("reason"):
        return f"{step.get('step', '?').replace('_', ' ')}: nothing to try ({step['reason']})"
    units = {"pair": "pairs", "layer": "layers", "tensor": "tensors", "node": "nodes", "model": "model",
             "matmul input": "MatMul inputs"}.get(unit, unit)
    kept = step.get("kept") or []
    if unit == "model":
        what = "kept" if kept else "not kept (validation did not improve)"
    else:
        what = f"kept {len(kept)} of {step.get('tried', 0)} {units}"
    if step.get("reason"):
        what += f" ({step['reason']})"
    before, after = step.get("before") or {}, step.get("after") or {}
    changes = []
    for key, label in (("agreement", "agreement"), ("cosine_mean", "cosine")):
        if key in before and key in after:
            changes.append(f"{label} {after[key] - before[key]:+.3f}")
    for key, label in (("kl", "KL"), ("relative_error", "relative error")):
        if key in before and key in after:
            changes.append(f"{label} {before[key]:.4g} -> {after[key]:.4g}")
    return f"{step.get('step', '?').replace('_', ' ')}: {what}" + (f", {', '.join(changes)}" if changes else "")


def _quant_name(quant: QuantizeConfig) -> str:
    """A quantize-only variant's name: int8-static, then -float-top{k} and [settings that differ from default]."""
    name = f"int8-{quant.mode}" + (f"-float-top{len(quant.exclude)}" if quant.exclude else "")
    changed = []
    if quant.calibration != "minmax":
        changed.append(f"calibration={quant.calibration}")
    if not quant.per_channel:
        changed.append("per_channel=False")
    changed += [flag for flag in ("equalize", "bias_correction", "smooth_quant") if getattr(quant, flag)]
    if quant.weight_rounding != "nearest":
        changed.append(f"rounding={quant.weight_rounding}")
    if quant.calibration_overrides:
        changed.append(f"overrides={len(quant.calibration_overrides)}")
    full = name + (f"[{','.join(changed)}]" if changed else "")
    if len(full) <= MAX_VARIANT_NAME:
        return full
    # names are capped (MAX_VARIANT_NAME): the same settings, shorter
    short = [{"per_channel=False": "per-tensor", "equalize": "cle", "bias_correction": "bc", "smooth_quant": "sq",
              "rounding=learned": "ar"}.get(c, c).removeprefix("calibration=").replace("overrides=", "ov")
             for c in changed]
    shorter = name + f"[{','.join(short)}]"
    if len(shorter) <= MAX_VARIANT_NAME:
        return shorter
    # still too long: cut, and keep names of different settings apart by a digest of the full one
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{shorter[:MAX_VARIANT_NAME - len(digest) - 2]}-{digest}]"


def _quant_label(quant: QuantizeConfig) -> str:
    label = f"int8-{quant.mode}"
    if not quant.per_channel:
        label += "-per-tensor"
    if quant.exclude:
        label += f"-float-top{len(quant.exclude)}"
    if quant.calibration != "minmax":
        label += f"-{quant.calibration}"
    label += "-cle" * quant.equalize + "-bc" * quant.bias_correction + "-sq" * quant.smooth_quant
    label += "-ar" * (quant.weight_rounding == "learned")
    return label


def tune(model, dataset, config: TuneConfig, out_dir: str | Path, *, model_spec: str | None = None,
         data_spec: str | None = None, on_progress: Callable | None = None,
         should_stop: Callable[[], bool] = lambda: False, started: float | None = None) -> TuneOutcome:
    """Search for the best variant within `config`'s budgets; write results.json, tune.json and best.yaml.

    Args:
        model / dataset: the baseline and its data (labels make the drop an accuracy drop).
        config: objective, budgets and what may be tried.
        out_dir: where results, artifacts, tune.json and best.yaml go.
        model_spec / data_spec: how best.yaml names the model and data (default: their sources).
        on_progress: called with core.pipeline.build.ProgressEvent (fraction = share of the time budget used).
        should_stop: polled often; when true the search stops and keeps the best so far.
        started: time.perf_counter() when the budget started (default: now), so loading can count against it.

    Returns:
        The TuneOutcome (best variant name, its recipe, every trial and a plain-language summary).
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, batch_notes = prepare_baseline(model, (1, config.batch_size))  # a fixed batch axis, freed
    torch.manual_seed(config.seed)
    search = _Search(model, dataset, config, out_dir, model_spec or model.source,
                     data_spec if data_spec is not None else dataset.source, on_progress, should_stop, started)
    search.measure_baseline(batch_notes)
    quant = search.quantize_phase()
    if not search.stop_now():
        search.grid_phase(quant)
    quant = search.best_static_quant(quant)
    if not search.stop_now():
        search.prune_phase(quant)
    if not search.stop_now():
        search.rest_phase(quant)
    search.stop_now()
    search.time_all()
    search.write(final=True)
    search.emit("done", f"tuning {search.status(True)} in {search.elapsed_s():.1f} s: best {search.best_name}")
    return TuneOutcome(search.best_name, search.best_recipe(), search.trials, search.summary(), search.status(True),
                       round(search.elapsed_s(), 3), search.run)


def tune_to_dir(model_spec: str, data_spec: str | None, config: TuneConfig, out_dir: str | Path, *,
                on_progress: Callable | None = None, should_stop: Callable[[], bool] = lambda: False) -> TuneOutcome:
    """Load the model and data, then `tune`; loading counts against the time budget.

    Raises:
        BadInputError: a rejected model or data that does not fit it.
    """
    started = time.perf_counter()
    model = load_model(model_spec)
    # the tuner may fine-tune (pruning, QAT) only a torch model: an ONNX model's data has no train split
    dataset = load_data(data_spec, model, seed=config.seed, train_needed=model.torch_module is not None,
                        calibration_samples=QuantizeConfig().samples)
    runtime.check_runs(model.onnx_bytes(), dataset.eval.take(1).x)
    return tune(model, dataset, config, out_dir, model_spec=model_spec, data_spec=data_spec,
                on_progress=on_progress, should_stop=should_stop, started=started)


def load_tune_log(out_dir: str | Path) -> dict | None:
    """DIR/tune.json, or None when it is not there (yet)."""
    try:
        return json.loads((Path(out_dir) / "tune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


__all__ = ["TUNE_OBJECTIVES", "TuneConfig", "TuneOutcome", "Trial", "load_tune_log", "recovery_step_text",
           "selection_speedup", "tune", "tune_to_dir"]
