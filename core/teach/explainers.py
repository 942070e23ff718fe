"""Learn: the explainers' views (one per panel of the Learn page), computed where the model is loaded, and their JSON
encoding; the numbers behind them come from the teach modules, whose public names this module also offers:

    source        the model and data an explainer works on (LearnSource), the torch thread count
    weights       weight quantization exactly as onnxruntime's int8 scheme does it
    calibration   activation ranges from the quantize step's own calibration
    pruning       pruning masks and a quick accuracy-vs-sparsity sweep
    distillation  soft targets at a temperature and a live two-student distillation
    estimate      bytes per weight, arithmetic, and a size estimate before anything runs

Never imports streamlit; the figures are in ``core.views.learn``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import BadInputError
from core.teach.source import (LearnSource, TORCH_THREADS, learnable_samples, sample_source, torch_threads)
from core.teach.weights import (OnnxQuantizedWeight, QuantizedTensor, WeightTensor, bit_width_curve,
                                channel_error_table, check_against_onnxruntime, error_stats, histogram, integer_range,
                                quantize_tensor, read_quantized_weight, scale_zero_point, weight_array, weight_tensors)
from core.teach.depthwise import depthwise_view
from core.teach.calibration import (CALIBRATION_BATCH, CALIBRATION_METHODS, CALIBRATION_SAMPLES, CalibrationStudy,
                                    DEFAULT_ENTROPY_BINS, DEFAULT_PERCENTILE, ENTROPY_QUANTIZED_BINS,
                                    activation_range_table, activation_values, calibration_inputs, calibration_study)
from core.teach.pruning import (PRUNE_PATTERNS, SWEEP_AMOUNTS, SWEEP_PATTERNS, heatmap_matrix, labelled_eval,
                                mask_facts, out_first, pattern_mask, sparsity_sweep)
from core.teach.distillation import (STUDENTS, distill_live, entropy_bits, soft_target_facts, softmax, teacher_logits,
                                     temperature_curve)
from core.teach.estimate import (DYNAMIC_MATMUL_OVERHEAD, FP16_CAST_OVERHEAD, INT4_BLOCK, INT4_MATMUL_OVERHEAD,
                                 QDQ_ACTIVATION_OVERHEAD, QDQ_WEIGHT_OVERHEAD, completed_runs, estimate_breakdown,
                                 estimate_size, estimate_vs_measured, run_baseline_proto, technique_table)
from core.io.graph import task_of
from core.io.decoder import DecoderCheckpoint
from core.teach.decoding import decoder_weight_array, decoder_weight_tensors, decoding_view
from core.teach.int4 import block_size_table, decoder_weights

# --------------------------------------------------------------------------------------------------------------
# The explainers' views, computed where the model is loaded: in a worker (core.jobs.entries.explain_isolated), so the
# server never parses a model or data file (issue 15). Each takes (model, dataset, **params) and returns plain
# data, numpy arrays and DataFrames, which `encode_view` turns into JSON and `decode_view` back, bit for bit.


def model_facts(model, dataset) -> dict:
    """What the page needs before any explainer: the weights, the task, which data there is (a decoder: its
    linear weights from the safetensors headers, and ``decoder: True``)."""
    if isinstance(model, DecoderCheckpoint):
        weights = decoder_weight_tensors(model)
        return {"weights": weights, "task": "text-generation", "torch": False, "labels": False, "synthetic": False,
                "eval": 0, "train": 0, "params": int(model.params), "decoder": True,
                "architecture": model.architecture}
    weights = weight_tensors(model.onnx_model)
    return {"weights": weights, "task": task_of(model), "torch": model.torch_module is not None,
            "labels": dataset.has_labels, "synthetic": dataset.synthetic, "eval": len(dataset.eval),
            "train": len(dataset.train), "params": sum(w.size for w in weights)}


def quantization_view(model, dataset, tensor: str, bits: int, symmetric: bool) -> dict:
    """One weight tensor snapped to a `bits` grid: histogram, grid, error per tensor and per channel."""
    decoder = isinstance(model, DecoderCheckpoint)
    tensors = decoder_weight_tensors(model) if decoder else weight_tensors(model.onnx_model)
    info = {w.name: w for w in tensors}.get(tensor)
    if info is None:
        raise BadInputError(f"tensor={tensor!r} is not a weight of this model")
    w = decoder_weight_array(model, tensor) if decoder else weight_array(model.onnx_model, tensor)
    shared = quantize_tensor(w, bits, symmetric=symmetric)
    own = quantize_tensor(w, bits, symmetric=symmetric, per_channel=True, axis=info.channel_axis)
    grid = shared.grid()
    counts = np.bincount((shared.codes - shared.qmin).ravel(), minlength=shared.levels)
    return {"hist": histogram(w, 120, (float(min(w.min(), grid[0])), float(max(w.max(), grid[-1])))),
            "grid": grid.tolist(), "level_counts": counts.tolist(), "scale": float(shared.scale),
            "zero_point": int(shared.zero_point), "levels": shared.levels, "qmin": shared.qmin, "qmax": shared.qmax,
            "mse": shared.mse, "max_abs_error": shared.max_abs_error, "sqnr_db": shared.sqnr_db,
            "mse_per_channel": own.mse, "sqnr_db_per_channel": own.sqnr_db, "channels": info.channels,
            "absmax": float(np.abs(w).max()), "min": float(w.min()), "max": float(w.max()),
            "channel_table": channel_error_table(w, info.channel_axis, bits, symmetric),
            "bit_curve": bit_width_curve(w, info.channel_axis, symmetric=symmetric)}


def calibration_view(model, dataset, percentile: float, entropy_bins: int, tensor: str | None,
                     samples: int) -> dict:
    """The quantize step's calibration ranges for every tensor (or one), as `calibration_study`."""
    study = calibration_study(model, dataset, samples=samples, percentile=percentile, entropy_bins=entropy_bins,
                              tensors=None if tensor is None else [tensor])
    return {"ranges": study.ranges, "samples": study.samples}


