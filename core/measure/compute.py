"""Compute: multiply-accumulates, weight and activation bytes of an ONNX graph at batch 1, by shape inference (the
one MAC counter: the model card, cost's device fit and Learn use it)."""

from __future__ import annotations

from pathlib import Path


from core.io.files import scratch_cwd
from core.io.sandbox import ResourceLimits, phase, run_isolated


_INT8_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
             "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm"}


# Ops whose multiply-accumulates are counted, with the input index of the weight (Conv) or of (A, B) (MatMul).
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1, "NhwcConv": 1}


_MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "FusedMatMul": (0, 1),
               "DynamicQuantizeMatMul": (0, 1), "MatMulIntegerToFloat": (0, 1)}


_GEMM_OPS = {"Gemm": (0, 1), "QGemm": (0, 3)}


def _fix_symbolic_dims(proto, sequence_length: int):
    """A copy whose symbolic input dims are concrete (the batch axis 1, any other, e.g. tokens,
    `sequence_length`) and whose declared intermediate / output shapes are dropped, so inference recomputes them."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1 if axis == 0 else sequence_length
    del model.graph.value_info[:]
    ordered = _topological_order(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    for value in model.graph.output:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    return model


def _topological_order(graph) -> list:
    """The graph's nodes in an order where every input is made before it is used (some converters, e.g.
    fp16's, append nodes out of order; onnxruntime accepts that, onnx's shape inference does not)."""
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a name from an outer scope: keep the rest as written
            return ordered + pending
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    return ordered


def _collect_shapes(graph) -> dict[str, tuple[tuple, int, int]]:
    """name -> (shape, itemsize, elem_type) for every tensor with a full static shape."""
    from onnx import helper

    out = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape") or not tensor.elem_type:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        if any(d is None or d < 0 for d in dims):
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        out[value.name] = (dims, itemsize, tensor.elem_type)
    return out


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference rejects some valid graphs; fall back to declared shapes
        return model


def _shapes(model) -> dict[str, tuple[tuple, int, int]]:
    """Static shapes of the graph's tensors (onnx inference; contrib ops handled as far as possible)."""
    from onnx import helper

    produced = {o for n in model.graph.node for o in n.output if o}
    shapes = _collect_shapes(_infer(model).graph)
    # onnx's inference stops at contrib ops. MatMulNBits (what int4 produces) is simple: declare its output
    # (A's shape with the last axis N) and infer again, until nothing more is learnt.
    for _ in range(len(model.graph.node)):
        added = False
        for node in model.graph.node:
            if node.op_type == "MatMulNBits" and node.output[0] not in shapes and node.input[0] in shapes:
                dims, _, elem = shapes[node.input[0]]
                n = int(_attributes(node).get("N", 0))
                if n > 0:
                    model.graph.value_info.append(helper.make_tensor_value_info(node.output[0], elem,
                                                                                list(dims[:-1]) + [n]))
                    added = True
        if not added:
            break
        shapes = _collect_shapes(_infer(model).graph)
    if produced - set(shapes):
        # Other contrib ops: onnxruntime's symbolic inference knows them (its first use imports sympy, ~2 s).
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            # When it cannot infer every shape it saves the model into the working directory, then raises.
            with scratch_cwd():
                symbolic = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
            shapes = {**_collect_shapes(symbolic.graph), **shapes}
        except Exception:  # noqa: BLE001 - best effort: unknown shapes are counted and reported
            pass
    return shapes


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _prod(values) -> int:
    total = 1
    for v in values:
        total *= int(v)
    return total


