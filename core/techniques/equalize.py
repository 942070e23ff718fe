"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019) on any ONNX graph: BN folded first, then consecutive conv pairs rescaled per channel.

For a pair ``conv1 -> act -> conv2`` with a positively homogeneous activation, dividing conv1's output channel i
(weights and bias) by s_i and multiplying conv2's input channel i by s_i computes the same function. Choosing
``s_i = sqrt(r1_i / r2_i)`` (r = the channel's largest |weight|) gives both the same range, which is what a
per-tensor int8 scale needs: a depthwise conv's channels otherwise span orders of magnitude, and the small ones
round to a handful of levels.

ReLU is homogeneous (relu(x / s) = relu(x) / s). ReLU6 (``Clip(0, 6)``) is not: its cap moves to 6 / s_i per
channel. Nagel et al. and AIMET replace ReLU6 by ReLU, which changes the fp32 model; here the cap is kept
exactly, as ``Relu`` followed by ``Min`` with a per-channel constant, so equalization is exact in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Sweeps over all pairs until no scale moves by more than this factor; chained pairs (expand -> depthwise ->
# project) share a conv, so one pass does not settle them. Measured on shapes-mobile: ~10 sweeps to 1e-3.
MAX_SWEEPS = 50
CONVERGED = 1e-3
# Scales are kept within [1 / SCALE_LIMIT, SCALE_LIMIT]: a channel whose weights are all ~0 (dead) would
# otherwise get an enormous scale and push its partner's range past float precision.
SCALE_LIMIT = 1e4
BN_EPSILON_DEFAULT = 1e-5


@dataclass
class EqualizationReport:
    """What `equalize` did: folded BNs, equalized pairs, and per-channel range spread before and after."""

    folded_batch_norms: int = 0
    pairs: list = field(default_factory=list)  # [(conv1 name, activation, conv2 name)]
    sweeps: int = 0
    # per conv name: ratio of the largest to the smallest per-output-channel max |w| (what per-tensor int8 sees)
    spread_before: dict = field(default_factory=dict)
    spread_after: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"folded_batch_norms": self.folded_batch_norms, "pairs": [list(p) for p in self.pairs],
                "sweeps": self.sweeps, "spread_before": self.spread_before, "spread_after": self.spread_after}


def _consumers(graph) -> dict:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_init(inits: dict, graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(value.astype(numpy_helper.to_array(inits[name]).dtype), name)
    inits[name].CopyFrom(tensor)


def _array(inits: dict, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]).astype(np.float64)


def _private_init(proto, inits: dict, name: str, readers: dict) -> str:
    """`name` itself when only one node reads it, else a copy only the caller will read (shared weights)."""
    from onnx import numpy_helper

    if len(readers.get(name, [])) <= 1:
        return name
    copy_name = f"{name}_equalized_{len(proto.graph.initializer)}"
    proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]), copy_name))
    inits[copy_name] = proto.graph.initializer[-1]
    return copy_name


def fold_batch_norms(proto) -> int:
    """Fold every inference-mode ``BatchNormalization`` that alone reads a Conv's output into that Conv.

    Exact up to float rounding: ``BN(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` per output
    channel and ``b' = (b - m) * g / sqrt(v + eps) + beta``. Works in place; returns how many were folded.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded = 0
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        readers = _consumers(graph)
        producer = next((n for n in graph.node if bn.input[0] in n.output), None)
        if (producer is None or producer.op_type != "Conv" or len(bn.output) != 1 or bn.input[0] in outputs
                or len(readers.get(bn.input[0], [])) != 1 or producer.input[1] not in inits
                or not all(i in inits for i in bn.input[1:5])
                or (len(producer.input) > 2 and producer.input[2] and producer.input[2] not in inits)
                or _attr(bn, "training_mode", 0)):
            continue
        gamma, beta, mean, var = (_array(inits, i) for i in bn.input[1:5])
        factor = gamma / np.sqrt(var + float(_attr(bn, "epsilon", BN_EPSILON_DEFAULT)))
        weight_name = _private_init(proto, inits, producer.input[1], readers)
        weight = _array(inits, weight_name)
        has_bias = len(producer.input) > 2 and producer.input[2]
        bias = _array(inits, producer.input[2]) if has_bias else np.zeros(weight.shape[0])
        new_weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        new_bias = (bias - mean) * factor + beta
        _set_init(inits, graph, weight_name, new_weight)
        producer.input[1] = weight_name
        bias_name = f"{producer.name or producer.output[0]}_folded_bias"
        dtype = numpy_helper.to_array(inits[weight_name]).dtype
        graph.initializer.append(numpy_helper.from_array(new_bias.astype(dtype), bias_name))
        inits[bias_name] = graph.initializer[-1]
        if has_bias:
            producer.input[2] = bias_name
        else:
            producer.input.append(bias_name)
        producer.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    if folded:
        used = {i for n in graph.node for i in n.input}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return folded


@dataclass
class _Pair:
    conv1: object
    activation: object | None  # Relu / Clip node, or None (conv1 feeds conv2 directly)
    conv2: object
    relu6_cap: float | None  # the Clip's max when the activation is Clip(0, max)
    scale: np.ndarray | None = None  # cumulative per-channel scale s (conv1 / s, conv2 * s)


def _constant(name: str, inits: dict, graph) -> np.ndarray | None:
    """The value of an initializer or of a ``Constant`` node's output; None for anything computed."""
    from onnx import numpy_helper

    if name in inits:
        return _array(inits, name)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = _attr(node, "value")
            return None if value is None else numpy_helper.to_array(value).astype(np.float64)
    return None


