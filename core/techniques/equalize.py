"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019) on any ONNX graph: BN and zero Pads folded first, then consecutive conv pairs rescaled per
channel.

For a pair ``conv1 -> act -> conv2`` with a positively homogeneous activation, dividing conv1's output channel i
(weights and bias) by s_i and multiplying conv2's input channel i by s_i computes the same function. Choosing
``s_i = sqrt(r1_i / r2_i)`` (r = the channel's largest |weight|) gives both the same range, which is what a
per-tensor int8 scale needs: a depthwise conv's channels otherwise span orders of magnitude, and the small ones
round to a handful of levels.

ReLU is homogeneous (relu(x / s) = relu(x) / s). ReLU6 (``Clip(0, 6)``) is not: its cap moves to 6 / s_i per
channel, and a per-channel cap has no place in a per-tensor int8 graph (the old ``Relu`` + ``Min`` chain ran in
float between Quantize / Dequantize pairs and made int8 slower than fp32). Two routes, neither adds a node:

- with calibration data (`channel_max`: conv1's largest output per channel), the cap-aware route keeps
  ``Clip(0, 6)`` and scales a channel only where calibration shows the cap never binds, and only so far that the
  channel still stays under 6 (``s_i >= max_i / 6``); a channel that reaches 6 keeps ``s_i = 1``. The graph is
  exact on every calibration input;
- without data, AIMET's route: ``Clip(0, 6)`` becomes ``Relu`` (the fp32 model changes where the cap bound; the
  quantize step measures that change and reports it).

An equalized graph can be equalized again (its pairs are still ``Conv -> Relu | Clip -> Conv``; the scales come
out ~1); a graph whose convs read no float weights (already quantized) has no pairs, and the report says why.
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
    """What `equalize` did: folded BNs and Pads, equalized pairs, and per-channel range spread before and after."""

    folded_batch_norms: int = 0
    folded_pads: int = 0
    pairs: list = field(default_factory=list)  # [(conv1 name, activation, conv2 name)]
    sweeps: int = 0
    # per conv name: ratio of the largest to the smallest per-output-channel max |w| (what per-tensor int8 sees)
    spread_before: dict = field(default_factory=dict)
    spread_after: dict = field(default_factory=dict)
    relu6_to_relu: list = field(default_factory=list)  # conv1 names whose Clip(0, 6) became Relu (no data)
    cap_bound_channels: int = 0  # channels left unscaled because calibration saw them reach the ReLU6 cap
    reason: str = ""  # why nothing was equalized, when nothing was
    # per pair (conv1 name, conv2 name): the tensors from conv1 to conv2 and the per-channel scale s (not in
    # to_dict)
    scales: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"folded_batch_norms": self.folded_batch_norms, "folded_pads": self.folded_pads,
                "pairs": [list(p) for p in self.pairs], "sweeps": self.sweeps, "spread_before": self.spread_before,
                "spread_after": self.spread_after, "relu6_to_relu": list(self.relu6_to_relu),
                "cap_bound_channels": self.cap_bound_channels, "reason": self.reason}


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


def fold_pads(proto) -> int:
    """Fold every zero ``Pad`` that only Convs read into those Convs' own ``pads`` (exact; in place).

    TF-style "same" padding exports as ``Pad -> Conv`` (EfficientNet-Lite's static padding, most converted TFLite
    nets); the Pad between an activation and a conv hides the pair from equalization, and onnxruntime fuses it
    into the Conv at load time anyway. Only constant-mode pads of value 0 on the spatial axes are folded.

    Returns:
        How many Pad nodes were folded away.
    """
    from onnx import helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    readers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = []
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        mode = _attr(pad, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant" or pad.output[0] in outputs:
            continue
        pads = _attr(pad, "pads")  # opset < 11: an attribute; later: the second input
        if pads is None:
            if len(pad.input) < 2 or not pad.input[1]:
                continue
            value = _constant(pad.input[1], inits, graph)
            if value is None:
                continue
            pads = [int(v) for v in value.reshape(-1)]
        fill = _attr(pad, "value", 0.0)
        if len(pad.input) > 2 and pad.input[2]:
            constant = _constant(pad.input[2], inits, graph)
            if constant is None or constant.size != 1:
                continue
            fill = float(constant.reshape(-1)[0])
        if len(pad.input) > 3 and pad.input[3]:  # opset 18 axes: only the plain form is folded
            continue
        rank = len(pads) // 2
        convs = readers.get(pad.output[0], [])
        if (fill != 0.0 or rank < 3 or any(p < 0 for p in pads) or any(pads[i] or pads[rank + i] for i in (0, 1))
                or not convs or any(c.op_type != "Conv" or c.input[0] != pad.output[0] for c in convs)):
            continue
        auto = _attr(convs[0], "auto_pad", b"NOTSET")
        if any((_attr(c, "auto_pad", b"NOTSET") or b"NOTSET") not in (b"NOTSET", "NOTSET") for c in convs) or \
                auto is None:
            continue
        spatial_begin, spatial_end = list(pads[2:rank]), list(pads[rank + 2:])
        for conv in convs:
            old = list(_attr(conv, "pads", [0] * (2 * (rank - 2))))
            new = [a + b for a, b in zip(old, spatial_begin + spatial_end)]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend(kept + [helper.make_attribute("pads", new)])
            conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    if folded:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        alive = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in read]
        del graph.node[:]
        graph.node.extend(alive)
        keep = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return len(folded)


