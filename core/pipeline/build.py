"""Build and measure one variant: apply its steps to a copy of the baseline, export, measure size, quality and
latency; the records a run is made of (`VariantResult`, `RunResult`, `ProgressEvent`) and how they are written."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.measure import compute
from core.measure import quality as measure
from core.io.data import SPLIT_NAMES, Dataset
from core.errors import BadInputError, FeatherweightError
from core.format import hide_paths
from core.io.graph import Model, graph_inputs
from core.io.model import export_onnx
from core.spec.recipe import Recipe, slugify
from core.techniques import Cancelled, Candidate, StepContext, apply_step
from core.io.files import write_atomic
from core.io import runtime
from core.results import cost
from core.results.table import results_frame


RESULT_FIELDS = ("name", "status", "error", "steps", "size_bytes", "compressed_bytes", "params", "accuracy",
                 "agreement", "cosine_mean", "cosine_min", "max_abs_error", "latency_ms", "throughput",
                 "artifact", "notes", "info", "build_s", "cpu_ms_per_sample", "energy", "compute", "cost", "flips",
                 "agreement_confident", "confident_samples", "topk_overlap", "topk", "split", "kl",
                 # decoders (core.pipeline.decoder)
                 "tokens_per_s", "ttft_ms", "peak_rss_mb", "perplexity", "greedy_agreement", "greedy_divergence")


@dataclass
class ProgressEvent:
    """One progress update: which variant and step, a message, and the run's overall fraction done."""

    kind: str  # "start" | "step" | "variant_done" | "done"
    variant: str | None
    variant_index: int
    variant_count: int
    message: str
    fraction: float
    elapsed_s: float
    result: dict | None = None  # the VariantResult as a dict, on "variant_done"
    emitted_at: float = 0.0  # wall-clock time of the event, so a reader can tick elapsed time between events


    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class VariantResult:
    """What one variant measured (fields as in results.json)."""

    name: str
    status: str = "ok"  # "ok" | "failed" | "cancelled"
    error: str | None = None
    steps: list = field(default_factory=list)
    size_bytes: int | None = None
    compressed_bytes: int | None = None
    params: int | None = None
    accuracy: float | None = None
    agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    max_abs_error: float | None = None
    latency_ms: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    artifact: str | None = None
    notes: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    build_s: float | None = None
    cpu_ms_per_sample: dict = field(default_factory=dict)  # {bs: process CPU ms per inference}
    energy: dict = field(default_factory=dict)  # {"joules_per_sample": {bs: J}, "source": str|None, "note"}
    compute: dict = field(default_factory=dict)  # MACs, weight / peak activation bytes at batch 1 (core.results.cost)
    cost: dict = field(default_factory=dict)  # USD / energy / CO2 under the default assumptions (core.results.cost)
    flips: dict | None = None  # classifiers: {"count", "rate"} of samples whose top-1 differs from the baseline's
    agreement_confident: float | None = None  # agreement where the baseline's top-1 margin is clear (measure)
    confident_samples: int | None = None  # how many samples that was
    topk_overlap: float | None = None  # mean top-k set overlap with the baseline (k = `topk`)
    topk: int | None = None
    kl: float | None = None  # classifiers: mean KL(baseline || variant) over the test split, nats
    split: dict = field(default_factory=dict)  # {"quality": "test", "n": N}: where every quality number is from;
    # the tuner adds "selection": "validation", "selection_n": M (what it chose on)
    tokens_per_s: dict | None = None  # decoders: {"prefill", "decode"} tokens/s at batch 1
    ttft_ms: float | None = None  # decoders: time to first token (prefill + first generated token), median
    peak_rss_mb: float | None = None  # decoders: peak resident memory of the process that measured the variant
    perplexity: float | None = None  # decoders: on the held-out text
    greedy_agreement: float | None = None  # decoders: share of greedy tokens equal to the fp32 baseline's
    greedy_divergence: dict | None = None  # decoders: first divergence position per prompt, mean, how many

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in RESULT_FIELDS}