def pruning_view(model, dataset, tensor: str, sparsity: float) -> dict:
    """One layer's masks under each pattern at `sparsity`: heatmaps and facts."""
    info = {w.name: w for w in weight_tensors(model.onnx_model)}.get(tensor)
    if info is None:
        raise BadInputError(f"tensor={tensor!r} is not a weight of this model")
    w = out_first(weight_array(model.onnx_model, tensor), info.channel_axis)
    matrices, facts = {}, {}
    for pattern in PRUNE_PATTERNS:
        mask = pattern_mask(w, sparsity, pattern)
        matrices[pattern] = None if mask is None else heatmap_matrix(w, mask)
        facts[pattern] = None if mask is None else mask_facts(w, mask)
    return {"matrices": matrices, "facts": facts, "shape": tuple(w.shape)}


def teacher_view(model, dataset) -> dict:
    """The teacher's eval logits and labels, and the sample whose runner-up is strongest (shown first)."""
    logits = teacher_logits(model, dataset.eval)
    p = softmax(logits, 1.0)
    runner_up = np.sort(p, axis=1)[:, -2]
    return {"logits": logits, "labels": dataset.eval.y, "interesting": int(np.argmax(runner_up))}


def distill_curves(model, dataset, *, on_point=None, **settings) -> list[dict]:
    """Every point of `distill_live` (calling `on_point` with each as it comes)."""
    points = []
    for point in distill_live(model, dataset, **settings):
        points.append(point)
        if on_point:
            on_point(point)
    return points


def _onnx_only(view):
    """An explainer that reads an ONNX graph or trains the torch model: refused in one line for a decoder."""
    def run(model, dataset, **params):
        if isinstance(model, DecoderCheckpoint):
            raise BadInputError(f"this explainer needs an ONNX or torch model; {model.source} is a decoder "
                                "(Quantization, int4 blocks and Decoding explain decoders)")
        return view(model, dataset, **params)
    return run


def int4_blocks_view(model, dataset, weights: int | None = None) -> pd.DataFrame:
    """int4 error and bytes per block size on this decoder's projection weights (the first `weights` of them)."""
    if not isinstance(model, DecoderCheckpoint):
        raise BadInputError("int4 blocks explains a decoder's weights; this model is not a decoder")
    return pd.DataFrame([row.to_dict() for row in block_size_table(decoder_weights(model.folder, limit=weights))])


def decoding_explainer(model, dataset) -> dict:
    """`core.teach.decoding.decoding_view` of a decoder (KV cache, bytes per token, the roofline estimate)."""
    if not isinstance(model, DecoderCheckpoint):
        raise BadInputError("the decoding explainer needs a decoder (a language model); this model is not one")
    return decoding_view(model)


EXPLAINERS = {
    "facts": model_facts,
    "quantization": quantization_view,
    "decoding": decoding_explainer,
    "int4_blocks": int4_blocks_view,
    "onnxruntime_check": _onnx_only(lambda model, dataset, tensor: check_against_onnxruntime(model, dataset, tensor,
                                                                                             per_channel=True)),
    "calibration": _onnx_only(calibration_view),
    "activations": _onnx_only(lambda model, dataset, tensor, samples: activation_values(model, dataset, tensor,
                                                                                       samples=samples)),
    "pruning": _onnx_only(pruning_view),
    "sweep": _onnx_only(lambda model, dataset, pattern, epochs, on_point=None: sparsity_sweep(
        model, dataset, pattern=pattern, finetune_epochs=epochs, on_point=on_point)),
    "teacher": _onnx_only(teacher_view),
    "distill": _onnx_only(distill_curves),
    "techniques": _onnx_only(lambda model, dataset, amount, width: technique_table(model.onnx_model, amount=amount,
                                                                                   width=width)),
    "estimate": _onnx_only(lambda model, dataset, steps: estimate_breakdown(model.onnx_model,
                                                                           [dict(s) for s in steps])),
    "depthwise": _onnx_only(depthwise_view),
}
PROGRESS_EXPLAINERS = ("sweep", "distill")  # these take `on_point`: each row or epoch is sent as it comes


