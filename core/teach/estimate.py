"""Size and speed before anything runs: bytes per weight, arithmetic, and a size estimate per technique, set
beside the sizes a run measured."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import BadInputError, UnsupportedModelError
from core.spec.checks import brief_repr as brief
from core.spec.labels import steps_label
from core.measure.compute import model_compute_profile
from core.io.files import inside_run
from core.teach.weights import weight_tensors
from core.io.model import load_model
from core.spec.recipe import DistillConfig, PruneConfig, QuantizeConfig, StepConfig, step_from_dict

# Size and speed: bytes per weight, arithmetic, and a size estimate before running anything

# Bytes of graph structure (node, tensor and initializer names, attributes) onnxruntime's quantizers add per
# quantized tensor, as a + b * len(tensor name): fitted to the quantized digits-cnn and digits-mlp graphs
# (static QDQ: a DequantizeLinear per weight; a QuantizeLinear/DequantizeLinear pair per activation; dynamic:
# six nodes per MatMul). The estimate stays within a few percent of the measured file sizes of both samples.
QDQ_WEIGHT_OVERHEAD = (125, 10)
QDQ_ACTIVATION_OVERHEAD = (210, 13)
DYNAMIC_MATMUL_OVERHEAD = (1400, 0)
INT4_MATMUL_OVERHEAD = 300
FP16_CAST_OVERHEAD = 120  # per graph input / output: keep_io_types adds a Cast each
INT4_BLOCK = 32


@dataclass
class _Layer:
    """One weighted layer in the estimate: element counts, output channels and how its numbers are stored."""

    name: str
    op_type: str
    weight: float  # elements
    bias: float
    out_channels: float
    input_share: float = 1.0  # of the original input features still present (after pruning the layer before)
    out_share: float = 1.0
    dtype: str = "fp32"  # fp32 | fp16 | int8 | int4
    per_channel: bool = True
    k: float = 0.0  # reduction size (inputs per output), for int4 blocks
    name_length: int = 0
    exact: bool = True  # shapes known (from a graph), not guessed (from a card)


@dataclass
class _Graph:
    layers: list
    other_float: float  # elements of float initializers outside the weighted layers
    overhead: float  # bytes of graph structure (nodes, names, shapes)
    activations: list  # names of activation tensors static quantization would put QDQ pairs on
    io_count: int
    has_conv: bool
    layer_op_types: set
    architecture: bool  # True when students scale this architecture (not an ONNX template)


def _graph_from_proto(proto) -> _Graph:
    inits = {i.name: i for i in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers, used = [], set()
    for tensor in weight_tensors(proto):
        node = next(n for n in proto.graph.node if (n.name or n.output[0]) == tensor.node)
        bias = 0
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in inits:
            bias = int(np.prod(inits[node.input[2]].dims))
            used.add(node.input[2])
        used.add(tensor.name)
        k = tensor.size / max(1, tensor.channels)
        layers.append(_Layer(tensor.name, tensor.op_type, float(tensor.size), float(bias), float(tensor.channels),
                             k=k, name_length=len(tensor.name)))
    data_bytes = sum(len(i.raw_data) or _tensor_bytes(i) for i in proto.graph.initializer)
    other = sum(int(np.prod(i.dims)) for i in proto.graph.initializer
                if i.name not in used and i.data_type == 1)
    overhead = max(0, proto.ByteSize() - data_bytes)
    # static QDQ puts a Q/DQ pair on every float tensor between ops, except a Conv/Gemm output that only feeds a
    # Relu (fused) or outputs of nodes with no float output to quantize
    activations = [v.name for v in proto.graph.input if v.name not in inits]
    for node in proto.graph.node:
        for out in node.output:
            users = consumers.get(out, [])
            if node.op_type in ("Conv", "Gemm", "MatMul") and len(users) == 1 and users[0].op_type == "Relu":
                continue
            activations.append(out)
    ops = {n.op_type for n in proto.graph.node}
    return _Graph(layers, float(other), float(overhead), activations,
                  len([v for v in proto.graph.input if v.name not in inits]) + len(proto.graph.output),
                  "Conv" in ops, ops, True)


def _tensor_bytes(init) -> int:
    """Bytes of an initializer's values when they are not stored as raw_data."""
    from onnx import numpy_helper

    try:
        return int(numpy_helper.to_array(init).nbytes)
    except Exception:  # noqa: BLE001 - exotic types: count 4 bytes an element
        return 4 * int(np.prod(init.dims))


