"""The runtime dimension of a run: each variant made ready on every runtime of `benchmark.runtimes` (OpenVINO reads its
ONNX file; ExecuTorch gets a .pte exported from its torch module), its outputs checked against the reference on the
test split, its quality on that runtime measured; the timing phase then times every variant x runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import FeatherweightError
from core.io.data import Dataset
from core.io.files import write_atomic
from core.io.runtimes import REFERENCE_RUNTIME, missing_reason, open_runner, run_all, runtime_label
from core.measure import quality as measure
from core.measure.runtime_fidelity import check_runtime_outputs
from core.techniques.edge import edge_plan, export_pte


@dataclass
class RuntimeVariant:
    """One variant made ready on one runtime: what its results.json entry says so far, and (when it is ready) the
    artifact the timing phase opens runners of."""

    runtime: str
    entry: dict  # results.json's variants[i].runtimes[runtime]
    artifact: bytes | None = None  # ONNX bytes (onnxruntime, OpenVINO) or a .pte program (ExecuTorch)
    input_names: list = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.artifact is not None and self.entry.get("status") == "ok"


def failed(runtime: str, error: str, status: str = "failed") -> RuntimeVariant:
    """A runtime entry that is not timed: `failed` (it broke or computed another model) or `skipped` (does not
    apply to this variant), with the one-line reason."""
    return RuntimeVariant(runtime, {"status": status, "error": error})


def prepare_runtimes(name: str, slug: str, model_bytes: bytes, torch_module, steps, dataset: Dataset, task: str,
                     runtimes, *, threads: int, max_batch: int, reference_outputs: list, baseline_outputs,
                     out_dir: Path, baseline_selection=None, report=lambda message: None,
                     should_stop=lambda: False) -> dict[str, RuntimeVariant]:
    """Make one variant ready on every runtime in `runtimes` besides onnxruntime (which measured it already).

    Args:
        model_bytes: the variant's ONNX graph (what onnxruntime and OpenVINO run).
        torch_module: its torch module after the torch steps, before ONNX steps (None for ONNX-only models):
            ExecuTorch exports it, in int8 through PT2E when the variant's quantize step is static int8.
        steps: the variant's steps as dicts (results.json's `steps`).
        reference_outputs: the variant's outputs on onnxruntime over the test split (the OpenVINO check).
        baseline_outputs: the baseline's on onnxruntime (each runtime's agreement and flips are against it).
        baseline_selection: the baseline's outputs on onnxruntime over the validation split: each runtime's
            `selection` quality (what a choice reads) is scored against it; None skips it.
        max_batch: the largest batch the timing phase will run (an ExecuTorch program is planned for it).

    Returns:
        runtime -> RuntimeVariant; a runtime that cannot run the variant, or computes another model than the
        reference, is `failed` with its reason (a broken runtime is never timed), one that does not apply
        `skipped`.
    """
    prepared: dict[str, RuntimeVariant] = {}
    inputs = dataset.eval.x
    names = list(inputs)
    for runtime in runtimes:
        if runtime == REFERENCE_RUNTIME:
            continue
        if should_stop():
            prepared[runtime] = failed(runtime, "cancelled by the user", "cancelled")
            continue
        missing = missing_reason(runtime)
        if missing:
            prepared[runtime] = failed(runtime, missing, "skipped")
            continue
        report(f"{runtime_label(runtime)}: preparing and checking its outputs")
        try:
            if runtime == "executorch":
                prepared[runtime] = _prepare_edge(name, slug, torch_module, steps, dataset, task, threads=threads,
                                                  max_batch=max_batch, baseline_outputs=baseline_outputs,
                                                  baseline_selection=baseline_selection, out_dir=out_dir)
                continue
            runner = open_runner(runtime, model_bytes, threads, batch=min(len(dataset.eval), 32))
            outputs = run_all(runner, inputs)
            check = check_runtime_outputs(outputs, reference_outputs, task, runtime=runtime, variant=name)
            entry = {"status": "ok", "error": None, "fidelity": check.to_dict(),
                     "kernels": runner.kernel_precisions(), **_quality(outputs, baseline_outputs, dataset, task),
                     "selection": _selection(runner, dataset, baseline_selection, task)}
            if hasattr(runner, "settings"):
                entry["settings"] = runner.settings()
            prepared[runtime] = RuntimeVariant(runtime, entry, model_bytes, names)
        except FeatherweightError as exc:
            prepared[runtime] = failed(runtime, str(exc))
        except Exception as exc:  # noqa: BLE001 - a runtime's own failure loses that runtime only
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            prepared[runtime] = failed(runtime, f"{exc.__class__.__name__}: {first}")
    return prepared


def _prepare_edge(name: str, slug: str, torch_module, steps, dataset: Dataset, task: str, *, threads: int,
                  max_batch: int, baseline_outputs, baseline_selection, out_dir: Path) -> RuntimeVariant:
    """Export the variant's torch module to a .pte (written beside its ONNX file), check the program's outputs
    against the torch module it was lowered from, and measure its quality."""
    import torch  # heavy

    inputs = dataset.eval.x
    plan, why_not = edge_plan(steps, torch_module is not None, len(inputs))
    if plan is None:
        return failed("executorch", why_not, "skipped")
    first = next(iter(inputs.values()))
    quantize = next((s for s in steps if s.get("technique") == "quantize"), {})
    calibration = None
    if plan == "int8":
        calibration = next(iter(dataset.calibration_inputs(int(quantize.get("samples", 128))).values()))
    export = export_pte(torch_module, first, max_batch=max_batch, int8=plan == "int8",
                        per_channel=bool(quantize.get("per_channel", True)), calibration=calibration)
    artifact = Path("variants") / slug / "model.pte"
    write_atomic(out_dir / artifact, export.program)
    runner = open_runner("executorch", export.program, threads, input_names=list(inputs))
    step = min(export.max_batch, 64)
    outputs = run_all(runner, inputs, step)
    with torch.no_grad():
        reference = np.concatenate([export.reference(torch.from_numpy(np.ascontiguousarray(first[i:i + step])))
                                    .detach().numpy() for i in range(0, len(first), step)])
    check = check_runtime_outputs(outputs, [reference], task, runtime="executorch", variant=name,
                                  reference_name=f"its {export.precision} torch module")
    entry = {"status": "ok", "error": None, "fidelity": check.to_dict(), "export": export.summary(),
             "artifact": artifact.as_posix(), "size_bytes": len(export.program),
             **_quality(outputs, baseline_outputs, dataset, task),
             "selection": _selection(runner, dataset, baseline_selection, task, step)}
    return RuntimeVariant("executorch", entry, export.program, list(inputs))


def _selection(runner, dataset: Dataset, baseline_selection, task: str, batch: int = 32) -> dict:
    """Quality on this runtime over the validation split (what "best within budget" chooses on), as results.json's
    `selection` has it; {} without the baseline's validation outputs."""
    if baseline_selection is None:
        return {}
    split = dataset.selection
    fid = measure.fidelity(run_all(runner, split.x, batch), baseline_selection, split.y, task)
    return {"split": dataset.selection_name, "n": len(split), "accuracy": fid.accuracy, "agreement": fid.agreement,
            "cosine_mean": fid.cosine_mean}


def _quality(outputs: list, baseline_outputs, dataset: Dataset, task: str) -> dict:
    """Quality measured on this runtime, on the test split: accuracy, agreement and cosine to the baseline (the
    baseline on onnxruntime, the reference every point of the bake-off is judged against)."""
    fid = measure.fidelity(outputs, baseline_outputs, dataset.eval.y, task)
    return {"accuracy": fid.accuracy, "agreement": fid.agreement, "cosine_mean": fid.cosine_mean,
            "agreement_confident": fid.agreement_confident}


__all__ = ["RuntimeVariant", "failed", "prepare_runtimes"]
