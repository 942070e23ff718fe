"""The model card: facts about a model for the dashboard and ``featherweight inspect`` (graph facts, which
techniques apply and why, how synthetic inputs fill it, its multiply-accumulates), bounded whatever the model
holds: a worker sends it to the server, which keeps it in the session and saves it (`bounded_card`)."""

from __future__ import annotations

from collections import Counter

from core.io.data import vocab_size
from core.io.graph import Model, TensorSpec, fixed_batch_size, layer_table, onnx_opset, onnx_params, task_of
from core.io.decoder import DecoderCheckpoint
from core.io.model import MIN_OPSET
from core.measure.compute import model_compute_profile


# What a card lists at most. A 300k-tensor checkpoint made a 47 MB card (one layer row per tensor) that the server
# parsed, kept in the session and saved into a 63 MB state.json; 200 rows of the largest layers (~25 KB) show where
# the bytes are, and a summary row keeps the totals.
MAX_CARD_LAYERS = 200
MAX_CARD_TENSORS = 64  # inputs / outputs listed (their totals kept)
MAX_CARD_OP_TYPES = 64  # op types by count, the rest as "other"
MAX_CARD_TEXT = 500  # characters of any one string (a config value, a name)
MAX_CARD_ITEMS = 256  # items of any other list or mapping


def summarize_layers(rows: list[dict], limit: int = MAX_CARD_LAYERS) -> list[dict]:
    """The `limit` layers with the most weight bytes, in their graph order, then one summary row (``"summary":
    True``) holding the count, parameters, bytes and share of the rest, so that every total still adds up."""
    if len(rows) <= limit:
        return rows
    keep = set(sorted(range(len(rows)), key=lambda i: (-rows[i].get("bytes", 0), i))[:limit])
    rest = [row for i, row in enumerate(rows) if i not in keep]
    summary = {"name": f"({len(rest):,} more layers, each smaller)", "type": "other", "summary": True,
               "params": sum(row.get("params", 0) for row in rest), "bytes": sum(row.get("bytes", 0) for row in rest),
               "share": sum(row.get("share", 0.0) for row in rest)}
    return [row for i, row in enumerate(rows) if i in keep] + [summary]


def _bounded(value, depth: int = 0):
    """Strings cut to MAX_CARD_TEXT, lists and mappings to MAX_CARD_ITEMS, nesting to 8 levels."""
    if isinstance(value, str):
        return value if len(value) <= MAX_CARD_TEXT else value[:MAX_CARD_TEXT - 1] + "…"
    if depth > 8:
        return None
    if isinstance(value, dict):
        return {_bounded(str(k)): _bounded(v, depth + 1) for k, v in list(value.items())[:MAX_CARD_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth + 1) for v in list(value)[:MAX_CARD_ITEMS]]
    return value


def bounded_card(card: dict) -> dict:
    """A card whose tables are capped (layers: `summarize_layers`; inputs / outputs: MAX_CARD_TENSORS, totals in
    ``inputs_total`` / ``outputs_total``; op types: MAX_CARD_OP_TYPES and "other") and whose every string and list
    is bounded: a few hundred KiB at most, whatever the model."""
    card = dict(card)
    layers = card.get("layers") or []
    card["layers_total"] = len(layers)
    card["layers"] = summarize_layers(layers)
    for key in ("inputs", "outputs"):
        items = card.get(key) or []
        card[f"{key}_total"] = len(items)
        card[key] = items[:MAX_CARD_TENSORS]
    ops = card.get("op_types") or {}
    if len(ops) > MAX_CARD_OP_TYPES:
        ranked = sorted(ops.items(), key=lambda item: -item[1])
        card["op_types"] = dict(ranked[:MAX_CARD_OP_TYPES]) | {"other": sum(n for _, n in ranked[MAX_CARD_OP_TYPES:])}
    return _bounded(card)