def _graph_from_card(card: dict) -> _Graph:
    """The same facts from a model card (no shapes: output channels are guessed as sqrt(params))."""
    layers = []
    weighted = 0
    for row in card.get("layers") or []:
        params = float(row.get("params") or 0)
        channels = max(1.0, math.sqrt(params))
        weighted += int(row.get("bytes") or params * 4)
        layers.append(_Layer(str(row.get("name")), str(row.get("type")), params - channels, channels, channels,
                             k=params / channels, name_length=len(str(row.get("name"))), exact=False))
    size = float(card.get("size_bytes") or 0)
    ops = set((card.get("op_types") or {}))
    nodes = int(card.get("nodes") or len(layers))
    relu_fused = min(len(layers), int((card.get("op_types") or {}).get("Relu", 0)))
    activations = [f"activation_{i:03d}_output_tensor_name" for i in range(max(0, nodes + 1 - relu_fused))]
    io = len(card.get("inputs") or []) + len(card.get("outputs") or [])
    return _Graph(layers, 0.0, max(0.0, size - weighted), activations, io, "Conv" in ops, ops,
                  bool(card.get("architecture")))


def _as_step(step):
    return step if isinstance(step, StepConfig) else step_from_dict(dict(step))


def _scale_layers(graph: _Graph, keep: float, *, keep_head: bool = True) -> None:
    """Scale every layer's output channels by `keep` (rounded), except the head, and each next layer's inputs
    by the share its predecessor kept: what structured pruning and width-scaled students do to a chain."""
    previous = 1.0
    for i, layer in enumerate(graph.layers):
        head = keep_head and i == len(graph.layers) - 1
        channels = layer.out_channels if head else max(1.0, round(layer.out_channels * keep))
        share = channels / max(1.0, layer.out_channels)
        layer.weight = layer.weight * share * previous
        layer.k = layer.k * previous
        layer.bias = layer.bias * share
        layer.out_channels = channels
        previous = share


def _apply_step(graph: _Graph, step) -> None:
    technique = step.technique
    if technique == "prune":
        if step.method == "structured":
            _scale_layers(graph, 1 - step.amount)
        return  # unstructured / 2:4 zero weights but store them all (the zip-compressed size shrinks)
    if technique == "distill":
        if graph.architecture:
            _scale_layers(graph, step.width)
        else:  # an ONNX template student with about width^2 of the parameters
            for layer in graph.layers:
                layer.weight *= step.width ** 2
                layer.bias *= step.width
                layer.out_channels = max(1.0, layer.out_channels * step.width)
        for layer in graph.layers:
            layer.dtype = "fp32"
        return
    mode = step.mode
    excluded = set(step.exclude)
    if mode == "fp16":
        for layer in graph.layers:
            if layer.name not in excluded:
                layer.dtype = "fp16"
        graph.other_float /= 2
        graph.overhead += FP16_CAST_OVERHEAD * graph.io_count
        return
    for layer in graph.layers:
        if layer.name in excluded or layer.dtype != "fp32":
            continue
        if mode == "static" or (mode == "dynamic" and (layer.op_type in ("Gemm", "MatMul") or step.quantize_conv)):
            layer.dtype = "int8" if mode == "static" else "int8-dynamic"
            layer.per_channel = step.per_channel
        elif mode == "int4" and layer.op_type in ("Gemm", "MatMul"):
            layer.dtype = "int4"
    if mode == "static":
        a, b = QDQ_ACTIVATION_OVERHEAD
        graph.overhead += sum(a + b * len(name) + 5 for name in graph.activations)  # + a uint8 zp, fp32 scale
        graph.activations = []


