"""The Learn explainer of depthwise convolutions under per-tensor int8: the spread of their per-channel weight
ranges, on the model's real weights, before and after cross-layer equalization (core.techniques.equalize).

A depthwise 3x3 conv has 9 weights per channel and, after BN is folded in, each channel's are scaled by that
channel's BN factor, so channel ranges can differ by orders of magnitude. One int8 scale per tensor must cover the
largest, so the smallest channel is left with a handful of the 255 levels. Equalization moves the scale into the
neighbouring convs until every channel's range is alike. How much a spread costs is measured, not assumed: a
spread of a few times (the small shapes-mobile sample) costs next to nothing, one of hundreds collapses per-tensor
int8 (`make bench`, BENCHMARKS.md).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from onnx import helper, numpy_helper

from core.techniques.equalize import equalize, fold_batch_norms, output_channel_ranges, range_spread

INT8_LEVELS = 127  # symmetric int8 weight levels on one side of zero (onnxruntime's -127..127)


def conv_kind(node, weight: np.ndarray) -> str:
    """depthwise (one input channel per group), pointwise (1x1) or regular."""
    group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    if group > 1 and weight.shape[1] == 1:
        return "depthwise"
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        return "pointwise"
    return "regular"


def _convs(proto) -> dict:
    inits = {i.name: i for i in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            out[node.name or node.output[0]] = (node, numpy_helper.to_array(inits[node.input[1]]).astype(np.float64))
    return out


def depthwise_view(model, dataset=None) -> dict:
    """Per conv layer, the per-channel weight range spread before and after equalization.

    Args:
        model: a core.io.model.Model (its ONNX graph is copied, never changed).
        dataset: unused (the explainer is data-free, like equalization itself).

    Returns:
        ``{"layers": DataFrame(layer, kind, channels, spread_before, spread_after, smallest_levels_before,
        smallest_levels_after), "worst": layer name, "ranges_before": array, "ranges_after": array, "pairs": int,
        "depthwise": int}``; ``smallest_levels_*`` is how many of the 127 positive int8 levels the smallest
        channel's weights span under one scale per tensor.
    """
    before_proto = copy.deepcopy(model.onnx_model)
    fold_batch_norms(before_proto)  # compare like with like: the folded weights are what gets quantized
    after_proto = copy.deepcopy(before_proto)
    report = equalize(after_proto)
    before, after = _convs(before_proto), _convs(after_proto)
    rows = []
    for name, (node, weight) in before.items():
        kind = conv_kind(node, weight)
        new_weight = after[name][1] if name in after else weight
        ranges, new_ranges = output_channel_ranges(weight), output_channel_ranges(new_weight)
        live, new_live = ranges[ranges > 0], new_ranges[new_ranges > 0]
        rows.append({"layer": name, "kind": kind, "channels": int(weight.shape[0]),
                     "spread_before": range_spread(weight), "spread_after": range_spread(new_weight),
                     "smallest_levels_before": float(INT8_LEVELS * live.min() / live.max()) if len(live) else 0.0,
                     "smallest_levels_after": float(INT8_LEVELS * new_live.min() / new_live.max())
                     if len(new_live) else 0.0})
    layers = pd.DataFrame(rows, columns=["layer", "kind", "channels", "spread_before", "spread_after",
                                         "smallest_levels_before", "smallest_levels_after"])
    if layers.empty:
        return {"layers": layers, "worst": None, "ranges_before": np.zeros(0), "ranges_after": np.zeros(0),
                "pairs": 0, "depthwise": 0}
    depthwise = layers[layers["kind"] == "depthwise"]
    pool = depthwise if not depthwise.empty else layers
    worst = str(pool.loc[pool["spread_before"].idxmax(), "layer"])
    return {"layers": layers, "worst": worst,
            "ranges_before": output_channel_ranges(before[worst][1]),
            "ranges_after": output_channel_ranges(after[worst][1]) if worst in after else np.zeros(0),
            "pairs": len(report.pairs), "depthwise": int(len(depthwise))}