@dataclass
class RunResult:
    """A whole run: what was optimized, where it was measured, and every variant's result."""

    model: str
    data: str | None
    recipe: dict
    environment: dict
    variants: list = field(default_factory=list)
    status: str = "running"  # "running" | "completed" | "cancelled" | "failed"
    started_at: str = ""
    duration_s: float | None = None
    task: str = "classification"
    dataset: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "environment": self.environment,
                "variants": [v.to_dict() for v in self.variants], "status": self.status,
                "started_at": self.started_at, "duration_s": self.duration_s, "task": self.task,
                "dataset": self.dataset, "recipe": self.recipe}

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        variants = [VariantResult(**{k: v for k, v in item.items() if k in RESULT_FIELDS})
                    for item in data.get("variants", [])]
        return cls(model=data.get("model"), data=data.get("data"), recipe=data.get("recipe") or {},
                   environment=data.get("environment") or {}, variants=variants,
                   status=data.get("status", "completed"), started_at=data.get("started_at", ""),
                   duration_s=data.get("duration_s"), task=data.get("task", "classification"),
                   dataset=data.get("dataset") or {})

    def to_frame(self):
        """The results table (pandas), with ratios to the baseline."""
        return results_frame(self.to_dict())


def write_results(run: RunResult, out_dir: Path) -> None:
    """results.json, results.csv and recipe.yaml into `out_dir` (atomically, results.json last)."""
    out_dir = Path(out_dir)
    frame = run.to_frame()
    write_atomic(out_dir / "results.csv", frame.to_csv(index=False))
    write_atomic(out_dir / "recipe.yaml", Recipe.from_dict(run.recipe).to_yaml())
    write_atomic(out_dir / "results.json", json.dumps(run.to_dict(), indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value)}")


def export_candidate(candidate: Candidate, baseline: Model, dataset: Dataset) -> Candidate:
    """Export the candidate's torch module to ONNX with the baseline's input and output names."""
    import torch

    example = torch.from_numpy(np.ascontiguousarray(dataset.eval.first[:1]))
    proto = export_onnx(candidate.torch_module, example, input_name=baseline.inputs[0].name,
                        output_name=baseline.outputs[0].name)
    return dataclasses.replace(candidate, onnx_model=proto)


