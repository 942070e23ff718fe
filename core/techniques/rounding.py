"""Learned weight rounding, fitted on calibration data: each layer's int8 weights are chosen to reproduce the layer's
float output on the calibration inputs, not rounded one by one to the nearest level.

Rounding to nearest minimises each weight's own error, but a layer's output error is ``dw . x``, and neighbouring
inputs are strongly correlated (image patches, channels): an edge filter whose 27 weights each round by up to half
a step can leak a constant times the local brightness into its output. AdaRound (Nagel et al., ICML 2020) learns,
per weight, whether to round up or down so that ``E[(dw . x)^2] = dw^T H dw`` (H = E[x x^T], the layer input's second
moment) is small. Here that objective is minimised the way GPTQ (Frantar et al., ICLR 2023) does it, in closed form:
weights are quantized one input position at a time, and each rounding error is carried into the weights not yet
quantized through H's inverse. The int8 grid (the per-channel or per-tensor scale onnxruntime chose) is kept.

H is accumulated batch by batch over the float model's activations (`core.techniques.histogram.batches_of`), from at
a bounded number of output positions per layer, so memory and time stay bounded on 240x240 images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.techniques.histogram import batches_of, observer

DAMPING = 0.01  # H + 1% of its mean diagonal: GPTQ's default, keeps the inverse stable on rank-deficient inputs
# Rows (output positions) sampled per layer over the whole calibration set: 8 per column of H, at least 4,096 and
# at most 32,768, so a 1x1 conv over 1,152 channels costs ~12 GFLOP, not the ~200 of every position.
ROWS_PER_COLUMN = 8
MIN_ROWS, MAX_ROWS = 4096, 32768
ROUNDABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class LayerInputs:
    """How a layer reads its input: im2col geometry for a Conv, plain rows for Gemm / MatMul."""

    name: str
    op_type: str
    tensor: str  # the float input tensor
    kernel: tuple = ()
    strides: tuple = ()
    pads: tuple = ()  # ONNX order: begins then ends
    dilations: tuple = ()
    groups: int = 1
    transposed: bool = False  # Gemm with transB=1 (weight stored as (out, in))


@dataclass
class RoundingReport:
    """Per layer: the calibration output error of nearest rounding and of learned rounding (dw^T H dw, summed)."""

    layers: dict = field(default_factory=dict)  # name -> {"nearest": e, "learned": e}

    def to_dict(self) -> dict:
        return {"layers": self.layers}


def _attr(node, name, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def layer_inputs(float_proto, names) -> dict:
    """The LayerInputs of the float graph's Conv / Gemm / MatMul nodes named in `names`."""
    out = {}
    for node in float_proto.graph.node:
        if node.name not in names or node.op_type not in ROUNDABLE_OPS:
            continue
        if node.op_type == "Conv":
            out[node.name] = LayerInputs(node.name, "Conv", node.input[0], kernel=(), strides=tuple(
                _attr(node, "strides", [1, 1])), pads=tuple(_attr(node, "pads", [0, 0, 0, 0])),
                dilations=tuple(_attr(node, "dilations", [1, 1])), groups=int(_attr(node, "group", 1)))
        else:
            out[node.name] = LayerInputs(node.name, node.op_type, node.input[0],
                                         transposed=bool(_attr(node, "transB", 0)) if node.op_type == "Gemm" else False)
    return out


