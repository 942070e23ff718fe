"""Per-tensor calibration choice: for each activation tensor, keep the calibration method (minmax or percentile)
whose int8 range makes the model's outputs closest to fp32 on the validation split.

One static quantization gives the QDQ graph; each tensor's alternative range is then tried by rewriting only
that tensor's Quantize / Dequantize scale and zero point (no re-quantization), greedily in graph order, keeping a
change only when the outputs' error against fp32 on validation data shrinks. The result is a
``calibration_overrides`` mapping for the quantize step; the run that uses it reports on the test split.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.io.runtime import make_session, run_batched
from core.spec.recipe import QuantizeConfig
from core.techniques import Candidate, StepContext, apply_step
from core.techniques.equalize import equalize
from core.techniques.quantize import CalibrationReader, calibration_ranges, preprocess

METHODS = ("minmax", "percentile")
SCORE_SAMPLES = 512  # validation samples scored per try; shapes' 667 would cost a third more for little gain


@dataclass
class CalibrationChoice:
    """The chosen overrides and what each did to the validation error (mean squared output error vs fp32)."""

    base: str
    overrides: dict = field(default_factory=dict)  # tensor -> method, only where it differs from `base`
    error_before: float | None = None
    error_after: float | None = None
    tried: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _activation_ranges(data) -> dict:
    return {name: (float(np.min(data[name].range_value[0])), float(np.max(data[name].range_value[1])))
            for name in data.keys()}


def uint8_scale_zero(low: float, high: float) -> tuple[float, int]:
    """onnxruntime's uint8 asymmetric scale and zero point for a range (0 always representable)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def _quant_params(proto) -> dict:
    """tensor -> (scale initializer, zero point initializer) of its QuantizeLinear in a QDQ graph."""
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[1] in inits \
                and node.input[2] in inits:
            out[node.input[0]] = (node.input[1], node.input[2])
    return out


def _set_range(proto, params: tuple, low: float, high: float) -> None:
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    scale_name, zero_name = params
    zero = numpy_helper.to_array(inits[zero_name])
    if zero.dtype != np.uint8:  # only uint8 activations are chosen here
        return
    scale, zero_point = uint8_scale_zero(low, high)
    inits[scale_name].CopyFrom(numpy_helper.from_array(np.asarray(scale, np.float32).reshape(
        numpy_helper.to_array(inits[scale_name]).shape), scale_name))
    inits[zero_name].CopyFrom(numpy_helper.from_array(np.asarray(zero_point, np.uint8).reshape(zero.shape),
                                                      zero_name))


def choose_calibration(model, dataset, quant: QuantizeConfig | None = None, *, seed: int = 0,
                       report=None) -> CalibrationChoice:
    """Pick minmax or percentile per activation tensor on the validation split.

    Args:
        model: the baseline Model.
        dataset: a Dataset with a validation split (`Dataset.selection`).
        quant: the static quantize step to start from (its `calibration` is the base method).
        seed: the run's seed.
        report: optional ``report(message, fraction)``.

    Returns:
        A CalibrationChoice; ``dataclasses.replace(quant, calibration_overrides=choice.overrides)`` uses it.
    """
    quant = quant or QuantizeConfig(mode="static")
    quant = dataclasses.replace(quant, mode="static", calibration_overrides={}, bias_correction=False)
    report = report or (lambda message, fraction: None)
    candidate = Candidate(onnx_model=copy.deepcopy(model.onnx_model), architecture=model.architecture)
    quantized = apply_step(quant, candidate, StepContext(dataset=dataset, baseline=model, seed=seed)).onnx_model
    selection = dataset.selection.take(SCORE_SAMPLES).x
    reference = run_batched(make_session(model.onnx_bytes()), selection)[0]

    def error(proto) -> float:
        return float(np.mean((run_batched(make_session(proto.SerializeToString()), selection)[0] - reference) ** 2))

    # Every method's range for every tensor, on the float graph the quantizer saw.
    float_proto = copy.deepcopy(model.onnx_model)
    if quant.equalize:
        equalize(float_proto)
    calib = dataset.calib.take(quant.samples).x
    with tempfile.TemporaryDirectory(prefix="fw-calib-") as tmp:
        float_proto, _ = preprocess(float_proto, Path(tmp))
        reader = CalibrationReader(calib, quant.samples)
        ranges = {m: _activation_ranges(calibration_ranges(float_proto, reader, m, Path(tmp))) for m in METHODS}
    params = _quant_params(quantized)
    tensors = [t for t in params if all(t in ranges[m] for m in METHODS)]
    choice = CalibrationChoice(base=quant.calibration)
    best = error(quantized)
    choice.error_before = best
    for index, tensor in enumerate(tensors):
        report(f"calibration choice {index + 1}/{len(tensors)}: {tensor}", index / max(1, len(tensors)))
        for method in METHODS:
            if method == quant.calibration:
                continue
            trial = copy.deepcopy(quantized)
            _set_range(trial, params[tensor], *ranges[method][tensor])
            choice.tried += 1
            score = error(trial)
            if score < best:
                best, quantized = score, trial
                choice.overrides[tensor] = method
    choice.error_after = best
    return choice
