"""SmoothQuant (Xiao et al., "SmoothQuant", ICML 2023) on a QDQ graph: for a MatMul input whose channels carry
outliers, ``x @ W = (x / s) @ (s W)`` with a per-input-channel ``s = max|x_k|^a / max|W_k|^(1 - a)`` (a = 0.5):
the activation's int8 range shrinks to what its ordinary channels need, and the weights, quantized per output
channel, take the outliers' scale, which int8 weights absorb far better than activations.

``x / s`` is one float ``Mul`` by a constant in front of the input's QuantizeLinear (an elementwise op beside the
MatMuls it feeds: MiniLM's 384 channels x 128 tokens against a 384 x 384 matrix product). A LayerNorm before the
MatMuls cannot take it in a post-LN transformer (BERT, MiniLM): its output also feeds the residual sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.5  # the paper's default migration strength; 0.5 suited BERT-class encoders there
SCALE_LIMIT = 1e4


def smoothing_scales(activation_peak: np.ndarray, weights: list, alpha: float = ALPHA) -> np.ndarray:
    """s per input channel from the activation's per-channel max |x| and the readers' weights (K, N) (max over
    every reader's row k)."""
    peak_x = np.asarray(activation_peak, np.float64).reshape(-1)
    if not weights:
        return np.ones_like(peak_x)
    peak_w = np.max([np.abs(np.asarray(w, np.float64)).max(axis=1) for w in weights], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = peak_x ** alpha / peak_w ** (1 - alpha)
    scale = np.where(np.isfinite(scale) & (peak_x > 0) & (peak_w > 0), scale, 1.0)
    return np.clip(scale, 1.0 / SCALE_LIMIT, SCALE_LIMIT)


@dataclass
class SmoothGroup:
    """One quantized activation and the MatMuls that read it through one Quantize / Dequantize pair."""

    tensor: str
    matmuls: list = field(default_factory=list)

    def apply(self, graph, scale: np.ndarray, float_weights: dict, low: np.ndarray, high: np.ndarray) -> bool:
        """Smooth this input in `graph` (a QdqGraph, changed in place): weights s W requantized, the activation's
        range that of x / s, a Mul by 1 / s in front of its QuantizeLinear. False when it does not apply."""
        from onnx import helper, numpy_helper

        layers = [graph.layers.get(name) for name in self.matmuls]
        if any(layer is None or name not in float_weights for layer, name in zip(layers, self.matmuls)):
            return False
        for layer, name in zip(layers, self.matmuls):
            weight = float_weights[name][0]
            if weight.ndim != 2 or weight.shape[0] != len(scale):
                return False
            graph.set_weight(layer, weight * scale[:, None])
        graph.set_activation_range(self.tensor, float(np.min(low / scale)), float(np.max(high / scale)))
        quantize = next(n for n in graph.proto.graph.node if n.op_type == "QuantizeLinear"
                        and n.input[0] == self.tensor)
        inverse = f"{self.tensor}_smooth_inverse"
        smoothed = f"{self.tensor}_smoothed"
        graph.proto.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        nodes = list(graph.proto.graph.node)
        position = nodes.index(quantize)
        graph.proto.graph.node.insert(position, helper.make_node("Mul", [self.tensor, inverse], [smoothed],
                                                                 name=f"{self.tensor}_smooth"))
        quantize.input[0] = smoothed
        return True

    def commit(self, float_weights: dict, scale: np.ndarray) -> None:
        """Record the smoothed float weights (later steps, learned rounding, start from them)."""
        for name in self.matmuls:
            weight, bias = float_weights[name]
            float_weights[name] = (weight * scale[:, None], bias)


def smooth_groups(float_proto, graph) -> list:
    """The activations SmoothQuant can smooth in `graph` (a QdqGraph): each quantized once, read after its
    DequantizeLinear only by quantized MatMuls with constant (K, N) weights."""
    by_tensor: dict[str, list] = {}
    for name, layer in graph.layers.items():
        if layer.op_type != "MatMul" or layer.activation is None or layer.axis not in (1, None):
            continue
        by_tensor.setdefault(layer.activation, []).append(name)
    groups = []
    for tensor, names in by_tensor.items():
        quantizers = [n for n in graph.proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor]
        if len(quantizers) != 1:
            continue
        dequantizers = [n for n in graph.readers.get(quantizers[0].output[0], []) if n.op_type == "DequantizeLinear"]
        readers = [r for dq in dequantizers for r in graph.readers.get(dq.output[0], [])]
        if len(dequantizers) != len(graph.readers.get(quantizers[0].output[0], [])) or \
                any(r.op_type != "MatMul" or (r.name or r.output[0]) not in names for r in readers):
            continue
        groups.append(SmoothGroup(tensor, sorted(names)))
    return groups