def _patches(value: np.ndarray, spec: LayerInputs, kernel: tuple, rng, keep_rows: int) -> np.ndarray:
    """(rows, channels, k*k) im2col rows of a conv input at `keep_rows` sampled output positions (gathered
    directly, so a 120x120 map is never unfolded whole)."""
    value = np.asarray(value, np.float32)
    if value.ndim == 3:  # 1-D conv: height 1
        value = value[:, :, None, :]
        kernel, strides, dilations = (1, *kernel), (1, *(spec.strides or (1,))), (1, *(spec.dilations or (1,)))
        pads = spec.pads or (0, 0)
        pads = (0, pads[0], 0, pads[1])
    else:
        strides, dilations = spec.strides or (1, 1), spec.dilations or (1, 1)
        pads = spec.pads or (0, 0, 0, 0)
    batch, channels, height, width = value.shape
    padded = np.pad(value, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (height + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    out_w = (width + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    total = batch * out_h * out_w
    rows = np.sort(rng.choice(total, min(keep_rows, total), replace=False))
    b, rest = np.divmod(rows, out_h * out_w)
    oy, ox = np.divmod(rest, out_w)
    ky = oy[:, None, None] * strides[0] + np.arange(kernel[0])[None, :, None] * dilations[0]
    kx = ox[:, None, None] * strides[1] + np.arange(kernel[1])[None, None, :] * dilations[1]
    patches = padded[b[:, None, None], :, ky, kx]  # (rows, kh, kw, channels)
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2).reshape(len(rows), channels, -1))


def input_moments(float_proto, inputs: dict, specs: dict, weights: dict, *, fixed_batch: int | None = None,
                  seed: int = 0, should_stop=None) -> dict:
    """Per layer, H = sum of x x^T over the calibration inputs' sampled positions (per group for grouped convs).

    Args:
        weights: layer name -> float weight (its shape gives the kernel and groups).

    Returns:
        name -> H: (K, K) for Gemm / MatMul / groups-1 Conv (K = C_in * k * k), or (G, K, K) per group.
    """
    tensors = sorted({spec.tensor for spec in specs.values()})
    graph_inputs = {i.name for i in float_proto.graph.input}
    session_tensors = [t for t in tensors if t not in graph_inputs]
    # im2col copies and their products cost several times the activations themselves
    session, session_tensors, per_batch = observer(float_proto, inputs, session_tensors, fixed_batch, copies=4)
    n = len(next(iter(inputs.values())))
    rng = np.random.default_rng(seed)
    moments: dict[str, np.ndarray] = {}
    columns = {name: int(np.prod(weights[name].shape[1:])) if spec.op_type == "Conv" or spec.transposed
               else weights[name].shape[0] for name, spec in specs.items()}
    budget = {name: int(np.clip(ROWS_PER_COLUMN * k, MIN_ROWS, MAX_ROWS)) for name, k in columns.items()}
    for feed, real in batches_of(inputs, per_batch, fixed_batch):
        if should_stop is not None:
            should_stop()
        values = dict(zip(session_tensors, session.run(session_tensors, feed))) if session_tensors else {}
        values.update({k: v for k, v in feed.items() if k in tensors})
        for name, spec in specs.items():
            value = values[spec.tensor][:real]
            weight = weights[name]
            keep = max(1, int(np.ceil(budget[name] * real / n)))
            if spec.op_type == "Conv":
                cols = _patches(value, spec, tuple(weight.shape[2:]), rng, keep)  # (P, C, kk)
                per_group = cols.reshape(len(cols), spec.groups, -1).transpose(1, 0, 2)  # (G, P, C/G * kk)
                h = np.matmul(per_group.transpose(0, 2, 1), per_group).astype(np.float64)
                h = h if spec.groups > 1 else h[0]
            else:
                rows = value.reshape(-1, value.shape[-1]).astype(np.float32)
                if len(rows) > keep:
                    rows = rows[np.sort(rng.choice(len(rows), keep, replace=False))]
                h = (rows.T @ rows).astype(np.float64)
            moments[name] = moments.get(name, 0.0) + h
    return moments


def _quantize_columns(weight: np.ndarray, scale: np.ndarray, hessian: np.ndarray, qmax: int) -> np.ndarray:
    """GPTQ on a (rows, K) weight with one scale per row and a shared (K, K) H: the int levels per weight."""
    rows, k = weight.shape
    h = hessian.copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h += DAMPING * np.mean(np.diag(h)) * np.eye(k)
    try:
        inverse = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1, as GPTQ uses
    except np.linalg.LinAlgError:
        return np.clip(np.round(weight / scale[:, None]), -qmax, qmax)
    w = weight.astype(np.float64).copy()
    w[:, dead] = 0.0
    levels = np.zeros_like(w)
    for j in range(k):
        q = np.clip(np.round(w[:, j] / scale), -qmax, qmax)
        levels[:, j] = q
        error = (w[:, j] - q * scale) / inverse[j, j]
        w[:, j + 1:] -= np.outer(error, inverse[j, j + 1:])
    return levels


def output_error(weight: np.ndarray, quantized: np.ndarray, hessian: np.ndarray) -> float:
    """sum over rows of dw^T H dw: the squared output error over the calibration positions."""
    delta = (quantized - weight).astype(np.float64)
    return float(np.sum((delta @ hessian) * delta))


def learned_levels(weight: np.ndarray, scale: np.ndarray, hessian: np.ndarray, *, axis: int | None, groups: int = 1,
                   qmax: int = 127, transposed: bool = False) -> np.ndarray:
    """The int levels for `weight` (its own layout) on the grid `scale` that make the layer's calibration output
    closest to float (GPTQ order, one pass).

    Args:
        weight: Conv (out, in/groups, k...), Gemm (out, in) when `transposed` else (in, out), MatMul (in, out).
        scale: the per-channel scales along `axis`, or one scale.
        hessian: from `input_moments` ((K, K), or (G, K, K) for grouped convs).
    """
    w = np.asarray(weight, np.float64)
    if w.ndim >= 3 or transposed:  # rows = output channels already
        rows = w.reshape(w.shape[0], -1)
        out_axis = 0
    else:  # (in, out): rows are the columns
        rows = w.T
        out_axis = 1
    scale = np.asarray(scale, np.float64).reshape(-1)
    row_scale = np.broadcast_to(scale, (rows.shape[0],)) if scale.size == 1 or axis == out_axis else None
    if row_scale is None:  # a scale per input channel: no shared row grid; leave nearest rounding
        return np.round(w / scale.reshape([-1 if i == axis else 1 for i in range(w.ndim)]))
    if hessian.ndim == 3:  # grouped conv: each group's output rows see only that group's H
        per_group = rows.shape[0] // groups
        levels = np.concatenate([_quantize_columns(rows[g * per_group:(g + 1) * per_group],
                                                   row_scale[g * per_group:(g + 1) * per_group], hessian[g], qmax)
                                 for g in range(groups)])
    else:
        levels = _quantize_columns(rows, np.asarray(row_scale, np.float64), hessian, qmax)
    return levels.reshape(w.shape) if out_axis == 0 else levels.T.reshape(w.shape)
