"""Learn: the numbers behind the workshop explainers, computed from a model's real weights and data.

Weight quantization that mirrors onnxruntime's int8 scheme exactly (so the error shown is the error onnxruntime's
quantizer makes), activation ranges from onnxruntime's own calibrators, pruning masks and a quick
accuracy-vs-sparsity sweep, soft targets at a temperature and a live two-student distillation, and a size
estimate before anything runs. Never imports streamlit; the figures are in ``core.views.learn``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from core.errors import BadInputError, UnsupportedModelError
from core.spec.recipe import brief_repr as brief
from core.teach.depthwise import depthwise_view
from core.techniques import quantize

# Torch threads for the explainers' training and inference. The models are tiny, and on a shared CPU more than
# one thread spin-waits: one epoch of digits-cnn took 0.36 s on one thread and 8.7 s on two under load.
TORCH_THREADS = 1


@contextlib.contextmanager
def torch_threads(count: int = TORCH_THREADS):
    """Run the block with `count` torch intra-op threads, restoring the previous setting afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------------------
# The model and data an explainer works on


@dataclass(frozen=True)
class LearnSource:
    """Where the explainers' model and data come from; `key` is a plain string that identifies both (for caches).

    A sample or a file path is named by its spec; an upload carries its bytes (and is keyed by their digest).
    """

    key: str
    label: str
    model_spec: str | None = None
    model_filename: str | None = None
    model_content: bytes | None = field(default=None, repr=False)
    data_spec: str | None = None
    data_filename: str | None = None
    data_content: bytes | None = field(default=None, repr=False)

    def load(self):
        """(Model, Dataset): the model (ONNX + torch module where there is one) and its data, freshly loaded.

        Raises:
            FeatherweightError: the model or data cannot be loaded, or the data does not fit the model.
        """
        from core.io.data import load_data, load_data_bytes
        from core.io.model import load_model, load_model_bytes

        if self.model_content is not None:
            model = load_model_bytes(self.model_content, self.model_filename or "model.onnx")
        elif self.model_spec:
            model = load_model(self.model_spec)
        else:
            raise BadInputError("no model to explain: pick a sample")
        if self.data_content is not None:
            dataset = load_data_bytes(self.data_content, self.data_filename or "data.npz", model)
        else:
            dataset = load_data(self.data_spec, model)
        return model, dataset


def sample_source(spec: str) -> LearnSource:
    """A sample model (``sample:NAME``) with its own dataset, or a model file path with synthetic inputs."""
    data = None
    if spec.startswith("sample:"):
        from sample_models import SAMPLE_MODELS

        sample = SAMPLE_MODELS.get(spec.split(":", 1)[1])
        if sample is None:
            raise BadInputError(f"unknown sample model {spec!r}; available: "
                                f"{', '.join('sample:' + n for n in sorted(SAMPLE_MODELS))}")
        data = f"sample:{sample.dataset}"
    return LearnSource(key=spec, label=spec.split(":", 1)[-1], model_spec=spec, data_spec=data)


def learnable_samples() -> list[str]:
    """Sample model specs usable offline right now (trained weights shipped, no extra needed)."""
    from sample_models import SAMPLE_MODELS

    return [f"sample:{name}" for name, sample in SAMPLE_MODELS.items()
            if sample.extra is None and getattr(sample, "load_model", None) is None and sample.weights_path.exists()]


# --------------------------------------------------------------------------------------------------------------
# Weight quantization (mirrors onnxruntime.quantization.quant_utils.compute_scale_zp / quantize_nparray)


@dataclass(frozen=True)
class WeightTensor:
    """A weight the explainers can show: its initializer, the node using it, shape and output-channel axis."""

    name: str
    node: str
    op_type: str
    shape: tuple
    channel_axis: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def channels(self) -> int:
        return int(self.shape[self.channel_axis])


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_axis(node, dims: tuple) -> int | None:
    """The output-channel axis onnxruntime's per-channel quantizer uses for this node's weight, or None."""
    if node.op_type == "Conv" and len(dims) >= 3:
        return 0
    if node.op_type == "Gemm" and len(dims) == 2:
        return 0 if _attrs(node).get("transB", 0) else 1
    if node.op_type == "MatMul" and len(dims) == 2:
        return 1
    return None


def weight_tensors(proto) -> list[WeightTensor]:
    """Float Conv / Gemm / MatMul weight initializers, in graph order, with their output-channel axis."""
    from onnx import TensorProto

    inits = {i.name: i for i in proto.graph.initializer}
    seen: set[str] = set()
    out = []
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        tensor = inits.get(name)
        if tensor is None or name in seen or tensor.data_type != TensorProto.FLOAT:
            continue
        dims = tuple(int(d) for d in tensor.dims)
        axis = _weight_axis(node, dims)
        if axis is None:
            continue
        seen.add(name)
        out.append(WeightTensor(name, node.name or node.output[0], node.op_type, dims, axis))
    return out


def weight_array(proto, name: str) -> np.ndarray:
    """The float32 values of initializer `name`.

    Raises:
        BadInputError: no initializer of that name.
    """
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).astype(np.float32, copy=False)
    raise BadInputError(f"the model has no weight named {name!r}")


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer codes a `bits`-bit quantizer uses: symmetric signed [-(2^(b-1)-1), 2^(b-1)-1] (onnxruntime's
    int8 weights: [-127, 127]) or unsigned [0, 2^b - 1] (its uint8 activations: [0, 255]).

    Raises:
        BadInputError: bits outside 2..16.
    """
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise BadInputError(f"bits={bits!r} is out of range; allowed: 2..16")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def scale_zero_point(rmin, rmax, bits: int = 8, symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point for the real range [rmin, rmax], as onnxruntime's ``compute_scale_zp`` computes them.

    The range is widened to include 0; symmetric ranges become [-max|r|, max|r|] with zero point 0, so the
    scale of int8 weights is max|w| / 127. The scale is computed in float64 and stored as float32; a range too
    small for float32 gets scale 1 and zero point 0, as in onnxruntime.

    Returns:
        (scale float32 array, zero point int64 array), shaped like `rmin`.
    """
    qmin, qmax = integer_range(bits, symmetric)
    rmin = np.minimum(np.asarray(rmin, dtype=np.float32), np.float32(0))
    rmax = np.maximum(np.asarray(rmax, dtype=np.float32), np.float32(0))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / float(qmax - qmin)
    degenerate = scale64 < np.finfo(np.float32).tiny
    if symmetric:
        zero_point = np.full(scale64.shape, round((qmin + qmax) / 2.0), dtype=np.int64)
    else:
        zero_point = np.round(qmin - rmin / np.where(degenerate, 1.0, scale64)).astype(np.int64)
    scale = scale64.astype(np.float32)
    scale = np.where(degenerate, np.float32(1.0), scale).astype(np.float32)
    zero_point = np.where(degenerate, 0, zero_point).astype(np.int64)
    return scale, zero_point


