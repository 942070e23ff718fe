"""The pipeline: run a recipe: load and prepare the baseline, build every variant (`core.pipeline.build`, here or on
Ray), measure each, and write the results."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Callable

from core.io.data import Dataset, load_data
from core.measure import quality as measure
from core.measure.timing import CONFIDENCE, TARGET_HALF_WIDTH
from core.errors import BadInputError, FeatherweightError
from core.format import hide_paths
from core.io.decoder import DecoderCheckpoint
from core.io.graph import Model, task_of
from core.io.model import load_model
from core.io.repair import prepare_baseline
from core.pipeline.build import (ProgressEvent, ProgressTracker, RunResult, VariantResult, baseline_fidelity,
                                 build_variant, contention_summary, measure_variant, time_variants, write_results)
from core.spec.recipe import Recipe
from core.io import runtime
from core.pipeline import decoder as decoder_pipeline
from core.pipeline.ray import run_variants_ray
from core.results.explain import decoder_notes
from core.io.runtimes import versions as runtime_versions


def run(model: Model, dataset: Dataset, recipe: Recipe, out_dir: str | Path, *,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False, executor: str = "local",
        ray_address: str | None = None) -> RunResult:
    """Build and score the baseline and every variant of `recipe`, then time them all together; write results and
    artifacts to `out_dir`.

    Every variant is built and scored first (its quality shows as soon as it is done), then one timing phase per
    batch size times the baseline and every variant that built, interleaved in rounds in this process
    (`core.pipeline.build.time_variants`), so every speed-up is a same-round ratio. A variant that fails is
    recorded with ``status: failed`` and its error, and the run goes on. Cancelling (``should_stop()`` turning
    true) marks the variants not yet built ``cancelled`` and skips the timing. With ``executor="ray"`` each variant
    is built and scored as a Ray task (the baseline is scored once, here, and shared); the timing phase runs here,
    in the driver, after the builds: a ratio between two machines, or between two tasks timed side by side on
    one, is not a speed-up.

    Returns:
        The RunResult (also written as results.json / results.csv / recipe.yaml in `out_dir`).
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, batch_notes = prepare_baseline(model, recipe.benchmark.batch_sizes)  # a fixed batch axis, freed
    task = task_of(model)
    recipe_dict = recipe.replace(model=recipe.model or model.source,
                                 data=recipe.data if recipe.data is not None else dataset.source).to_dict()
    result = RunResult(model=model.source, data=dataset.source, recipe=recipe_dict,
                       environment={**measure.environment(recipe.benchmark.threads), "executor": "local"},
                       started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), task=task,
                       dataset=dataset.summary())
    if len(recipe.benchmark.runtimes) > 1:  # each runtime's release, beside onnxruntime's
        result.environment["versions"].update(runtime_versions(recipe.benchmark.runtimes))
    progress = ProgressTracker(on_progress, len(recipe.variants) + 1, extra_parts=1)  # + the timing phase
    progress.variant = "baseline"
    progress.emit("start", "scoring the baseline")
    torch.manual_seed(recipe.seed)
    baseline, baseline_outputs, baseline_selection = measure_variant(
        "baseline", model.onnx_model, dataset, None, task, recipe, out_dir, should_stop,
        lambda m, f: progress.emit("step", f"scoring the baseline: {m}", f), torch_module=model.torch_module,
        steps=[])
    baseline_fidelity(baseline, baseline_outputs, task)
    baseline.notes.extend(model.notes + batch_notes)
    result.variants.append(baseline)
    progress.emit("variant_done", "baseline scored", 1.0, baseline.to_dict())
    write_results(result, out_dir)

    if executor == "ray":
        result.environment["executor"] = "ray"
        cancelled = run_variants_ray(model, dataset, recipe, baseline_outputs, task, out_dir, result, progress,
                                     should_stop, address=ray_address, baseline_selection=baseline_selection)
    else:
        cancelled = False
        for index, variant in enumerate(recipe.variants, start=1):
            progress.index, progress.variant = index, variant.name
            if cancelled or should_stop():
                cancelled = True
                result.variants.append(VariantResult(variant.name, status="cancelled",
                                                     error="cancelled by the user",
                                                     steps=[s.to_dict() for s in variant.steps]))
                continue
            for measured in build_variant(model, dataset, variant, recipe, baseline_outputs, task, out_dir,
                                          should_stop, progress.emit, baseline_selection=baseline_selection):
                cancelled = cancelled or measured.status == "cancelled"
                result.variants.append(measured)
                progress.emit("variant_done", f"{measured.name}: {measured.status}", 1.0, measured.to_dict())
            write_results(result, out_dir)

    progress.index, progress.variant = progress.count, "timing"
    progress.emit("step", "timing the baseline and every variant together", 0.0)
    stop = (lambda: True) if cancelled else should_stop
    time_variants(result, out_dir, dataset, recipe, should_stop=stop,
                  report=lambda message, fraction: progress.emit("step", message, fraction),
                  on_batch=lambda: write_results(result, out_dir))
    cancelled = cancelled or should_stop()
    return finish_run(result, out_dir, progress, cancelled=cancelled, started=started)


def finish_run(result: RunResult, out_dir: Path, progress: ProgressTracker, *, cancelled: bool,
               started: float) -> RunResult:
    """End a run (recipe or decoder alike): its final status and duration written, then the "done" event."""
    result.status = "cancelled" if cancelled else "completed"
    result.duration_s = round(time.perf_counter() - started, 3)
    write_results(result, out_dir)
    progress.index, progress.variant = progress.parts, None
    progress.emit("done", f"run {result.status} in {result.duration_s:.1f} s", 0.0)
    return result