@dataclass
class _Pair:
    conv1: object
    activation: object | None  # Relu / Clip node, or None (conv1 feeds conv2 directly)
    conv2: object
    relu6_cap: float | None  # the Clip's max when the activation is Clip(0, max)
    scale: np.ndarray | None = None  # cumulative per-channel scale s (conv1 / s, conv2 * s)
    chain: list = field(default_factory=list)  # the tensors from conv1's output to conv2's input


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


# Per-channel pooling between a pair keeps it exact: max(x / s) = max(x) / s and mean(x / s) = mean(x) / s, s > 0.
POOLS = ("MaxPool", "AveragePool")


def find_pairs(proto) -> list[_Pair]:
    """Every ``Conv -> [Relu | Clip(0, c)] -> [MaxPool | AveragePool] -> Conv`` chain equalization may rescale
    exactly.

    Every tensor between the convs must have exactly one reader and not be a graph output; conv2 must be a plain
    conv (groups 1) or depthwise (one input channel per group), so input channel i maps to known weights.
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    readers = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def single_reader(tensor: str):
        return readers[tensor][0] if tensor not in outputs and len(readers.get(tensor, [])) == 1 else None

    pairs = []
    for conv1 in graph.node:
        if not _conv_weight_ok(conv1, inits):
            continue
        out = conv1.output[0]
        chain = [out]
        nxt = single_reader(out)
        activation, cap = None, None
        if nxt is not None and nxt.op_type in ("Relu", "Clip"):
            if nxt.op_type == "Clip":
                bounds = _clip_bounds(nxt, inits, graph)
                if bounds is None or bounds[0] is None or bounds[0] != 0.0:
                    continue
                cap = bounds[1]
            activation = nxt
            out = nxt.output[0]
            chain.append(out)
            nxt = single_reader(out)
        if nxt is not None and nxt.op_type in POOLS and len(nxt.output) == 1:
            out = nxt.output[0]
            chain.append(out)
            nxt = single_reader(out)
        if nxt is None or not _conv_weight_ok(nxt, inits) or nxt.input[0] != out:
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
        pairs.append(_Pair(conv1, activation, nxt, cap, chain=chain))
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


def _why_no_pairs(proto) -> str:
    inits = {i.name for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if not convs:
        return "the graph has no Conv layers"
    if not any(len(n.input) > 1 and n.input[1] in inits for n in convs):
        return ("no Conv reads float weights (the graph is already quantized: its weights come out of "
                "DequantizeLinear); equalize the float model instead")
    return ("no Conv feeds another Conv through nothing but Relu / Clip(0, c) / a zero Pad with a single reader "
            "(residual branches, grouped convs that are not depthwise and other ops in between block a pair)")


def equalize(proto, *, fold: bool = True, channel_max: dict | None = None) -> EqualizationReport:
    """Fold BNs and zero Pads, then equalize every pair `find_pairs` finds; works in place.

    Args:
        proto: an ``onnx.ModelProto`` (changed in place).
        fold: fold BatchNormalization (and zero Pads) into the Conv before them first (they block pairs).
        channel_max: conv1 name -> its largest output per channel on calibration data. With it, ReLU6 pairs take
            the cap-aware route (Clip kept, exact on the calibration data); without it, AIMET's (Clip -> Relu).

    Returns:
        An EqualizationReport (folds, pairs, sweeps, per-conv range spread before and after, per-pair scales).
    """
    report = EqualizationReport()
    if fold:
        report.folded_batch_norms = fold_batch_norms(proto)
        report.folded_pads = fold_pads(proto)
    report.spread_before = conv_spreads(proto)
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    pairs = find_pairs(proto)
    if not pairs:
        report.spread_after = dict(report.spread_before)
        report.reason = _why_no_pairs(proto)
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
    low, high = _scale_bounds(pairs, channel_max or {})
    report.cap_bound_channels = int(sum(((lo == 1.0) & (hi == 1.0)).sum() for lo, hi in zip(low, high)))

    for sweep in range(1, MAX_SWEEPS + 1):
        largest_move = 0.0
        for index, pair in enumerate(pairs):
            k1, k2 = pair.conv1.name or pair.conv1.output[0], pair.conv2.name or pair.conv2.output[0]
            depthwise = int(_attr(pair.conv2, "group", 1)) > 1
            r1 = output_channel_ranges(weights[k1])
            r2 = _input_channel_ranges(weights[k2], depthwise)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.sqrt(r1 / r2)
            s = np.where(np.isfinite(s) & (r1 > 0) & (r2 > 0), s, 1.0)
            s = np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)
            s = np.clip(pair.scale * s, low[index], high[index]) / pair.scale  # cumulative limits (caps, range)
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

    relu_for: set[str] = set()  # Clip outputs that become Relu (no calibration data: AIMET's route)
    for pair in pairs:
        k1, k2 = pair.conv1.name or pair.conv1.output[0], pair.conv2.name or pair.conv2.output[0]
        for conv in (pair.conv1, pair.conv2):
            key = conv.name or conv.output[0]
            _set_init(inits, graph, conv.input[1], weights[key])
            if key in biases:
                _set_init(inits, graph, conv.input[2], biases[key])
        if pair.activation is not None and pair.relu6_cap is not None and k1 not in (channel_max or {}) \
                and not np.allclose(pair.scale, 1.0):
            relu_for.add(pair.activation.output[0])
            report.relu6_to_relu.append(k1)
        report.pairs.append((k1, pair.activation.op_type if pair.activation is not None else "", k2))
        report.scales[(k1, k2)] = (tuple(pair.chain), pair.scale.copy())
    if relu_for:
        from onnx import helper

        nodes = []
        for node in graph.node:
            if node.op_type == "Clip" and node.output[0] in relu_for:
                nodes.append(helper.make_node("Relu", [node.input[0]], [node.output[0]],
                                              name=node.name or node.output[0]))
            else:
                nodes.append(node)
        nodes = [type(n).FromString(n.SerializeToString()) for n in nodes]  # detach before clearing the list
        read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in read]  # the Clips' bounds
        del graph.node[:]
        graph.node.extend(nodes)
        keep = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    report.spread_after = conv_spreads(proto)
    return report


def _scale_bounds(pairs: list, channel_max: dict) -> tuple[list, list]:
    """Per pair, the lowest and highest cumulative scale each channel may take: [1/SCALE_LIMIT, SCALE_LIMIT], and
    for a ReLU6 pair with calibration maxima, s = 1 where the channel reaches the cap and s >= max / cap elsewhere
    (the channel, divided by s, stays under the cap, so Clip(0, cap) still computes ReLU6 exactly)."""
    low, high = [], []
    for pair in pairs:
        channels = len(pair.scale)
        lo, hi = np.full(channels, 1.0 / SCALE_LIMIT), np.full(channels, SCALE_LIMIT)
        name = pair.conv1.name or pair.conv1.output[0]
        if pair.relu6_cap is not None and name in channel_max:
            peak = np.asarray(channel_max[name], np.float64).reshape(-1)
            cap = float(pair.relu6_cap)
            binds = peak >= cap * (1 - 1e-6)
            lo = np.maximum(lo, np.where(binds, 1.0, np.maximum(peak, 0.0) / cap))
            hi = np.where(binds, 1.0, hi)
        low.append(lo)
        high.append(hi)
    return low, high