def _layer_bytes(layer: _Layer) -> dict:
    """Weight, bias, scale and structure bytes of one layer as stored."""
    channels = layer.out_channels
    if layer.dtype == "fp32":
        return {"weights": 4 * layer.weight, "biases": 4 * layer.bias, "scales": 0.0, "structure": 0.0}
    if layer.dtype == "fp16":
        return {"weights": 2 * layer.weight, "biases": 2 * layer.bias, "scales": 0.0, "structure": 0.0}
    if layer.dtype == "int4":
        blocks = channels * (math.ceil(layer.k / INT4_BLOCK) if layer.exact else layer.k / INT4_BLOCK)
        return {"weights": blocks * INT4_BLOCK / 2, "biases": 4 * layer.bias, "scales": 4 * blocks,
                "structure": INT4_MATMUL_OVERHEAD}
    scales = channels if layer.per_channel else 1
    if layer.dtype == "int8-dynamic":
        a, b = DYNAMIC_MATMUL_OVERHEAD
        return {"weights": layer.weight, "biases": 4 * layer.bias, "scales": 5 * scales,
                "structure": a + b * layer.name_length}
    a, b = QDQ_WEIGHT_OVERHEAD
    # static QDQ: int8 weights with a float scale and int8 zero point each; the bias becomes int32 with its own
    # float scale and int32 zero point per channel (one per tensor when per_channel is off)
    bias_scales = channels if layer.per_channel else 1
    return {"weights": layer.weight, "biases": 4 * layer.bias,
            "scales": 5 * scales + (8 * bias_scales if layer.bias else 0),
            "structure": a + b * layer.name_length + (a + b * (layer.name_length + 8) if layer.bias else 0)}


def estimate_breakdown(model_card_or_proto, steps=()) -> dict:
    """Where the bytes of the model after `steps` would go: weights, biases, quantization scales and graph
    structure, estimated from the baseline's layers without running anything.

    Args:
        model_card_or_proto: an ``onnx.ModelProto`` (exact layer shapes) or a model card from
            ``core.measure.card.model_card`` (layer parameter counts only: a rougher estimate).
        steps: step configs (``QuantizeConfig``...) or their dicts, in recipe order.

    Returns:
        {"weights", "biases", "scales", "structure", "total_bytes", "params"}: bytes (ints) and the weight count.
    """
    if isinstance(model_card_or_proto, dict):
        graph = _graph_from_card(model_card_or_proto)
    elif hasattr(model_card_or_proto, "graph"):
        graph = _graph_from_proto(model_card_or_proto)
    else:
        raise BadInputError(f"estimate_size needs a model card (dict) or an ONNX ModelProto, got "
                            f"{type(model_card_or_proto).__name__}")
    for step in steps or ():
        _apply_step(graph, _as_step(step))
    parts = {"weights": 0.0, "biases": 0.0, "scales": 0.0, "structure": graph.overhead}
    for layer in graph.layers:
        for key, value in _layer_bytes(layer).items():
            parts[key] += value
    parts["weights"] += 4 * graph.other_float
    out = {k: int(round(v)) for k, v in parts.items()}
    out["total_bytes"] = int(sum(out.values()))
    out["params"] = int(round(sum(layer.weight + layer.bias for layer in graph.layers) + graph.other_float))
    return out


def estimate_size(model_card_or_proto, steps=()) -> int:
    """The file size in bytes the model would have after `steps` (a recipe variant's steps), before running
    anything. Quantization changes bytes per weight (fp16 2, int8 1 plus a scale per channel, int4 half a byte
    plus a scale per 32 weights); structured pruning and distillation remove weights (about (1 - amount)^2 and
    width^2 of the inner layers); unstructured and 2:4 pruning store every zero, so the file does not shrink.

    Args:
        model_card_or_proto: the baseline's ``onnx.ModelProto`` or its model card.
        steps: step configs or dicts, e.g. ``[{"technique": "quantize", "mode": "static"}]``.
    """
    return estimate_breakdown(model_card_or_proto, steps)["total_bytes"]


