"""Quantization through onnxruntime's tools: dynamic int8, fp16 and int4 weight-only, and what static int8
(`core.techniques.static`) shares: pre-processing, calibration ranges, keeping excluded nodes in float."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.model import ensure_opset
from core.io.repair import drop_initializer_inputs
from core.io.graph import quantized_layer_names, quantized_nodes
from core.measure.nbits import choice_text, resolve_level
from core.spec.recipe import DynamicInt8Config, Fp16Config, Int4WeightOnlyConfig, key_list
from core.io.files import scratch_cwd
from core.techniques import Candidate, StepContext, register
from core.techniques.histogram import ActivationStatistics, percentile_range

# Ops dynamic quantization touches by default: ConvInteger has no fast CPU kernel (measured several times slower
# than fp32 Conv here), so Conv is left in float unless quantize_conv is set.
DYNAMIC_OPS = ["MatMul", "Attention", "LSTM", "GRU", "Gather", "EmbedLayerNormalization"]
# What static int8 quantizes in a graph with attention: the layers with weights (int8 kernels, int8 tables).
STATIC_ATTENTION_OPS = {"Conv", "MatMul", "Gemm", "Gather"}
# Entropy (KL) calibration as TensorRT does it (Migacz, "8-bit Inference with TensorRT", GTC 2017): a 2048-bin
# histogram, searched for the threshold whose 128 quantized levels lose the least information. onnxruntime's
# defaults (128 bins for 128 quantized bins) leave a single candidate, the whole range, which is minmax.
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE = 99.999  # onnxruntime's default for CalibrationMethod.Percentile (over 2048 bins of |x|, symmetric)
PERCENTILE_BINS = 2048


def gemm_to_matmul(proto):
    """Rewrite Gemm nodes with a constant 2-D weight as MatMul (+ Add for the bias).

    onnxruntime's dynamic (MatMulInteger) and int4 (MatMulNBits) quantizers only handle MatMul, and
    torch.nn.Linear exports as Gemm. The rewrite is exact: Y = A @ W^T + C.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    new_nodes = []
    changed = False
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits
                or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.ndim != 2:
            new_nodes.append(node)
            continue
        if attrs.get("transB", 0):
            weight = weight.T
        name = node.name or node.output[0]
        weight_name = f"{node.input[1]}_matmul"
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        matmul_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [matmul_out], name=name))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [matmul_out, node.input[2]], [node.output[0]],
                                              name=f"{name}_bias"))
        changed = True
    if changed:
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes)
        used = {i for n in proto.graph.node for i in n.input}
        keep = [i for i in proto.graph.initializer if i.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(keep)
        onnx.checker.check_model(proto)
    return proto


# Ops onnxruntime's QDQ propagation moves a DequantizeLinear across when it loads a graph (DQ -> MaxPool becomes
# MaxPool -> DQ): a float reader behind one of them would read a DQ output after all. Measured on shapes-cnn: its
# second conv, excluded, read MaxPool(DQ(...)) and onnxruntime quantized its weights at load.
PROPAGATED_OPS = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Resize", "Gather",
                  "Split", "Expand", "DepthToSpace", "SpaceToDepth", "Identity"}


