"""Static int8 (QDQ): calibrate, quantize with onnxruntime's QDQ quantizer, then the recovery steps the config asks
for, each unit kept only where the validation split improves (`core.techniques.recovery`).

Order: plain int8 first (the graph every recovery is compared with), then nodes kept in float (per node: they
decide which layers the other steps work on), SmoothQuant (per MatMul input), cross-layer equalization (per pair),
learned weight rounding (the model), bias correction (per layer) and a calibration method per tensor. The steps
after the exclusions edit the graph's initializers through `core.techniques.qdq`, so the int8 graph keeps plain
int8's operators (SmoothQuant adds one elementwise Mul in front of each input it smooths); a node kept in float
really runs in float (onnxruntime leaves its weights float, `keep_excluded_in_float` its inputs).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.graph import attention_softmaxes, fixed_batch_size, quantized_layer_names, quantized_nodes, task_of
from core.io.model import ensure_opset
from core.io.repair import drop_initializer_inputs
from core.spec.recipe import StaticInt8Config, key_list
from core.techniques import Candidate, StepContext, register
from core.techniques.bias_correction import channel_means
from core.techniques.equalize import equalize, find_pairs, fold_batch_norms, fold_pads
from core.techniques.histogram import ActivationStatistics, channel_ranges
from core.techniques.qdq import QdqGraph
from core.techniques.quantize import STATIC_ATTENTION_OPS, calibration_ranges, keep_excluded_in_float, preprocess
from core.techniques.recovery import Gate, Judge, StepRecord
from core.techniques.rounding import input_moments, layer_inputs, learned_levels, output_error
from core.techniques.smooth import smooth_groups, smoothing_scales

# Validation samples one recovery check scores (every check runs the int8 graph over them): shapes' 667 would make
# a per-layer step several times slower for a finer verdict than its test split can report anyway.
MAX_JUDGE_SAMPLES = 256


def prepare(proto):
    """The float graph static int8 starts from: opset upgraded, initializer inputs dropped, BN and zero Pads
    folded into their convs (exact; onnxruntime folds them at load anyway), so plain int8 and every recovery
    variant quantize the same graph."""
    import onnx

    prepared = onnx.ModelProto()
    prepared.CopyFrom(proto)
    prepared = drop_initializer_inputs(ensure_opset(prepared))
    fold_batch_norms(prepared)
    fold_pads(prepared)
    return prepared


def _float_weights(float_proto, graph: QdqGraph) -> dict:
    """Per quantized layer of `graph`: (float weight, float bias or None) from the float graph it came from."""
    from onnx import numpy_helper

    inits = {i.name: i for i in float_proto.graph.initializer}
    nodes = {n.name: n for n in float_proto.graph.node if n.name}
    out = {}
    for name, layer in graph.layers.items():
        node = nodes.get(name)
        if node is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        bias = None
        if len(node.input) > 2 and node.input[2] in inits:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        out[name] = (weight, bias)
    return out


def _onnxruntime_quantize(proto, ranges, config: StaticInt8Config, workdir: Path, op_types, exclude=()):
    """onnxruntime's QDQ quantizer with the given ranges (its calibration cache): the plain int8 graph, or with
    `exclude` left in float. In a graph with attention (`op_types` restricted to the layers with weights) the
    MatMul / Gemm outputs stay float: they feed float ops there (the bias Add, LayerNorm, the scores' scale), so
    quantizing them only adds error (MiniLM: cosine 0.9406 with them quantized, 0.9887 without, measured)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = workdir / "calibration.json"
    save_tensors_data(ranges, cache)
    out = workdir / "quantized.onnx"
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    extra = {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]} if op_types is not None else {}
    quantize_static(proto, str(out), None, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    calibration_cache_path=cache, op_types_to_quantize=op_types, nodes_to_exclude=list(exclude),
                    extra_options=extra)
    return onnx.load(str(out))


def _ranges_of(data) -> dict:
    return {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value) for name in data.keys()}