@dataclass(frozen=True)
class QuantizedTensor:
    """A tensor quantized to `bits`: the integer codes, scale(s) and zero point(s), the values they stand for,
    and the error against the original (mse, max_abs_error, sqnr_db)."""

    bits: int
    symmetric: bool
    per_channel: bool
    axis: int | None
    scale: np.ndarray  # () per tensor, (C,) per channel
    zero_point: np.ndarray
    codes: np.ndarray  # int64, same shape as the tensor
    dequantized: np.ndarray  # float32
    mse: float
    max_abs_error: float
    sqnr_db: float

    @property
    def qmin(self) -> int:
        return integer_range(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return integer_range(self.bits, self.symmetric)[1]

    @property
    def levels(self) -> int:
        """How many distinct values one scale can represent."""
        return self.qmax - self.qmin + 1

    def grid(self, channel: int | None = None) -> np.ndarray:
        """The real values the integer codes stand for (of one channel, when per channel)."""
        scale = float(self.scale if self.scale.ndim == 0 else self.scale[channel or 0])
        zero = int(self.zero_point if self.zero_point.ndim == 0 else self.zero_point[channel or 0])
        codes = np.arange(self.qmin, self.qmax + 1, dtype=np.float32)
        return ((codes - zero) * np.float32(scale)).astype(np.float32)


def error_stats(original: np.ndarray, approx: np.ndarray) -> tuple[float, float, float]:
    """(mean squared error, max absolute error, signal-to-quantization-noise ratio in dB)."""
    diff = approx.astype(np.float64) - original.astype(np.float64)
    noise = float(np.sum(diff ** 2))
    signal = float(np.sum(original.astype(np.float64) ** 2))
    mse = noise / max(1, diff.size)
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return mse, max_abs, sqnr


def quantize_tensor(weight: np.ndarray, bits: int = 8, *, symmetric: bool = True, per_channel: bool = False,
                    axis: int = 0) -> QuantizedTensor:
    """Quantize a float tensor to `bits`, one scale per tensor or per slice along `axis`.

    At 8 bits, symmetric, this is exactly what onnxruntime does to int8 weights (static QDQ and dynamic):
    q = clip(round(w / scale) + zero_point), round half to even, in float32, with scale = max|w| / 127.
    Asymmetric is its unsigned scheme (uint8 activations), whose zero point shifts the grid to cover [min, max].
    """
    w = np.asarray(weight, dtype=np.float32)
    if per_channel:
        if w.ndim == 0:
            raise BadInputError("per-channel quantization needs a tensor with a channel axis")
        axis = axis % w.ndim
        others = tuple(i for i in range(w.ndim) if i != axis)
        rmin = w.min(axis=others) if others else w
        rmax = w.max(axis=others) if others else w
    else:
        rmin, rmax = (w.min(), w.max()) if w.size else (np.float32(0), np.float32(0))
    scale, zero = scale_zero_point(rmin, rmax, bits, symmetric)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    scale_b = scale.reshape(shape) if per_channel else scale
    zero_b = zero.reshape(shape) if per_channel else zero
    qmin, qmax = integer_range(bits, symmetric)
    codes = np.clip(np.round(w / scale_b) + zero_b.astype(np.float32), qmin, qmax).astype(np.int64)
    dequantized = ((codes - zero_b).astype(np.float32) * scale_b).astype(np.float32)
    mse, max_abs, sqnr = error_stats(w, dequantized)
    return QuantizedTensor(bits, symmetric, per_channel, axis if per_channel else None, scale, zero, codes,
                           dequantized, mse, max_abs, sqnr)


def channel_error_table(weight: np.ndarray, axis: int, bits: int = 8, symmetric: bool = True) -> pd.DataFrame:
    """Per output channel: its largest |w|, the scale and RMS error with one scale for the whole tensor and with
    its own scale. Channels with small weights suffer most under a shared scale."""
    w = np.asarray(weight, dtype=np.float32)
    shared = quantize_tensor(w, bits, symmetric=symmetric)
    own = quantize_tensor(w, bits, symmetric=symmetric, per_channel=True, axis=axis)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    err_shared = np.moveaxis(shared.dequantized, axis, 0).reshape(moved.shape) - moved
    err_own = np.moveaxis(own.dequantized, axis, 0).reshape(moved.shape) - moved
    return pd.DataFrame({
        "channel": np.arange(moved.shape[0]),
        "absmax": np.abs(moved).max(axis=1),
        "scale_per_tensor": np.full(moved.shape[0], float(shared.scale)),
        "scale_per_channel": own.scale.astype(np.float64),
        "rms_error_per_tensor": np.sqrt(np.mean(err_shared.astype(np.float64) ** 2, axis=1)),
        "rms_error_per_channel": np.sqrt(np.mean(err_own.astype(np.float64) ** 2, axis=1)),
    })


def bit_width_curve(weight: np.ndarray, axis: int, bits=range(2, 9), symmetric: bool = True) -> pd.DataFrame:
    """SQNR (dB) of the tensor at each bit width, per tensor and per channel: each bit adds about 6 dB."""
    rows = []
    for b in bits:
        rows.append({"bits": int(b),
                     "sqnr_db_per_tensor": quantize_tensor(weight, b, symmetric=symmetric).sqnr_db,
                     "sqnr_db_per_channel": quantize_tensor(weight, b, symmetric=symmetric, per_channel=True,
                                                            axis=axis).sqnr_db})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class OnnxQuantizedWeight:
    """An int8 weight as onnxruntime stored it in a quantized graph: codes, scale, zero point and axis."""

    name: str
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    @property
    def dequantized(self) -> np.ndarray:
        """DequantizeLinear: (q - zero_point) * scale, broadcast along the axis."""
        shape = [1] * self.codes.ndim
        if self.scale.ndim and self.scale.size > 1:
            shape[self.axis or 0] = -1
            scale, zero = self.scale.reshape(shape), self.zero_point.reshape(shape)
        else:
            scale, zero = self.scale.reshape(()), self.zero_point.reshape(())
        return ((self.codes.astype(np.int64) - zero.astype(np.int64)).astype(np.float32) * scale).astype(np.float32)


def read_quantized_weight(quantized_proto, weight_name: str) -> OnnxQuantizedWeight:
    """Read `weight_name`'s int8 codes, scale and zero point back from a graph onnxruntime quantized.

    Handles QDQ graphs (a DequantizeLinear of ``<name>_quantized``) and dynamic graphs (``MatMulInteger`` with
    ``<name>_quantized``, ``<name>_scale``, ``<name>_zero_point``; per-channel along the last axis).

    Raises:
        BadInputError: the graph holds no quantized form of that weight.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in quantized_proto.graph.initializer}
    quantized = f"{weight_name}_quantized"
    if quantized not in inits:
        raise BadInputError(f"the quantized graph has no {quantized!r}; quantized weights: "
                            f"{sorted(n for n in inits if n.endswith('_quantized'))}")
    codes = numpy_helper.to_array(inits[quantized])
    for node in quantized_proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == quantized:
            scale = numpy_helper.to_array(inits[node.input[1]])
            zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else np.zeros_like(scale)
            return OnnxQuantizedWeight(weight_name, codes, scale, zero, int(_attrs(node).get("axis", 1)))
    scale_name, zero_name = f"{weight_name}_scale", f"{weight_name}_zero_point"
    if scale_name in inits:
        scale = numpy_helper.to_array(inits[scale_name])
        zero = numpy_helper.to_array(inits[zero_name]) if zero_name in inits else np.zeros(scale.shape, np.int8)
        return OnnxQuantizedWeight(weight_name, codes, scale, zero, codes.ndim - 1 if scale.size > 1 else None)
    raise BadInputError(f"found {quantized!r} but not its scale")


def check_against_onnxruntime(model, dataset, weight_name: str, *, per_channel: bool = True) -> dict:
    """Quantize the model with onnxruntime (static int8 QDQ, as the pipeline does) and compare its int8 weight
    `weight_name` with this module's 8-bit symmetric scheme.

    Returns:
        {"codes_equal", "codes_differing", "max_scale_diff", "max_dequantized_diff", "mse_ours", "mse_onnxruntime"}
    """
    from core.spec.recipe import QuantizeConfig
    from core.techniques import Candidate, StepContext, apply_step

    candidate = apply_step(QuantizeConfig(mode="static", per_channel=per_channel, samples=32),
                           Candidate(onnx_model=model.onnx_model), StepContext(dataset, model))
    theirs = read_quantized_weight(candidate.onnx_model, weight_name)
    info = {w.name: w for w in weight_tensors(model.onnx_model)}
    original = weight_array(model.onnx_model, weight_name)
    ours = quantize_tensor(original, 8, symmetric=True, per_channel=per_channel,
                           axis=info[weight_name].channel_axis if weight_name in info else 0)
    their_mse = error_stats(original, theirs.dequantized)[0]
    return {"codes_equal": bool(np.array_equal(ours.codes, theirs.codes.astype(np.int64))),
            "codes_differing": int(np.sum(ours.codes != theirs.codes.astype(np.int64))),
            "max_scale_diff": float(np.max(np.abs(ours.scale.ravel() - theirs.scale.astype(np.float32).ravel()))),
            "max_dequantized_diff": float(np.max(np.abs(ours.dequantized - theirs.dequantized))),
            "mse_ours": ours.mse, "mse_onnxruntime": their_mse}


def histogram(values: np.ndarray, bins: int = 120, value_range: tuple | None = None) -> dict:
    """A histogram as plain lists (counts and bin edges), so charts never ship raw tensors to the browser."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if value_range is None:
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        value_range = (lo, hi)
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


# --------------------------------------------------------------------------------------------------------------
# Activation calibration, through onnxruntime's calibrators

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_SAMPLES = 128  # the pipeline's default calibration sample count (QuantizeConfig.samples)
CALIBRATION_BATCH = 32
DEFAULT_PERCENTILE = quantize.PERCENTILE  # what the quantize step uses
DEFAULT_ENTROPY_BINS = quantize.ENTROPY_BINS  # what the quantize step uses (onnxruntime's own default is 128)
ENTROPY_QUANTIZED_BINS = quantize.ENTROPY_QUANTIZED_BINS  # the entropy search needs at least this many bins


def _calibration_reader(inputs: dict, fixed_batch: int | None = None):
    """The pipeline's own calibration reader over every sample (so the explainer calibrates as a run does)."""
    return quantize.CalibrationReader(inputs, len(next(iter(inputs.values()))), fixed_batch)


def calibration_inputs(model, dataset, samples: int = CALIBRATION_SAMPLES) -> dict:
    """The first `samples` calibration inputs, borrowing from the train split when calibration is short (as the
    quantize step does)."""
    calib = dataset.calib
    if len(calib) >= samples or dataset.train is None or not len(dataset.train):
        return calib.take(samples).x
    return {k: np.concatenate([v, dataset.train.x[k]])[:samples] for k, v in calib.x.items()}


@dataclass(frozen=True)
class CalibrationStudy:
    """The activation range each onnxruntime calibrator chose, per calibrated tensor: tensor -> method -> (lo, hi)."""

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
    """The range the quantize step's calibration (``core.techniques.quantize.calibration_ranges``: onnxruntime's
    MinMax, Percentile and Entropy calibrators, with the quantizer's settings) picks for every tensor of the
    baseline ONNX over the calibration split (or only `tensors`).

    With the defaults these are exactly the ranges a static int8 variant gets. The explainer lets the user move
    two knobs: the percentile, and the entropy histogram's bin count (onnxruntime's own default of 128 bins for
    128 quantized bins leaves the entropy search a single candidate, the whole range, so it equals min/max).

    Raises:
        BadInputError: a knob out of range, an unknown tensor, or no calibration inputs.
    """
    import logging

    from core.io.repair import fixed_batch_size

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
    reader = _calibration_reader(inputs, fixed_batch_size(model.onnx_model))
    with tempfile.TemporaryDirectory(prefix="fw-learn-calib-") as tmp:
        for method in CALIBRATION_METHODS:
            try:
                data = quantize.calibration_ranges(model.onnx_model, reader, method, Path(tmp),
                                                   percentile=float(percentile), entropy_bins=entropy_bins,
                                                   tensors=tensors)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types on graphs it cannot augment
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
                raise UnsupportedModelError(f"onnxruntime's {method} calibrator failed on this graph: {first}") \
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

    from core.measure import quality as measure

    inputs = calibration_inputs(model, dataset, samples)
    if tensor in inputs:
        values = np.asarray(inputs[tensor], dtype=np.float32).ravel()
    else:
        if tensor not in set(_tensor_order(model.onnx_model)):
            raise BadInputError(f"the model has no tensor {tensor!r}")
        proto = copy.deepcopy(model.onnx_model)
        if tensor not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
        session = measure.make_session(proto.SerializeToString(), 1)
        names = [o.name for o in session.get_outputs()]
        outputs = measure.run_batched(session, inputs, 256)
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


# --------------------------------------------------------------------------------------------------------------
# Pruning

PRUNE_PATTERNS = ("unstructured", "2:4", "channel")
SWEEP_PATTERNS = ("unstructured", "channel")
SWEEP_AMOUNTS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def out_first(weight: np.ndarray, axis: int) -> np.ndarray:
    """The weight with its output-channel axis first: (out, in, ...) for every layer type."""
    return np.moveaxis(np.asarray(weight), axis, 0)


def _smallest(scores: np.ndarray, count: int) -> np.ndarray:
    mask = np.zeros(scores.size, dtype=bool)
    if count > 0:
        mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def pattern_mask(weight: np.ndarray, sparsity: float, pattern: str) -> np.ndarray | None:
    """Keep-mask (1 kept, 0 pruned) for an out-first weight.

    unstructured: the `sparsity` share of smallest |w| anywhere; 2:4: the two smallest of every four
    consecutive inputs (always 50%, `sparsity` ignored), None when the input dimension is not a multiple of 4;
    channel: whole output channels with the smallest L1 norm.

    Raises:
        BadInputError: unknown pattern or sparsity outside [0, 1).
    """
    from core.techniques.prune import two_four_mask

    if pattern not in PRUNE_PATTERNS:
        raise BadInputError(f"pattern={pattern!r} is not supported; allowed: {', '.join(PRUNE_PATTERNS)}")
    if not 0 <= sparsity < 1:
        raise BadInputError(f"sparsity={sparsity!r} is out of range; allowed: [0, 1)")
    w = np.asarray(weight, dtype=np.float32)
    if pattern == "2:4":
        return two_four_mask(w)
    if pattern == "unstructured":
        pruned = _smallest(np.abs(w).ravel(), int(round(sparsity * w.size)))
        return (~pruned).reshape(w.shape).astype(np.float32)
    norms = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
    dropped = _smallest(norms, int(round(sparsity * w.shape[0])))
    mask = np.ones_like(w, dtype=np.float32)
    mask[dropped] = 0.0
    return mask


def mask_facts(weight: np.ndarray, mask: np.ndarray) -> dict:
    """What a mask does to a weight: sparsity, the share of total |w| it keeps, and the relative error
    ||W - W*m|| / ||W|| (the part of the layer's signal removed)."""
    w = np.asarray(weight, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    total = float(np.abs(w).sum()) or 1.0
    norm = float(np.sqrt(np.sum(w ** 2))) or 1.0
    return {"sparsity": float(1 - m.mean()), "kept_magnitude": float(np.abs(w * m).sum() / total),
            "relative_error": float(np.sqrt(np.sum((w * (1 - m)) ** 2)) / norm),
            "zeroed": int(np.sum(m == 0)), "weights": int(m.size)}


def heatmap_matrix(weight: np.ndarray, mask: np.ndarray | None, max_rows: int = 32, max_cols: int = 96) \
        -> np.ndarray:
    """|w| of an out-first weight as a (rows, cols) matrix cropped to its top-left corner, NaN where pruned."""
    w = np.abs(np.asarray(weight, dtype=np.float32)).reshape(weight.shape[0], -1)
    if mask is not None:
        w = np.where(np.asarray(mask).reshape(w.shape) > 0, w, np.nan)
    return w[:max_rows, :max_cols]


def _labelled_eval(dataset, what: str):
    if dataset.eval.y is None or dataset.train.y is None:
        raise BadInputError(f"{what} needs labelled data (accuracy), and this data has no labels")


def _torch_masks(module, amount: float, pattern: str) -> dict:
    """Parameter -> keep-mask tensor over every Conv / Linear layer: unstructured global magnitude, or whole
    output channels (weight and bias) per layer with the classifier head left whole."""
    import torch

    from core.techniques.prune import magnitude_masks, prunable_layers

    layers = prunable_layers(module)
    masks: dict = {}
    if amount <= 0:
        return masks
    if pattern == "unstructured":
        weights = {name: layer.weight.detach().numpy() for name, layer in layers}
        for (name, layer), keep in zip(layers, magnitude_masks(weights, amount, "global").values()):
            masks[layer.weight] = torch.from_numpy(keep)
        return masks
    for name, layer in layers[:-1]:  # the head keeps every output (one per class)
        w = layer.weight.detach().numpy()
        keep = pattern_mask(w, amount, "channel")
        masks[layer.weight] = torch.from_numpy(keep)
        if getattr(layer, "bias", None) is not None:
            masks[layer.bias] = torch.from_numpy(keep.reshape(w.shape[0], -1)[:, 0].copy())
    return masks


def sparsity_sweep(model, dataset, *, pattern: str = "unstructured", amounts=SWEEP_AMOUNTS,
                   finetune_epochs: int = 1, seed: int = 0, on_point=None) -> pd.DataFrame:
    """Eval accuracy of the model pruned to each amount, without and (torch models) with a short fine-tune.

    unstructured: global magnitude pruning over every Conv / Linear weight; channel: the smallest output
    channels of each layer (not the head) zeroed, which is what structured pruning removes.

    Args:
        finetune_epochs: epochs on the train split with the masks kept (0 = no fine-tuned curve).
        on_point: called with each row as it is measured.

    Returns:
        Columns amount, sparsity (of the Conv / Linear weights), accuracy, accuracy_finetuned (None without
        fine-tuning or a torch module).

    Raises:
        BadInputError: no labels, an unknown pattern or an amount outside [0, 1).
    """
    from core.techniques import StepContext
    from core.techniques.distill import model_inputs

    if pattern not in SWEEP_PATTERNS:
        raise BadInputError(f"pattern={pattern!r} is not supported; allowed: {', '.join(SWEEP_PATTERNS)}")
    if any(not 0 <= a < 1 for a in amounts):
        raise BadInputError(f"amounts={list(amounts)!r} must lie in [0, 1)")
    _labelled_eval(dataset, "the accuracy-vs-sparsity sweep")
    names = [s.name for s in model.inputs]
    eval_x, eval_y = model_inputs(dataset.eval, names), dataset.eval.y
    rows = []
    if model.torch_module is None:
        for amount in amounts:
            rows.append(_onnx_sweep_point(model, dataset, pattern, float(amount)))
            if on_point:
                on_point(rows[-1])
        return pd.DataFrame(rows)
    train_x, train_y = model_inputs(dataset.train, names), dataset.train.y
    context = StepContext(dataset, model, seed=seed)
    for amount in amounts:
        with torch_threads():
            row = _torch_sweep_point(model, float(amount), pattern, finetune_epochs, seed, context, train_x, train_y,
                                     eval_x, eval_y)
        rows.append(row)
        if on_point:
            on_point(row)
    return pd.DataFrame(rows)


def _torch_sweep_point(model, amount: float, pattern: str, finetune_epochs: int, seed: int, context, train_x,
                       train_y, eval_x, eval_y) -> dict:
    """One sweep point for a torch model: a pruned copy's accuracy, then again after a masked fine-tune."""
    import torch

    from core.techniques.distill import accuracy, fit
    from core.techniques.prune import prunable_layers

    module = copy.deepcopy(model.torch_module).eval()
    masks = _torch_masks(module, amount, pattern)
    with torch.no_grad():
        for param, mask in masks.items():
            param.mul_(mask)
    weights = [layer.weight.detach().numpy() for _, layer in prunable_layers(module)]
    sparsity = float(sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.size for w in weights)))
    row = {"amount": amount, "sparsity": sparsity, "accuracy": accuracy(module, eval_x, eval_y),
           "accuracy_finetuned": None}
    if finetune_epochs > 0:
        fit(module, train_x, labels=train_y, teacher_logits=None, alpha=0.0, temperature=1.0,
            epochs=finetune_epochs, lr=1e-3, batch_size=64, seed=seed, context=context, masks=masks,
            what="fine-tune")
        row["accuracy_finetuned"] = accuracy(module, eval_x, eval_y)
    return row