def keep_excluded_in_float(proto, exclude, float_proto) -> int:
    """Feed excluded nodes the float value their input has in `float_proto`, not a Quantize -> Dequantize pair.

    onnxruntime's load-time WeightBiasQuantization fuses ``DequantizeLinear -> Conv/Gemm -> QuantizeLinear`` into
    an int8 kernel even when the quantizer left the Conv's weights in float, which silently undoes ``exclude``.
    Without a DequantizeLinear on its input the node cannot be fused, so it really runs in float.

    The tensor in front of the QuantizeLinear is not always the float tensor of that name: the QDQ quantizer
    drops "removable" activations (Relu, Clip) after a quantized op, renames the op's output to the activation's
    output, and lets the uint8 QuantizeLinear's clamp do the activation. A float reader of that tensor would then
    skip the activation. So each input is rebuilt from `float_proto` (the graph the quantizer was given): a
    tensor whose float producer is still in the graph is read where that node now writes it, and a producer the
    quantizer removed is put back, in float, for the excluded node alone.

    Args:
        proto: the quantized model, changed in place.
        exclude: names of the nodes that must run in float.
        float_proto: the float model that was quantized (same node names).

    Returns:
        How many inputs were rewired.
    """
    from onnx import helper

    producers = {o: n for n in proto.graph.node for o in n.output}
    nodes_by_name = {n.name: n for n in proto.graph.node if n.name}
    float_producers = {o: (n, i) for n in float_proto.graph.node for i, o in enumerate(n.output)}
    float_inits = {i.name: i for i in float_proto.graph.initializer}
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = {i.name for i in proto.graph.input}
    rebuilt: dict[str, str] = {}
    added: list = []

    def float_value(name: str) -> str:
        """A tensor of `proto` that holds `name`'s value as `float_proto` computes it."""
        if name in rebuilt:
            return rebuilt[name]
        if name not in float_producers:  # a graph input or a weight
            if name not in inits and name not in graph_inputs and name in float_inits:
                proto.graph.initializer.append(float_inits[name])  # the quantizer replaced it; keep the float one
                inits.add(name)
            rebuilt[name] = name
            return name
        float_node, index = float_producers[name]
        kept = nodes_by_name.get(float_node.name) if float_node.name else producers.get(name)
        reads_quantized = kept is not None and any(
            producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in kept.input)
        if kept is not None and kept.op_type == float_node.op_type and index < len(kept.output) and \
                not (kept.op_type in PROPAGATED_OPS and reads_quantized):
            rebuilt[name] = kept.output[index]  # the same node writes it, perhaps under the removed op's name
            return rebuilt[name]
        # The quantizer folded this node away (a removable activation), or it is an op that onnxruntime moves a
        # DequantizeLinear across at load time (a MaxPool reading one would hand the excluded node a DQ output
        # again, and its weights would be quantized after all): put a float copy back.
        copy = helper.make_node(float_node.op_type, [float_value(i) if i else "" for i in float_node.input],
                                [f"{o}_float" if o else "" for o in float_node.output],
                                name=f"{float_node.name or float_node.output[0]}_float", domain=float_node.domain)
        copy.attribute.extend(float_node.attribute)
        added.append(copy)
        for i, o in enumerate(float_node.output):
            if o:
                rebuilt[o] = f"{o}_float"
        return rebuilt[name]

    rewired = 0
    for node in list(proto.graph.node):
        if node.name not in exclude:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = float_value(q.input[0])
                rewired += 1
    if added:
        proto.graph.node.extend(added)
        sort_topologically(proto.graph)
    if rewired:  # drop Q/DQ pairs nobody reads any more
        used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        changed = True
        while changed:
            changed = False
            for node in list(proto.graph.node):
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and not used & set(node.output):
                    proto.graph.node.remove(node)
                    changed = True
            used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    return rewired


def sort_topologically(graph) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs, keeping the order otherwise."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a dangling input: leave the rest as it was, the checker will say what is wrong
            ordered.extend(pending)
            break
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        placed = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in placed]
    del graph.node[:]
    graph.node.extend(ordered)


