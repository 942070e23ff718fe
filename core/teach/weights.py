"""Weight quantization as onnxruntime does it (mirrors onnxruntime.quantization.quant_utils.compute_scale_zp /
quantize_nparray), so the error the Learn page shows is the error onnxruntime's quantizer makes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import BadInputError
from core.spec.recipe import QuantizeConfig
from core.techniques import Candidate, StepContext, apply_step

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


