"""Node mapping between a baseline ONNX graph and a variant of it: which baseline node each variant node came from,
what precision each node computes in, and which nodes were added, fused away or removed. Pure graph code on onnx
protos (no runtime), so it is fast and deterministic.

The rules, tried in order for each variant node (the first that applies wins; ``how`` records it):

- ``name``: the same node name in the baseline (quantizers keep the float node's name for QDQ, fp16 keeps every
  name, a re-exported pruned model keeps the torch module path);
- ``prefix``: the name starts with a baseline node's name then ``/`` or ``_`` (``Gemm_Q4`` and ``Gemm_bias`` of
  MatMulNBits, ``Gemm/MatMulAddFusion_MatMul_quant`` of dynamic int8, ``Conv_quant`` of onnxruntime's fusions);
- ``weight``: it reads an initializer named after a baseline node's weight (``features.0.weight_quantized``,
  ``classifier.1.weight_matmul_Q4``): the quantized form of that node's weights;
- ``helper``: a QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear / Cast / scale Mul that serves a mapped
  neighbour (its consumer, else its producer): added by the technique, shown with the node it serves;
- ``structure``: what is left is aligned by operator type in graph order with the baseline nodes left (a renamed
  pruned Conv, an anonymous node of a wild file);
- otherwise the node is ``added``.

A baseline node that no variant node maps to is ``fused`` when a variant node now produces its output tensor
(QDQ folds Relu into the Conv before it) or reads its weights (MatMul + Add fused into a Gemm that reads the Add's
bias), else ``removed``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
from onnx import TensorProto, helper

# Operators that compute in integers (int8 unless noted); the first four are onnxruntime's QOperator kernels.
INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
                      "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
                      "QAttention", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
                      "DynamicQuantizeMatMul", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# The nodes whose arithmetic dominates: the ones a quantize step is meant to reach.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm", "FusedMatMul"})
# Nodes a technique adds around the nodes it changes, shown with the node they serve.
HELPER_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "Mul", "Add"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
PRECISIONS = ("fp32", "fp16", "int8", "int4")
_SUFFIX = re.compile(r"(_quantized|_Q4|_Q8|_matmul|_scale|_zero_point|_DequantizeLinear_Output|_fp16|_casted)+$")


@dataclass(frozen=True)
class GraphMapping:
    """How a variant graph relates to its baseline, node by node (all names are ONNX node names).

    ``base_of``: variant node -> baseline node it came from (absent: added). ``how``: variant node -> the rule
    that mapped it (see the module docstring) or ``"added"``. ``fused``: baseline node -> the variant node that
    absorbed it. ``removed``: baseline nodes with no counterpart. ``precision``: variant node -> fp32 / fp16 /
    int8 / int4. ``base_precision``: the same for the baseline.
    """

    base_of: dict = field(default_factory=dict)
    how: dict = field(default_factory=dict)
    fused: dict = field(default_factory=dict)
    removed: tuple = ()
    added: tuple = ()
    precision: dict = field(default_factory=dict)
    base_precision: dict = field(default_factory=dict)

    def variants_of(self, base_node: str) -> list[str]:
        """The variant nodes that came from `base_node` (the node itself, its QDQ pairs, its fused parts)."""
        return [v for v, b in self.base_of.items() if b == base_node]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["removed"], out["added"] = list(self.removed), list(self.added)
        return out


def node_names(graph) -> list[str]:
    """Every node's name, unnamed nodes named ``<node_i>`` by position (as Model Explorer's ONNX adapter does)."""
    return [node.name or f"<node_{i}>" for i, node in enumerate(graph.node)]


def _initializer_types(graph) -> dict:
    types = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _tensor_types(proto) -> dict:
    """Element type of every tensor we can know without a runtime: initializers, declared values, ONNX shape
    inference where it succeeds (it may not on contrib ops; declared types still count)."""
    graph = proto.graph
    types = _initializer_types(graph)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    try:
        from onnx import shape_inference

        inferred = shape_inference.infer_shapes(proto, strict_mode=False).graph
        for value in inferred.value_info:
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                types.setdefault(value.name, value.type.tensor_type.elem_type)
    except Exception:  # noqa: BLE001 - inference is a bonus: unknown types fall back to fp32
        pass
    for node in graph.node:  # a Cast declares its output type
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            if to and node.output:
                types.setdefault(node.output[0], to)
    return types


def node_precisions(proto) -> dict:
    """Precision each node computes in: ``int4`` (MatMulNBits with bits <= 4), ``int8`` (integer kernels, Q/DQ
    nodes, and a float compute node fed by DequantizeLinear weights: a QDQ pair onnxruntime fuses into an int8
    kernel), ``fp16`` (float16 inputs or outputs), else ``fp32``. Keyed by `node_names`."""
    graph = proto.graph
    names = node_names(graph)
    types = _tensor_types(proto)
    producer = {out: node for node in graph.node for out in node.output}
    out = {}
    for name, node in zip(names, graph.node):
        if node.op_type == "MatMulNBits":
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            out[name] = "int4" if bits <= 4 else "int8"
        elif node.op_type in INT8_OPS:
            out[name] = "int8"
        elif node.op_type in COMPUTE_OPS and len(node.input) > 1 and all(
                producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input[:2]):
            out[name] = "int8"
        elif any(types.get(t) in (TensorProto.FLOAT16, TensorProto.BFLOAT16)
                 for t in list(node.input) + list(node.output) if t):
            out[name] = "fp16"
        else:
            out[name] = "fp32"
    return out


def _weight_owner(graph, names: list[str]) -> dict:
    """Initializer name -> the node reading it (first reader), for baseline weights."""
    inits = {t.name for t in graph.initializer}
    owner = {}
    for name, node in zip(names, graph.node):
        for tensor in node.input:
            if tensor in inits:
                owner.setdefault(tensor, name)
    return owner


def _prefix_match(name: str, base_names: list[str]) -> str | None:
    best = None
    for base in base_names:
        if base and len(name) > len(base) and name.startswith(base) and name[len(base)] in "/_":
            if best is None or len(base) > len(best):
                best = base
    return best


def _base_tensor(tensor: str, owners: dict) -> str | None:
    """The baseline weight a variant initializer derives from (``features.0.weight_quantized`` -> its owner)."""
    if tensor in owners:
        return owners[tensor]
    stripped = _SUFFIX.sub("", tensor)
    return owners.get(stripped)


def _align(variant: list[tuple[str, str]], base: list[tuple[str, str]]) -> dict:
    """Longest common subsequence of operator types between the unmapped nodes of both graphs (graph order)."""
    n, m = len(variant), len(base)
    if not n or not m or n * m > 4_000_000:  # a quadratic table; beyond ~2000x2000 nodes leave them unmapped
        return {}
    table = np.zeros((n + 1, m + 1), dtype=np.int32)
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i, j] = table[i + 1, j + 1] + 1 if variant[i][1] == base[j][1] else max(table[i + 1, j],
                                                                                            table[i, j + 1])
    pairs, i, j = {}, 0, 0
    while i < n and j < m:
        if variant[i][1] == base[j][1]:
            pairs[variant[i][0]] = base[j][0]
            i, j = i + 1, j + 1
        elif table[i + 1, j] >= table[i, j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def map_graphs(base_proto, variant_proto) -> GraphMapping:
    """Map every node of `variant_proto` back to the node of `base_proto` it came from.

    Args:
        base_proto / variant_proto: ``onnx.ModelProto`` of the baseline and of a variant made from it.

    Returns:
        A `GraphMapping` (see the module docstring for the rules).
    """
    bgraph, vgraph = base_proto.graph, variant_proto.graph
    bnames, vnames = node_names(bgraph), node_names(vgraph)
    bset = set(bnames)
    btype = dict(zip(bnames, (n.op_type for n in bgraph.node)))
    owners = _weight_owner(bgraph, bnames)
    base_of: dict[str, str] = {}
    how: dict[str, str] = {}

    def assign(name: str, base: str, rule: str) -> None:
        base_of[name], how[name] = base, rule

    for name, node in zip(vnames, vgraph.node):
        if name in bset:
            assign(name, name, "name")
            continue
        # Quantizers are named after the tensor they quantize (``<tensor>_QuantizeLinear``), not after a node:
        # they are helpers of the node they serve.
        base = None if node.op_type in QDQ_OPS else _prefix_match(name, bnames)
        if base is not None:
            assign(name, base, "prefix")
            continue
        if node.op_type not in QDQ_OPS:
            weights = [b for b in (_base_tensor(t, owners) for t in node.input) if b]
            if weights:
                assign(name, weights[0], "weight")

    # Helpers serve a neighbour: a Q/DQ or Cast on a node's input belongs to the consumer, on an output to the
    # producer. A few passes settle chains (Q -> DQ -> Conv).
    producer = {out: name for name, node in zip(vnames, vgraph.node) for out in node.output}
    consumers: dict[str, list[str]] = {}
    for name, node in zip(vnames, vgraph.node):
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(name)
    vnode = dict(zip(vnames, vgraph.node))
    for _ in range(4):
        changed = False
        for name, node in zip(vnames, vgraph.node):
            if name in base_of or node.op_type not in HELPER_OPS:
                continue
            after = [c for t in node.output for c in consumers.get(t, []) if c in base_of]
            before = [producer[t] for t in node.input if t in producer and producer[t] in base_of]
            # A weight DequantizeLinear (inputs all initializers) belongs to its consumer; so does a quantizer
            # of an activation, which exists for the node it feeds.
            target = after[0] if after else (before[0] if before else None)
            if target is not None:
                assign(name, base_of[target], "helper")
                changed = True
        if not changed:
            break

    # What is left: align by operator type with the baseline nodes nobody maps to.
    mapped_bases = set(base_of.values())
    left_v = [(n, vnode[n].op_type) for n in vnames if n not in base_of and vnode[n].op_type not in HELPER_OPS]
    left_b = [(n, btype[n]) for n in bnames if n not in mapped_bases]
    for name, base in _align(left_v, left_b).items():
        assign(name, base, "structure")
    added = tuple(n for n in vnames if n not in base_of)
    for name in added:
        how[name] = "added"

    # Baseline nodes nobody maps to: fused when their output is now made by a variant node, else removed.
    mapped_bases = set(base_of.values())
    fused, removed = {}, []
    for name, node in zip(bnames, bgraph.node):
        if name in mapped_bases:
            continue
        makers = [producer[t] for t in node.output if t in producer]
        if not makers:
            # Its weights live on in another node (MatMul + Add fused into a Gemm that reads the bias).
            weights = {t for t in node.input if t in owners}
            readers = [v for v, vn in vnode.items() if any(_SUFFIX.sub("", t) in weights for t in vn.input)]
            makers = sorted(readers, key=lambda v: how.get(v) == "helper")
        if makers:
            fused[name] = makers[0]
        else:
            removed.append(name)
    return GraphMapping(base_of=base_of, how=how, fused=fused, removed=tuple(removed), added=added,
                        precision=node_precisions(variant_proto), base_precision=node_precisions(base_proto))


def weight_bytes(proto) -> dict:
    """Stored weight bytes per node: its initializer / Constant inputs, plus those of a weight DequantizeLinear
    (all inputs stored) that feeds it, which then counts 0 itself. Keyed by `node_names`."""
    graph = proto.graph
    names = node_names(graph)
    sizes = {t.name: len(t.raw_data) if t.raw_data else _tensor_nbytes(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    sizes[node.output[0]] = len(attr.t.raw_data) if attr.t.raw_data else _tensor_nbytes(attr.t)
    own = {name: sum(sizes.get(t, 0) for t in set(node.input)) for name, node in zip(names, graph.node)}
    producer = {out: name for name, node in zip(names, graph.node) for out in node.output}
    kinds = dict(zip(names, (n.op_type for n in graph.node)))
    inputs = {name: list(node.input) for name, node in zip(names, graph.node)}
    folded = set()
    for name, node in zip(names, graph.node):
        for tensor in node.input:
            maker = producer.get(tensor)
            if maker and kinds[maker] == "DequantizeLinear" and all(t in sizes for t in inputs[maker] if t):
                own[name] += own[maker]
                folded.add(maker)
    for maker in folded:
        own[maker] = 0
    return own


def _tensor_nbytes(tensor) -> int:
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # noqa: BLE001 - an unknown element type counts as 4 bytes per element
        itemsize = 4
    count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (count + 1) // 2
    return count * itemsize


def float_for_no_reason(mapping: GraphMapping, variant_proto, steps) -> dict:
    """Compute nodes a quantize step could have reached, not excluded, yet still in float: node -> reason.

    Dynamic int8 keeps Conv in float on purpose (``quantize_conv`` off: ConvInteger is slower), and int4 reaches
    MatMul / Gemm only; those are not flagged. Without a quantize step nothing is flagged.
    """
    quantize = [s for s in (steps or []) if isinstance(s, dict) and s.get("technique") == "quantize"]
    if not quantize:
        return {}
    step = quantize[-1]
    mode = step.get("mode", "static")
    if mode == "fp16":
        return {}
    exclude = {e for s in quantize for e in (s.get("exclude") or ())}
    flagged = {}
    for name, node in zip(node_names(variant_proto.graph), variant_proto.graph.node):
        if node.op_type not in COMPUTE_OPS or mapping.precision.get(name) != "fp32":
            continue
        base = mapping.base_of.get(name, name)
        if name in exclude or base in exclude:
            continue
        if mode in ("dynamic", "int4") and node.op_type not in ("MatMul", "Gemm"):
            if not (mode == "dynamic" and step.get("quantize_conv")):
                continue
        flagged[name] = (f"{node.op_type} stayed in float although {mode} quantization could reach it and it "
                         "is not in the exclude list: its time is not reduced")
    return flagged


_PROFILE_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_quant|_nhwc)+$")


def profile_node_times(proto, profile_nodes) -> dict:
    """Kernel time per graph node from onnxruntime's per-node profile (``profile_ops(...)["nodes"]``).

    The profiler names the nodes of the graph onnxruntime optimized: ``fused <name>`` (a fused kernel),
    ``<name>_token_<k>`` (a layout transform of it), ``<tensor>_nchwc`` (a Conv + activation fused into a blocked
    kernel, named after the activation's output). Each is traced back to a node of `proto` (for a tensor, its
    producer, walking up past activations to the node of the kernel's operator type); layout nodes onnxruntime
    adds itself (``ReorderOutput``, ``Transpose_token_13``) are summed under ``""``.

    Returns:
        node name -> ms per run, plus ``""`` -> ms of kernels no node of `proto` accounts for.
    """
    graph = proto.graph
    names = node_names(graph)
    nodes = dict(zip(names, graph.node))
    producer = {out: name for name, node in nodes.items() for out in node.output}
    times: dict[str, float] = {}
    for row in profile_nodes or []:
        raw, op, ms = str(row.get("node", "")), str(row.get("op", "")), float(row.get("ms", 0.0))
        name = raw[len("fused "):] if raw.startswith("fused ") else raw
        name = _PROFILE_SUFFIX.sub("", name)
        target = name if name in nodes else None
        if target is None and name in producer:
            target = producer[name]
            # A fused Conv + Relu is named after the Relu's output: walk up to the node of the kernel's type.
            for _ in range(3):
                node = nodes[target]
                if op.endswith(node.op_type) or node.op_type in COMPUTE_OPS or not node.input:
                    break
                upstream = producer.get(node.input[0])
                if upstream is None:
                    break
                target = upstream
        key = target or ""
        times[key] = times.get(key, 0.0) + ms
    return {k: round(v, 6) for k, v in times.items()}


def principal_renames(mapping: GraphMapping, variant_names) -> dict:
    """Variant node -> baseline id for the one node that stands for each renamed baseline node (MatMulNBits for a
    Gemm, MatMulInteger for dynamic int8), so both panes share the id and highlight together. Helpers and the
    other parts of a group keep their own ids; a node that already has its baseline name needs no rename."""
    taken = set(variant_names)
    renames = {}
    for base in dict.fromkeys(mapping.base_of.values()):
        parts = mapping.variants_of(base)
        if base in parts or base in taken:
            continue
        ranked = sorted(parts, key=lambda n: (mapping.how.get(n) == "helper",
                                              mapping.precision.get(n) not in ("int8", "int4"),
                                              "scale" in n or n.endswith("_bias"), len(n)))
        if ranked:
            renames[ranked[0]] = base
            taken.add(base)
    return renames


__all__ = ["COMPUTE_OPS", "GraphMapping", "INT8_OPS", "PRECISIONS", "float_for_no_reason", "map_graphs",
           "node_names", "node_precisions", "principal_renames", "profile_node_times", "weight_bytes"]
