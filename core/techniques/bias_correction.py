"""Empirical bias correction of a static-int8 (QDQ) graph: each quantized Conv / Gemm gets its per-output-channel
mean shift against the float graph, measured on calibration data, added back to its bias (as NNCF's fast bias
correction does; Nagel et al. 2019, section 4.2, do it analytically from BN statistics).

Rounding the weights to int8 shifts each layer's expected output, ``E[W_q x] - E[W x] = (W_q - W) E[x]``; the
shift adds up layer after layer. The layers are corrected one at a time in graph order, each measured with the
layers before it already corrected, so a correction sees the inputs the deployed graph will feed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CORRECTED_OPS = ("Conv", "Gemm")


@dataclass
class BiasCorrectionReport:
    """What `correct_biases` changed: per layer, the mean |shift| of its outputs before correction (float units)."""

    layers: dict = field(default_factory=dict)  # node name -> mean |E[float] - E[int8]| over output channels
    skipped: list = field(default_factory=list)  # quantized layers without a bias it could move

    def to_dict(self) -> dict:
        return {"corrected": len(self.layers), "mean_abs_shift": self.layers, "skipped": self.skipped}


def _session(proto, outputs: list[str]):
    """An onnxruntime session with extra graph outputs and no graph optimization: the QDQ ops run as written
    (dequantize -> float op), which is what the fused int8 kernel computes, with every tensor observable."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    existing = {o.name for o in probe.graph.output}
    for name in outputs:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def channel_means(proto, inputs: dict, tensors: list[str], batch: int = 64, fixed_batch: int | None = None) -> dict:
    """Per-channel (axis 1) means of `tensors` over `inputs`, batch by batch.

    Args:
        proto: the graph to run.
        inputs: name -> array, the first axis the samples.
        tensors: tensor names to observe.
        batch: samples per run.
        fixed_batch: the batch size a graph with a fixed batch axis takes (a short last batch is padded).

    Returns:
        name -> float64 array of length channels.
    """
    session = _session(proto, tensors)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch):
        feed = {k: v[start:start + batch] for k, v in inputs.items()}
        if fixed_batch and len(next(iter(feed.values()))) < fixed_batch:  # a graph that only takes full batches
            feed = {k: np.resize(v, (fixed_batch, *v.shape[1:])) for k, v in feed.items()}
        for name, value in zip(tensors, session.run(tensors, feed)):
            value = np.asarray(value, dtype=np.float64)
            axes = (0,) + tuple(range(2, value.ndim))
            sums[name] = sums.get(name, 0.0) + value.sum(axis=axes)
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: total / max(counts[name], 1) for name, total in sums.items()}


def _quantized_layers(quantized, float_proto) -> list[tuple]:
    """(quantized node, float node) for each Conv / Gemm whose weight the quantizer dequantizes, in graph order."""
    producers = {o: n for n in quantized.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_proto.graph.node if n.name}
    layers = []
    for node in quantized.graph.node:
        if node.op_type not in CORRECTED_OPS or node.name not in float_nodes or len(node.input) < 2:
            continue
        weight_source = producers.get(node.input[1])
        if weight_source is None or weight_source.op_type != "DequantizeLinear":
            continue  # kept in float (excluded)
        layers.append((node, float_nodes[node.name]))
    return layers


def _bias_target(quantized, node):
    """Where the node's bias lives: ('int32', DequantizeLinear node) for a quantized bias, ('float', initializer
    name) for a float one, or None when the node has no constant bias."""
    if len(node.input) < 3 or not node.input[2]:
        return None
    inits = {i.name for i in quantized.graph.initializer}
    if node.input[2] in inits:
        return "float", node.input[2]
    producer = next((n for n in quantized.graph.node if node.input[2] in n.output), None)
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in inits \
            and producer.input[1] in inits:
        return "int32", producer
    return None


def _add_to_bias(quantized, target, delta: np.ndarray) -> None:
    from onnx import numpy_helper

    inits = {i.name: i for i in quantized.graph.initializer}
    kind, where = target
    if kind == "float":
        bias = numpy_helper.to_array(inits[where])
        inits[where].CopyFrom(numpy_helper.from_array((bias + delta).astype(bias.dtype), where))
        return
    # int32 bias = round(float bias / (input scale * weight scale)); shift it by the same amount in its own units
    values = numpy_helper.to_array(inits[where.input[0]]).astype(np.int64)
    scale = numpy_helper.to_array(inits[where.input[1]]).astype(np.float64)
    shifted = values + np.round(delta / scale).astype(np.int64)
    info = np.iinfo(np.int32)
    shifted = np.clip(shifted, info.min, info.max).astype(np.int32)
    inits[where.input[0]].CopyFrom(numpy_helper.from_array(shifted, where.input[0]))


def correct_biases(quantized, float_proto, inputs: dict, *, report=None, should_stop=None,
                   fixed_batch: int | None = None) -> BiasCorrectionReport:
    """Correct every quantized Conv / Gemm bias of `quantized` (in place) against `float_proto` on `inputs`.

    Args:
        quantized: the QDQ model from onnxruntime's ``quantize_static`` (changed in place).
        float_proto: the float model that was quantized (the same node names).
        inputs: calibration inputs (name -> array).
        report: optional ``report(message, fraction)`` progress callback.
        should_stop: optional cancellation check, called between layers.
        fixed_batch: the graph's fixed batch size, if it has one.

    Returns:
        A BiasCorrectionReport.
    """
    result = BiasCorrectionReport()
    layers = _quantized_layers(quantized, float_proto)
    if not layers:
        return result
    float_means = channel_means(float_proto, inputs, [f.output[0] for _, f in layers], fixed_batch=fixed_batch)
    for index, (node, float_node) in enumerate(layers):
        if should_stop is not None:
            should_stop()
        target = _bias_target(quantized, node)
        if target is None:
            result.skipped.append(node.name)
            continue
        if report is not None:
            report(f"bias correction {index + 1}/{len(layers)}: {node.name}", index / len(layers))
        quant_mean = channel_means(quantized, inputs, [node.output[0]], fixed_batch=fixed_batch)[node.output[0]]
        delta = float_means[float_node.output[0]] - quant_mean
        result.layers[node.name] = round(float(np.abs(delta).mean()), 6)
        _add_to_bias(quantized, target, delta)
    return result
