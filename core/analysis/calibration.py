"""Per-tensor calibration choice: for each activation tensor, the calibration method (minmax, percentile or entropy)
whose int8 range brings the model's outputs closest to fp32 on the validation split.

The quantize step (with the recovery steps asked for) gives the int8 graph; each tensor's alternative range is
then written into that graph (`core.techniques.qdq`: scale, zero point and the int32 biases that depend on them),
one tensor at a time in graph order, and kept under the recovery steps' own rule (`core.techniques.recovery`: the
KL divergence to fp32 falls and agreement does not). The result is a ``calibration_overrides`` mapping for the
quantize step, which applies it under the same rule; the run that uses it reports on the test split.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.io.graph import task_of
from core.spec.recipe import QuantizeConfig
from core.techniques import Candidate, StepContext, apply_step
from core.techniques.histogram import ActivationStatistics
from core.techniques.qdq import QdqGraph
from core.techniques.quantize import calibration_ranges, preprocess
from core.techniques.recovery import Gate, Judge
from core.techniques.static import MAX_JUDGE_SAMPLES, prepare

METHODS = ("minmax", "percentile", "entropy")


@dataclass
class CalibrationChoice:
    """The chosen overrides and what they did on validation (the recovery steps' score, before and after)."""

    base: str
    overrides: dict = field(default_factory=dict)  # tensor -> method, only where it differs from `base`
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    tried: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ranges(proto, inputs: dict, workdir: Path) -> dict:
    """method -> tensor -> (low, high), every method from one set of streaming statistics."""
    stats = ActivationStatistics(proto, inputs, workdir)
    out = {}
    for method in METHODS:
        data = calibration_ranges(proto, inputs, method, workdir, statistics=stats)
        out[method] = {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value)
                       for name in data.keys()}
    return out


def choose_calibration(model, dataset, quant: QuantizeConfig | None = None, *, seed: int = 0,
                       report=None) -> CalibrationChoice:
    """Pick a calibration method per activation tensor on the validation split.

    Args:
        model: the baseline Model.
        dataset: a Dataset with a validation split (`Dataset.selection`).
        quant: the static quantize step to start from (its `calibration` is the base method; its recovery steps
            are applied first, so the choice is made on the graph it builds).
        seed: the run's seed.
        report: optional ``report(message, fraction)``.

    Returns:
        A CalibrationChoice; ``dataclasses.replace(quant, calibration_overrides=choice.overrides)`` uses it.
    """
    quant = dataclasses.replace(quant or QuantizeConfig(mode="static"), calibration_overrides={})
    report = report or (lambda message, fraction: None)
    candidate = Candidate(onnx_model=copy.deepcopy(model.onnx_model), architecture=model.architecture)
    quantized = apply_step(quant, candidate, StepContext(dataset=dataset, baseline=model, seed=seed)).onnx_model
    float_proto = prepare(model.onnx_model)
    inputs = dataset.calibration_inputs(quant.samples)
    with tempfile.TemporaryDirectory(prefix="fw-calib-") as tmp:
        float_proto, _ = preprocess(float_proto, Path(tmp))
        ranges = _ranges(float_proto, inputs, Path(tmp))
    judge = Judge.for_model(model.onnx_bytes(), dataset.selection.take(MAX_JUDGE_SAMPLES), task_of(model))
    gate = Gate(judge, quantized)
    graph = QdqGraph(gate.proto)
    tensors = [t for t in graph.activations if all(t in ranges[m] for m in METHODS)]
    choice = CalibrationChoice(base=quant.calibration, before=gate.described())
    for index, tensor in enumerate(tensors):
        report(f"calibration choice {index + 1}/{len(tensors)}: {tensor}", index / max(1, len(tensors)))
        for method in METHODS:
            if method == quant.calibration or ranges[method][tensor] == ranges[quant.calibration][tensor]:
                continue
            graph.begin()
            graph.set_activation_range(tensor, *ranges[method][tensor])
            choice.tried += 1
            if gate.offer_edit(graph):
                choice.overrides[tensor] = method
    choice.after = gate.described()
    return choice
