"""Repairs for ONNX files from the wild: fixed batch axes, initializers listed as inputs, old IR versions.

Every repair is checked: a graph whose batch axis is made symbolic must give the same outputs, row by row, as
the original in onnxruntime, or it is kept as it was. Nothing here changes what the model computes.
"""

from __future__ import annotations

import numpy as np

from core.io.graph import Model, fixed_batch_size
from core.io.data import synthetic_inputs
from core.io.runtime import make_session

SYMBOLIC_BATCH = "batch"


def drop_initializer_inputs(proto):
    """Remove graph inputs that are initializers (old exporters list every weight as an input, as IR < 4 had to).

    Graph rewrites (Gemm -> MatMul) and quantizers replace such weights with new initializers and leave the old
    input behind, now a required input, so the graph would ask for the float weights at run time. Works in place; raises the IR version to 4, the
    first that allows initializers outside the inputs. Returns the proto.
    """
    inits = {i.name for i in proto.graph.initializer}
    if not any(v.name in inits for v in proto.graph.input):
        return proto
    keep = [v for v in proto.graph.input if v.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.ir_version = max(int(proto.ir_version), 4)
    return proto


def raise_ir_version(proto):
    """Raise the IR version to the lowest one that the model's opsets need (the version converter leaves an IR 3
    header on an opset 13 graph). Works in place; returns the proto."""
    from onnx import helper

    try:
        needed = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    except Exception:  # noqa: BLE001 - an opset newer than this onnx knows: leave the header alone
        return proto
    if proto.ir_version < needed:
        drop_initializer_inputs(proto)
        proto.ir_version = needed
    return proto


def _set_batch_dim(value, batch: int, name: str) -> bool:
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not len(tensor_type.shape.dim):
        return False
    first = tensor_type.shape.dim[0]
    if first.HasField("dim_value") and first.dim_value == batch:
        first.Clear()
        first.dim_param = name
        return True
    return False


def _free_reshape_batch(proto, batch: int) -> int:
    """Rewrite constant Reshape targets that spell out the batch (``[1, 16]``) to infer it (``[-1, 16]``).

    Only shapes whose first entry is the batch and that have no other -1 are touched, and only initializers that
    nothing but Reshape reads. Returns how many were rewritten.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    readers: dict[str, set] = {}
    for node in proto.graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, set()).add((node.op_type, position))
    changed = 0
    for name, uses in readers.items():
        if name not in inits or uses != {("Reshape", 1)}:
            continue
        shape = numpy_helper.to_array(inits[name])
        if shape.ndim != 1 or len(shape) < 1 or shape[0] != batch or (shape[1:] == -1).any():
            continue
        shape = shape.copy()
        shape[0] = -1
        inits[name].CopyFrom(numpy_helper.from_array(shape, name))
        changed += 1
    return changed


def _outputs_match(original, candidate, batch: int) -> bool:
    """Run `candidate` on 2 x batch samples at once and `original` on them in two runs; compare row by row."""
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a graph that cannot take the new batch is an expected answer, not an error
    try:
        feed = synthetic_inputs(Model("check", original), 2 * batch, seed=1234, sequence_length=8)
        reference = make_session(original.SerializeToString())
        halves = [reference.run(None, {k: v[i * batch:(i + 1) * batch] for k, v in feed.items()}, quiet)
                  for i in (0, 1)]
        together = make_session(candidate.SerializeToString()).run(None, feed, quiet)
    except Exception:  # noqa: BLE001 - onnxruntime refusing the graph is the answer we test for
        return False
    for index, out in enumerate(together):
        expected = np.concatenate([halves[0][index], halves[1][index]])
        if out.shape != expected.shape:
            return False
        if out.dtype.kind in "fc":
            scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
            if not np.allclose(out, expected, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
                return False
        elif not np.array_equal(out, expected):
            return False
    return True


def make_batch_symbolic(proto):
    """A copy of the model with a symbolic batch axis, or None when the graph does not allow one.

    Sets ``dim_param`` on axis 0 of the inputs and outputs that fix it, clears stale ``value_info`` shapes, and
    checks in onnxruntime that a doubled batch gives the same outputs as two single batches. If that fails and
    the graph reshapes to a constant shape that spells out the batch, a second try lets Reshape infer it.

    Args:
        proto: an ``onnx.ModelProto`` whose inputs fix the batch axis.

    Returns:
        The new ``ModelProto``, or None when the batch is already symbolic or cannot be freed.
    """
    import onnx

    batch = fixed_batch_size(proto)
    if batch is None:
        return None
    inits = {i.name for i in proto.graph.initializer}
    for attempt in ("dims", "reshape"):
        candidate = onnx.ModelProto()
        candidate.CopyFrom(proto)
        inputs_changed = [_set_batch_dim(v, batch, SYMBOLIC_BATCH) for v in candidate.graph.input
                          if v.name not in inits]
        if not any(inputs_changed):
            return None
        for value in candidate.graph.output:
            _set_batch_dim(value, batch, SYMBOLIC_BATCH)
        del candidate.graph.value_info[:]
        if attempt == "reshape" and not _free_reshape_batch(candidate, batch):
            return None
        if _outputs_match(proto, candidate, batch):
            return candidate
    return None


def prepare_baseline(model, batch_sizes):
    """The model the pipeline measures: with its batch axis made symbolic where that is needed and possible.

    Args:
        model: the loaded ``Model``.
        batch_sizes: the batch sizes the recipe times.

    Returns:
        ``(model, notes)``: the same model when nothing had to change, else a new ``Model`` with the freed graph;
        `notes` are the plain-language lines that say what was done or why it could not be.
    """
    batch = fixed_batch_size(model.onnx_model)
    if batch is None:
        return model, []
    freed = make_batch_symbolic(model.onnx_model)
    if freed is None:
        others = sorted(set(batch_sizes) - {batch})
        note = (f"The model fixes its batch axis at {batch} and the graph does not run with other batch sizes "
                f"(it spells the batch out inside), so only batch {batch} can be timed"
                + (f"; batch size(s) {others} were skipped." if others else "."))
        return model, [note]
    note = (f"The model fixed its batch axis at {batch}; Featherweight made it symbolic (checked in onnxruntime: "
            f"a batch of {2 * batch} gives the same outputs) so other batch sizes can be timed.")
    fixed = Model(model.source, freed, model.torch_module, model.architecture, list(model.notes))
    return fixed, [note]


__all__ = ["drop_initializer_inputs", "make_batch_symbolic", "prepare_baseline",
           "raise_ir_version"]


# ---- constant folding at load: weights some exports compute at run time (ConstantOfShape / Add / Reshape ...)

# Never folded: random ops (a fold would freeze one draw), quantization ops (folding dequantizes int8 weights to
# float and makes the file 4x larger), and ops with subgraphs or from other domains (the reference evaluator may
# not know them).
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
            "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan", "SequenceMap"}


def _subgraph_names(node) -> set[str]:
    """Every tensor name the node's subgraphs (If / Loop bodies) read, which may be outer-scope names."""
    import onnx

    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


def fold_constants(proto, max_bytes: int = 2**31 - 2**24) -> int:
    """Replace the subgraphs that compute tensors from weights alone (no graph input) by their values, in place.

    Some exports build their weights at run time (a ConstantOfShape filled, then Add / Mul / Reshape): the file
    is tiny, the model card counted almost no parameters, pruning found no weights, and quantization, which folds
    them itself, wrote a far larger file than the upload. onnxruntime computes the same values when it builds a
    session; here it is done once, at load, with onnx's reference evaluator. A Cast reading a stored initializer
    (fp16 weights stored as such) is kept, so a fold never makes a model's stored weights wider.

    Args:
        proto: the ModelProto (changed in place).
        max_bytes: refuse to fold (and change nothing) when the folded tensors would exceed this.

    Returns:
        The number of nodes folded away (0: nothing to fold, or nothing changed).
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    stored = {i.name for i in graph.initializer}
    constant = set(stored)
    folded = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constant.update(node.output)
            continue
        inputs = [name for name in node.input if name]
        if (node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD or not inputs
                or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
                or not all(name in constant for name in inputs)
                or (node.op_type == "Cast" and inputs[0] in stored)):
            continue
        folded.append(node)
        constant.update(node.output)
    if not folded:
        return 0
    folded_ids = {id(n) for n in folded}
    kept_nodes = [n for n in graph.node if id(n) not in folded_ids]
    used = {name for n in kept_nodes for name in n.input} | {o.name for o in graph.output}
    for n in kept_nodes:
        used |= _subgraph_names(n)
    frontier = [name for n in folded for name in n.output if name and name in used]
    if not frontier:
        return 0
    helper_graph = onnx.helper.make_graph(
        [n for n in graph.node if n.op_type == "Constant" or id(n) in folded_ids], "fold",
        [], [onnx.helper.make_empty_tensor_value_info(name) for name in frontier], list(graph.initializer))
    helper_model = onnx.helper.make_model(helper_graph, opset_imports=list(proto.opset_import))
    helper_model.ir_version = proto.ir_version
    try:
        values = ReferenceEvaluator(helper_model).run(None, {})
    except Exception:  # noqa: BLE001 - an op the evaluator lacks: leave the graph to onnxruntime, as it was
        return 0
    if sum(np.asarray(v).nbytes for v in values) > max_bytes:
        return 0
    graph.ClearField("node")
    graph.node.extend(kept_nodes)
    for name, value in zip(frontier, values):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    # Drop what only the folded nodes read: Constant nodes and stored weights nobody uses any more.
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for n in graph.node:
        used |= _subgraph_names(n)
    alive = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    graph.ClearField("node")
    graph.node.extend(alive)
    inputs = {v.name for v in graph.input}
    kept = [i for i in graph.initializer if i.name in used or i.name in inputs]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return len(folded)