def preprocess(proto, workdir: Path):
    """onnxruntime's quant_pre_process (optimize + shape inference), falling back to simpler passes where the
    symbolic shape inference fails (common on transformers)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = (workdir / "pre_in.onnx").resolve()
    target = (workdir / "pre_out.onnx").resolve()
    onnx.save(proto, source)
    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True, "skip_optimization": True})
    # When symbolic shape inference fails, onnxruntime saves the whole model (with external data) into the
    # current directory; run it from the scratch directory so that debris lands there and is deleted with it.
    with scratch_cwd(workdir):
        for options in attempts:
            try:
                quant_pre_process(str(source), str(target), **options)
                return onnx.load(str(target)), options
            except Exception:  # noqa: BLE001 - fall through to the next, simpler pre-processing
                continue
    return proto, {"skipped": True}


def entropy_threshold(histogram, num_quantized_bins: int = ENTROPY_QUANTIZED_BINS):
    """The (low, high) range onnxruntime's entropy calibrator picks for one tensor's histogram.

    The same arithmetic as onnxruntime's ``HistogramCollector.get_entropy_threshold`` (its smoothing, its KL
    divergence, its integer rounding), with its per-bin Python loops replaced by array sums: over 2048 bins that
    search takes about a minute a tensor in onnxruntime and well under a second here. A test checks the two agree.

    Args:
        histogram: ``(counts, edges, min, max)`` as onnxruntime's HistogramCollector keeps it.
        num_quantized_bins: the quantized levels each candidate threshold is judged with.
    """
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, edges, min_value, max_value = histogram[:4]
    num_bins = hist.size
    zero_bin = num_bins // 2
    half = num_quantized_bins // 2
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    best, best_div = None, np.inf
    for i in range(half, zero_bin + 1):
        start, end = zero_bin - i, min(zero_bin + i + 1, num_bins)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cumulative[start]
        p[-1] += cumulative[-1] - cumulative[end]
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        body = merged * num_quantized_bins
        quantized = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1).astype(np.int64)
        quantized[-1] += sliced[body:].sum()
        norm = nonzeros[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        spread = np.where(norm != 0, quantized / np.maximum(norm, 1), 0.0)
        q[:body] = np.repeat(spread, merged)  # truncated to integers, as onnxruntime's int64 array does
        p, q = smooth_distribution(p), smooth_distribution(q)
        div = np.inf if p is None or q is None else float(entropy(p, q))
        if best is None or div < best_div:  # argmin: the first of equal minima wins
            best, best_div = (edges[start], edges[end]), div
    low, high = best
    if low < min_value:
        low = min_value
    if high > max_value:
        high = max_value
    return low, high


def calibration_ranges(proto, inputs: dict, calibration: str, workdir: Path, *, percentile: float = PERCENTILE,
                       entropy_bins: int = ENTROPY_BINS, tensors=None, fixed_batch: int | None = None,
                       statistics: ActivationStatistics | None = None):
    """Calibrate `proto` as the static quantizer does and return onnxruntime's ``TensorsData``: each tensor's range.

    The quantize step hands exactly these ranges to ``quantize_static`` (through its calibration cache), and the
    Learn page's calibration explainer shows them, so the two can never disagree. Histograms are built batch by
    batch (`core.techniques.histogram`): memory stays bounded however many samples calibrate.

    Args:
        proto: the float model (after pre-processing).
        inputs: the calibration inputs (name -> array, samples first).
        calibration: ``minmax``, ``entropy`` or ``percentile``.
        workdir: a scratch directory for the augmented model.
        percentile, entropy_bins: the knobs the Learn explainer lets a user move; the quantize step uses the
            defaults.
        tensors: only these tensors (the Learn page asks for one at a time), or None for all.
        fixed_batch: the graph's fixed batch size, if it has one.
        statistics: statistics already collected on these inputs (shared between methods), or None.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    stats = statistics or ActivationStatistics(proto, inputs, workdir, fixed_batch=fixed_batch)
    wanted = [t for t in stats.tensors if tensors is None or t in set(tensors)]
    if calibration == "minmax":
        return TensorsData(CalibrationMethod.MinMax, {t: tuple(np.float32(v) for v in stats.minmax[t])
                                                      for t in wanted})
    bins = entropy_bins if calibration == "entropy" else PERCENTILE_BINS
    histograms = stats.histograms(bins, wanted, absolute=calibration == "percentile")
    if calibration == "entropy":
        return TensorsData(CalibrationMethod.Entropy, {name: (*(np.float32(v) for v in entropy_threshold(h)),
                                                              *h[:2]) for name, h in histograms.items()})
    return TensorsData(CalibrationMethod.Percentile, {name: (*percentile_range(h, percentile), *h[:2])
                                                      for name, h in histograms.items()})


