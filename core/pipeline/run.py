"""The pipeline: run a recipe: load and prepare the baseline, build every variant (`core.pipeline.build`, here or on
Ray), measure each, and write the results."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Callable

from core.io.data import Dataset, load_data
from core.measure import quality as measure
from core.errors import BadInputError, FeatherweightError
from core.format import hide_paths
from core.io.decoder import DecoderCheckpoint
from core.io.graph import Model, task_of
from core.io.model import load_model
from core.io.repair import prepare_baseline
from core.pipeline.build import (ProgressEvent, ProgressTracker, RunResult, VariantResult, baseline_fidelity,
                                 build_variant, measure_variant, write_results)
from core.spec.recipe import Recipe
from core.io import runtime
from core.pipeline import decoder as decoder_pipeline
from core.pipeline.ray import run_variants_ray


def run(model: Model, dataset: Dataset, recipe: Recipe, out_dir: str | Path, *,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False, executor: str = "local",
        ray_address: str | None = None) -> RunResult:
    """Build and measure the baseline and every variant of `recipe`; write results and artifacts to `out_dir`.

    A variant that fails is recorded with ``status: failed`` and its error, and the run goes on. Cancelling
    (``should_stop()`` turning true) marks the variants not yet built ``cancelled``. With ``executor="ray"``
    each variant is a Ray task (the baseline is measured once, here, and shared).

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
    progress = ProgressTracker(on_progress, len(recipe.variants) + 1)
    progress.variant = "baseline"
    progress.emit("start", "measuring the baseline")
    torch.manual_seed(recipe.seed)
    baseline, baseline_outputs = measure_variant("baseline", model.onnx_model, dataset, None, task, recipe, out_dir,
                                          should_stop,
                                          lambda m, f: progress.emit("step", f"measuring the baseline: {m}", f))
    baseline_fidelity(baseline, baseline_outputs, task)
    baseline.notes.extend(model.notes + batch_notes)
    result.variants.append(baseline)
    progress.emit("variant_done", "baseline measured", 1.0, baseline.to_dict())
    write_results(result, out_dir)

    if executor == "ray":
        result.environment["executor"] = "ray"
        cancelled = run_variants_ray(model, dataset, recipe, baseline_outputs, task, out_dir, result, progress,
                                     should_stop, address=ray_address)
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
                                          should_stop, progress.emit):
                cancelled = cancelled or measured.status == "cancelled"
                result.variants.append(measured)
                progress.emit("variant_done", f"{measured.name}: {measured.status}", 1.0, measured.to_dict())
            write_results(result, out_dir)

    return finish_run(result, out_dir, progress, cancelled=cancelled, started=started)


def finish_run(result: RunResult, out_dir: Path, progress: ProgressTracker, *, cancelled: bool,
               started: float) -> RunResult:
    """End a run (recipe or decoder alike): its final status and duration written, then the "done" event."""
    result.status = "cancelled" if cancelled else "completed"
    result.duration_s = round(time.perf_counter() - started, 3)
    write_results(result, out_dir)
    progress.index, progress.variant = progress.count, None
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
    """Build the fp32 baseline and every variant of a decoder with onnxruntime-genai and measure them (batch 1).

    `heldout` overrides the held-out text: ``(eval_ids, prompts, summary)`` (the bench's random-weight model).

    Returns:
        The RunResult (task ``text-generation``), written like any other run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    eval_ids, prompts, summary = heldout or decoder_pipeline.heldout(checkpoint, recipe.data)
    result = RunResult(model=checkpoint.source, data=recipe.data, recipe=recipe.to_dict(),
                       environment={**measure.environment(recipe.benchmark.threads), "executor": "local"},
                       started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       task="text-generation", dataset=summary)
    progress = ProgressTracker(on_progress, len(recipe.variants) + 1)
    runs = max(1, min(recipe.benchmark.runs, 5))  # passes over the prompts; each times PROMPTS generations
    baseline, cancelled = None, False
    for index, variant in enumerate([None, *recipe.variants]):
        name, slug, steps = ("baseline", "baseline", ()) if variant is None else (variant.name, variant.slug,
                                                                                 variant.steps)
        progress.index, progress.variant = index, name
        if cancelled or should_stop():
            cancelled = True
            result.variants.append(VariantResult(name, status="cancelled", error="cancelled by the user",
                                                 steps=[s.to_dict() for s in steps]))
            continue
        progress.emit("step", f"building {name}")
        try:
            fields = decoder_pipeline.build_and_measure(
                checkpoint, slug, steps, out_dir, eval_ids, prompts, threads=recipe.benchmark.threads, runs=runs,
                baseline=baseline, report=lambda m, f: progress.emit("step", f"{name}: {m}", f))
            measured = VariantResult(name, **fields)
        except FeatherweightError as exc:
            measured = VariantResult(name, status="failed", error=hide_paths(str(exc)))
        except Exception as exc:  # noqa: BLE001 - one broken variant must not lose the others
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            measured = VariantResult(name, status="failed", error=f"{exc.__class__.__name__}: {hide_paths(first)}")
        measured.steps = [s.to_dict() for s in steps]
        if variant is None:
            if measured.status != "ok":  # nothing to compare against: the run fails with its reason
                result.variants.append(measured)
                result.status = "failed"
                write_results(result, out_dir)
                raise BadInputError(f"{checkpoint.source}: the fp32 decoder could not be built: {measured.error}")
            baseline = measured.to_dict()
        result.variants.append(measured)
        progress.emit("variant_done", f"{name}: {measured.status}", 1.0, measured.to_dict())
        write_results(result, out_dir)
    return finish_run(result, out_dir, progress, cancelled=cancelled, started=started)


__all__ = ["run", "run_decoder", "run_recipe", "training_needed"]
