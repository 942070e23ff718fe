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
import onnx

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
from core.results.runtimes import POINT_SEPARATOR, point_name
from core.io.runtimes import REFERENCE_RUNTIME, ort_kernel_precisions
from core.pipeline.runtimes import prepare_runtimes
from core.measure.timing import CONFIDENCE, TARGET_HALF_WIDTH


RESULT_FIELDS = ("name", "status", "error", "steps", "size_bytes", "compressed_bytes", "params", "accuracy",
                 "agreement", "cosine_mean", "cosine_min", "max_abs_error", "latency_ms", "throughput",
                 "artifact", "notes", "info", "build_s", "cpu_ms_per_sample", "energy", "compute", "cost", "flips",
                 "agreement_confident", "confident_samples", "topk_overlap", "topk", "split", "kl", "speedup",
                 "selection", "runtimes",
                 # decoders (core.pipeline.decoder)
                 "tokens_per_s", "ttft_ms", "peak_rss_mb", "perplexity", "kl_per_token", "next_token_agreement",
                 "greedy_divergence")


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
    speedup: dict = field(default_factory=dict)  # {bs: {ratio, low, high, rounds, converged}} vs the same-run
    # baseline, from the reported rounds of the run's timing phase (core.measure.timing)
    selection: dict = field(default_factory=dict)  # what choices read, never reported: {"split", "n", "accuracy",
    # "agreement", "cosine_mean"} on the validation split, and "speedup" / "latency_ms" from the held-out rounds
    # the other runtimes of benchmark.runtimes (core.pipeline.runtimes): {runtime: {status, latency_ms, speedup,
    # vs_onnxruntime, fidelity, ...}}; onnxruntime's figures stay in the fields above, as older readers expect
    runtimes: dict = field(default_factory=dict)
    tokens_per_s: dict | None = None  # decoders: {"prefill", "decode"} tokens/s at batch 1
    ttft_ms: float | None = None  # decoders: time to first token (prefill + first generated token), median
    peak_rss_mb: float | None = None  # decoders: peak resident memory (VmHWM) of the worker that held the variant
    perplexity: float | None = None  # decoders: on the held-out text
    kl_per_token: float | None = None  # decoders: KL(fp32 || variant) in nats per held-out token, teacher-forced
    next_token_agreement: float | None = None  # decoders: teacher-forced top-1 agreement with fp32, every position
    greedy_divergence: dict | None = None  # decoders: greedy tokens matching fp32's before the first difference

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
    timing: dict = field(default_factory=dict)  # the timing method, per batch size its rounds and the contention
    # seen, and "contended" / "contention_note" when it was measured under contention (`time_variants`)

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "environment": self.environment,
                "variants": [v.to_dict() for v in self.variants], "status": self.status,
                "started_at": self.started_at, "duration_s": self.duration_s, "task": self.task,
                "dataset": self.dataset, "timing": self.timing, "recipe": self.recipe}

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        variants = [VariantResult(**{k: v for k, v in item.items() if k in RESULT_FIELDS})
                    for item in data.get("variants", [])]
        return cls(model=data.get("model"), data=data.get("data"), recipe=data.get("recipe") or {},
                   environment=data.get("environment") or {}, variants=variants,
                   status=data.get("status", "completed"), started_at=data.get("started_at", ""),
                   duration_s=data.get("duration_s"), task=data.get("task", "classification"),
                   dataset=data.get("dataset") or {}, timing=data.get("timing") or {})

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
    """Turns step-level reports into ProgressEvents with an overall fraction: `count` variants (the baseline
    included), plus `extra_parts` of the bar after them (the run's timing phase), each worth a variant."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None, count: int, extra_parts: int = 0):
        self.callback = callback
        self.count = count
        self.parts = count + extra_parts
        self.start = time.perf_counter()
        self.index = 0
        self.variant: str | None = None

    def emit(self, kind: str, message: str, within: float = 0.0, result: dict | None = None) -> None:
        if self.callback is None:
            return
        fraction = min(1.0, (self.index + max(0.0, min(1.0, within))) / max(1, self.parts))
        # a snapshot: the timing phase fills the same variant's latency in later
        self.callback(ProgressEvent(kind, self.variant, self.index, self.count, message, fraction,
                                    time.perf_counter() - self.start, copy.deepcopy(result), time.time()))


def measure_variant(name: str, proto, dataset: Dataset, baseline_outputs, task: str, recipe: Recipe, out_dir: Path,
                    should_stop, report: Callable[[str, float], None] | None = None, *,
                    baseline_selection=None, torch_module=None, steps: list | None = None
                    ) -> tuple[VariantResult, list, list]:
    """Write the artifact and score its quality on the test split (reported) and on the validation split (for
    choices: `selection`); `report(message, fraction)` hears how far it is (0..1). Timing comes later, for every
    variant of the run together (`time_variants`).

    A recipe timed on several runtimes also makes the variant ready on each of them here
    (`core.pipeline.runtimes.prepare_runtimes`: OpenVINO reads this ONNX file, ExecuTorch exports `torch_module`,
    the variant's module after its torch steps, as `steps` say), each checked against the reference first.

    Returns:
        (the result, its test-split outputs, its validation-split outputs).
    """
    report = report or (lambda message, fraction: None)
    model_bytes = proto.SerializeToString()
    artifact = Path("variants") / name / "model.onnx"
    write_atomic(out_dir / artifact, model_bytes)
    session = runtime.make_session(model_bytes, recipe.benchmark.threads)
    report(f"scoring {len(dataset.eval):,} test samples", 0.0)
    outputs = runtime.run_batched(session, dataset.eval.x)
    output_names = [o.name for o in session.get_outputs()]
    fid = measure.fidelity(outputs, baseline_outputs, dataset.eval.y, task, output_names=output_names)
    selection_split = dataset.selection
    if selection_split is dataset.eval:
        selection_outputs = outputs
    else:
        report(f"scoring {len(selection_split):,} validation samples", 0.5)
        selection_outputs = runtime.run_batched(session, selection_split.x)
    chosen = measure.fidelity(selection_outputs, baseline_selection, selection_split.y, task)
    result = VariantResult(
        name=name, size_bytes=measure.size_bytes(model_bytes), compressed_bytes=measure.compressed_bytes(model_bytes),
        params=measure.logical_params(proto), accuracy=fid.accuracy, agreement=fid.agreement,
        cosine_mean=fid.cosine_mean, cosine_min=fid.cosine_min, max_abs_error=fid.max_abs_error,
        artifact=artifact.as_posix(), flips=fid.flips, agreement_confident=fid.agreement_confident,
        confident_samples=fid.confident_samples, topk_overlap=fid.topk_overlap, topk=fid.topk, kl=fid.kl,
        split=quality_split(dataset),
        selection={"split": dataset.selection_name, "n": len(selection_split), "accuracy": chosen.accuracy,
                   "agreement": chosen.agreement, "cosine_mean": chosen.cosine_mean})
    try:
        result.compute = compute.model_compute_profile(proto, sequence_length=recipe.benchmark.sequence_length or 128)
    except Exception as exc:  # noqa: BLE001 - a graph the profiler cannot read loses only its device-fit numbers
        result.notes.append(f"no compute profile: {exc.__class__.__name__}: {str(exc)[:200]}")
    if fid.per_output:
        result.info["per_output"] = fid.per_output
    if dataset.eval.pairs is not None:  # datasets that declare paraphrase pairs (sample:sentences)
        result.info["retrieval_accuracy"] = measure.retrieval_accuracy(outputs[0], dataset.eval.pairs)
    bench = recipe.benchmark
    if len(bench.runtimes) > 1:
        prepared = prepare_runtimes(name, name, model_bytes, torch_module, list(steps or []), dataset, task,
                                    bench.runtimes, threads=bench.threads, max_batch=max(bench.batch_sizes),
                                    reference_outputs=outputs,
                                    baseline_outputs=outputs if baseline_outputs is None else baseline_outputs,
                                    baseline_selection=selection_outputs if baseline_selection is None
                                    else baseline_selection, out_dir=out_dir,
                                    report=lambda message: report(message, 0.8), should_stop=should_stop)
        # onnxruntime's own kernel counts too: NNCF's layout runs partly in float there, the bake-off says so
        result.runtimes = {REFERENCE_RUNTIME: {"status": "ok", "error": None,
                                               "kernels": ort_kernel_precisions(model_bytes)},
                           **{runtime: ready.entry for runtime, ready in prepared.items()}}
    return result, outputs, selection_outputs


def time_variants(run: RunResult, out_dir: Path, dataset: Dataset, recipe: Recipe, *,
                  should_stop: Callable[[], bool] = lambda: False,
                  report: Callable[[str, float], None] | None = None,
                  on_batch: Callable[[], None] | None = None) -> None:
    """The run's timing phase: the baseline and every measured variant timed together, interleaved in rounds, one
    batch size at a time (`core.measure.quality.time_models`); fills each variant's latency, throughput, CPU time,
    energy, `speedup` and the held-out rounds' `selection` figures, its cost, and the run's `timing` record.

    `report(message, fraction)` hears the progress; `on_batch()` is called after each batch size's figures are in
    `run` (so the caller can write them). Variants whose file cannot be read are left untimed, with a note.
    """
    report = report or (lambda message, fraction: None)
    bench = recipe.benchmark
    timed = [v for v in run.variants if v.status == "ok" and v.artifact]
    if not timed or timed[0].name != "baseline":
        return
    models = {}
    for variant in timed:
        try:
            models[variant.name] = (Path(out_dir) / variant.artifact).read_bytes()
        except OSError as exc:
            variant.notes.append(f"not timed: its model file could not be read ({exc.strerror or exc})")
    points, runtime_of, anchors = runtime_points(timed, models, out_dir)
    models.update(points)
    baseline_proto = onnx.load_from_string(models["baseline"])
    run.timing = {"method": measure.TIMING_METHOD, "target_half_width": TARGET_HALF_WIDTH,
                  "confidence": CONFIDENCE, "max_seconds_per_model": bench.max_seconds, "max_rounds": bench.runs,
                  "holdout": "alternate rounds are held out for choosing (selection.speedup); the reported "
                             "figures come from the others", "batches": {}}
    sizes, fixed_note = measure.possible_batch_sizes(graph_inputs(baseline_proto), bench.batch_sizes)
    by_name = {v.name: v for v in timed}
    if fixed_note:
        for variant in timed:
            variant.notes.append(fixed_note)
    for index, batch in enumerate(sizes):
        def progress(fraction, message, _index=index):
            report(message, (_index + fraction) / max(1, len(sizes)))

        def waiting(message):
            report(f"waiting for a core to time on: {message}", index / max(1, len(sizes)))

        figures = measure.time_models(models, graph_inputs(baseline_proto), dataset.eval.x, [batch],
                                      baseline="baseline", threads=bench.threads, warmup=bench.warmup,
                                      runs=bench.runs, max_seconds=bench.max_seconds, should_stop=should_stop,
                                      on_progress=progress, on_wait=waiting, runtimes=runtime_of, anchors=anchors)
        for name, measured in figures["models"].items():
            if name in runtime_of:
                record_point(by_name, name, runtime_of[name], measured)
                continue
            variant = by_name[name]
            for key in ("latency_ms", "throughput", "cpu_ms_per_sample", "speedup"):
                getattr(variant, key).update(measured[key])
            energy = variant.energy or {"joules_per_sample": {}, "source": None, "note": None}
            energy["joules_per_sample"] = {**energy.get("joules_per_sample", {}),
                                           **measured["energy"]["joules_per_sample"]}
            energy["source"] = measured["energy"]["source"] or energy.get("source")
            energy["note"] = measured["energy"]["note"]
            variant.energy = energy
            for key in ("speedup", "latency_ms"):
                if measured["selection"][key]:
                    variant.selection.setdefault(key, {}).update(measured["selection"][key])
        run.timing["batches"].update(figures["batches"])
        if figures["stopped"]:
            break
        if on_batch is not None:
            on_batch()
    for variant in timed:
        if REFERENCE_RUNTIME in variant.runtimes:  # onnxruntime's entry mirrors the variant's own figures
            variant.runtimes[REFERENCE_RUNTIME].update(latency_ms=variant.latency_ms, speedup=variant.speedup,
                                                       throughput=variant.throughput)
        if variant.latency_ms:
            variant.cost = cost.variant_cost(variant.to_dict(), cost.CostAssumptions(), bench.threads)
        elif not any(n.startswith("not timed") for n in variant.notes):
            variant.notes.append("not timed: the run was stopped before its timing phase")
    run.timing.update(contention_summary(run.timing["batches"]))


def runtime_points(timed: list, models: dict, out_dir: Path) -> tuple[dict, dict, dict]:
    """The bake-off's other runtimes as models for the timing phase: ("int8 · OpenVINO" -> the bytes that runtime
    reads, -> its runtime, -> its anchor: that runtime's baseline, whose same-round ratio is its `speedup`)."""
    points, runtime_of, anchors = {}, {}, {}
    for variant in timed:
        for runtime, entry in (variant.runtimes or {}).items():
            if runtime == REFERENCE_RUNTIME or entry.get("status") != "ok" or variant.name not in models:
                continue
            key = point_name(variant.name, runtime)
            try:
                data = (Path(out_dir) / entry["artifact"]).read_bytes() if entry.get("artifact") \
                    else models[variant.name]
            except OSError as exc:
                entry.update(status="failed", error=f"not timed: its program could not be read "
                                                    f"({exc.strerror or exc})")
                continue
            points[key], runtime_of[key] = data, runtime
    for key, runtime in runtime_of.items():
        anchor = point_name("baseline", runtime)
        if anchor in points and anchor != key:
            anchors[key] = anchor
    return points, runtime_of, anchors


def record_point(by_name: dict, key: str, runtime: str, measured: dict) -> None:
    """A bake-off point's figures into its variant's `runtimes` entry: latency and throughput, `vs_onnxruntime`
    (against the baseline on onnxruntime), `speedup` (against the baseline on the same runtime) and the held-out
    rounds' figures in `selection`; a runner that could not be opened is the entry's error."""
    variant = by_name[key.split(POINT_SEPARATOR)[0]]
    entry = variant.runtimes[runtime]
    if measured.get("error"):
        entry.update(status="failed", error=measured["error"])
        return
    for field_name in ("latency_ms", "throughput"):
        entry.setdefault(field_name, {}).update(measured[field_name])
    entry.setdefault("vs_onnxruntime", {}).update(measured["speedup"])
    against = measured.get("against") or {}
    entry.setdefault("speedup", {}).update(against.get("speedup") or {})
    held = entry.setdefault("selection", {})
    held.setdefault("latency_ms", {}).update(measured["selection"]["latency_ms"])
    held.setdefault("speedup", {}).update(against.get("selection") or {})


def contention_summary(batches: dict) -> dict:
    """`contended` and `contention_note` ("measured under contention: this process got 62% of the CPU time it
    asked for at batch 256") from the timing phase's per-batch contention readings."""
    reasons = []
    for batch, entry in batches.items():
        seen = (entry or {}).get("contention") or {}
        if seen.get("contended"):
            reasons.append(f"at batch {batch}: " + "; ".join(seen.get("reasons") or []))
    if not reasons:
        return {"contended": False, "contention_note": None}
    return {"contended": True, "contention_note": "measured under contention (" + "; ".join(reasons) + "): the "
            "speed-ups are same-round ratios, so a load that slows both sides cancels, but the absolute "
            "latencies are slower than on a quiet machine"}


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
    if result.selection:
        classifier = task == "classification"
        result.selection.update(agreement=1.0 if classifier else None, cosine_mean=None if classifier else 1.0)


def build_variant(model: Model, dataset: Dataset, variant, recipe: Recipe, baseline_outputs, task: str,
                  out_dir: Path, should_stop: Callable[[], bool] = lambda: False,
                  emit: Callable[..., None] = lambda *args, **kwargs: None, *,
                  baseline_selection=None) -> list[VariantResult]:
    """Build one variant from a copy of the baseline, score it (`measure_variant`: test and validation splits; the
    run times every variant together afterwards), and write its artifact under `out_dir`.

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
        edge_module = candidate.torch_module  # what the edge runtime exports: the module after the torch steps
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
            if step.stage == "torch":
                edge_module = candidate.torch_module
        if candidate.onnx_model is None:
            candidate = export_candidate(candidate, model, dataset)
        context.check_stop()
        emit("step", "measuring", 0.85)
        measured, _, _ = measure_variant(variant.slug, candidate.onnx_model, dataset, baseline_outputs, task,
                                         recipe, out_dir, should_stop,
                                         lambda m, f: emit("step", f"measuring: {m}", 0.85 + 0.15 * f),
                                         baseline_selection=baseline_selection, torch_module=edge_module,
                                         steps=[s.to_dict() for s in variant.steps])
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
            extra, _, _ = measure_variant(slugify(extra_name),
                                          _exported(extra_candidate, model, dataset).onnx_model, dataset,
                                          baseline_outputs, task, recipe, out_dir, should_stop,
                                          baseline_selection=baseline_selection,
                                          torch_module=extra_candidate.torch_module, steps=extra_steps)
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
           "contention_summary", "export_candidate", "load_results", "measure_variant", "progress_forwarder",
           "quality_split", "time_variants", "write_results"]
