"""Worker entries: what a sandboxed worker runs (named ``f"{__name__}:NAME"``, resolved in the worker by
`core.io.sandbox`), and the parent-side calls that start them: inspect an upload, check data against a model,
run a recipe (the CLI), a Learn explainer, a run's estimates, and the body of a queued job (`worker_main`)."""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path
from typing import Any, Callable

from core.errors import BadInputError, FeatherweightError
from core.io.data import load_data
from core.io.model import load_model
from core.io.safety import check_suffix
from core.format import one_line
from core.io.files import write_atomic
from core.io.sandbox import (INTERACTIVE_NICE, ResourceLimits, looks_out_of_memory, phase, run_isolated, send,
                             upload_dir, worker_slot)
from core.jobs.insight import run_job
from core.jobs.queue import CANCEL_FLAG, OUTCOME, JobSpec
from core.jobs.uploads import check_data_entry, inspect_entry  # noqa: F401 - the upload checks' entries live there
from core.jobs.store import RunStore
from core.measure.timing import set_core_gate
from core.pipeline.run import run_recipe, training_needed
from core.spec.recipe import Recipe
from core.teach import explainers as learn
from core.pipeline.build import progress_forwarder


UPLOAD_ENTRIES = "core.jobs.uploads:"  # a light module: an upload check's worker does not import the pipeline
# An upload check's reply is a model card (core.measure.card caps its tables) or a dataset summary: 8 MiB is ample.
CHECK_REPLY_BYTES = 8 * 2**20


def run_recipe_entry(recipe_path: str, out_dir: str, model: str | None = None, data: str | None = None,
                     executor: str = "local", ray_address: str | None = None) -> dict:
    """Inside a worker: `featherweight run` (files checked before the pipeline imports torch); a short summary."""
    phase("reading the recipe")
    recipe = Recipe.load(recipe_path)
    model_spec = model or recipe.model
    data_spec = data if data is not None else recipe.data
    # Refuse hostile files before the pipeline imports torch (the run reads them again: they are small next to
    # what the run does).
    if model_spec and not model_spec.startswith("sample:"):
        phase(f"reading {Path(model_spec).name}")
        checked = load_model(model_spec)
        if data_spec and not data_spec.startswith("sample:"):
            phase(f"reading {Path(data_spec).name}")
            load_data(data_spec, checked, seed=recipe.seed, sequence_length=recipe.benchmark.sequence_length,
                      train_needed=training_needed(recipe, checked))
    phase("running the recipe")

    def on_progress(event):
        send({"t": "progress", "event": event.to_dict()})

    result = run_recipe(recipe, out_dir, model_spec=model, data_spec=data, on_progress=on_progress,
                        executor=executor, ray_address=ray_address)
    return {"status": result.status, "variants": len(result.variants),
            "failed": [v.name for v in result.variants if v.status == "failed"]}


def job_entry(spec: dict, limits: dict) -> None:
    """Inside a job worker (started by `core.jobs.queue.JobRunner`): `worker_main` for the JSON spec."""
    worker_main(JobSpec(**spec), ResourceLimits(**limits))


def learn_entry(source: dict, what: str, params: dict) -> Any:
    """A Learn explainer's view (core.teach.explainers.EXPLAINERS[what]) of an uploaded, sample or local model, computed
    here; uploads arrive as files in a private temporary directory, read back into the bytes the page had."""
    fields = dict(source)
    for kind in ("model", "data"):
        path = fields.pop(f"{kind}_path", None)
        if path:
            fields[f"{kind}_content"] = Path(path).read_bytes()
    phase(f"reading {fields.get('label') or 'the model'}")
    return learn.encode_view(learn.explain(learn.LearnSource(**fields), what, params, on_point=lambda point: send(
        {"t": "progress", "point": learn.encode_view(point)}), on_loaded=lambda: phase(f"explaining ({what})")))


def learn_run_estimates_entry(store_root: str, run_id: str, results: dict) -> Any:
    """Each finished variant's estimated size beside its measured one, from the run's own model file."""
    phase(f"reading run {run_id}'s model")
    proto = learn.run_baseline_proto(RunStore(store_root), run_id, results)
    phase("estimating the run's variants")
    return learn.encode_view(learn.estimate_vs_measured(results, proto))


