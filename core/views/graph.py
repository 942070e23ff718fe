"""The Graph page's drawing data for Google's Model Explorer: the graphs JSON of its ONNX adapter (node ids aligned
across the two panes so mapped nodes highlight together) and the per-node overlays (node data with a legend).

Everything here takes plain data (node name -> value dicts) and returns JSON types; the model is read, mapped and
profiled by the worker that calls it (`core.jobs.graph`), never by the dashboard.

Node data format (Model Explorer's ``GraphNodeData``): ``{"name", "results": {node_id: {"value", "bgColor"}},
"thresholds" | "gradient"}``; the thresholds / gradient stops are the legend.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

# Precision colours (and the number each one is stored as: Model Explorer's node data values are numbers).
PRECISION_VALUE = {"int4": 4, "int8": 8, "fp16": 16, "fp32": 32}
PRECISION_COLOR = {"int4": "#60a5fa", "int8": "#4ade80", "fp16": "#fbbf24", "fp32": "#d1d5db"}
FLAG_COLOR = "#ef4444"
# Mapping status: baseline pane 0 kept / 1 fused into another node / 2 removed; variant pane 0 same node /
# 1 changed by the technique (quantized, re-fused, renamed) / 2 added by it to serve a node (Q/DQ, Cast) / 3 new.
STATUS_BASE = {"kept": 0, "fused": 1, "removed": 2}
STATUS_VARIANT = {"same": 0, "changed": 1, "helper": 2, "added": 3}
STATUS_COLOR = ["#e5e7eb", "#a78bfa", "#f97316", "#ef4444"]
# Latency ratio (after / before): below 0.9 is faster, above 1.1 slower; the band between is run-to-run noise of a
# 1-thread profile on a shared machine (core.analysis.diagnose.NO_SPEEDUP_RATIO is 1.1 too).
RATIO_FASTER, RATIO_SLOWER = 0.9, 1.1
OVERLAYS = ("precision", "latency_ms", "latency_ratio", "sensitivity", "channels_kept", "weight_bytes",
            "float_for_no_reason", "mapping")
OVERLAY_TITLES = {"precision": "Precision (32 fp32 / 16 fp16 / 8 int8 / 4 int4)", "latency_ms": "Latency (ms)",
                  "latency_ratio": "Latency after / before", "sensitivity": "Sensitivity (drop, pt)",
                  "channels_kept": "Channels kept (fraction)", "weight_bytes": "Weight bytes",
                  "float_for_no_reason": "Stayed in float for no reason",
                  "mapping": "Mapping (0 same / 1 changed / 2 helper / 3 new; baseline: 1 fused / 2 removed)"}


# The adapter writes up to this many values of a tensor into the JSON (its default is 1024). 0: a tensor-valued
# attribute of an operator (a ConstantOfShape's fill value) shows as ``[]``; initializer and Constant values are
# dropped whole (`strip_values`), so that a view, a shareable link, never carries a tensor's values.
TENSOR_VALUES_SHOWN = 0
# What a metadata item (an input or output of a node) may say: the tensor's name, type and shape, the operator's
# parameter name, whether it is unused, and the model's own metadata properties ("[metadata] ..."). The adapter
# also writes a ``value`` with the repr of an initializer, which prints the values of one of up to ~10 elements
# (digits-mlp's last bias, every quantization scale and zero point).
METADATA_KEYS = ("__tensor_tag", "tensor_shape", "param_name", "unused")
_TENSOR_REPR = re.compile(r"^\s*\w*Tensor<([^>]*)>\(.*$", re.S)


def adapter_graphs(model_path: str | Path) -> dict:
    """Model Explorer's graphs JSON of an ONNX file, from the ``model-explorer-onnx`` adapter (in a worker), with no
    tensor values in it: names, shapes and attributes only (`strip_values`)."""
    # heavy imports (model_explorer brings flask and torch): only in the worker that draws a graph
    from model_explorer.utils import convert_adapter_response
    from model_explorer_onnx.main import ONNXAdapter

    settings = {"const_element_count_limit": TENSOR_VALUES_SHOWN}
    return strip_values(convert_adapter_response(ONNXAdapter().convert(str(model_path), settings)))


def _no_values(text):
    """A tensor's repr ("TensorProtoTensor<FLOAT,[10]>(array([...]), name=...)") cut to its type and shape."""
    if not isinstance(text, str):
        return text
    match = _TENSOR_REPR.match(text)
    return f"{match.group(1)} (values not shown)" if match else text


def strip_values(graphs: dict) -> dict:
    """Remove every tensor value from adapter output: the ``__value`` attribute (an initializer's or Constant's
    values), metadata entries other than `METADATA_KEYS` (the ``value`` repr of small initializers), and any
    tensor repr left in an attribute (cut to its type and shape)."""
    for graph in graphs.get("graphs", []):
        for node in graph.get("nodes", []):
            node["attrs"] = [{**attr, "value": _no_values(attr.get("value"))} for attr in node.get("attrs", [])
                             if attr.get("key") != "__value"]
            for key in ("inputsMetadata", "outputsMetadata"):
                for item in node.get(key, []):
                    item["attrs"] = [{**attr, "value": _no_values(attr.get("value"))} for attr in item.get("attrs", [])
                                     if attr.get("key") in METADATA_KEYS
                                     or str(attr.get("key", "")).startswith("[metadata] ")]
    return graphs