def run_recipe(recipe: Recipe, out_dir: str | Path, *, model_spec: str | None = None, data_spec: str | None = None,
               on_progress: Callable[[ProgressEvent], None] | None = None,
               should_stop: Callable[[], bool] = lambda: False, executor: str = "local",
               ray_address: str | None = None) -> RunResult:
    """Load the recipe's model and data (or the overrides), check they fit, and run it.

    Raises:
        BadInputError: no model, a rejected model file, or data that does not fit the model.
    """
    model_spec = model_spec or recipe.model
    if not model_spec:
        raise BadInputError("the recipe names no model; add 'model:' or pass --model")
    data_spec = data_spec if data_spec is not None else recipe.data
    model = load_model(model_spec)
    if isinstance(model, DecoderCheckpoint):  # a causal LM: built and measured by core.pipeline.decoder
        return run_decoder(model, recipe.replace(model=model_spec, data=data_spec), out_dir,
                           on_progress=on_progress, should_stop=should_stop)
    dataset = load_data(data_spec, model, seed=recipe.seed, sequence_length=recipe.benchmark.sequence_length,
                        train_needed=training_needed(recipe, model), calibration_samples=recipe.calibration_samples())
    runtime.check_runs(model.onnx_bytes(), dataset.eval.take(1).x)
    recipe = recipe.replace(model=model_spec, data=data_spec)
    return run(model, dataset, recipe, out_dir, on_progress=on_progress, should_stop=should_stop,
               executor=executor, ray_address=ray_address)


def training_needed(recipe: Recipe, model: Model) -> bool:
    """Whether the run trains on the data: a step that trains, on a model with a torch module to train. Without
    one, the user's data is all calibration, validation and test (`core.io.data.load_data`)."""
    return model.torch_module is not None and recipe.trains()


def run_decoder(checkpoint: DecoderCheckpoint, recipe: Recipe, out_dir: str | Path, *,
                on_progress: Callable[[ProgressEvent], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False, heldout: tuple | None = None) -> RunResult:
    """Build the fp32 baseline and every variant of a decoder with onnxruntime-genai, then measure them together
    (`core.pipeline.decoder.run_variants`: one worker per variant, decode speed timed interleaved in rounds).

    `heldout` overrides the held-out text: ``(eval_ids, prompts, summary)`` (the bench's random-weight model).

    Returns:
        The RunResult (task ``text-generation``), written like any other run.

    Raises:
        BadInputError: the fp32 baseline could not be built or measured (nothing to compare with).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    eval_ids, prompts, summary = heldout or decoder_pipeline.heldout(checkpoint, recipe.data)
    result = RunResult(model=checkpoint.source, data=recipe.data, recipe=recipe.to_dict(),
                       environment={**measure.environment(recipe.benchmark.threads), "executor": "local"},
                       started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       task="text-generation", dataset=summary)
    variants = [("baseline", "baseline", ())] + [(v.name, v.slug, v.steps) for v in recipe.variants]
    names = [name for name, _, _ in variants]
    progress = ProgressTracker(on_progress, len(variants))

    def emit(variant, message, fraction):
        # Builds go one variant at a time; the measurement is of all of them at once (interleaved rounds), so the
        # event names the variant being built, then "all variants", with the run's own fraction done.
        if on_progress is not None:
            on_progress(ProgressEvent("step", variant or "all variants, measured together",
                                      names.index(variant) if variant in names else len(names) - 1, len(names),
                                      message, min(1.0, max(0.0, fraction)), time.perf_counter() - started, None,
                                      time.time()))

    progress.emit("start", f"building {len(variants)} decoders, then measuring them together")
    try:
        outcome, timing = decoder_pipeline.run_variants(
            checkpoint, variants, out_dir, eval_ids, prompts, threads=recipe.benchmark.threads,
            max_seconds=recipe.benchmark.max_seconds * len(variants), seed=recipe.seed, should_stop=should_stop,
            emit=emit)
    except FeatherweightError as exc:
        error = hide_paths(str(exc))
        result.variants.append(VariantResult("baseline", status="failed", error=error))
        result.status = "failed"
        write_results(result, out_dir)
        raise BadInputError(error if error.startswith(checkpoint.source) else
                            f"{checkpoint.source}: {error}") from None
    cancelled = bool(timing.pop("stopped", False))  # stopped in the timed rounds: what was measured is kept
    if timing:  # the run's timing record, as a recipe run's (core.pipeline.build.time_variants)
        result.timing = {**timing, "target_half_width": TARGET_HALF_WIDTH, "confidence": CONFIDENCE,
                         "max_seconds_per_model": recipe.benchmark.max_seconds,
                         **contention_summary(timing.get("batches") or {})}
    for name, _, steps in variants:
        done = outcome[name]
        measured = VariantResult(name, status=done["status"], error=done["error"], **done["fields"])
        measured.steps = [s.to_dict() for s in steps]
        cancelled = cancelled or measured.status == "cancelled"
        result.variants.append(measured)
    baseline = result.variants[0]
    if baseline.status == "ok" and len(recipe.benchmark.runtimes) > 1:  # said, not silently dropped
        baseline.notes.append("benchmark.runtimes: a decoder is timed on onnxruntime-genai only; "
                              f"{', '.join(r for r in recipe.benchmark.runtimes if r != 'onnxruntime')} not timed")
    for index, measured in enumerate(result.variants):  # "why not faster" needs every variant measured first
        if measured.status == "ok":
            measured.notes = decoder_notes(result.to_dict(), measured.name)
        progress.index, progress.variant = index, measured.name
        progress.emit("variant_done", f"{measured.name}: {measured.status}", 1.0, measured.to_dict())
    return finish_run(result, out_dir, progress, cancelled=cancelled, started=started)


__all__ = ["run", "run_decoder", "run_recipe", "training_needed"]