def model_card(model: Model) -> dict:
    """Facts about a model for the dashboard and ``featherweight inspect``, bounded (`bounded_card`)."""
    if isinstance(model, DecoderCheckpoint):
        return bounded_card(model.card())
    proto = model.onnx_model
    ops = Counter(n.op_type for n in proto.graph.node)
    size = len(model.onnx_bytes())
    card = {
        "source": model.source,
        "format": "torch+onnx" if model.torch_module is not None else "onnx",
        "architecture": model.architecture,
        "task": task_of(model),
        "ir_version": int(proto.ir_version),
        "opset": onnx_opset(proto),
        "producer": " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or None,
        "params": onnx_params(proto),
        "size_bytes": size,
        "inputs": [s.to_dict() for s in model.inputs],
        "outputs": [s.to_dict() for s in model.outputs],
        "nodes": len(proto.graph.node),
        "op_types": dict(ops.most_common()),
        "layers": layer_table(proto),
        "capabilities": capabilities(model),
        "macs": _macs(proto),
    }
    return bounded_card(card)


def _macs(proto) -> int | None:
    """Multiply-accumulates of one sample (batch 1), for the dashboard's "this benchmark takes minutes" warning;
    None when the graph's shapes cannot be inferred."""
    try:
        macs = model_compute_profile(proto).get("macs")
    except Exception:  # noqa: BLE001 - a wild graph loses only the estimate
        return None
    return int(macs) if isinstance(macs, (int, float)) and macs > 0 else None


def capabilities(model: Model) -> dict:
    """Which techniques apply to this model, each with a short reason, and how a stranger's model will be fed,
    timed and compared (batch axis, synthetic inputs, fidelity)."""
    ops = {n.op_type for n in model.onnx_model.graph.node}
    has_torch = model.torch_module is not None
    task = task_of(model)
    opset = onnx_opset(model.onnx_model)
    quantize = "yes: dynamic, static, fp16" + (", int4 (MatMul weights)" if "MatMul" in ops or "Gemm" in ops
                                              else "; int4 needs MatMul/Gemm weights")
    if opset < MIN_OPSET:
        quantize += f"; the graph is upgraded from opset {opset} to {MIN_OPSET} first"
    batch = fixed_batch_size(model.onnx_model)
    outputs = model.outputs
    fills = [_input_description(model, spec) for spec in model.inputs[:8]]
    if len(model.inputs) > 8:
        fills.append(f"and {len(model.inputs) - 8:,} more inputs alike")
    return {
        "quantize": quantize,
        "prune": ("yes: structured, unstructured, 2:4" if has_torch
                  else "unstructured on the ONNX weights; structured pruning needs a torch model"),
        "distill": ("yes" if task == "classification" and has_torch and model.architecture
                    else "needs a classifier (one 2-D logits output)" if task != "classification"
                    else "needs the torch model of a bundled architecture (upload .pt / .safetensors weights)"),
        "batch sizes": ("yes: the batch axis is symbolic, any batch size can be timed" if batch is None else
                        f"the batch axis is fixed at {batch}: Featherweight makes it symbolic where the graph "
                        f"allows (checked in onnxruntime), else only batch {batch} is timed"),
        "synthetic data": ("no: " if any("cannot" in f for f in fills) else "yes: ") + "; ".join(fills),
        "fidelity": ("yes: accuracy (with labels) and top-1 agreement with the baseline" if task == "classification"
                     else "yes: cosine similarity to the baseline's outputs"
                     + (f", per output and overall ({len(outputs)} outputs)" if len(outputs) > 1 else "")),
    }


def _input_description(model: Model, spec: TensorSpec) -> str:
    """How synthetic inputs fill one input (core.io.data.synthetic_inputs), in words."""
    symbolic = [str(d) for d in spec.shape[1:] if not isinstance(d, int) or d <= 0]
    axes = f", {'/'.join(symbolic)} = benchmark.sequence_length" if symbolic else ""
    lowered = spec.name.lower()
    if spec.dtype == "object" or spec.dtype.startswith("onnx:"):
        return f"{spec.name} ({spec.dtype}) cannot be synthesized: upload data"
    if spec.dtype == "bool" or "mask" in lowered:
        return f"{spec.name}: a mask of ones{axes}"
    if spec.dtype.startswith("float"):
        return f"{spec.name}: floats in [0, 1){axes}"
    if "type" in lowered or "segment" in lowered:
        return f"{spec.name}: zeros (one segment){axes}"
    vocab = vocab_size(model, spec.name)
    return (f"{spec.name}: token ids below the vocabulary size {vocab:,}{axes}" if vocab
            else f"{spec.name}: integers in [0, 1000) (no embedding table found){axes}")