def inspect_isolated(source: str | bytes, filename: str | None = None, *, limits: ResourceLimits | None = None,
                     timeout: float | None = None, stats: dict | None = None) -> dict:
    """Validate a model and build its card in a worker: nothing of the file is parsed in this process.

    Args:
        source: ``sample:NAME``, a file path, or an upload's bytes (then `filename` gives the format).
        filename: the upload's name (required with bytes).
        limits / timeout / stats: as for `run_isolated` (default `ResourceLimits.for_inspect()`).

    Returns:
        The model card (as `core.measure.card.model_card`).

    Raises:
        BadInputError: the file is refused, or the worker crashed, ran out of memory or time reading it.
        UnsupportedModelError: a valid file Featherweight cannot use.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not filename:
            raise BadInputError("an uploaded model needs its file name (for the format)")
        check_suffix(Path(filename).name)
        with worker_slot():  # waiting in line holds no temporary file
            directory, path = upload_dir(source, filename)
            try:
                return run_isolated(UPLOAD_ENTRIES + "inspect_entry", str(path), Path(filename).name, limits=limits,
                                    timeout=timeout, stats=stats, max_reply_bytes=CHECK_REPLY_BYTES)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    if not isinstance(source, str) or not source.strip():
        raise BadInputError("no model given: pass a path or sample:NAME")
    if not source.startswith("sample:"):
        check_suffix(Path(source).name)
    return run_isolated(UPLOAD_ENTRIES + "inspect_entry", source, limits=limits, timeout=timeout, stats=stats,
                        max_reply_bytes=CHECK_REPLY_BYTES)


def check_data_isolated(model: str | bytes, data: str | bytes | None, *, model_filename: str | None = None,
                        data_filename: str | None = None, seed: int = 0, limits: ResourceLimits | None = None,
                        timeout: float | None = None, stats: dict | None = None) -> dict:
    """Load a model and bind data to it in a worker; return the dataset summary (`Dataset.summary()`).

    `model` / `data` are specs (``sample:NAME``, a path; data may be None for synthetic inputs) or uploaded
    bytes with their file names.

    Raises:
        BadInputError: a file is refused, or the data does not fit the model (one line naming both shapes).
    """
    directories = []
    with worker_slot():  # waiting in line holds no temporary file
        try:
            if isinstance(model, (bytes, bytearray, memoryview)):
                directory, path = upload_dir(model, model_filename or "model.onnx")
                directories.append(directory)
                model = str(path)
            if isinstance(data, (bytes, bytearray, memoryview)):
                directory, path = upload_dir(data, data_filename or "data.npz")
                directories.append(directory)
                data = str(path)
            return run_isolated(UPLOAD_ENTRIES + "check_data_entry", model, data, seed, limits=limits,
                                timeout=timeout, stats=stats, max_reply_bytes=CHECK_REPLY_BYTES)
        finally:
            for directory in directories:
                shutil.rmtree(directory, ignore_errors=True)


def run_recipe_isolated(recipe_path: str, out_dir: str, *, model: str | None = None, data: str | None = None,
                        executor: str = "local", ray_address: str | None = None,
                        on_progress: Callable | None = None, limits: ResourceLimits | None = None) -> dict:
    """`featherweight run` in a worker with the job limits (FEATHERWEIGHT_WORKER_*); progress comes back live.

    Returns:
        ``{"status", "variants", "failed"}``.

    Raises:
        FeatherweightError: bad recipe, model or data; or the worker crashed, ran out of memory or time.
    """
    limits = limits or ResourceLimits.from_env()
    return run_isolated(f"{__name__}:run_recipe_entry", str(recipe_path), str(out_dir), model, data, executor,
                        ray_address, limits=limits, on_message=progress_forwarder(on_progress),
                        ray=executor == "ray")


def learn_limits() -> ResourceLimits:
    """Limits for one Learn explainer (load + view; the sweep and live distillation train for up to a minute or
    two on the samples): FEATHERWEIGHT_LEARN_* override them."""
    return ResourceLimits.from_env("FEATHERWEIGHT_LEARN", ResourceLimits(address_space_mb=4096, cpu_seconds=600,
                                                                         file_size_mb=256, wall_seconds=600.0,
                                                                         nice=INTERACTIVE_NICE))


def explain_isolated(source, what: str, params: dict | None = None, *, on_point: Callable | None = None,
                     limits: ResourceLimits | None = None, stats: dict | None = None) -> Any:
    """A Learn explainer's view (`core.teach.explainers.EXPLAINERS`) computed in a worker: the model and data of
    `source`
    (a `core.teach.explainers.LearnSource`: sample, path or uploaded bytes) are parsed there, never in this process.

    Args:
        on_point: for "sweep" and "distill", called in this thread with each row / epoch point as it comes.

    Returns:
        The view, decoded (`core.teach.explainers.decode_view`): arrays and frames as the in-process function
        returns them.

    Raises:
        FeatherweightError: the file is refused, the view fails, or the worker crashed or ran out of time/memory.
    """
    request = {"key": source.key, "label": source.label, "model_spec": source.model_spec,
               "model_filename": source.model_filename, "data_spec": source.data_spec,
               "data_filename": source.data_filename}
    directories = []

    def forward(message: dict) -> None:
        if on_point is not None and message.get("t") == "progress" and "point" in message:
            on_point(learn.decode_view(message["point"]))

    with worker_slot():  # waiting in line holds no temporary file
        try:
            for kind in ("model", "data"):
                content = getattr(source, f"{kind}_content")
                if content is not None:
                    directory, path = upload_dir(content, getattr(source, f"{kind}_filename") or f"{kind}.bin")
                    directories.append(directory)
                    request[f"{kind}_path"] = str(path)
            value = run_isolated(f"{__name__}:learn_entry", request, what, dict(params or {}),
                                 limits=limits or learn_limits(), on_message=forward, stats=stats)
        finally:
            for directory in directories:
                shutil.rmtree(directory, ignore_errors=True)
    return learn.decode_view(value)


def run_estimates_isolated(store: RunStore, run_id: str, results: dict) -> Any:
    """`core.teach.explainers.estimate_vs_measured` for a run, with the run's model file read in a worker (a DataFrame).

    Raises:
        FeatherweightError: the model cannot be found (outside the run directory: refused) or loaded.
    """
    return learn.decode_view(run_isolated(f"{__name__}:learn_run_estimates_entry", str(store.root), run_id, results,
                                          limits=learn_limits()))


def worker_main(spec: JobSpec, limits: ResourceLimits) -> None:
    """The body of a job worker (limits applied, pinned to `spec.core` by the sandbox): run the recipe, write
    outcome.json atomically. Every timing phase of the job goes through the store's core lock (one timing phase
    per core at a time, across workers)."""
    run_dir = Path(spec.run_dir)
    outcome = {"status": "failed", "error": None}
    try:
        import torch

        torch.set_num_threads(limits.threads)
        store = RunStore(run_dir.parent.parent)
        set_core_gate(store.timing_cores)
        recipe = Recipe.load(run_dir / "recipe.yaml")
        cancel_flag = run_dir / CANCEL_FLAG

        def on_progress(event):
            store.write_progress(spec.run_id, event.to_dict())

        try:
            if spec.kind != "run":
                status = run_job(spec.kind, run_dir, spec.model, spec.data, on_progress=on_progress,
                                 should_stop=cancel_flag.exists)
                outcome = {"status": status, "error": None}
            else:
                result = run_recipe(recipe, run_dir, model_spec=spec.model, data_spec=spec.data,
                                    on_progress=on_progress, should_stop=cancel_flag.exists,
                                    executor=spec.executor, ray_address=spec.ray_address)
                outcome = {"status": "cancelled" if result.status == "cancelled" else "completed", "error": None}
        except FeatherweightError as exc:
            outcome = {"status": "failed", "error": one_line(exc)}
    except BaseException as exc:  # noqa: BLE001 - anything else is a failed run, logged with its traceback
        traceback.print_exc()
        if isinstance(exc, MemoryError) or looks_out_of_memory(f"{type(exc).__name__}: {exc}"):
            error = f"the worker ran out of memory (it may use {limits.address_space_mb:,} MiB)"
        else:
            error = f"internal error: {exc.__class__.__name__} (details in the server log)"
        outcome = {"status": "failed", "error": error}
    write_atomic(run_dir / OUTCOME, json.dumps(outcome))