def rename_nodes(graphs: dict, renames: dict) -> dict:
    """Give nodes new ids (and rewrite the edges that name them), keeping the old id as a node attribute."""
    if not renames:
        return graphs
    for graph in graphs.get("graphs", []):
        for node in graph.get("nodes", []):
            old = node["id"]
            if old in renames:
                node["id"] = renames[old]
                node.setdefault("attrs", []).append({"key": "onnx node", "value": old})
            for edge in node.get("incomingEdges", []):
                if edge.get("sourceNodeId") in renames:
                    edge["sourceNodeId"] = renames[edge["sourceNodeId"]]
    return graphs


def rename_graph(graphs: dict, graph_id: str) -> dict:
    """Give the main graph (the first) a new id: two panes drawing two models' ``main_graph`` tell them apart by it."""
    if graphs.get("graphs"):
        graph = graphs["graphs"][0]
        old = graph["id"]
        graph["id"] = graph_id
        attributes = graph.get("groupNodeAttributes") or {}
        if old in attributes:
            attributes[graph_id] = attributes.pop(old)
    return graphs


def add_node_attrs(graphs: dict, attrs: dict) -> dict:
    """Append ``{key: value}`` attributes per node id (shown in Model Explorer's node info panel)."""
    for graph in graphs.get("graphs", []):
        for node in graph.get("nodes", []):
            for key, value in (attrs.get(node["id"]) or {}).items():
                node.setdefault("attrs", []).append({"key": key, "value": str(value)})
    return graphs


def _gradient(low: str, high: str) -> list:
    return [{"stop": 0, "bgColor": low}, {"stop": 1, "bgColor": high}]


def node_data(name: str, kind: str, values: dict) -> dict | None:
    """One overlay as Model Explorer node data, or None when no node has a value.

    Args:
        name: what the overlay is called in Model Explorer's node data list.
        kind: one of `OVERLAYS`.
        values: node id -> value (precision: ``"int8"`` ...; the others numbers; None skipped).
    """
    values = {k: v for k, v in values.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if not values:
        return None
    results: dict = {}
    out: dict = {"name": name, "results": results}
    if kind == "precision":
        for node, precision in values.items():
            results[node] = {"value": PRECISION_VALUE[precision], "bgColor": PRECISION_COLOR[precision]}
        out["thresholds"] = [{"value": PRECISION_VALUE[p], "bgColor": PRECISION_COLOR[p]}
                             for p in ("int4", "int8", "fp16", "fp32")]
    elif kind == "float_for_no_reason":
        for node, flagged in values.items():
            results[node] = {"value": 1 if flagged else 0, "bgColor": FLAG_COLOR if flagged else "#ffffff"}
        out["thresholds"] = [{"value": 0, "bgColor": "#ffffff"}, {"value": 1, "bgColor": FLAG_COLOR}]
    elif kind == "mapping":
        for node, status in values.items():
            results[node] = {"value": int(status), "bgColor": STATUS_COLOR[int(status)]}
        out["thresholds"] = [{"value": i, "bgColor": c} for i, c in enumerate(STATUS_COLOR)]
    elif kind == "latency_ratio":
        for node, ratio in values.items():
            color = "#4ade80" if ratio < RATIO_FASTER else FLAG_COLOR if ratio > RATIO_SLOWER else "#e5e7eb"
            results[node] = {"value": round(float(ratio), 3), "bgColor": color}
        out["thresholds"] = [{"value": RATIO_FASTER, "bgColor": "#4ade80"},
                             {"value": RATIO_SLOWER, "bgColor": "#e5e7eb"},
                             {"value": 1e9, "bgColor": FLAG_COLOR}]
    else:
        low, high = {"latency_ms": ("#fff7ed", "#dc2626"), "sensitivity": ("#f0fdf4", "#b91c1c"),
                     "channels_kept": ("#fee2e2", "#4ade80"), "weight_bytes": ("#eff6ff", "#1d4ed8")}[kind]
        for node, value in values.items():
            results[node] = {"value": round(float(value), 6)}
        # Model Explorer spreads the gradient's stops over the values' min..max
        out["gradient"] = _gradient(low, high)
    return out


# Panes open with every layer expanded up to this many nodes (a small model reads best whole), collapsed to the top
# layers above it: Model Explorer lays out every expanded layer before it draws, and a 200-node chain expanded took
# 10.9 s to its first draw against 6.3 s collapsed (headless Chromium, software WebGL, shared 2-core machine).
EXPAND_ALL_MAX_NODES = 100


# Nodes that only serve another (a weight's DequantizeLinear, a Cast) are drawn inside their consumer's layer: left
# in the top layer (the ONNX adapter puts them in "main_graph"), a QDQ graph's 84 DequantizeLinear nodes made one
# long row of boxes, and the variant pane was unreadable dashes.
HELPER_LABELS = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "Cast")