class _Static:
    """One static int8 build: the float graph, its calibration, the plain QDQ graph and the gate."""

    def __init__(self, config: StaticInt8Config, proto, context: StepContext, workdir: Path):
        self.config, self.context, self.workdir = config, context, workdir
        self.float_proto = proto
        self.fixed_batch = fixed_batch_size(proto)
        self.inputs = context.dataset.calibration_inputs(config.samples)
        self.used = len(next(iter(self.inputs.values())))
        self.stats = ActivationStatistics(proto, self.inputs, workdir / "stats", fixed_batch=self.fixed_batch,
                                          should_stop=context.check_stop)
        self.ranges = calibration_ranges(proto, self.inputs, config.calibration, workdir, statistics=self.stats)
        self.records: list[StepRecord] = []
        self.smoothing: dict[str, np.ndarray] = {}  # MatMul -> SmoothQuant's s (its input is x / s in int8)

    def report(self, message: str, fraction: float) -> None:
        self.context.report(message, fraction)

    def record(self, step: str, unit: str, gate: Gate, before: dict, **details) -> StepRecord:
        record = StepRecord(step, unit, before=before, after=gate.described(), details=details)
        self.records.append(record)
        return record


# ----------------------------------------------------------------------------------------------------------------
# The steps


def _equalization(build: _Static, gate: Gate, graph_weights: dict) -> None:
    """Cross-layer equalization, one pair at a time: the pair's two convs get their equalized float weights
    (requantized on their own grid) and the tensors between them their range from a calibration of the equalized
    graph; kept where validation improves.

    A ReLU6 pair takes the cap-aware route only (exact on the calibration data; a channel that reaches 6 cannot be
    scaled, and on EfficientNet-Lite1 6,308 of them do). AIMET's route (ReLU6 as Relu) was tried per pair too and
    dropped: two pairs kept that way moved the float model itself to 0.854 agreement with the original on
    validation (KL 0.034), and the steps after it then had a distorted target to reproduce."""
    proto = build.float_proto
    pairs = find_pairs(copy.deepcopy(proto))
    relu6 = [(p.conv1.name or p.conv1.output[0]) for p in pairs if p.relu6_cap is not None]
    before = gate.described()
    routes = {}
    peaks = {}
    if relu6:
        build.report("measuring the ReLU6 channels' peaks for cap-aware equalization", 0.22)
        conv_outputs = {(p.conv1.name or p.conv1.output[0]): p.conv1.output[0] for p in pairs}
        maxima = channel_ranges(proto, build.inputs, [conv_outputs[c] for c in relu6], fixed_batch=build.fixed_batch,
                                should_stop=build.context.check_stop)
        peaks = {c: maxima[conv_outputs[c]][1] for c in relu6 if conv_outputs[c] in maxima}
    for route, channel_max in (("cap-aware", peaks),):
        equalized = copy.deepcopy(proto)
        report = equalize(equalized, fold=False, channel_max=channel_max)
        if not report.pairs:
            build.record("equalization", "pair", gate, before, reason=report.reason, pairs_found=0)
            return
        build.report(f"calibrating the equalized graph ({route}, {len(report.pairs)} pairs)", 0.25)
        stats = ActivationStatistics(equalized, build.inputs, build.workdir / f"stats-{route}",
                                     fixed_batch=build.fixed_batch, should_stop=build.context.check_stop)
        routes[route] = (report, equalized, _ranges_of(calibration_ranges(
            equalized, build.inputs, build.config.calibration, build.workdir, statistics=stats)))
    first = routes["cap-aware"][0]
    kept_scales: dict[tuple, tuple] = {}
    kept, kept_routes = [], {}
    trial = QdqGraph(gate.proto)
    for index, (conv1, activation, conv2) in enumerate(first.pairs):
        build.context.check_stop()
        build.report(f"equalization {index + 1}/{len(first.pairs)}: {conv1} -> {conv2}",
                     0.28 + 0.12 * index / len(first.pairs))
        if conv1 not in trial.layers or conv2 not in trial.layers or conv1 not in graph_weights \
                or conv2 not in graph_weights:
            continue
        for route, (report, _, eq_ranges) in routes.items():
            chain, scale = report.scales[(conv1, conv2)]
            scales = {**kept_scales, (conv1, conv2): (chain, scale)}
            trial.begin()
            for conv in (conv1, conv2):
                weight, bias = _equalized_weights(conv, graph_weights[conv], scales)
                layer = trial.layers[conv]
                trial.set_weight(layer, weight)
                if bias is not None and layer.bias is not None:
                    trial.set_bias(layer, bias)
            for name in {*chain, trial.layers[conv1].node.output[0]}:  # the quantizer may rename a folded output
                if name in trial.activations and name in eq_ranges:
                    trial.set_activation_range(name, *eq_ranges[name])
            if gate.offer_edit(trial):
                kept_scales[(conv1, conv2)] = (chain, scale)
                kept_routes[(conv1, conv2)] = route
                kept.append(f"{conv1} -> {conv2}")
                break
    for conv in {c for key in kept_scales for c in key}:
        graph_weights[conv] = _equalized_weights(conv, graph_weights[conv], kept_scales)
    details = {"pairs_found": len(first.pairs), "relu6_pairs": len(relu6),
               "cap_bound_channels": first.cap_bound_channels}
    if gate.judge is not None and kept_routes:  # cap-aware is exact on calibration data; held-out data says
        details["fp32_change"] = gate.judge.describe(gate.judge.score(_float_graph(build, graph_weights)))
    record = build.record("equalization", "pair", gate, before, **details)
    record.tried, record.kept = len(first.pairs), kept