def model_compute_profile(proto, *, sequence_length: int = 128) -> dict:
    """Multiply-accumulates, weight bytes and peak activation bytes of one inference (batch 1).

    MACs count Conv / ConvTranspose / MatMul / Gemm and their quantized forms (an int8 op, or a float op fed by
    DequantizeLinear on both sides, which onnxruntime fuses into an int8 kernel). Peak activations come from a
    liveness pass over the (topologically ordered) nodes: a tensor lives from the node that makes it to its
    last consumer; tensors computed only from weights are treated as weights (constant-folded). Graphs with a
    fixed batch axis are divided by it.

    Args:
        proto: the ONNX ModelProto.
        sequence_length: the length given to symbolic non-batch input axes (e.g. tokens).

    Returns:
        ``{macs, int8_macs, float_macs, weight_bytes, peak_activation_bytes, bytes_moved, precision,
        unknown_shapes}``; bytes_moved = weights + every activation written once and read by each consumer.
    """
    from onnx import AttributeProto, helper

    graph = proto.graph
    batch = 1
    initializer_names = {i.name for i in graph.initializer}
    for value in graph.input:
        if value.name not in initializer_names:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
                batch = dims[0].dim_value
            break
    model = _fix_symbolic_dims(proto, sequence_length)
    shapes = _shapes(model)
    graph = model.graph  # the same graph, nodes in topological order
    for tensor in graph.initializer:  # weights: their shape only, never activation bytes
        shapes.setdefault(tensor.name, (tuple(tensor.dims), 0, tensor.data_type))

    weight_bytes = 0
    constants = set(initializer_names)
    for tensor in graph.initializer:
        weight_bytes += _tensor_bytes(tensor)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    weight_bytes += _tensor_bytes(attr.t)
            constants.update(o for o in node.output if o)
        elif node.input and all((not i) or i in constants for i in node.input):
            constants.update(o for o in node.output if o)  # folded at load time: a weight, not an activation

    producers = {o: node for node in graph.node for o in node.output if o}

    def is_dequantized(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    int8_macs = float_macs = 0
    unknown = 0
    for node in graph.node:
        op = node.op_type
        out = shapes.get(node.output[0]) if node.output else None
        if op in _CONV_OPS or op == "ConvTranspose":
            weight_index = _CONV_OPS.get(op, 1)
            weight = shapes.get(node.input[weight_index])
            # Output elements x (input channels per group x kernel area); ConvTranspose runs from its input.
            source = shapes.get(node.input[0]) if op == "ConvTranspose" else out
            macs = _prod(source[0]) * _prod(weight[0][1:]) if source and weight else None
        elif op in _MATMUL_OPS or op in _GEMM_OPS:
            a_index, weight_index = _MATMUL_OPS.get(op) or _GEMM_OPS[op]
            a = shapes.get(node.input[a_index])
            if not (out and a and a[0]):
                macs = None
            elif op in _GEMM_OPS:
                macs = _prod(out[0]) * a[0][0 if _attributes(node).get("transA", 0) else -1]
            else:
                macs = _prod(out[0]) * a[0][-1]
        elif op == "MatMulNBits":
            weight_index = 1
            k = _attributes(node).get("K")
            macs = _prod(out[0]) * int(k) if out and k else None
        else:
            continue
        if macs is None:
            unknown += 1
            continue
        # A float op fed by DequantizeLinear on both sides is a QDQ pair onnxruntime fuses into an int8 kernel.
        if op == "MatMulNBits":  # int4 weights; the arithmetic is int8 only at accuracy_level 4, else float
            quantized = int(_attributes(node).get("accuracy_level", 0)) == 4
        else:
            quantized = op in _INT8_OPS or (len(node.input) > weight_index and is_dequantized(node.input[0])
                                            and is_dequantized(node.input[weight_index]))
        if quantized:
            int8_macs += macs
        else:
            float_macs += macs

    # Liveness pass over activations.
    graph_outputs = {o.name for o in graph.output}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in constants:
                last_use[name] = index

    def nbytes(name: str) -> int:
        shape = shapes.get(name)
        return _prod(shape[0]) * shape[1] if shape else 0

    live: dict[str, int] = {}
    for value in graph.input:
        if value.name not in constants:
            live[value.name] = nbytes(value.name)
    peak = sum(live.values())
    traffic = 0
    for index, node in enumerate(graph.node):
        outputs = [o for o in node.output if o and o not in constants]
        for name in outputs:
            live[name] = nbytes(name)
            if name not in shapes:
                unknown += 1
        peak = max(peak, sum(live.values()))
        traffic += sum(nbytes(i) for i in node.input if i and i not in constants) + sum(nbytes(o) for o in outputs)
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in graph_outputs]:
            del live[name]

    total_macs = int8_macs + float_macs
    if int8_macs and float_macs:
        precision = "mixed"
    elif int8_macs:
        precision = "int8"
    else:
        float_types = {helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer
                       if t.data_type in (1, 10, 16)}
        precision = "fp16" if "float16" in float_types and "float32" not in float_types else "fp32"
    if any(n.op_type == "MatMulNBits" for n in graph.node):
        precision = f"int4 weights, {precision} compute"
    per = max(1, batch)
    return {"macs": int(total_macs // per), "int8_macs": int(int8_macs // per), "float_macs": int(float_macs // per),
            "weight_bytes": int(weight_bytes), "peak_activation_bytes": int(peak // per),
            "bytes_moved": int(weight_bytes + traffic // per), "precision": precision, "unknown_shapes": unknown}


# A decoder's device fit is taken at this context (or the model's window, when shorter): its KV cache, read once per
# decoded token, grows with the context, and a chat of a few turns reaches ~2k tokens.
DECODER_CONTEXT_TOKENS = 2048
KV_CACHE_BYTES = 4  # per element: onnxruntime-genai's CPU models keep the KV cache in fp32 (int4 ones too)


def decoder_compute_profile(config: dict, tensors, *, weight_bytes: int, precision: str, accuracy_level=None,
                            context_tokens: int | None = None) -> dict:
    """Multiply-accumulates and bytes of one decoded token (batch 1, KV cache), from the checkpoint's config and
    weight shapes: the same keys as `model_compute_profile`, so `core.results.devices.device_fit` takes it.

    Per token: every linear weight is used once (the tied embedding too, as the output head), and attention reads
    the KV cache of the whole context (``2 x heads x head_dim`` MACs per layer per past token). Bytes moved are
    the variant's weights (its files, the embedding table included: an upper bound, as one row is gathered) plus
    the KV cache read; the memory it needs is its weights plus the KV cache at `context_tokens` plus one token's
    activations and logits. MatMulNBits at accuracy level 4 computes in int8; otherwise weight-only int4 / int8
    dequantizes to fp32, so its MACs count as float.

    Args:
        config: config.json (hidden_size, num_hidden_layers, num_attention_heads, optionally num_key_value_heads,
            head_dim, intermediate_size, vocab_size, max_position_embeddings, tie_word_embeddings).
        tensors: ``(name, dtype, shape)`` of every weight (the safetensors headers).
        weight_bytes: the variant's model files in bytes.
        precision: the builder's precision (fp32, fp16, int8, int4).
        context_tokens: the context the KV cache holds; default `DECODER_CONTEXT_TOKENS`, capped at the window.
    """
    def number(key, default=None):
        value = config.get(key, default)
        return int(value) if isinstance(value, (int, float)) and value > 0 else default

    hidden, layers, heads = number("hidden_size"), number("num_hidden_layers"), number("num_attention_heads")
    if not (hidden and layers and heads):
        raise ValueError("config.json lacks hidden_size, num_hidden_layers or num_attention_heads")
    kv_heads = number("num_key_value_heads", heads)
    head_dim = number("head_dim", hidden // heads)
    window = number("max_position_embeddings", DECODER_CONTEXT_TOKENS)
    context = min(context_tokens or DECODER_CONTEXT_TOKENS, window)
    linear = sum(_prod(shape) for name, _, shape in tensors if len(shape) == 2 and "embed" not in name)
    embedding = sum(_prod(shape) for name, _, shape in tensors if len(shape) == 2 and "embed" in name)
    tied = config.get("tie_word_embeddings", True) and not any("lm_head" in name for name, _, _ in tensors)
    weight_macs = linear + (embedding if tied else 0)
    attention_macs = layers * 2 * heads * head_dim * context
    int8_weights = precision in ("int4", "int8") and accuracy_level == 4
    kv_cache = 2 * layers * kv_heads * head_dim * context * KV_CACHE_BYTES
    vocab = number("vocab_size", 0) or 0
    activations = 4 * (4 * hidden + 2 * (number("intermediate_size", 4 * hidden)) + vocab)
    label = precision if precision in ("fp32", "fp16") else \
        f"{precision} weights, {'int8' if int8_weights else 'fp32'} compute"
    return {"macs": int(weight_macs + attention_macs), "int8_macs": int(weight_macs if int8_weights else 0),
            "float_macs": int(attention_macs + (0 if int8_weights else weight_macs)),
            "weight_bytes": int(weight_bytes), "peak_activation_bytes": int(kv_cache + activations),
            "kv_cache_bytes": int(kv_cache), "context_tokens": int(context),
            "bytes_moved": int(weight_bytes + kv_cache + activations), "precision": label, "per": "decoded token"}


def _tensor_bytes(tensor) -> int:
    from onnx import helper

    if tensor.HasField("raw_data") and tensor.raw_data:
        return len(tensor.raw_data)
    count = _prod(tensor.dims) if len(tensor.dims) else 1
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return count * 4


def profile_onnx_file(path: str) -> dict:
    """`model_compute_profile` of a run's ONNX file (with its external data), inside a sandboxed worker."""
    import onnx

    phase(f"reading {Path(path).name}")
    proto = onnx.load(path)
    phase(f"profiling {Path(path).name}")
    return model_compute_profile(proto)


def compute_profile_isolated(path: str) -> dict:
    """`model_compute_profile` of an ONNX file, parsed in a worker with the upload limits."""
    return run_isolated("core.measure.compute:profile_onnx_file", str(path), limits=ResourceLimits.for_inspect())