def _onnx_sweep_point(model, dataset, pattern: str, amount: float) -> dict:
    """One sweep point for an ONNX-only model: the weight initializers masked, accuracy through onnxruntime."""
    from onnx import numpy_helper

    from core.measure import quality as measure

    proto = copy.deepcopy(model.onnx_model)
    tensors = weight_tensors(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    arrays = {t.name: numpy_helper.to_array(inits[t.name]).astype(np.float32) for t in tensors}
    if pattern == "unstructured" and amount > 0:
        flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
        threshold_count = int(round(amount * flat.size))
        pruned = _smallest(flat, threshold_count)
        offset = 0
        for t in tensors:
            size = arrays[t.name].size
            arrays[t.name] = arrays[t.name] * (~pruned[offset:offset + size]).reshape(t.shape)
            offset += size
    elif pattern == "channel" and amount > 0:
        for t in tensors[:-1]:
            keep = pattern_mask(out_first(arrays[t.name], t.channel_axis), amount, "channel")
            arrays[t.name] = np.moveaxis(out_first(arrays[t.name], t.channel_axis) * keep, 0, t.channel_axis)
    for t in tensors:
        inits[t.name].CopyFrom(numpy_helper.from_array(arrays[t.name].astype(np.float32), t.name))
    total = sum(a.size for a in arrays.values())
    sparsity = float(sum(int((a == 0).sum()) for a in arrays.values()) / max(1, total))
    session = measure.make_session(proto.SerializeToString(), 1)
    logits = measure.run_batched(session, dataset.eval.x)[0]
    return {"amount": amount, "sparsity": sparsity,
            "accuracy": float((logits.argmax(axis=1) == dataset.eval.y).mean()), "accuracy_finetuned": None}


# --------------------------------------------------------------------------------------------------------------
# Distillation


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the last axis (numerically stable).

    Raises:
        BadInputError: temperature <= 0.
    """
    if not temperature > 0:
        raise BadInputError(f"temperature={temperature!r} must be > 0")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis: 0 for a one-hot label, log2(classes) for a uniform guess."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1)


def teacher_logits(model, split, limit: int | None = None) -> np.ndarray:
    """The model's logits on a split (the torch module when there is one, else onnxruntime).

    Raises:
        UnsupportedModelError: the model is not a classifier (one 2-D output).
    """
    from core.io.model import task_of
    from core.techniques.distill import model_inputs, predict

    if task_of(model) != "classification":
        raise UnsupportedModelError("soft targets need a classifier (one 2-D logits output)")
    inputs = model_inputs(split if limit is None else split.take(limit), [s.name for s in model.inputs])
    if model.torch_module is not None:
        return predict(model.torch_module, inputs)
    from core.measure import quality as measure

    session = measure.make_session(model.onnx_bytes(), 1)
    return measure.run_batched(session, {s.name: a for s, a in zip(model.inputs, inputs)})[0].astype(np.float32)


def soft_target_facts(logits_row: np.ndarray, temperature: float) -> dict:
    """One sample's soft targets: probabilities, entropy (bits), the top class and the runner-up's share."""
    p = softmax(np.asarray(logits_row)[None, :], temperature)[0]
    order = np.argsort(-p)
    return {"probs": p, "entropy_bits": float(entropy_bits(p)), "top": int(order[0]),
            "top_prob": float(p[order[0]]), "runner_up": int(order[1]) if p.size > 1 else None,
            "runner_up_prob": float(p[order[1]]) if p.size > 1 else 0.0,
            "max_entropy_bits": float(np.log2(p.size))}


def temperature_curve(logits: np.ndarray, temperatures=(0.5, 1, 2, 3, 4, 6, 8, 12, 16, 20)) -> pd.DataFrame:
    """Mean entropy (bits) and mean top-class probability of the soft targets over many samples, per T."""
    rows = []
    for t in temperatures:
        p = softmax(logits, float(t))
        rows.append({"temperature": float(t), "mean_entropy_bits": float(entropy_bits(p).mean()),
                     "mean_top_prob": float(p.max(axis=-1).mean())})
    return pd.DataFrame(rows)


STUDENTS = ("with teacher", "labels only")


def distill_live(model, dataset, *, width: float = 0.25, temperature: float = 4.0, alpha: float = 0.7,
                 epochs: int = 15, train_samples: int = 300, lr: float = 1e-2, batch_size: int = 32,
                 seed: int = 0) -> Iterator[dict]:
    """Train two identical small students side by side, one on the teacher's soft targets (and the labels), one
    on the labels alone; yield a point per student after every epoch (and one before training).

    Each point: {"epoch", "student" ("with teacher" / "labels only"), "eval_loss" (cross-entropy on the eval
    labels, comparable between the two), "eval_accuracy", "agreement" (top-1 agreement with the teacher),
    "student_params", "teacher_params"}.

    Raises:
        BadInputError: no labels, or a parameter out of range.
        UnsupportedModelError: the model is not a classifier.
    """
    import torch
    import torch.nn.functional as F

    from core.spec.recipe import DistillConfig
    from core.techniques import Candidate, StepContext
    from core.techniques.distill import build_student, distillation_loss, model_inputs, param_count, predict

    config = DistillConfig(width=width, temperature=temperature, alpha=alpha, epochs=max(1, epochs), lr=lr,
                           batch_size=batch_size)
    if train_samples < 2:
        raise BadInputError(f"train_samples={train_samples!r} must be at least 2")
    _labelled_eval(dataset, "live distillation")
    names = [s.name for s in model.inputs]
    train = dataset.train.take(train_samples)
    x_train = model_inputs(train, names)
    y_train = train.y
    x_eval, y_eval = model_inputs(dataset.eval, names), dataset.eval.y
    with torch_threads():
        soft = teacher_logits(model, train)
        teacher_eval = teacher_logits(model, dataset.eval).argmax(axis=1)
        context = StepContext(dataset, model, seed=seed)
        student, _ = build_student(config, Candidate(architecture=model.architecture), context,
                                   x_train[0].shape[1:], int(soft.shape[1]))
    twin = copy.deepcopy(student)
    teacher_params = param_count(model.torch_module) if model.torch_module is not None else None
    if teacher_params is None:
        from core.io.model import onnx_params

        teacher_params = onnx_params(model.onnx_model)
    students = {"with teacher": (student, alpha), "labels only": (twin, 0.0)}
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, (m, _) in students.items()}
    xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in x_train]
    ys = torch.from_numpy(y_train)
    ts = torch.from_numpy(np.ascontiguousarray(soft, dtype=np.float32))
    eval_labels = torch.from_numpy(y_eval)

    def point(epoch: int, name: str, module) -> dict:
        logits = predict(module, x_eval)
        loss = float(F.cross_entropy(torch.from_numpy(logits), eval_labels))
        top = logits.argmax(axis=1)
        return {"epoch": epoch, "student": name, "eval_loss": loss, "eval_accuracy": float((top == y_eval).mean()),
                "agreement": float((top == teacher_eval).mean()), "student_params": param_count(module),
                "teacher_params": int(teacher_params)}

    def train_epoch(epoch: int, name: str, module, mix: float) -> None:
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)  # the same batches for both students
        order = torch.randperm(n, generator=generator)
        module.train()
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:  # a batch of one breaks BatchNorm's batch statistics
                continue
            optimizers[name].zero_grad()
            out = module(*[x[idx] for x in xs])
            loss = distillation_loss(out, ts[idx], ys[idx], alpha=mix, temperature=temperature)
            loss.backward()
            optimizers[name].step()
        module.eval()

    n = len(xs[0])
    for name, (module, _) in students.items():
        with torch_threads():
            first = point(0, name, module)
        yield first
    for epoch in range(1, config.epochs + 1):
        for name, (module, mix) in students.items():
            with torch_threads():  # per step, never across a yield: the caller runs between points
                train_epoch(epoch, name, module, mix)
                current = point(epoch, name, module)
            yield current


# --------------------------------------------------------------------------------------------------------------
# Size and speed: bytes per weight, arithmetic, and a size estimate before running anything

# Bytes of graph structure (node, tensor and initializer names, attributes) onnxruntime's quantizers add per
# quantized tensor, as a + b * len(tensor name): fitted to the quantized digits-cnn and digits-mlp graphs
# (static QDQ: a DequantizeLinear per weight; a QuantizeLinear/DequantizeLinear pair per activation; dynamic:
# six nodes per MatMul). The estimate stays within a few percent of the measured file sizes of both samples.
QDQ_WEIGHT_OVERHEAD = (125, 10)
QDQ_ACTIVATION_OVERHEAD = (210, 13)
DYNAMIC_MATMUL_OVERHEAD = (1400, 0)
INT4_MATMUL_OVERHEAD = 300
FP16_CAST_OVERHEAD = 120  # per graph input / output: keep_io_types adds a Cast each
INT4_BLOCK = 32


@dataclass
class _Layer:
    """One weighted layer in the estimate: element counts, output channels and how its numbers are stored."""

    name: str
    op_type: str
    weight: float  # elements
    bias: float
    out_channels: float
    input_share: float = 1.0  # of the original input features still present (after pruning the layer before)
    out_share: float = 1.0
    dtype: str = "fp32"  # fp32 | fp16 | int8 | int4
    per_channel: bool = True
    k: float = 0.0  # reduction size (inputs per output), for int4 blocks
    name_length: int = 0
    exact: bool = True  # shapes known (from a graph), not guessed (from a card)


@dataclass
class _Graph:
    layers: list
    other_float: float  # elements of float initializers outside the weighted layers
    overhead: float  # bytes of graph structure (nodes, names, shapes)
    activations: list  # names of activation tensors static quantization would put QDQ pairs on
    io_count: int
    has_conv: bool
    layer_op_types: set
    architecture: bool  # True when students scale this architecture (not an ONNX template)


def _graph_from_proto(proto) -> _Graph:
    inits = {i.name: i for i in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers, used = [], set()
    for tensor in weight_tensors(proto):
        node = next(n for n in proto.graph.node if (n.name or n.output[0]) == tensor.node)
        bias = 0
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in inits:
            bias = int(np.prod(inits[node.input[2]].dims))
            used.add(node.input[2])
        used.add(tensor.name)
        k = tensor.size / max(1, tensor.channels)
        layers.append(_Layer(tensor.name, tensor.op_type, float(tensor.size), float(bias), float(tensor.channels),
                             k=k, name_length=len(tensor.name)))
    data_bytes = sum(len(i.raw_data) or _tensor_bytes(i) for i in proto.graph.initializer)
    other = sum(int(np.prod(i.dims)) for i in proto.graph.initializer
                if i.name not in used and i.data_type == 1)
    overhead = max(0, proto.ByteSize() - data_bytes)
    # static QDQ puts a Q/DQ pair on every float tensor between ops, except a Conv/Gemm output that only feeds a
    # Relu (fused) or outputs of nodes with no float output to quantize
    activations = [v.name for v in proto.graph.input if v.name not in inits]
    for node in proto.graph.node:
        for out in node.output:
            users = consumers.get(out, [])
            if node.op_type in ("Conv", "Gemm", "MatMul") and len(users) == 1 and users[0].op_type == "Relu":
                continue
            activations.append(out)
    ops = {n.op_type for n in proto.graph.node}
    return _Graph(layers, float(other), float(overhead), activations,
                  len([v for v in proto.graph.input if v.name not in inits]) + len(proto.graph.output),
                  "Conv" in ops, ops, True)


def _tensor_bytes(init) -> int:
    """Bytes of an initializer's values when they are not stored as raw_data."""
    from onnx import numpy_helper

    try:
        return int(numpy_helper.to_array(init).nbytes)
    except Exception:  # noqa: BLE001 - exotic types: count 4 bytes an element
        return 4 * int(np.prod(init.dims))


def _graph_from_card(card: dict) -> _Graph:
    """The same facts from a model card (no shapes: output channels are guessed as sqrt(params))."""
    layers = []
    weighted = 0
    for row in card.get("layers") or []:
        params = float(row.get("params") or 0)
        channels = max(1.0, math.sqrt(params))
        weighted += int(row.get("bytes") or params * 4)
        layers.append(_Layer(str(row.get("name")), str(row.get("type")), params - channels, channels, channels,
                             k=params / channels, name_length=len(str(row.get("name"))), exact=False))
    size = float(card.get("size_bytes") or 0)
    ops = set((card.get("op_types") or {}))
    nodes = int(card.get("nodes") or len(layers))
    relu_fused = min(len(layers), int((card.get("op_types") or {}).get("Relu", 0)))
    activations = [f"activation_{i:03d}_output_tensor_name" for i in range(max(0, nodes + 1 - relu_fused))]
    io = len(card.get("inputs") or []) + len(card.get("outputs") or [])
    return _Graph(layers, 0.0, max(0.0, size - weighted), activations, io, "Conv" in ops, ops,
                  bool(card.get("architecture")))


def _as_step(step):
    from core.spec.recipe import StepConfig, step_from_dict

    return step if isinstance(step, StepConfig) else step_from_dict(dict(step))


def _scale_layers(graph: _Graph, keep: float, *, keep_head: bool = True) -> None:
    """Scale every layer's output channels by `keep` (rounded), except the head, and each next layer's inputs
    by the share its predecessor kept: what structured pruning and width-scaled students do to a chain."""
    previous = 1.0
    for i, layer in enumerate(graph.layers):
        head = keep_head and i == len(graph.layers) - 1
        channels = layer.out_channels if head else max(1.0, round(layer.out_channels * keep))
        share = channels / max(1.0, layer.out_channels)
        layer.weight = layer.weight * share * previous
        layer.k = layer.k * previous
        layer.bias = layer.bias * share
        layer.out_channels = channels
        previous = share


def _apply_step(graph: _Graph, step) -> None:
    technique = step.technique
    if technique == "prune":
        if step.method == "structured":
            _scale_layers(graph, 1 - step.amount)
        return  # unstructured / 2:4 zero weights but store them all (the zip-compressed size shrinks)
    if technique == "distill":
        if graph.architecture:
            _scale_layers(graph, step.width)
        else:  # an ONNX template student with about width^2 of the parameters
            for layer in graph.layers:
                layer.weight *= step.width ** 2
                layer.bias *= step.width
                layer.out_channels = max(1.0, layer.out_channels * step.width)
        for layer in graph.layers:
            layer.dtype = "fp32"
        return
    mode = step.mode
    excluded = set(step.exclude)
    if mode == "fp16":
        for layer in graph.layers:
            if layer.name not in excluded:
                layer.dtype = "fp16"
        graph.other_float /= 2
        graph.overhead += FP16_CAST_OVERHEAD * graph.io_count
        return
    for layer in graph.layers:
        if layer.name in excluded or layer.dtype != "fp32":
            continue
        if mode == "static" or (mode == "dynamic" and (layer.op_type in ("Gemm", "MatMul") or step.quantize_conv)):
            layer.dtype = "int8" if mode == "static" else "int8-dynamic"
            layer.per_channel = step.per_channel
        elif mode == "int4" and layer.op_type in ("Gemm", "MatMul"):
            layer.dtype = "int4"
    if mode == "static":
        a, b = QDQ_ACTIVATION_OVERHEAD
        graph.overhead += sum(a + b * len(name) + 5 for name in graph.activations)  # + a uint8 zp, fp32 scale
        graph.activations = []


def _layer_bytes(layer: _Layer) -> dict:
    """Weight, bias, scale and structure bytes of one layer as stored."""
    channels = layer.out_channels
    if layer.dtype == "fp32":
        return {"weights": 4 * layer.weight, "biases": 4 * layer.bias, "scales": 0.0, "structure": 0.0}
    if layer.dtype == "fp16":
        return {"weights": 2 * layer.weight, "biases": 2 * layer.bias, "scales": 0.0, "structure": 0.0}
    if layer.dtype == "int4":
        blocks = channels * (math.ceil(layer.k / INT4_BLOCK) if layer.exact else layer.k / INT4_BLOCK)
        return {"weights": blocks * INT4_BLOCK / 2, "biases": 4 * layer.bias, "scales": 4 * blocks,
                "structure": INT4_MATMUL_OVERHEAD}
    scales = channels if layer.per_channel else 1
    if layer.dtype == "int8-dynamic":
        a, b = DYNAMIC_MATMUL_OVERHEAD
        return {"weights": layer.weight, "biases": 4 * layer.bias, "scales": 5 * scales,
                "structure": a + b * layer.name_length}
    a, b = QDQ_WEIGHT_OVERHEAD
    # static QDQ: int8 weights with a float scale and int8 zero point each; the bias becomes int32 with its own
    # float scale and int32 zero point per channel (one per tensor when per_channel is off)
    bias_scales = channels if layer.per_channel else 1
    return {"weights": layer.weight, "biases": 4 * layer.bias,
            "scales": 5 * scales + (8 * bias_scales if layer.bias else 0),
            "structure": a + b * layer.name_length + (a + b * (layer.name_length + 8) if layer.bias else 0)}


def estimate_breakdown(model_card_or_proto, steps=()) -> dict:
    """Where the bytes of the model after `steps` would go: weights, biases, quantization scales and graph
    structure, estimated from the baseline's layers without running anything.

    Args:
        model_card_or_proto: an ``onnx.ModelProto`` (exact layer shapes) or a model card from
            ``core.io.model.model_card`` (layer parameter counts only: a rougher estimate).
        steps: step configs (``QuantizeConfig``...) or their dicts, in recipe order.

    Returns:
        {"weights", "biases", "scales", "structure", "total_bytes", "params"}: bytes (ints) and the weight count.
    """
    if isinstance(model_card_or_proto, dict):
        graph = _graph_from_card(model_card_or_proto)
    elif hasattr(model_card_or_proto, "graph"):
        graph = _graph_from_proto(model_card_or_proto)
    else:
        raise BadInputError(f"estimate_size needs a model card (dict) or an ONNX ModelProto, got "
                            f"{type(model_card_or_proto).__name__}")
    for step in steps or ():
        _apply_step(graph, _as_step(step))
    parts = {"weights": 0.0, "biases": 0.0, "scales": 0.0, "structure": graph.overhead}
    for layer in graph.layers:
        for key, value in _layer_bytes(layer).items():
            parts[key] += value
    parts["weights"] += 4 * graph.other_float
    out = {k: int(round(v)) for k, v in parts.items()}
    out["total_bytes"] = int(sum(out.values()))
    out["params"] = int(round(sum(layer.weight + layer.bias for layer in graph.layers) + graph.other_float))
    return out


def estimate_size(model_card_or_proto, steps=()) -> int:
    """The file size in bytes the model would have after `steps` (a recipe variant's steps), before running
    anything. Quantization changes bytes per weight (fp16 2, int8 1 plus a scale per channel, int4 half a byte
    plus a scale per 32 weights); structured pruning and distillation remove weights (about (1 - amount)^2 and
    width^2 of the inner layers); unstructured and 2:4 pruning store every zero, so the file does not shrink.

    Args:
        model_card_or_proto: the baseline's ``onnx.ModelProto`` or its model card.
        steps: step configs or dicts, e.g. ``[{"technique": "quantize", "mode": "static"}]``.
    """
    return estimate_breakdown(model_card_or_proto, steps)["total_bytes"]


def macs_per_sample(proto) -> dict:
    """Multiply-accumulates per input sample of each Conv / Gemm / MatMul weight (name -> MACs), from onnx shape
    inference with symbolic axes counted as 1."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - shape inference fails on some graphs; MACs are then unknown
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    out = {}
    nodes = {(n.name or n.output[0]): n for n in proto.graph.node}
    for tensor in weight_tensors(proto):
        node = nodes[tensor.node]
        dims = shapes.get(node.output[0])
        if not dims:
            continue
        per_output = tensor.size / max(1, tensor.channels)  # inputs each output value sums over
        outputs = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        out[tensor.name] = int(outputs * per_output)
    return out


def technique_table(proto, *, amount: float = 0.5, width: float = 0.25) -> pd.DataFrame:
    """Each technique's effect on this model: estimated file size, bytes per weight and multiply-accumulates
    per sample (all computed from the graph), and which arithmetic the CPU runs."""
    from core.spec.recipe import DistillConfig, PruneConfig, QuantizeConfig

    macs = sum(macs_per_sample(proto).values())
    rows = [
        ("baseline (fp32)", (), 1.0, "fp32 multiply-adds", "—"),
        ("fp16 weights", (QuantizeConfig(mode="fp16"),), 1.0, "fp32 on most CPUs (cast back)", "rarely"),
        # no number here: how much faster int8 runs depends on the CPU's int8 instructions (AVX2, VNNI, AMX); a run
        # measures it, and BENCHMARKS.md records what it was on which instruction set
        ("int8 static", (QuantizeConfig(mode="static"),), 1.0, "int8 multiply, int32 accumulate",
         "usually (by how much: measure it)"),
        ("int8 dynamic", (QuantizeConfig(mode="dynamic"),), 1.0, "int8 MatMul; Conv stays fp32",
         "MatMul layers"),
        ("int4 weight-only", (QuantizeConfig(mode="int4"),), 1.0, "unpacked to fp32 per block", "memory-bound only"),
        (f"unstructured prune {amount:.0%}", (PruneConfig(method="unstructured", amount=amount),), 1.0,
         "fp32, zeros still multiplied", "no"),
        ("2:4 prune", (PruneConfig(method="2:4", amount=0.5),), 1.0, "fp32 (sparse cores on GPUs only)", "no"),
        (f"structured prune {amount:.0%}", (PruneConfig(method="structured", amount=amount),), None,
         "fp32, fewer channels", "yes"),
        (f"student at width {width:g}", (DistillConfig(width=width),), None, "fp32, narrower layers", "yes"),
    ]
    base = estimate_breakdown(proto)
    table = []
    for name, steps, mac_share, arithmetic, faster in rows:
        est = estimate_breakdown(proto, steps)
        if mac_share is None:
            mac_share = est["params"] / max(1, base["params"])  # inner layers shrink like their weights
        stored = est["weights"] + est["biases"] + est["scales"]
        table.append({"technique": name, "size_bytes": est["total_bytes"],
                      "x_smaller": base["total_bytes"] / max(1, est["total_bytes"]),
                      "bytes_per_weight": stored / max(1, est["params"]), "params": est["params"],
                      "macs_per_sample": int(round(macs * mac_share)) if macs else None,
                      "arithmetic": arithmetic, "faster_on_cpu": faster})
    return pd.DataFrame(table)


def estimate_vs_measured(results: dict, model_card_or_proto) -> pd.DataFrame:
    """For every finished variant of a run: the size estimated from its steps beside the size measured.

    Returns:
        Columns variant, steps (text), estimate_bytes, measured_bytes, error_pct (estimate vs measured).
    """
    rows = []
    for variant in results.get("variants") or []:
        if variant.get("status") != "ok" or not variant.get("size_bytes"):
            continue
        steps = variant.get("steps") or []
        try:
            estimate = estimate_size(model_card_or_proto, steps)
        except (BadInputError, UnsupportedModelError) as exc:
            estimate, note = None, str(exc)
        else:
            note = None
        measured = int(variant["size_bytes"])
        rows.append({"variant": variant.get("name"), "steps": " + ".join(step_label(s) for s in steps) or "none",
                     "estimate_bytes": estimate, "measured_bytes": measured,
                     "error_pct": None if estimate is None else 100 * (estimate - measured) / measured,
                     "note": note})
    return pd.DataFrame(rows, columns=["variant", "steps", "estimate_bytes", "measured_bytes", "error_pct",
                                       "note"])


def step_label(step: dict) -> str:
    """A step as a short label: 'quantize static', 'prune structured 0.5', 'distill w0.25'."""
    technique = step.get("technique")
    if technique == "quantize":
        return f"quantize {step.get('mode', 'static')}"
    if technique == "prune":
        return f"prune {step.get('method', 'structured')} {step.get('amount', 0.5)}"
    if technique == "distill":
        return f"distill w{step.get('width', 0.25)}"
    return str(technique)


def completed_runs(store, limit: int = 20) -> list[dict]:
    """Runs in a run store with results to compare: [{"id", "label", "model", "status"}], newest first."""
    out = []
    for record in store.list(limit=limit):
        if record.status not in ("completed", "cancelled", "interrupted", "failed"):
            continue
        out.append({"id": record.id, "label": record.label or record.model, "model": record.model,
                    "status": record.status})
    return out


def run_baseline_proto(store, run_id: str, results: dict) -> Any:
    """The ONNX graph of a run's model, for estimating its variants: the sample, or the uploaded file kept with
    the run (loaded with the same safety checks as any upload).

    Raises:
        FeatherweightError: the model cannot be found or loaded.
    """
    from core.io.model import load_model

    spec = results.get("model") or (results.get("recipe") or {}).get("model")
    if not isinstance(spec, str) or not spec:
        raise BadInputError("the run does not say which model it used")
    if spec.startswith("sample:"):
        return load_model(spec).onnx_model
    run_dir = store.run_dir(run_id).resolve()
    # results.json names the file; whatever it says, only a file inside this run's directory is read (symlinks
    # resolved first), as saved there by the job runner.
    candidates = ((run_dir / spec).resolve(), (run_dir / "inputs" / Path(spec).name).resolve())
    path = next((c for c in candidates if run_dir in c.parents and c.is_file()), None)
    if path is None:
        raise BadInputError(f"the run's model {brief(spec)} is not a file inside its run directory; refused")
    return load_model(str(path)).onnx_model


# --------------------------------------------------------------------------------------------------------------
# The explainers' views, computed where the model is loaded: in a worker (core.jobs.queue.explain_isolated), so the
# server never parses a model or data file (issue 15). Each takes (model, dataset, **params) and returns plain
# data, numpy arrays and DataFrames, which `encode_view` turns into JSON and `decode_view` back, bit for bit.


def model_facts(model, dataset) -> dict:
    """What the page needs before any explainer: the weights, the task, which data there is."""
    from core.io.model import task_of

    weights = weight_tensors(model.onnx_model)
    return {"weights": weights, "task": task_of(model), "torch": model.torch_module is not None,
            "labels": dataset.has_labels, "synthetic": dataset.synthetic, "eval": len(dataset.eval),
            "train": len(dataset.train), "params": sum(w.size for w in weights)}


def quantization_view(model, dataset, tensor: str, bits: int, symmetric: bool) -> dict:
    """One weight tensor snapped to a `bits` grid: histogram, grid, error per tensor and per channel."""
    info = {w.name: w for w in weight_tensors(model.onnx_model)}.get(tensor)
    if info is None:
        raise BadInputError(f"tensor={tensor!r} is not a weight of this model")
    w = weight_array(model.onnx_model, tensor)
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
    """onnxruntime's calibrators' ranges for every tensor (or one), as `calibration_study`."""
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


EXPLAINERS = {
    "facts": model_facts,
    "quantization": quantization_view,
    "onnxruntime_check": lambda model, dataset, tensor: check_against_onnxruntime(model, dataset, tensor,
                                                                                  per_channel=True),
    "calibration": calibration_view,
    "activations": lambda model, dataset, tensor, samples: activation_values(model, dataset, tensor,
                                                                            samples=samples),
    "pruning": pruning_view,
    "sweep": lambda model, dataset, pattern, epochs, on_point=None: sparsity_sweep(
        model, dataset, pattern=pattern, finetune_epochs=epochs, on_point=on_point),
    "teacher": teacher_view,
    "distill": distill_curves,
    "techniques": lambda model, dataset, amount, width: technique_table(model.onnx_model, amount=amount,
                                                                        width=width),
    "estimate": lambda model, dataset, steps: estimate_breakdown(model.onnx_model, [dict(s) for s in steps]),
    "depthwise": depthwise_view,
}
PROGRESS_EXPLAINERS = ("sweep", "distill")  # these take `on_point`: each row or epoch is sent as it comes


def explain(source: LearnSource, what: str, params: dict, on_point=None, on_loaded=None) -> Any:
    """Load `source` in this process and compute one view: the worker's side of `core.jobs.queue.explain_isolated`
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