def _float_graph(build: _Static, graph_weights: dict):
    """The float graph with the float weights the recovery steps have settled on so far (equalized, smoothed):
    what learned rounding must reproduce, and what `fp32_change` compares with the original."""
    from onnx import numpy_helper

    changed = copy.deepcopy(build.float_proto)
    nodes = {n.name: n for n in changed.graph.node if n.name}
    inits = {i.name: i for i in changed.graph.initializer}
    for name, (weight, bias) in graph_weights.items():
        node = nodes.get(name)
        if node is None or node.input[1] not in inits or name in build.smoothing:
            continue  # a smoothed MatMul keeps x @ W here (the same product as x / s @ s W)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), node.input[1]))
        if bias is not None and len(node.input) > 2 and node.input[2] in inits:
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), node.input[2]))
    return changed


def _equalized_weights(conv: str, weights: tuple, scales: dict) -> tuple:
    """`conv`'s float (weight, bias) with the kept pairs' scales: output channels divided where it is a pair's
    first conv, input channels multiplied where it is the second (depthwise: its channels)."""
    weight, bias = weights
    weight = weight.copy()
    bias = None if bias is None else bias.copy()
    for (first, second), (_, scale) in scales.items():
        if conv == first:
            weight = weight / scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            if bias is not None:
                bias = bias / scale
        if conv == second:
            if weight.shape[1] == 1 and weight.shape[0] == len(scale):  # depthwise
                weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            else:
                weight = weight * scale.reshape((1, -1) + (1,) * (weight.ndim - 2))
    return weight, bias


def _learned_rounding(build: _Static, gate: Gate, graph_weights: dict) -> None:
    """Every quantized Conv / Gemm / MatMul's int8 weights chosen to reproduce its float output on the calibration
    data (`core.techniques.rounding`), as one step, kept if validation improves."""
    trial = QdqGraph(copy.deepcopy(gate.proto))
    names = [n for n in trial.layers if n in graph_weights]
    specs = layer_inputs(build.float_proto, set(names))
    before = gate.described()
    if not specs:
        build.record("learned_rounding", "model", gate, before, reason="no quantized layer with float weights")
        return
    build.report(f"learned rounding: input statistics of {len(specs)} layers", 0.42)
    # the inputs each layer sees with the weights settled so far (an equalized conv's input is scaled per channel)
    moments = input_moments(_float_graph(build, graph_weights), build.inputs, specs,
                            {n: graph_weights[n][0] for n in specs},
                            fixed_batch=build.fixed_batch, seed=build.context.seed,
                            should_stop=build.context.check_stop)
    nearest_error = learned_error = 0.0
    for index, name in enumerate(specs):
        build.context.check_stop()
        layer = trial.layers[name]
        weight, _ = graph_weights[name]
        scale = trial.get(layer.weight_scale).astype(np.float64).reshape(-1)
        if name in build.smoothing:  # its int8 input is x / s: H of x / s = H / (s s^T)
            smooth = build.smoothing[name]
            moments[name] = moments[name] / np.outer(smooth, smooth)
        levels = learned_levels(weight, scale, moments[name], axis=layer.axis, groups=specs[name].groups,
                                transposed=specs[name].transposed)
        if moments[name].ndim == 2 and (weight.ndim >= 3 or specs[name].transposed):
            grid = scale.reshape((-1,) + (1,) * (weight.ndim - 1)) if scale.size > 1 else scale[0]
            rows = weight.reshape(weight.shape[0], -1)
            nearest = np.clip(np.round(weight / grid), -127, 127) * grid
            nearest_error += output_error(rows, nearest.reshape(rows.shape), moments[name])
            learned_error += output_error(rows, (np.clip(levels, -127, 127) * grid).reshape(rows.shape),
                                          moments[name])
        trial.set_weight(layer, weight, scale, rounded=levels)
        build.report(f"learned rounding {index + 1}/{len(specs)}: {name}", 0.45 + 0.1 * index / len(specs))
    kept = gate.offer(trial.proto)
    record = build.record("learned_rounding", "model", gate, before,
                          calibration_output_error={"nearest": round(nearest_error, 6),
                                                    "learned": round(learned_error, 6)})
    record.tried, record.kept = len(specs), list(specs) if kept else []