def explain(source: LearnSource, what: str, params: dict, on_point=None, on_loaded=None) -> Any:
    """Load `source` in this process and compute one view: the worker's side of `core.jobs.entries.explain_isolated`
    (a server calls that, never this).

    Raises:
        BadInputError: an unknown view, or a model or data file that is refused.
    """
    if what not in EXPLAINERS:
        raise BadInputError(f"explainer {what!r} is not supported; allowed: {', '.join(EXPLAINERS)}")
    model, dataset = source.load()
    if on_loaded:
        on_loaded()
    if what in PROGRESS_EXPLAINERS:
        params = {**params, "on_point": on_point}
    return EXPLAINERS[what](model, dataset, **params)


def encode_view(value: Any) -> Any:
    """Plain JSON for a view: arrays keep dtype, shape and every bit (base64); frames keep their column dtypes."""
    import base64

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__list__": [encode_view(v) for v in value.tolist()]}
        array = np.ascontiguousarray(value)
        return {"__ndarray__": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": array.dtype.str,
                "shape": list(array.shape)}
    if isinstance(value, pd.DataFrame):
        frame = value.reset_index(drop=True)
        return {"__frame__": [[str(c), str(frame[c].dtype), encode_view(frame[c].to_numpy())] for c in frame]}
    if isinstance(value, WeightTensor):
        return {"__weight__": {"name": value.name, "node": value.node, "op_type": value.op_type,
                               "shape": [int(d) for d in value.shape], "channel_axis": int(value.channel_axis)}}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): encode_view(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_view(v) for v in value]
    return value


def decode_view(value: Any) -> Any:
    """The inverse of `encode_view` (for what a worker sent: a malformed part raises BadInputError)."""
    import base64

    if isinstance(value, list):
        return [decode_view(v) for v in value]
    if not isinstance(value, dict):
        return value
    try:
        if "__ndarray__" in value:
            dtype = np.dtype(value["dtype"])
            if dtype == object:
                raise ValueError("object arrays are not sent as bytes")
            return np.frombuffer(base64.b64decode(value["__ndarray__"]), dtype=dtype).reshape(value["shape"]).copy()
        if "__list__" in value:
            return np.array([decode_view(v) for v in value["__list__"]], dtype=object)
        if "__frame__" in value:
            return pd.DataFrame({name: pd.Series(decode_view(column), dtype=dtype)
                                 for name, dtype, column in value["__frame__"]})
        if "__weight__" in value:
            w = value["__weight__"]
            return WeightTensor(str(w["name"]), str(w["node"]), str(w["op_type"]), tuple(int(d) for d in w["shape"]),
                                int(w["channel_axis"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"the explainer's worker sent a malformed view ({type(exc).__name__})") from None
    return {k: decode_view(v) for k, v in value.items()}


# The explainers' public names, from the teach modules that define them (pages and workers use `explainers.X`).
__all__ = ["CALIBRATION_BATCH", "CALIBRATION_METHODS", "CALIBRATION_SAMPLES", "CalibrationStudy",
           "DEFAULT_ENTROPY_BINS", "DEFAULT_PERCENTILE", "DYNAMIC_MATMUL_OVERHEAD", "ENTROPY_QUANTIZED_BINS",
           "EXPLAINERS", "FP16_CAST_OVERHEAD", "INT4_BLOCK", "INT4_MATMUL_OVERHEAD", "LearnSource",
           "OnnxQuantizedWeight", "PROGRESS_EXPLAINERS", "PRUNE_PATTERNS", "QDQ_ACTIVATION_OVERHEAD",
           "QDQ_WEIGHT_OVERHEAD", "QuantizedTensor", "STUDENTS", "SWEEP_AMOUNTS", "SWEEP_PATTERNS", "TORCH_THREADS",
           "WeightTensor", "activation_range_table", "activation_values", "bit_width_curve", "calibration_inputs",
           "calibration_study", "calibration_view", "channel_error_table", "check_against_onnxruntime",
           "completed_runs", "decode_view", "decoding_explainer", "distill_curves", "distill_live", "encode_view",
           "entropy_bits", "error_stats", "estimate_breakdown", "estimate_size", "estimate_vs_measured", "explain",
           "heatmap_matrix", "histogram", "int4_blocks_view", "integer_range", "labelled_eval", "learnable_samples",
           "mask_facts", "model_facts", "out_first",
           "pattern_mask", "pruning_view", "quantization_view", "quantize_tensor", "read_quantized_weight",
           "run_baseline_proto", "sample_source", "scale_zero_point", "soft_target_facts", "softmax", "sparsity_sweep",
           "teacher_logits", "teacher_view", "technique_table", "temperature_curve", "torch_threads", "weight_array",
           "weight_tensors"]