def _clip_bounds(node, inits: dict, graph) -> tuple[float | None, float | None] | None:
    """(min, max) of a Clip node with constant bounds (None = unbounded), or None when they are not constant."""
    low, high = _attr(node, "min"), _attr(node, "max")  # opset < 11
    for position in (1, 2):
        if len(node.input) > position and node.input[position]:
            constant = _constant(node.input[position], inits, graph)
            if constant is None or constant.size != 1:
                return None
            value = float(constant.reshape(-1)[0])
            if position == 1:
                low = value
            else:
                high = value
    return low, high


def _conv_weight_ok(node, inits: dict) -> bool:
    return (node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in inits))


def find_pairs(proto) -> list[_Pair]:
    """Every ``Conv -> [Relu | Clip(0, c)] -> Conv`` chain equalization may rescale exactly.

    conv1's output (and the activation's) must have exactly one reader and not be a graph output; conv2 must be
    a plain conv (groups 1) or depthwise (one input channel per group), so input channel i maps to known weights.
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    readers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    pairs = []
    for conv1 in graph.node:
        if not _conv_weight_ok(conv1, inits):
            continue
        out = conv1.output[0]
        if out in outputs or len(readers.get(out, [])) != 1:
            continue
        nxt = readers[out][0]
        activation, cap = None, None
        if nxt.op_type in ("Relu", "Clip"):
            if nxt.op_type == "Clip":
                bounds = _clip_bounds(nxt, inits, graph)
                if bounds is None or bounds[0] is None or bounds[0] != 0.0:
                    continue
                cap = bounds[1]
            activation = nxt
            out = nxt.output[0]
            if out in outputs or len(readers.get(out, [])) != 1:
                continue
            nxt = readers[out][0]
        if not _conv_weight_ok(nxt, inits) or nxt.input[0] != out:
            continue
        weight1 = numpy_shape(inits[conv1.input[1]])
        weight2 = numpy_shape(inits[nxt.input[1]])
        groups2 = int(_attr(nxt, "group", 1))
        channels = weight1[0]
        if groups2 == 1 and weight2[1] == channels:
            pass
        elif groups2 == channels and weight2[1] == 1 and weight2[0] == channels:
            pass  # depthwise: input channel i is output channel i's only input
        else:
            continue
        pairs.append(_Pair(conv1, activation, nxt, cap))
    return pairs


def numpy_shape(tensor) -> tuple:
    """An initializer's shape, without decoding its data."""
    return tuple(int(d) for d in tensor.dims)