def _bias_correction(build: _Static, gate: Gate) -> None:
    """Each quantized Conv / Gemm's per-channel mean output shift against float, on the calibration data, added
    to its int32 bias, one layer at a time, kept where validation improves."""
    graph = QdqGraph(gate.proto)  # read only here
    layers = [layer for layer in graph.layers.values() if layer.bias is not None and layer.op_type in ("Conv", "Gemm")]
    before = gate.described()
    if not layers:
        build.record("bias_correction", "layer", gate, before, reason="no quantized Conv / Gemm with a bias")
        return
    float_nodes = {n.name: n for n in build.float_proto.graph.node if n.name}
    layers = [layer for layer in layers if layer.name in float_nodes]
    # the quantizer renames an output it quantizes (logits -> logits_QuantizeLinear_Input): pair them by node
    float_outputs = {layer.name: float_nodes[layer.name].output[0] for layer in layers}
    build.report(f"bias correction: mean outputs of {len(layers)} layers, float and int8", 0.56)
    float_means = channel_means(build.float_proto, build.inputs, list(float_outputs.values()),
                                fixed_batch=build.fixed_batch)
    quant_means = channel_means(graph.proto, build.inputs, [layer.node.output[0] for layer in layers],
                                fixed_batch=build.fixed_batch)
    kept, shifts = [], {}
    trial = QdqGraph(gate.proto)
    for index, layer in enumerate(layers):
        build.context.check_stop()
        delta = float_means[float_outputs[layer.name]] - quant_means[layer.node.output[0]]
        shifts[layer.name] = round(float(np.abs(delta).mean()), 6)
        trial_layer = trial.layers[layer.name]
        trial.begin()
        trial.set_bias(trial_layer, trial.float_bias(trial_layer) + delta)
        build.report(f"bias correction {index + 1}/{len(layers)}: {layer.name}", 0.58 + 0.12 * index / len(layers))
        if gate.offer_edit(trial):
            kept.append(layer.name)
    record = build.record("bias_correction", "layer", gate, before, mean_abs_shift=shifts)
    record.tried, record.kept = len(shifts), kept


def _calibration_overrides(build: _Static, gate: Gate) -> None:
    """The overrides' ranges, one tensor at a time, kept where validation improves."""
    overrides = build.config.calibration_overrides
    known = set(build.stats.tensors)
    unknown = [t for t in overrides if t not in known]
    if unknown:
        raise BadInputError(f"quantize.calibration_overrides names unknown tensor(s) {key_list(unknown)}; "
                            f"allowed: {key_list(known)}")
    ranges = {method: _ranges_of(calibration_ranges(build.float_proto, build.inputs, method, build.workdir,
                                                    tensors=[t for t, m in overrides.items() if m == method],
                                                    statistics=build.stats))
              for method in sorted(set(overrides.values()))}
    before = gate.described()
    kept = []
    trial = QdqGraph(gate.proto)
    for index, (tensor, method) in enumerate(overrides.items()):
        build.context.check_stop()
        if tensor not in trial.activations or tensor not in ranges[method]:
            continue
        trial.begin()
        trial.set_activation_range(tensor, *ranges[method][tensor])
        build.report(f"calibration {index + 1}/{len(overrides)}: {tensor} ({method})", 0.72)
        if gate.offer_edit(trial):
            kept.append(f"{tensor}: {method}")
    record = build.record("calibration", "tensor", gate, before)
    record.tried, record.kept = len(overrides), kept


