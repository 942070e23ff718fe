"""Activation calibration as the quantize step does it (onnxruntime's MinMax calibrator, and percentile and entropy
on streaming histograms with onnxruntime's arithmetic): the ranges each method picks on a model's real
activations."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import BadInputError, UnsupportedModelError
from core.techniques import quantize
from core.techniques.histogram import ActivationStatistics
from core.io import runtime
from core.teach.weights import error_stats, scale_zero_point
from core.io.graph import fixed_batch_size

# Activation calibration, through the quantize step's calibration

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_SAMPLES = 128  # the pipeline's default calibration sample count (QuantizeConfig.samples)
CALIBRATION_BATCH = 32
DEFAULT_PERCENTILE = quantize.PERCENTILE  # what the quantize step uses
DEFAULT_ENTROPY_BINS = quantize.ENTROPY_BINS  # what the quantize step uses (onnxruntime's own default is 128)
ENTROPY_QUANTIZED_BINS = quantize.ENTROPY_QUANTIZED_BINS  # the entropy search needs at least this many bins


def calibration_inputs(model, dataset, samples: int = CALIBRATION_SAMPLES) -> dict:
    """The first `samples` calibration inputs, borrowing from the train split when calibration is short (as the
    quantize step does)."""
    calib = dataset.calib
    if len(calib) >= samples or dataset.train is None or not len(dataset.train):
        return calib.take(samples).x
    return {k: np.concatenate([v, dataset.train.x[k]])[:samples] for k, v in calib.x.items()}


@dataclass(frozen=True)
class CalibrationStudy:
    """The activation range each calibration method chose, per calibrated tensor: tensor -> method -> (lo, hi)."""

    samples: int
    percentile: float
    entropy_bins: int
    ranges: dict

    @property
    def tensors(self) -> list[str]:
        return list(self.ranges)


def calibration_study(model, dataset, *, samples: int = CALIBRATION_SAMPLES,
                      percentile: float = DEFAULT_PERCENTILE, entropy_bins: int = DEFAULT_ENTROPY_BINS,
                      tensors: list[str] | None = None) -> CalibrationStudy:
    """The range the quantize step's calibration (``core.techniques.quantize.calibration_ranges``: min / max from
    onnxruntime's calibrator, percentile and entropy from streaming histograms, with the quantizer's settings)
    picks for every tensor of the baseline ONNX over the calibration split (or only `tensors`).

    With the defaults these are exactly the ranges a static int8 variant gets. The explainer lets the user move
    two knobs: the percentile, and the entropy histogram's bin count (onnxruntime's own default of 128 bins for
    128 quantized bins leaves the entropy search a single candidate, the whole range, so it equals min/max).

    Raises:
        BadInputError: a knob out of range, an unknown tensor, or no calibration inputs.
    """
    import logging

    if not 0 < percentile <= 100:
        raise BadInputError(f"percentile={percentile!r} is out of range; allowed: (0, 100]")
    if not isinstance(entropy_bins, int) or not ENTROPY_QUANTIZED_BINS <= entropy_bins <= 4096:
        raise BadInputError(f"entropy_bins={entropy_bins!r} is out of range; allowed: "
                            f"{ENTROPY_QUANTIZED_BINS}..4096")
    inputs = calibration_inputs(model, dataset, samples)
    if not inputs or not len(next(iter(inputs.values()))):
        raise BadInputError("calibration needs inputs, and the calibration split is empty")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    if tensors is not None:
        known = set(_tensor_order(model.onnx_model))
        missing = [t for t in tensors if t not in known]
        if missing:
            raise BadInputError(f"no calibrated tensor named {missing[0]!r}")
    ranges: dict[str, dict[str, tuple[float, float]]] = {}
    fixed_batch = fixed_batch_size(model.onnx_model)
    with tempfile.TemporaryDirectory(prefix="fw-learn-calib-") as tmp:
        statistics = None
        for method in CALIBRATION_METHODS:
            try:
                if statistics is None:  # one min / max pass (and one histogram pass per kind) for every method
                    statistics = ActivationStatistics(model.onnx_model, inputs, Path(tmp), fixed_batch=fixed_batch)
                data = quantize.calibration_ranges(model.onnx_model, inputs, method, Path(tmp),
                                                   percentile=float(percentile), entropy_bins=entropy_bins,
                                                   tensors=tensors, statistics=statistics)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types on graphs it cannot augment
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
                raise UnsupportedModelError(f"{method} calibration failed on this graph: {first}") \
                    from None
            for tensor in data:
                lo, hi = (float(np.asarray(v, dtype=np.float64).ravel()[0]) for v in data[tensor].range_value)
                ranges.setdefault(tensor, {})[method] = (lo, hi)
    order = {name: i for i, name in enumerate(_tensor_order(model.onnx_model))}
    ranges = {k: ranges[k] for k in sorted(ranges, key=lambda t: order.get(t, len(order)))
              if len(ranges[k]) == len(CALIBRATION_METHODS)}
    used = len(next(iter(inputs.values())))
    return CalibrationStudy(used, float(percentile), int(entropy_bins), ranges)


def _tensor_order(proto) -> list[str]:
    names = [v.name for v in proto.graph.input]
    for node in proto.graph.node:
        names.extend(node.output)
    return names


def activation_values(model, dataset, tensor: str, *, samples: int = CALIBRATION_SAMPLES,
                      max_values: int = 100_000, seed: int = 0) -> np.ndarray:
    """The real values tensor `tensor` takes on the calibration inputs (a seeded random subset of at most
    `max_values`), from onnxruntime with the tensor exposed as an extra graph output.

    Raises:
        BadInputError: the graph has no such tensor.
    """
    from onnx import TensorProto, helper


    inputs = calibration_inputs(model, dataset, samples)
    if tensor in inputs:
        values = np.asarray(inputs[tensor], dtype=np.float32).ravel()
    else:
        if tensor not in set(_tensor_order(model.onnx_model)):
            raise BadInputError(f"the model has no tensor {tensor!r}")
        proto = copy.deepcopy(model.onnx_model)
        if tensor not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
        session = runtime.make_session(proto.SerializeToString(), 1)
        names = [o.name for o in session.get_outputs()]
        outputs = runtime.run_batched(session, inputs, 256)
        values = np.asarray(outputs[names.index(tensor)], dtype=np.float32).ravel()
    if values.size > max_values:
        values = values[np.sort(np.random.default_rng(seed).choice(values.size, max_values, replace=False))]
    return values


def activation_range_table(values: np.ndarray, ranges: dict) -> pd.DataFrame:
    """For each method's range: the uint8 scale and zero point onnxruntime derives from it (static activations
    are unsigned, asymmetric), the share of real values clipped, and the quantization error on those values."""
    v = np.asarray(values, dtype=np.float32)
    rows = []
    for method, (lo, hi) in ranges.items():
        scale, zero = scale_zero_point(np.float32(lo), np.float32(hi), 8, symmetric=False)
        codes = np.clip(np.round(v / scale) + np.float32(zero), 0, 255)
        approx = ((codes - np.float32(zero)) * scale).astype(np.float32)
        low_edge, high_edge = float((0 - zero) * scale), float((255 - zero) * scale)
        clipped = float(np.mean((v < low_edge) | (v > high_edge))) if v.size else 0.0
        mse, max_abs, sqnr = error_stats(v, approx)
        rows.append({"method": method, "low": lo, "high": hi, "scale": float(scale), "zero_point": int(zero),
                     "clipped_pct": 100 * clipped, "mse": mse, "max_abs_error": max_abs, "sqnr_db": sqnr})
    return pd.DataFrame(rows)


