"""Editing a static-int8 (QDQ) graph in place: its quantized layers, their int8 weights and int32 biases, and each
activation's scale and zero point, always kept consistent with each other.

onnxruntime's QDQ format stores, for a Conv / Gemm / MatMul ``y = W x + b``: ``x`` through QuantizeLinear ->
DequantizeLinear (uint8, scale s_x, zero point z_x), ``W`` as int8 with a symmetric scale per output channel (or one
per tensor) and ``b`` as int32 with scale ``s_x * s_w``. When it loads the graph, onnxruntime fuses these into
QLinearConv / QGemm, which take the bias as int32 in exactly those units, so a scale that changes must take the
int32 bias with it. Every recovery step (equalization, weight scales, bias correction, per-tensor calibration,
SmoothQuant) edits the graph through here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUANTIZED_LAYER_OPS = ("Conv", "Gemm", "MatMul")
INT8_MAX = 127  # onnxruntime's symmetric int8 weights use -127..127


@dataclass
class QuantizedLayer:
    """One quantized Conv / Gemm / MatMul of a QDQ graph and the initializers its fused kernel reads."""

    name: str
    op_type: str
    node: object  # the NodeProto
    activation: str | None  # the float tensor quantized into the layer's input (None: the input is not QDQ)
    weight: str  # int8 weight initializer
    weight_scale: str
    weight_zero: str
    axis: int | None  # the weight's per-channel axis (None: one scale for the tensor)
    bias: str | None = None  # int32 bias initializer
    bias_scale: str | None = None
    bias_zero: str | None = None


class QdqGraph:
    """A QDQ ModelProto with its initializers by name, read and written as numpy arrays (the proto is changed in
    place), and its quantized layers."""

    def __init__(self, proto):
        from onnx import numpy_helper

        self.proto = proto
        self._helper = numpy_helper
        self.journal: dict | None = None  # name -> the initializer before this trial's first change
        self.inits = {i.name: i for i in proto.graph.initializer}
        self.producers = {o: n for n in proto.graph.node for o in n.output}
        self.readers: dict[str, list] = {}
        for node in proto.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.layers = self._find_layers()
        # activation tensor -> (scale, zero point) of its QuantizeLinear
        self.activations = {}
        for node in proto.graph.node:
            if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[0] not in self.inits \
                    and node.input[1] in self.inits and node.input[2] in self.inits:
                self.activations[node.input[0]] = (node.input[1], node.input[2])

    def get(self, name: str) -> np.ndarray:
        return self._helper.to_array(self.inits[name])

    def set(self, name: str, value: np.ndarray) -> None:
        old = self.inits[name]
        if self.journal is not None and name not in self.journal:
            saved = type(old)()
            saved.CopyFrom(old)
            self.journal[name] = saved
        self.inits[name].CopyFrom(self._helper.from_array(np.asarray(value).astype(
            self._helper.to_array(old).dtype).reshape(tuple(old.dims)), name))

    def begin(self) -> None:
        """Start a trial: every initializer `set` changes from now on can be put back by `rollback`."""
        self.journal = {}

    def rollback(self) -> None:
        """Undo the trial's changes (the graph is as it was at `begin`)."""
        for name, saved in (self.journal or {}).items():
            self.inits[name].CopyFrom(saved)
        self.journal = None

    def commit(self) -> None:
        self.journal = None

    def _dq_source(self, tensor: str):
        """(int initializer, scale, zero point, axis) when `tensor` is a DequantizeLinear of an initializer."""
        from onnx import helper

        dq = self.producers.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.inits:
            return None
        if len(dq.input) < 3 or dq.input[1] not in self.inits or dq.input[2] not in self.inits:
            return None
        axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), None)
        per_axis = self.inits[dq.input[1]].dims and int(np.prod(self.inits[dq.input[1]].dims)) > 1
        return dq.input[0], dq.input[1], dq.input[2], (axis if axis is not None else 1) if per_axis else None

    def _find_layers(self) -> dict:
        layers = {}
        for node in self.proto.graph.node:
            if node.op_type not in QUANTIZED_LAYER_OPS or len(node.input) < 2:
                continue
            weight = self._dq_source(node.input[1])
            if weight is None:
                continue
            source = self.producers.get(node.input[0])
            activation = None
            if source is not None and source.op_type == "DequantizeLinear":
                quantize = self.producers.get(source.input[0])
                if quantize is not None and quantize.op_type == "QuantizeLinear":
                    activation = quantize.input[0]
            layer = QuantizedLayer(node.name or node.output[0], node.op_type, node, activation, *weight)
            if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
                bias = self._dq_source(node.input[2])
                if bias is not None and self.get(bias[0]).dtype == np.int32:
                    layer.bias, layer.bias_scale, layer.bias_zero = bias[:3]
            layers[layer.name] = layer
        return layers

    # ---- reading

    def input_scale(self, layer: QuantizedLayer) -> float | None:
        if layer.activation is None or layer.activation not in self.activations:
            return None
        return float(self.get(self.activations[layer.activation][0]).reshape(-1)[0])

    def float_weight(self, layer: QuantizedLayer) -> np.ndarray:
        """The layer's dequantized weight (int8 x scale)."""
        return self.get(layer.weight).astype(np.float64) * self._broadcast(layer, self.get(layer.weight_scale))

    def float_bias(self, layer: QuantizedLayer) -> np.ndarray | None:
        if layer.bias is None:
            return None
        return self.get(layer.bias).astype(np.float64) * self.get(layer.bias_scale).astype(np.float64)

    def _broadcast(self, layer: QuantizedLayer, scale: np.ndarray) -> np.ndarray:
        weight_rank = len(self.inits[layer.weight].dims)
        scale = np.asarray(scale, np.float64)
        if layer.axis is None or scale.size == 1:
            return scale.reshape(())
        shape = [1] * weight_rank
        shape[layer.axis] = scale.size
        return scale.reshape(shape)

    # ---- writing

    def set_weight(self, layer: QuantizedLayer, weight: np.ndarray, scale: np.ndarray | None = None,
                   rounded: np.ndarray | None = None) -> None:
        """Quantize a float weight into the layer (symmetric int8; the scale: given, else max |w| / 127 per channel
        or per tensor, as onnxruntime picks it) and re-derive the int32 bias for the new scale.

        Args:
            rounded: int8 values to store instead of rounding to nearest (learned rounding), or None.
        """
        bias = self.float_bias(layer)
        weight = np.asarray(weight, np.float64)
        if scale is None:
            if layer.axis is None:
                absmax = np.abs(weight).max()
            else:
                absmax = np.moveaxis(np.abs(weight), layer.axis, 0).reshape(weight.shape[layer.axis], -1).max(1)
            scale = np.where(absmax > 0, absmax / INT8_MAX, 1.0)  # an all-zero channel: scale 1, as onnxruntime
        scale = np.asarray(scale, np.float64).reshape(self.get(layer.weight_scale).shape)
        if rounded is None:
            rounded = np.round(weight / self._broadcast(layer, scale))
        self.set(layer.weight, np.clip(rounded, -INT8_MAX, INT8_MAX).astype(np.int8))
        self.set(layer.weight_scale, scale.astype(np.float32))
        if bias is not None:
            self.set_bias(layer, bias)

    def set_bias(self, layer: QuantizedLayer, bias: np.ndarray) -> None:
        """Store a float bias as int32 in the units the fused kernel uses (input scale x weight scale)."""
        if layer.bias is None:
            return
        weight_scale = self.get(layer.weight_scale).astype(np.float64).reshape(-1)
        input_scale = self.input_scale(layer)
        if input_scale is None:  # the bias scale stays what the quantizer wrote
            scale = self.get(layer.bias_scale).astype(np.float64)
        else:
            scale = np.broadcast_to(input_scale * weight_scale, self.get(layer.bias_scale).shape)
        info = np.iinfo(np.int32)
        values = np.clip(np.round(np.asarray(bias, np.float64) / np.where(scale > 0, scale, 1.0)), info.min, info.max)
        self.set(layer.bias, values.astype(np.int32))
        self.set(layer.bias_scale, np.asarray(scale, np.float32))

    def activation_range(self, tensor: str) -> tuple[float, float]:
        """The float range the tensor's uint8 / int8 quantization covers."""
        scale_name, zero_name = self.activations[tensor]
        scale = float(self.get(scale_name).reshape(-1)[0])
        zero = self.get(zero_name)
        low_q, high_q = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
        zero = float(zero.reshape(-1)[0])
        return (low_q - zero) * scale, (high_q - zero) * scale

    def set_activation_range(self, tensor: str, low: float, high: float) -> None:
        """Quantize `tensor` over [low, high] (onnxruntime's uint8 formula: 0 always representable), and re-derive
        the int32 bias of every layer that reads it, whose units change with the scale."""
        scale_name, zero_name = self.activations[tensor]
        layers = [layer for layer in self.layers.values() if layer.activation == tensor]
        biases = [(layer, self.float_bias(layer)) for layer in layers]
        zero = self.get(zero_name)
        if zero.dtype != np.uint8:  # int8 activations are left as the quantizer wrote them
            return
        scale, zero_point = uint8_scale_zero(low, high)
        self.set(scale_name, np.asarray(scale, np.float32))
        self.set(zero_name, np.asarray(zero_point, np.uint8))
        for layer, bias in biases:
            if bias is not None:
                self.set_bias(layer, bias)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString()


def uint8_scale_zero(low: float, high: float) -> tuple[float, int]:
    """onnxruntime's uint8 asymmetric scale and zero point for a range (0 always representable)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))