def _smooth_quant(build: _Static, gate: Gate, graph_weights: dict) -> None:
    """SmoothQuant (Xiao et al., ICML 2023), one MatMul input at a time: the input's per-channel outlier scale s
    moves into the weights (W * s) and out of the activation (x / s: into the LayerNorm before it where there is
    one, else into the producing MatMul's weights), so the int8 activation range shrinks; kept where validation
    improves."""
    graph = QdqGraph(copy.deepcopy(gate.proto))
    groups = smooth_groups(build.float_proto, graph)
    before = gate.described()
    if not groups:
        build.record("smooth_quant", "matmul input", gate, before,
                     reason="no quantized MatMul reads an activation whose scale can move into the graph")
        return
    build.report(f"SmoothQuant: per-channel ranges of {len(groups)} MatMul inputs", 0.2)
    channel = channel_ranges(build.float_proto, build.inputs, [g.tensor for g in groups], axis=-1,
                             fixed_batch=build.fixed_batch, should_stop=build.context.check_stop)
    kept = []
    for index, group in enumerate(groups):
        build.context.check_stop()
        if group.tensor not in channel:
            continue
        low, high = channel[group.tensor]
        scale = smoothing_scales(np.maximum(np.abs(low), np.abs(high)),
                                 [graph_weights[m][0] for m in group.matmuls if m in graph_weights])
        trial = QdqGraph(copy.deepcopy(gate.proto))
        if not group.apply(trial, scale, graph_weights, low, high):
            continue
        build.report(f"SmoothQuant {index + 1}/{len(groups)}: {group.tensor}", 0.2 + 0.05 * index / len(groups))
        if gate.offer(trial.proto):
            group.commit(graph_weights, scale)
            build.smoothing.update({name: scale for name in group.matmuls})
            kept.append(group.tensor)
    record = build.record("smooth_quant", "matmul input", gate, before, alpha=0.5)
    record.tried, record.kept = len(groups), kept


# Passes over the nodes an exclusion step has not kept yet: a node whose float island alone does not help can help
# once its neighbours are float too (its input then needs no Quantize / Dequantize at all).
EXCLUSION_PASSES = 3


def _exclusions(build: _Static, gate: Gate, op_types) -> None:
    """Each node of `exclude` kept in float, one at a time, kept where validation improves; nodes not kept are
    tried again after the others (up to EXCLUSION_PASSES passes). A candidate is onnxruntime's quantizer run again
    with the nodes kept so far and this one excluded (the ranges are the calibration's, so no calibration runs
    again), with their inputs made float (`keep_excluded_in_float`) so that onnxruntime cannot fuse them back
    into an int8 kernel at load time."""
    names = {n.name for n in build.float_proto.graph.node}
    missing = [n for n in build.config.exclude if n not in names]
    before = gate.described()
    kept, restored = [], 0
    waiting = [n for n in build.config.exclude if n not in missing]
    for _ in range(EXCLUSION_PASSES):
        progress = False
        for node in list(waiting):
            build.context.check_stop()
            build.report(f"keeping {node} in float ({len(kept) + 1}/{len(build.config.exclude)})", 0.12)
            trial = _onnxruntime_quantize(build.float_proto, build.ranges, build.config, build.workdir, op_types,
                                          exclude=kept + [node])
            rewired = keep_excluded_in_float(trial, set(kept + [node]), build.float_proto)
            if gate.offer(trial):
                kept.append(node)
                waiting.remove(node)
                restored, progress = rewired, True
        if not progress or not waiting:
            break
    record = build.record("exclusion", "node", gate, before, float_inputs_restored=restored,
                          **({"not_in_graph": missing} if missing else {}))
    record.tried, record.kept = len(build.config.exclude) - len(missing), kept


# ----------------------------------------------------------------------------------------------------------------
# The apply function