class ProgressTracker:
    """Turns step-level reports into ProgressEvents with an overall fraction."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None, count: int):
        self.callback = callback
        self.count = count
        self.start = time.perf_counter()
        self.index = 0
        self.variant: str | None = None

    def emit(self, kind: str, message: str, within: float = 0.0, result: dict | None = None) -> None:
        if self.callback is None:
            return
        fraction = min(1.0, (self.index + max(0.0, min(1.0, within))) / max(1, self.count))
        self.callback(ProgressEvent(kind, self.variant, self.index, self.count, message, fraction,
                                    time.perf_counter() - self.start, result, time.time()))


# Share of a measurement spent on quality (the eval split) before the benchmark: a rough split for the progress bar.
QUALITY_SHARE = 0.15


def measure_variant(name: str, proto, dataset: Dataset, baseline_outputs, task: str, recipe: Recipe, out_dir: Path,
                    should_stop, report: Callable[[str, float], None] | None = None) -> tuple[VariantResult, list]:
    """Write the artifact, score quality, time it; `report(message, fraction)` hears how far it is (0..1)."""
    report = report or (lambda message, fraction: None)
    model_bytes = proto.SerializeToString()
    artifact = Path("variants") / name / "model.onnx"
    write_atomic(out_dir / artifact, model_bytes)
    session = runtime.make_session(model_bytes, recipe.benchmark.threads)
    report(f"scoring {len(dataset.eval):,} eval samples", 0.0)
    outputs = runtime.run_batched(session, dataset.eval.x)
    fid = measure.fidelity(outputs, baseline_outputs, dataset.eval.y, task,
                           output_names=[o.name for o in session.get_outputs()])
    bench = recipe.benchmark
    report(f"timing batch sizes {', '.join(str(b) for b in bench.batch_sizes)}", QUALITY_SHARE)
    timing = measure.benchmark(model_bytes, _input_specs(proto), dataset.eval.x, bench.batch_sizes,
                               threads=bench.threads, warmup=bench.warmup, runs=bench.runs,
                               max_seconds=bench.max_seconds, should_stop=should_stop,
                               on_progress=lambda f, m: report(m, QUALITY_SHARE + (1 - QUALITY_SHARE) * f))
    result = VariantResult(
        name=name, size_bytes=measure.size_bytes(model_bytes), compressed_bytes=measure.compressed_bytes(model_bytes),
        params=measure.logical_params(proto), accuracy=fid.accuracy, agreement=fid.agreement,
        cosine_mean=fid.cosine_mean, cosine_min=fid.cosine_min, max_abs_error=fid.max_abs_error,
        latency_ms=timing["latency_ms"], throughput=timing["throughput"], artifact=artifact.as_posix(),
        flips=fid.flips, agreement_confident=fid.agreement_confident, confident_samples=fid.confident_samples,
        topk_overlap=fid.topk_overlap, topk=fid.topk, kl=fid.kl, split=quality_split(dataset))
    if timing["note"]:
        result.notes.append(timing["note"])
    _add_cost(result, timing, proto, bench)
    if fid.per_output:
        result.info["per_output"] = fid.per_output
    if dataset.eval.pairs is not None:  # datasets that declare paraphrase pairs (sample:sentences)
        result.info["retrieval_accuracy"] = measure.retrieval_accuracy(outputs[0], dataset.eval.pairs)
    return result, outputs


def quality_split(dataset: Dataset) -> dict:
    """results.json's `split`: every quality number of a run comes from the held-out test split (dataset.eval),
    with what one of its samples is worth in points."""
    n = len(dataset.eval)
    return {"quality": SPLIT_NAMES["eval"], "n": n, "resolution_pt": round(100.0 / n, 4) if n else None}


def baseline_fidelity(result: VariantResult, baseline_outputs: list, task: str) -> None:
    """The baseline against itself: agreement 1, no flips, cosine 1 (measured, so the confident count is real)."""
    result.max_abs_error = 0.0
    if task == "classification":
        changes = measure.prediction_changes(baseline_outputs[0], baseline_outputs[0])
        result.agreement, result.flips = 1.0, changes["flips"]
        result.agreement_confident, result.confident_samples = changes["agreement_confident"], \
            changes["confident_samples"]
        result.topk_overlap, result.topk = changes["topk_overlap"], changes["topk"]
        result.kl = changes["kl"]
    else:
        result.agreement = None
        result.cosine_mean, result.cosine_min = 1.0, 1.0


def _add_cost(result: VariantResult, timing: dict, proto, bench) -> None:
    """CPU time, energy, the compute profile and default-assumption cost (core.results.cost) into the result."""
    result.cpu_ms_per_sample = timing.get("cpu_ms_per_sample") or {}
    result.energy = timing.get("energy") or {}
    try:
        result.compute = compute.model_compute_profile(proto, sequence_length=bench.sequence_length or 128)
    except Exception as exc:  # noqa: BLE001 - a graph the profiler cannot read loses only its device-fit numbers
        result.notes.append(f"no compute profile: {exc.__class__.__name__}: {str(exc)[:200]}")
    result.cost = cost.variant_cost(result.to_dict(), cost.CostAssumptions(), bench.threads)


def _input_specs(proto):
    return graph_inputs(proto)


def build_variant(model: Model, dataset: Dataset, variant, recipe: Recipe, baseline_outputs, task: str,
                  out_dir: Path, should_stop: Callable[[], bool] = lambda: False,
                  emit: Callable[..., None] = lambda *args, **kwargs: None) -> list[VariantResult]:
    """Build one variant from a copy of the baseline, measure it, and write its artifact under `out_dir`.

    Returns:
        The variant's result, followed by any extra variants its steps added (the distillation control).
        Failures and cancellation are results (status failed / cancelled), never exceptions.
    """
    import torch

    built_at = time.perf_counter()
    context = StepContext(dataset=dataset, baseline=model, seed=recipe.seed,
                          sequence_length=recipe.benchmark.sequence_length, should_stop=should_stop,
                          variant_name=variant.name)
    emit("step", f"building {variant.name}")
    try:
        torch.manual_seed(recipe.seed)
        candidate = Candidate(onnx_model=copy.deepcopy(model.onnx_model),
                              torch_module=copy.deepcopy(model.torch_module), architecture=model.architecture,
                              notes=[])
        for step_index, step in enumerate(variant.steps):
            share = 0.8 / max(1, len(variant.steps))

            def report(message, fraction, _base=step_index * share, _step=step):
                emit("step", f"{_step.technique}: {message}", _base + share * fraction)

            context.report = report
            context.check_stop()
            if step.stage == "onnx" and candidate.onnx_model is None:
                candidate = export_candidate(candidate, model, dataset)
            emit("step", f"{step.technique} ({step_index + 1}/{len(variant.steps)})", step_index * share)
            candidate = apply_step(step, candidate, context)
        if candidate.onnx_model is None:
            candidate = export_candidate(candidate, model, dataset)
        context.check_stop()
        emit("step", "measuring", 0.85)
        measured, _ = measure_variant(variant.slug, candidate.onnx_model, dataset, baseline_outputs, task, recipe,
                               out_dir, should_stop, lambda m, f: emit("step", f"measuring: {m}", 0.85 + 0.15 * f))
        measured.name = variant.name
        measured.notes = candidate.notes + measured.notes
        measured.info = {**candidate.info, **measured.info}
    except Cancelled:
        measured = VariantResult(variant.name, status="cancelled", error="cancelled by the user")
    except FeatherweightError as exc:
        measured = VariantResult(variant.name, status="failed", error=hide_paths(str(exc)))
    except Exception as exc:  # noqa: BLE001 - one broken variant must not lose the others
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        measured = VariantResult(variant.name, status="failed", error=f"{exc.__class__.__name__}: {hide_paths(first)}")
    measured.steps = [s.to_dict() for s in variant.steps]
    measured.build_s = round(time.perf_counter() - built_at, 3)
    results = [measured]
    for extra_name, extra_candidate, extra_steps in context.extra_variants:
        try:
            extra, _ = measure_variant(slugify(extra_name), _exported(extra_candidate, model, dataset).onnx_model,
                                dataset, baseline_outputs, task, recipe, out_dir, should_stop)
            extra.name = extra_name
            extra.notes = extra_candidate.notes + extra.notes
            extra.info = {**extra_candidate.info, **extra.info}
        except FeatherweightError as exc:
            extra = VariantResult(extra_name, status="failed", error=hide_paths(str(exc)))
        extra.steps = extra_steps
        results.append(extra)
    return results


def _exported(candidate: Candidate, model: Model, dataset: Dataset) -> Candidate:
    return candidate if candidate.onnx_model is not None else export_candidate(candidate, model, dataset)


def load_results(out_dir: str | Path) -> RunResult:
    """Read a run's results.json back."""
    path = Path(out_dir) / "results.json"
    try:
        return RunResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None


def progress_forwarder(on_progress) -> Callable[[dict], None]:
    """An `on_message` for run_isolated that turns the worker's progress messages into ProgressEvents for
    `on_progress` (None: drop them). A malformed event from the worker is dropped, never trusted."""

    def forward(message: dict) -> None:
        if on_progress is None or message.get("t") != "progress":
            return
        event = message.get("event")
        try:
            names = {f.name for f in dataclasses.fields(ProgressEvent)}
            on_progress(ProgressEvent(**{k: v for k, v in event.items() if k in names}))
        except (TypeError, AttributeError, ValueError, KeyError):
            pass

    return forward


__all__ = ["ProgressEvent", "ProgressTracker", "RunResult", "VariantResult", "baseline_fidelity", "build_variant",
           "export_candidate", "load_results", "measure_variant", "progress_forwarder", "quality_split",
           "write_results"]