@register(DynamicInt8Config)
@register(Fp16Config)
@register(Int4WeightOnlyConfig)
def quantize(config, candidate: Candidate, context: StepContext) -> Candidate:
    """Dynamic int8, fp16 or int4 weight-only quantization of the candidate's ONNX graph (static int8 is
    `core.techniques.static`, QAT `core.techniques.qat`); records quantized nodes and caveats.

    Raises:
        UnsupportedModelError: nothing in the graph can be quantized in this mode (e.g. int4 without MatMul).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(candidate.onnx_model)  # the rewrites below work in place; never touch the caller's graph
    proto = drop_initializer_inputs(ensure_opset(proto))
    ops_before = {n.op_type for n in proto.graph.node}
    notes = list(candidate.notes)
    info = dict(candidate.info)
    with tempfile.TemporaryDirectory(prefix="fw-quant-") as tmp:
        workdir = Path(tmp)
        out = workdir / "quantized.onnx"
        if config.mode in ("dynamic", "int4"):
            proto = gemm_to_matmul(proto)
        context.report(f"pre-processing the graph for {config.mode}", 0.1)
        if config.mode == "dynamic":
            proto, pre = preprocess(proto, workdir)
            info["preprocess"] = "ok" if not pre else ", ".join(k for k in pre)
        context.check_stop()
        if config.mode == "dynamic":
            op_types = DYNAMIC_OPS + (["Conv"] if config.quantize_conv else [])
            quantizable = {"MatMul", "Gather", "Attention", "LSTM", "GRU"} | ({"Conv"} if config.quantize_conv
                                                                              else set())
            if not ops_before & (quantizable | {"Gemm"}):
                raise UnsupportedModelError("dynamic int8 found no MatMul/Gemm to quantize"
                                            + ("; this model is Conv-only: use static quantization"
                                               if "Conv" in ops_before else ""))
            context.report("quantizing weights (dynamic int8)", 0.4)
            quantize_dynamic(proto, str(out), op_types_to_quantize=op_types, per_channel=config.per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=list(config.exclude),
                             extra_options={"MatMulConstBOnly": True})
            if "Conv" in ops_before and not config.quantize_conv:
                notes.append("Conv layers stay in float under dynamic quantization (ConvInteger is slow on "
                             "CPUs); use static quantization for Conv speed-ups.")
            if config.quantize_conv and "Conv" in ops_before:
                notes.append("Conv layers run as ConvInteger, which is several times slower than float Conv "
                             "on CPUs; use static quantization instead.")
        elif config.mode == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            context.report("converting weights to fp16", 0.4)
            converted = convert_float_to_float16(proto, keep_io_types=True,
                                                 node_block_list=list(config.exclude) or None)
            onnx.save(converted, str(out))  # whether it runs faster is measured; core.results.compare explains a no
        elif config.mode == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            inits = {i.name for i in proto.graph.initializer}
            targets = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits
                       and n.name not in config.exclude]
            if not targets:
                raise UnsupportedModelError("int4 weight-only quantization needs MatMul/Gemm layers with constant "
                                            "weights; this model has none (try static int8)")
            context.report(f"packing {len(targets)} MatMul weights to 4 bits", 0.4)
            level, choice = resolve_level(config.accuracy_level, 4)  # "auto": measured for this CPU, cached
            if choice is not None:
                info["accuracy_level_auto"] = choice_text(choice)
            quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=config.block_size, is_symmetric=True,
                                             nodes_to_exclude=list(config.exclude), accuracy_level=level or None)
            quantizer.process()
            onnx.save(quantizer.model.model, str(out))
            if "Conv" in ops_before:
                notes.append("int4 packs MatMul weights only; Conv layers stay in float.")
        result = onnx.load(str(out))
    info["quantized_nodes"] = quantized_nodes(result)
    info["quantized_layers"] = quantized_layer_names(result)
    info["excluded_nodes"] = list(config.exclude)
    if not info["quantized_nodes"]:
        notes.append("no node was quantized: the variant is the float model")
    return Candidate(onnx_model=result, torch_module=None, architecture=candidate.architecture, info=info,
                     notes=notes)