def technique_table(proto, *, amount: float = 0.5, width: float = 0.25) -> pd.DataFrame:
    """Each technique's effect on this model: estimated file size, bytes per weight and multiply-accumulates
    per sample (all computed from the graph), and which arithmetic the CPU runs."""
    macs = model_compute_profile(proto).get("macs") or 0  # the one MAC counter (core.measure.compute)
    rows = [
        ("baseline (fp32)", (), 1.0, "fp32 multiply-adds", "—"),
        ("fp16 weights", (QuantizeConfig(mode="fp16"),), 1.0, "fp32 on most CPUs (cast back)", "rarely"),
        # no number here: how much faster int8 runs depends on the CPU's int8 instructions (AVX2, VNNI, AMX); a run
        # measures it, and BENCHMARKS.md records what it was on which instruction set
        ("int8 static", (QuantizeConfig(mode="static"),), 1.0, "int8 multiply, int32 accumulate",
         "usually (by how much: measure it)"),
        ("int8 dynamic", (QuantizeConfig(mode="dynamic"),), 1.0, "int8 MatMul; Conv stays fp32",
         "MatMul layers"),
        ("int4 weight-only", (QuantizeConfig(mode="int4"),), 1.0, "unpacked to fp32 per block", "memory-bound only"),
        (f"unstructured prune {amount:.0%}", (PruneConfig(method="unstructured", amount=amount),), 1.0,
         "fp32, zeros still multiplied", "no"),
        ("2:4 prune", (PruneConfig(method="2:4", amount=0.5),), 1.0, "fp32 (sparse cores on GPUs only)", "no"),
        (f"structured prune {amount:.0%}", (PruneConfig(method="structured", amount=amount),), None,
         "fp32, fewer channels", "yes"),
        (f"student at width {width:g}", (DistillConfig(width=width),), None, "fp32, narrower layers", "yes"),
    ]
    base = estimate_breakdown(proto)
    table = []
    for name, steps, mac_share, arithmetic, faster in rows:
        est = estimate_breakdown(proto, steps)
        if mac_share is None:
            mac_share = est["params"] / max(1, base["params"])  # inner layers shrink like their weights
        stored = est["weights"] + est["biases"] + est["scales"]
        table.append({"technique": name, "size_bytes": est["total_bytes"],
                      "x_smaller": base["total_bytes"] / max(1, est["total_bytes"]),
                      "bytes_per_weight": stored / max(1, est["params"]), "params": est["params"],
                      "macs_per_sample": int(round(macs * mac_share)) if macs else None,
                      "arithmetic": arithmetic, "faster_on_cpu": faster})
    return pd.DataFrame(table)


def estimate_vs_measured(results: dict, model_card_or_proto) -> pd.DataFrame:
    """For every finished variant of a run: the size estimated from its steps beside the size measured.

    Returns:
        Columns variant, steps (text), estimate_bytes, measured_bytes, error_pct (estimate vs measured).
    """
    rows = []
    for variant in results.get("variants") or []:
        if variant.get("status") != "ok" or not variant.get("size_bytes"):
            continue
        steps = variant.get("steps") or []
        try:
            estimate = estimate_size(model_card_or_proto, steps)
        except (BadInputError, UnsupportedModelError) as exc:
            estimate, note = None, str(exc)
        else:
            note = None
        measured = int(variant["size_bytes"])
        rows.append({"variant": variant.get("name"), "steps": steps_label(steps),
                     "estimate_bytes": estimate, "measured_bytes": measured,
                     "error_pct": None if estimate is None else 100 * (estimate - measured) / measured,
                     "note": note})
    return pd.DataFrame(rows, columns=["variant", "steps", "estimate_bytes", "measured_bytes", "error_pct",
                                       "note"])


def completed_runs(store, limit: int = 20) -> list[dict]:
    """Runs in a run store with results to compare: [{"id", "label", "model", "status"}], newest first."""
    out = []
    for record in store.list(limit=limit):
        if record.status not in ("completed", "cancelled", "interrupted", "failed"):
            continue
        out.append({"id": record.id, "label": record.label or record.model, "model": record.model,
                    "status": record.status})
    return out


def run_baseline_proto(store, run_id: str, results: dict) -> Any:
    """The ONNX graph of a run's model, for estimating its variants: the sample, or the uploaded file kept with
    the run (loaded with the same safety checks as any upload).

    Raises:
        FeatherweightError: the model cannot be found or loaded.
    """
    spec = results.get("model") or (results.get("recipe") or {}).get("model")
    if not isinstance(spec, str) or not spec:
        raise BadInputError("the run does not say which model it used")
    if spec.startswith("sample:"):
        return load_model(spec).onnx_model
    run_dir = store.run_dir(run_id)
    # results.json names the file; whatever it says, only a file inside this run's directory is read (symlinks
    # resolved first), as saved there by the job runner.
    candidates = (inside_run(run_dir, spec), inside_run(run_dir, Path("inputs") / Path(spec).name))
    path = next((c for c in candidates if c is not None and c.is_file()), None)
    if path is None:
        raise BadInputError(f"the run's model {brief(spec)} is not a file inside its run directory; refused")
    return load_model(str(path)).onnx_model