def _input_channel_ranges(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    """max |w| over everything that multiplies input channel i."""
    if depthwise:
        return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    return np.abs(weight).swapaxes(0, 1).reshape(weight.shape[1], -1).max(axis=1)


def output_channel_ranges(weight: np.ndarray) -> np.ndarray:
    """max |w| of each output channel of a conv / gemm weight (axis 0)."""
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def range_spread(weight: np.ndarray) -> float:
    """Largest over smallest per-output-channel max |w|: how many times finer a per-tensor int8 scale is than
    the smallest channel needs (1 = all channels alike). Channels that are exactly 0 are left out."""
    ranges = output_channel_ranges(np.asarray(weight, dtype=np.float64))
    ranges = ranges[ranges > 0]
    return float(ranges.max() / ranges.min()) if len(ranges) else 1.0


def conv_spreads(proto) -> dict:
    """Per Conv node name: `range_spread` of its weight."""
    inits = {i.name: i for i in proto.graph.initializer}
    return {n.name or n.output[0]: round(range_spread(_array(inits, n.input[1])), 3)
            for n in proto.graph.node if _conv_weight_ok(n, inits)}


def equalize(proto, *, fold: bool = True) -> EqualizationReport:
    """Fold BNs, then equalize every pair `find_pairs` finds; works in place and is exact in fp32.

    Args:
        proto: an ``onnx.ModelProto`` (changed in place).
        fold: fold BatchNormalization into the Conv before it first (a BN between the pair blocks it).

    Returns:
        An EqualizationReport (folded BNs, pairs, sweeps, per-conv range spread before and after).
    """
    from onnx import helper, numpy_helper

    report = EqualizationReport()
    if fold:
        report.folded_batch_norms = fold_batch_norms(proto)
    report.spread_before = conv_spreads(proto)
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    pairs = find_pairs(proto)
    if not pairs:
        report.spread_after = dict(report.spread_before)
        return report
    readers = _consumers(graph)
    weights: dict[str, np.ndarray] = {}
    biases: dict[str, np.ndarray] = {}
    for pair in pairs:  # private copies of shared weights, then work on float64 arrays
        for conv in (pair.conv1, pair.conv2):
            key = conv.name or conv.output[0]
            if key in weights:
                continue
            conv.input[1] = _private_init(proto, inits, conv.input[1], readers)
            weights[key] = _array(inits, conv.input[1])
            if len(conv.input) > 2 and conv.input[2]:
                conv.input[2] = _private_init(proto, inits, conv.input[2], readers)
                biases[key] = _array(inits, conv.input[2])
        pair.scale = np.ones(weights[pair.conv1.name or pair.conv1.output[0]].shape[0])

    for sweep in range(1, MAX_SWEEPS + 1):
        largest_move = 0.0
        for pair in pairs:
            k1, k2 = pair.conv1.name or pair.conv1.output[0], pair.conv2.name or pair.conv2.output[0]
            depthwise = int(_attr(pair.conv2, "group", 1)) > 1
            r1 = output_channel_ranges(weights[k1])
            r2 = _input_channel_ranges(weights[k2], depthwise)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.sqrt(r1 / r2)
            s = np.where(np.isfinite(s) & (r1 > 0) & (r2 > 0), s, 1.0)
            s = np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)
            s = np.clip(pair.scale * s, 1.0 / SCALE_LIMIT, SCALE_LIMIT) / pair.scale  # cumulative limit
            shape1 = (-1,) + (1,) * (weights[k1].ndim - 1)
            weights[k1] = weights[k1] / s.reshape(shape1)
            if k1 in biases:
                biases[k1] = biases[k1] / s
            if depthwise:
                weights[k2] = weights[k2] * s.reshape((-1,) + (1,) * (weights[k2].ndim - 1))
            else:
                weights[k2] = weights[k2] * s.reshape((1, -1) + (1,) * (weights[k2].ndim - 2))
            pair.scale = pair.scale * s
            largest_move = max(largest_move, float(np.abs(np.log(s)).max()))
        report.sweeps = sweep
        if largest_move < CONVERGED:
            break

    replacements: dict[str, list] = {}  # Clip output -> the nodes that replace that Clip
    for pair in pairs:
        for conv in (pair.conv1, pair.conv2):
            key = conv.name or conv.output[0]
            _set_init(inits, graph, conv.input[1], weights[key])
            if key in biases:
                _set_init(inits, graph, conv.input[2], biases[key])
        if pair.activation is not None and pair.relu6_cap is not None:
            replacements[pair.activation.output[0]] = _per_channel_cap(proto, pair, inits, helper, numpy_helper)
        report.pairs.append((pair.conv1.name or pair.conv1.output[0],
                             pair.activation.op_type if pair.activation is not None else "",
                             pair.conv2.name or pair.conv2.output[0]))
    if replacements:
        nodes = []
        for node in graph.node:
            if node.op_type == "Clip" and node.output[0] in replacements:
                nodes.extend(replacements[node.output[0]])
            else:
                nodes.append(node)
        nodes = [type(n).FromString(n.SerializeToString()) for n in nodes]  # detach before clearing the list
        read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in read]  # the Clips' bounds
        del graph.node[:]
        graph.node.extend(nodes)
    report.spread_after = conv_spreads(proto)
    return report


def _per_channel_cap(proto, pair: _Pair, inits: dict, helper, numpy_helper) -> list:
    """The nodes that replace ``Clip(0, c)`` after a rescaled conv: ``Relu`` then ``Min(c / s_i)``, the same
    values exactly."""
    clip = pair.activation
    weight = numpy_helper.to_array(inits[pair.conv1.input[1]])
    caps = (pair.relu6_cap / pair.scale).astype(weight.dtype).reshape(-1, *([1] * (weight.ndim - 2)))
    name = clip.name or clip.output[0]
    cap_name = f"{name}_channel_cap"
    proto.graph.initializer.append(numpy_helper.from_array(caps, cap_name))
    relu_out = f"{clip.output[0]}_relu"
    return [helper.make_node("Relu", [clip.input[0]], [relu_out], name=f"{name}_relu"),
            helper.make_node("Min", [relu_out, cap_name], [clip.output[0]], name=f"{name}_cap")]
