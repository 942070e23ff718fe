"""Graph facts: what an ONNX graph declares (inputs, outputs, weights, opset, a fixed batch axis, an embedding's
vocabulary), read from the proto alone; nothing here runs onnxruntime or a technique."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic axes) and numpy dtype name of a model input or output."""

    name: str
    shape: tuple
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Model:
    """A model ready for the pipeline: always an ONNX graph, plus the torch module where we have one."""

    source: str
    onnx_model: Any  # onnx.ModelProto
    torch_module: Any = None  # torch.nn.Module in eval mode, or None for ONNX-only models
    architecture: str | None = None  # sample architecture name, for width-scaled students
    notes: list = field(default_factory=list)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return graph_inputs(self.onnx_model)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return graph_outputs(self.onnx_model)

    def onnx_bytes(self) -> bytes:
        return self.onnx_model.SerializeToString()

    def copy(self) -> "Model":
        """A deep copy, so a step can change it without touching the original."""
        return Model(self.source, copy.deepcopy(self.onnx_model), copy.deepcopy(self.torch_module),
                     self.architecture, list(self.notes))


DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
                17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}


def _np_dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # noqa: BLE001 - unknown or exotic element types
        return f"onnx:{elem_type}"


def _value_spec(value) -> TensorSpec:
    tt = value.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return TensorSpec(value.name, tuple(dims), _np_dtype_name(tt.elem_type))


def graph_inputs(proto) -> tuple[TensorSpec, ...]:
    """The real inputs (initializers listed as inputs by old exporters are left out)."""
    inits = {i.name for i in proto.graph.initializer}
    return tuple(_value_spec(v) for v in proto.graph.input if v.name not in inits)


def graph_outputs(proto) -> tuple[TensorSpec, ...]:
    return tuple(_value_spec(v) for v in proto.graph.output)


def onnx_params(proto) -> int:
    """Number of weight elements stored in the graph (initializers and Constant tensors)."""
    import onnx

    total = sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    total += int(np.prod(attr.t.dims)) if len(attr.t.dims) else 1
    return total


def onnx_opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def task_of(model: Model) -> str:
    """'classification' for a single 2-D float output (logits), 'embedding'/'other' otherwise."""
    outs = model.outputs
    if len(outs) == 1 and len(outs[0].shape) == 2 and outs[0].dtype.startswith("float"):
        name = outs[0].name.lower()
        if any(word in name for word in ("embed", "pool", "sentence", "feature")):
            return "embedding"
        return "classification"
    return "other"


def layer_table(proto) -> list[dict]:
    """One row per node that owns weights: name, op type, params and share of weight bytes."""
    inits = {i.name: i for i in proto.graph.initializer}
    rows = []
    total_bytes = sum(DTYPE_BYTES.get(t.data_type, 4) * int(np.prod(t.dims) if len(t.dims) else 1)
                      for t in inits.values()) or 1
    for node in proto.graph.node:
        params = 0
        nbytes = 0
        for name in node.input:
            if name in inits:
                t = inits[name]
                n = int(np.prod(t.dims)) if len(t.dims) else 1
                params += n
                nbytes += n * DTYPE_BYTES.get(t.data_type, 4)
        if params:
            rows.append({"name": node.name or node.output[0], "type": node.op_type, "params": params,
                         "bytes": nbytes, "share": nbytes / total_bytes})
    return rows


# Layers whose arithmetic is integer: onnxruntime's integer kernels, int4 MatMulNBits, and a float compute node whose
# input and weight both come from DequantizeLinear (a QDQ pair onnxruntime fuses into one int8 kernel).
INTEGER_COMPUTE_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
                       "MatMulNBits")
FLOAT_COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantized_layer_names(proto) -> list[str]:
    """The compute layers (Conv, Gemm, MatMul and their integer forms) a quantized graph runs in integers, by node
    name: what "quantized" means to a reader, without the Quantize / DequantizeLinear helpers around them."""
    producer = {out: node for node in proto.graph.node for out in node.output if out}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    return [node.name or node.output[0] for node in proto.graph.node
            if node.op_type in INTEGER_COMPUTE_OPS
            or (node.op_type in FLOAT_COMPUTE_OPS and len(node.input) > 1 and dequantized(node.input[0])
                and dequantized(node.input[1]))]


def fixed_batch_of(inputs) -> int | None:
    """The batch size a set of inputs (anything with a ``shape``: TensorSpecs, onnxruntime's NodeArgs) fixes on
    axis 0, or None when axis 0 is symbolic (or absent): the one fixed-batch test."""
    fixed = {i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
    return min(fixed) if fixed else None


def fixed_batch_size(proto) -> int | None:
    """The batch size the graph's real inputs fix on axis 0, or None when axis 0 is symbolic (or absent)."""
    return fixed_batch_of(graph_inputs(proto))


# Elementwise ops between attention's score MatMul and its Softmax (scaling, the additive mask, casts).
_SCORE_OPS = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}


def attention_softmaxes(proto) -> list[str]:
    """Names of the Softmax nodes that normalise attention scores: fed, through elementwise ops only (scale, mask),
    by a MatMul of two activations (queries x keys), not by a layer with constant weights (a classifier head)."""
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in proto.graph.node for o in n.output}
    found = []
    for node in proto.graph.node:
        if node.op_type != "Softmax":
            continue
        frontier, seen = [node.input[0]], set()
        while frontier:
            tensor = frontier.pop()
            source = producer.get(tensor)
            if source is None or tensor in seen:
                continue
            seen.add(tensor)
            if source.op_type == "MatMul" and not constants & set(source.input):
                found.append(node.name or node.output[0])
                break
            if source.op_type in _SCORE_OPS:
                frontier += [i for i in source.input if i and i not in constants]
    return found


# Operators a quantizer writes into a graph: Q/DQ pairs, dynamic quantization, integer and 4-bit kernels.
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "MatMulNBits", "QLinearConv", "QLinearMatMul")


def quantized_nodes(proto) -> list[str]:
    """Names of the nodes a quantizer wrote (QUANTIZED_OPS), in graph order."""
    return [n.name for n in proto.graph.node if n.op_type in QUANTIZED_OPS]


def vocab_size(model: Model, input_name: str) -> int | None:
    """For token-id inputs: the row count of the embedding table they index (Gather on an initializer)."""
    inits = {i.name: i for i in model.onnx_model.graph.initializer}
    names = {input_name}  # the ids and what they become through shape-only ops (Cast, Unsqueeze, ...)
    passthrough = ("Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity")
    for node in model.onnx_model.graph.node:  # nodes are topologically sorted
        if node.op_type in passthrough and node.input and node.input[0] in names:
            names.update(node.output)
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in names \
                and node.input[0] in inits and len(inits[node.input[0]].dims):
            return int(inits[node.input[0]].dims[0])
    return None