@register(StaticInt8Config)
def quantize_static_int8(config: StaticInt8Config, candidate: Candidate, context: StepContext) -> Candidate:
    """Static int8 of the candidate's graph, with the recovery steps `config` asks for, each gated on validation.

    Records in `info`: the quantized nodes, the calibration samples used, and under ``recovery`` the validation
    score of plain int8, every step's tried and kept units and its gain, and the final score.

    Raises:
        BadInputError: an override or exclusion names a tensor or node the graph does not have.
        UnsupportedModelError: nothing to calibrate.
    """
    if config.target == "openvino":
        from core.techniques.nncf_quantize import quantize_for_openvino  # imports nncf (optional, heavy)

        return quantize_for_openvino(config, candidate, context)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    notes = list(candidate.notes)
    info = dict(candidate.info)
    proto = prepare(candidate.onnx_model)
    ops_before = {n.op_type for n in proto.graph.node}
    with tempfile.TemporaryDirectory(prefix="fw-static-") as tmp:
        workdir = Path(tmp)
        context.report("pre-processing the graph for static int8", 0.05)
        proto, pre = preprocess(proto, workdir)
        info["preprocess"] = "ok" if not pre else ", ".join(k for k in pre)
        context.check_stop()
        calib = context.dataset.calibration_inputs(config.samples)
        used = len(next(iter(calib.values()))) if calib else 0
        if not used:
            raise UnsupportedModelError("static int8 needs calibration inputs, and the calibration split is empty")
        context.report(f"calibrating on {used} samples ({config.calibration})", 0.1)
        build = _Static(config, proto, context, workdir)
        op_types = None  # onnxruntime's default: every operator it can quantize
        attention = attention_softmaxes(proto)
        if attention:
            op_types = sorted(ops_before & STATIC_ATTENTION_OPS)
            info["attention_softmaxes"] = len(attention)
            notes.append(f"attention found ({len(attention)} softmax): static int8 quantizes the "
                         f"{' / '.join(op_types)} layers only; the scores, the padding mask, softmax and the other "
                         "elementwise ops stay in float (quantized together, the mask's large additive constant "
                         "leaves the scores a few levels: MiniLM's cosine to fp32 fell to 0.37).")
        context.report("quantizing (onnxruntime QDQ)", 0.15)
        plain = _onnxruntime_quantize(proto, build.ranges, config, workdir, op_types)
        if config.recovers:
            result = _recover(build, plain, context, info, op_types)
        else:
            result = plain
    info["calibration_samples"] = used
    if used < config.samples:
        notes.append(f"calibrated on {used} samples, fewer than the {config.samples} asked for (the data has no "
                     "more calibration or train samples)")
    info["quantized_nodes"] = quantized_nodes(result)
    info["quantized_layers"] = quantized_layer_names(result)
    info.setdefault("excluded_nodes", [])
    if not info["quantized_nodes"]:
        notes.append("no node was quantized: the variant is the float model")
    return Candidate(onnx_model=result, torch_module=None, architecture=candidate.architecture, info=info,
                     notes=notes)


def _recover(build: _Static, plain, context: StepContext, info: dict, op_types):
    """The recovery steps on the plain graph, each gated; `info["recovery"]` records them. Nodes kept in float
    come first: they change which layers the other steps have to work on."""
    config = build.config
    judge = Judge.for_model(build.float_proto.SerializeToString(),
                            context.dataset.validation.take(MAX_JUDGE_SAMPLES), task_of(context.baseline)) \
        if _has_validation(context.dataset) else None
    gate = Gate(judge, plain)
    start = gate.described()
    if config.exclude:
        _exclusions(build, gate, op_types)
    graph_weights = _float_weights(build.float_proto, QdqGraph(gate.proto))
    if config.smooth_quant:
        _smooth_quant(build, gate, graph_weights)
    if config.equalize:
        _equalization(build, gate, graph_weights)
    if config.weight_rounding == "learned":
        _learned_rounding(build, gate, graph_weights)
    if config.bias_correction:
        _bias_correction(build, gate)
    if config.calibration_overrides:
        _calibration_overrides(build, gate)
    info["recovery"] = {
        "split": {"name": "validation", "n": judge.samples} if judge else None,
        "plain": start, "final": gate.described(), "checks": judge.checks if judge else 0,
        "steps": [r.to_dict() for r in build.records],
        "note": None if judge else "no validation split: every unit was applied without a check"}
    for record in build.records:  # the older keys, for readers of earlier results
        if record.step == "equalization":
            info["equalization"] = {"pairs": record.kept, **record.details}
        if record.step == "bias_correction":
            info["bias_correction"] = {"corrected": len(record.kept), "layers": record.kept}
        if record.step == "calibration":
            info["calibration_overrides"] = dict(config.calibration_overrides)
        if record.step == "exclusion":
            info["float_inputs_restored"] = record.details.get("float_inputs_restored", 0)
            info["excluded_nodes"] = list(record.kept)
    return gate.proto


def _has_validation(dataset) -> bool:
    return dataset.validation is not None and len(dataset.validation) > 0 and dataset.selection_name == "validation"