def nest_helpers(graphs: dict) -> dict:
    """Move each helper node (HELPER_LABELS) into the namespace of the nodes it feeds when they all share one
    inside its own (a deeper layer); repeated, so a chain of helpers follows its consumer."""
    for graph in graphs.get("graphs", []):
        nodes = graph.get("nodes", [])
        consumers: dict = {}
        for node in nodes:
            for edge in node.get("incomingEdges", []):
                consumers.setdefault(edge.get("sourceNodeId"), []).append(node)
        for _ in range(3):
            moved = 0
            for node in nodes:
                if node.get("label") not in HELPER_LABELS:
                    continue
                own = node.get("namespace") or ""
                spaces = {c.get("namespace") or "" for c in consumers.get(node["id"], [])}
                deeper = next(iter(spaces)) if len(spaces) == 1 else ""
                if deeper and deeper != own and (not own or deeper.startswith(own + "/")):
                    node["namespace"] = deeper
                    moved += 1
            if not moved:
                break
    return graphs


# A large graph opens with its layers expanded down to the first depth that shows at least this many boxes: collapsed
# to its top layer, shapes-mobile read "Input -> main_graph -> Output".
READABLE_BOXES = 8


def layers_to_expand(graphs: dict, readable_boxes: int = READABLE_BOXES) -> list[str]:
    """Model Explorer group ids (``namespace___group___``) to expand so that a graph too large to open whole shows
    one readable level: the layers of the shallowest depth at which at least `readable_boxes` boxes are visible."""
    nodes = [n for n in (graphs.get("graphs") or [{}])[0].get("nodes") or []
             if n.get("label") != "Initializer"]  # hidden by default (ui.graph_explorer), so not a box
    spaces = {n.get("namespace") or "" for n in nodes}
    # every ancestor namespace is a layer too
    spaces = {"/".join(s.split("/")[:k]) for s in spaces if s for k in range(1, s.count("/") + 2)}
    deepest = max((s.count("/") + 1 for s in spaces), default=0)
    for depth in range(1, deepest + 1):
        # boxes seen with every layer shallower than `depth` open: the layers at `depth` and the nodes above them
        boxes = {s for s in spaces if s.count("/") + 1 == depth}
        boxes |= {n["id"] for n in nodes if (n.get("namespace") or "").count("/") + 1 < depth
                  or not n.get("namespace")}
        if len(boxes) >= readable_boxes:
            return sorted(f"{s}___group___" for s in spaces if s.count("/") + 1 == depth - 1)
    return ["___all___"]


def explorer_data(panes: list[dict], *, sync: bool = True, expand_all: bool = True) -> dict:
    """The ``data`` URL parameter of Model Explorer for side-by-side panes.

    Args:
        panes: ``[{"name", "graph_index", "node_data": [index, ...]}]``, baseline first.
        sync: navigate both panes together, matching node ids (mapped nodes carry the baseline's id).
        expand_all: open every layer (else each pane's ``"expand"`` group ids, see `layers_to_expand`, or only the
            top level; see `EXPAND_ALL_MAX_NODES`).
    """
    models, node_data_sources, targets, states = [], [], [], []
    for pane in panes:
        models.append({"url": f"graphs://{pane['name']}/{pane['graph_index']}"})
        for index, title in pane["node_data"]:
            node_data_sources.append(f"node_data://{title}/{index}")
            targets.append(pane["name"])
        states.append({"deepestExpandedGroupNodeIds": ["___all___"] if expand_all else list(pane.get("expand") or []),
                       "selectedNodeId": "",
                       "selectedGraphId": pane.get("graph_id", "main_graph"),
                       "selectedCollectionLabel": "", "widthFraction": 1 / len(panes),
                       "selected": len(states) == 0})
    data = {"models": models, "nodeData": node_data_sources, "nodeDataTargets": targets,
            "uiState": {"paneStates": states}}
    if sync and len(panes) > 1:
        data["sync"] = {"mode": "match_node_id"}
    return data


def write_view(out_dir: str | Path, graphs: list[dict], overlays: list[dict], data: dict) -> list[str]:
    """Write the files the Graph page serves: ``graph_{i}.json``, ``node_data_{i}.json`` and ``view.json`` (the
    Model Explorer URL data). Each file is written to a temporary name and renamed, so a reader never sees half."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    files = [(f"graph_{i}.json", g) for i, g in enumerate(graphs)] + \
            [(f"node_data_{i}.json", d) for i, d in enumerate(overlays)] + [("view.json", data)]
    for name, content in files:
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp", encoding="utf-8") as handle:
            json.dump(content, handle, separators=(",", ":"))
        Path(handle.name).replace(out / name)
        written.append(name)
    return written


__all__ = ["EXPAND_ALL_MAX_NODES", "HELPER_LABELS", "OVERLAYS", "OVERLAY_TITLES", "PRECISION_COLOR", "PRECISION_VALUE",
           "READABLE_BOXES", "STATUS_BASE", "STATUS_VARIANT", "add_node_attrs", "adapter_graphs", "explorer_data",
           "layers_to_expand", "nest_helpers", "node_data", "rename_graph", "rename_nodes", "strip_values",
           "write_view"]
