"""The Graph page's job: in a worker, read a run's baseline and one variant, map their nodes, profile both with
onnxruntime, and write Model Explorer's graphs and overlays for the page to serve. The dashboard only sends paths
and receives a JSON summary (`graph_view_isolated`); it never parses the models.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from core.analysis.diagnose import decode_step_inputs, is_decoder_artifact, profile_in_rounds
from core.analysis.graph_map import (COMPUTE_OPS, float_for_no_reason, map_graphs, node_names, principal_renames,
                                     profile_node_times, weight_bytes)
from core.errors import BadInputError, StepFailedError
from core.io.data import synthetic_inputs
from core.io.model import Model
from core.io.sandbox import phase, run_isolated
from core.jobs.store import INDEX_FILE, RunStore
from core.measure.timing import set_core_gate
from core.results.table import batch_sizes_of
from core.views.graph import (EXPAND_ALL_MAX_NODES, OVERLAY_TITLES, STATUS_BASE, STATUS_VARIANT, add_node_attrs, adapter_graphs,
                              explorer_data, layers_to_expand, nest_helpers, node_data, rename_graph, rename_nodes,
                              write_view)

# Profile settings: both graphs profiled interleaved in rounds, as the run timed them (the one method), at the
# run's largest timed batch size, the one Compare shows first, so the kernel-time ratio and Compare's speed-up
# measure the same thing. At most PROFILE_MAX_S per graph keeps the page quick (digits-cnn at batch 256 converges
# to ±5% in ~1-2 s); a slower model stops at the cap with a wider interval, which the page shows.
PROFILE_RUNS = 200  # the most rounds
PROFILE_MAX_S = 2.0
PROFILE_WARMUP = 2
SENSITIVITY_FILE = "sensitivity.json"


def _variant_entry(results: dict, name: str) -> dict:
    for variant in results.get("variants", []):
        if variant.get("name") == name:
            return variant
    names = [v.get("name") for v in results.get("variants", [])]
    raise BadInputError(f"variant {name!r} is not in this run; allowed: {', '.join(map(str, names))}")


def _artifact(run_dir: Path, variant: dict) -> Path:
    artifact = variant.get("artifact")
    if variant.get("status") != "ok" or not artifact:
        raise BadInputError(f"variant {variant.get('name')!r} has no model file (status: {variant.get('status')})")
    path = (run_dir / artifact).resolve()
    if run_dir.resolve() not in path.parents:
        raise BadInputError(f"variant {variant.get('name')!r} names a file outside its run: {artifact!r}")
    return path


def _sensitivity(run_dir: Path, sensitivity_dir: str | None, base_names: list[str]) -> tuple[dict, str | None]:
    """Baseline node -> drop (pt) from the run's sensitivity scan, or the scan the page passed; ({}, None) if none."""
    for folder in (run_dir, Path(sensitivity_dir) if sensitivity_dir else None):
        if folder is None or not (folder / SENSITIVITY_FILE).is_file():
            continue
        scan = json.loads((folder / SENSITIVITY_FILE).read_text(encoding="utf-8"))
        drops = {}
        for layer in scan.get("layers", []):
            node = layer.get("node") or _node_of_module(str(layer.get("name", "")), base_names)
            if node in base_names and isinstance(layer.get("drop"), (int, float)):
                drops[node] = float(layer["drop"])
        return drops, str(scan.get("technique") or "quantize")
    return {}, None


def _node_of_module(module: str, base_names: list[str]) -> str | None:
    """The ONNX node a torch module was exported as: ``features.0`` -> ``/features/features.0/Conv``."""
    for name in base_names:
        if module and module in name.split("/"):
            return name
    return None


def _channels(variant: dict, base_proto) -> dict:
    """Baseline compute node -> fraction of output channels structured pruning kept."""
    kept = (variant.get("info") or {}).get("channels_kept") or {}
    names = node_names(base_proto.graph)
    ops = dict(zip(names, (n.op_type for n in base_proto.graph.node)))
    out = {}
    for module, counts in kept.items():
        node = next((n for n in names if module in n.split("/") and ops[n] in COMPUTE_OPS), None)
        if node and isinstance(counts, dict) and counts.get("of"):
            out[node] = round(float(counts["kept"]) / float(counts["of"]), 4)
    return out


def _profile(base_path: Path, base_proto, var_path: Path, var_proto, batch: int, runs: int,
             threads: int, results: dict) -> tuple[dict, dict, dict]:
    """Both graphs profiled interleaved in rounds: per-node kernel times of each, and the profile's facts."""
    past = None
    if is_decoder_artifact(base_path):  # decoders: one decode step, as Insight profiles it; weights beside them
        inputs, past = decode_step_inputs(base_path, results)
        batch = 1
        models = {"baseline": base_path, "variant": var_path}
    else:
        # Latency does not depend on the values of these inputs, only on shapes and types: synthetic inputs suffice.
        inputs = synthetic_inputs(Model(str(base_path), base_proto), min(batch, 256), seed=0)
        models = {"baseline": base_path.read_bytes(), "variant": var_path.read_bytes()}
    profiled = profile_in_rounds(models, inputs, batch_size=batch, threads=threads, warmup=PROFILE_WARMUP,
                                 max_rounds=runs, max_seconds=PROFILE_MAX_S, max_nodes=None)
    base, var = profiled["profiles"]["baseline"], profiled["profiles"]["variant"]
    info = {"batch_size": profiled["batch_size"], "rounds": profiled["rounds"], "before_total_ms": base["total_ms"],
            "after_total_ms": var["total_ms"], "kernel_speedup": profiled["kernel_speedup"].get("variant"),
            "wall_speedup": profiled["wall_speedup"].get("variant"), "contention": profiled["contention"],
            "decode_step_past_tokens": past}
    return profile_node_times(base_proto, base["nodes"]), profile_node_times(var_proto, var["nodes"]), info


def build_graph_view(run_dir: str | Path, variant_name: str, out_dir: str | Path, *,
                     sensitivity_dir: str | None = None, profile: bool = True, batch_size: int | None = None,
                     runs: int = PROFILE_RUNS) -> dict:
    """Map, profile and draw the baseline and one variant of a finished run; write the view into `out_dir`.

    The profile times both graphs interleaved in rounds (`core.analysis.diagnose.profile_in_rounds`) at
    `batch_size` (default: the run's largest timed batch, Compare's first), at most `runs` rounds.

    Returns:
        ``{"baseline", "variant", "rows": [per-node facts], "counts", "profile", "overlays", "sensitivity"}``.

    Raises:
        BadInputError: no such variant, or it has no model file.
    """
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    variants = results.get("variants", [])
    if not variants:
        raise BadInputError("the run has no variants")
    base_entry, var_entry = variants[0], _variant_entry(results, variant_name)
    base_path, var_path = _artifact(run_dir, base_entry), _artifact(run_dir, var_entry)
    base_proto = onnx.load(str(base_path), load_external_data=False)
    var_proto = onnx.load(str(var_path), load_external_data=False)
    mapping = map_graphs(base_proto, var_proto)
    base_names, var_names = node_names(base_proto.graph), node_names(var_proto.graph)
    var_ops = dict(zip(var_names, (n.op_type for n in var_proto.graph.node)))
    base_ops = dict(zip(base_names, (n.op_type for n in base_proto.graph.node)))
    flagged = float_for_no_reason(mapping, var_proto, var_entry.get("steps"))
    renames = principal_renames(mapping, var_names)
    shown = {v: renames.get(v, v) for v in var_names}  # the id each variant node has in Model Explorer
    before, after, profile_info = {}, {}, None
    if profile:
        sizes = batch_sizes_of(results)
        threads = int((results.get("environment") or {}).get("threads") or 1)
        before, after, profile_info = _profile(base_path, base_proto, var_path, var_proto,
                                               batch_size or (max(sizes) if sizes else 1), runs, threads, results)
        profile_info.update(before_runtime_ms=before.pop("", 0.0), after_runtime_ms=after.pop("", 0.0),
                            run_speedup=(var_entry.get("speedup") or {}).get(str(profile_info["batch_size"])))
    sensitivity, technique = _sensitivity(run_dir, sensitivity_dir, base_names)
    channels = _channels(var_entry, base_proto)
    base_bytes, var_bytes = weight_bytes(base_proto), weight_bytes(var_proto)

    def status(v: str) -> int:
        how = mapping.how.get(v)
        if how == "added":
            return STATUS_VARIANT["added"]
        if how == "helper":
            return STATUS_VARIANT["helper"]
        base = mapping.base_of[v]
        same = how == "name" and var_ops[v] == base_ops.get(base) and \
            mapping.precision.get(v) == mapping.base_precision.get(base)
        return STATUS_VARIANT["same" if same else "changed"]

    group_after = {}
    for v in var_names:
        base = mapping.base_of.get(v)
        if base is not None and v in after:
            group_after[base] = group_after.get(base, 0.0) + after[v]
    ratio = {b: group_after[b] / before[b] for b in group_after if before.get(b)}

    # The variant pane: overlays keyed by the id each node has there.
    lead = {b: b for b in set(mapping.base_of.values()) if b in set(shown.values())}
    var_values = {
        "precision": {shown[v]: mapping.precision[v] for v in var_names},
        "latency_ms": {shown[v]: after.get(v) for v in var_names},
        "latency_ratio": {b: ratio.get(b) for b in lead},
        "sensitivity": {b: sensitivity.get(b) for b in lead},
        "channels_kept": {b: channels.get(b) for b in lead},
        "weight_bytes": {shown[v]: var_bytes.get(v) or None for v in var_names},
        "float_for_no_reason": {shown[v]: v in flagged for v in var_names
                                if var_ops[v] in COMPUTE_OPS},
        "mapping": {shown[v]: status(v) for v in var_names},
    }
    base_status = {b: STATUS_BASE["fused"] if b in mapping.fused else STATUS_BASE["removed"]
                   if b in mapping.removed else STATUS_BASE["kept"] for b in base_names}
    base_values = {
        "precision": dict(mapping.base_precision),
        "latency_ms": {b: before.get(b) for b in base_names},
        "sensitivity": {b: sensitivity.get(b) for b in base_names},
        "channels_kept": {b: channels.get(b) for b in base_names},
        "weight_bytes": {b: base_bytes.get(b) or None for b in base_names},
        "mapping": base_status,
    }
    overlays, panes = [], []
    for pane_name, values in (("baseline", base_values), ("variant", var_values)):
        indices = []
        # Model Explorer shows the last node data it loads: precision, the page's first question.
        for kind, by_node in sorted(values.items(), key=lambda item: item[0] == "precision"):
            data = node_data(OVERLAY_TITLES[kind], kind, by_node)
            if data is not None:
                indices.append((len(overlays), kind))
                overlays.append(data)
        panes.append({"name": _pane_label(pane_name, base_entry, var_entry), "graph_index": len(panes),
                      "node_data": indices})

    # Facts per node, also shown in Model Explorer's node panel.
    rows, var_attrs = [], {}
    for v in var_names:
        base = mapping.base_of.get(v)
        row = {"node": v, "shown_as": shown[v], "op": var_ops[v], "baseline_node": base, "rule": mapping.how[v],
               "precision": mapping.precision[v], "before_ms": before.get(base) if shown[v] == base else None,
               "after_ms": after.get(v), "ratio": ratio.get(base) if shown[v] == base else None,
               "sensitivity_drop": sensitivity.get(base) if shown[v] == base else None,
               "channels_kept": channels.get(base) if shown[v] == base else None,
               "weight_bytes": var_bytes.get(v, 0), "float_for_no_reason": flagged.get(v)}
        rows.append(row)
        var_attrs[shown[v]] = {f"fw {k}": (round(val, 4) if isinstance(val, float) else val)
                               for k, val in row.items() if val is not None and k not in ("node", "shown_as")}
    for b in base_names:
        if b in mapping.fused or b in mapping.removed:
            rows.append({"node": None, "shown_as": None, "op": base_ops[b], "baseline_node": b,
                         "rule": "fused into " + mapping.fused[b] if b in mapping.fused else "removed",
                         "precision": mapping.base_precision[b], "before_ms": before.get(b), "after_ms": None,
                         "ratio": None, "sensitivity_drop": sensitivity.get(b), "channels_kept": channels.get(b),
                         "weight_bytes": base_bytes.get(b, 0), "float_for_no_reason": None})
    base_attrs = {b: {"fw precision": mapping.base_precision[b], "fw latency ms": before.get(b),
                      "fw status": "fused into " + mapping.fused[b] if b in mapping.fused else
                      "removed" if b in mapping.removed else "kept",
                      "fw sensitivity drop": sensitivity.get(b)} for b in base_names}
    base_attrs = {b: {k: val for k, val in a.items() if val is not None} for b, a in base_attrs.items()}

    base_graphs = add_node_attrs(adapter_graphs(base_path), base_attrs)
    var_graphs = add_node_attrs(rename_nodes(adapter_graphs(var_path), renames), var_attrs)
    for pane, graphs in zip(panes, (base_graphs, var_graphs)):
        rename_graph(graphs, pane["name"])
        pane["graph_id"] = pane["name"]
        pane["expand"] = layers_to_expand(nest_helpers(graphs))
    data = explorer_data(panes, expand_all=max(len(base_names), len(var_names)) <= EXPAND_ALL_MAX_NODES)
    write_view(out_dir, [base_graphs, var_graphs], overlays, data)
    counts = {"baseline_nodes": len(base_names), "variant_nodes": len(var_names),
              "mapped": sum(1 for v in var_names if mapping.base_of.get(v)), "added": len(mapping.added),
              "helpers": sum(1 for v in var_names if mapping.how[v] == "helper"), "fused": len(mapping.fused),
              "removed": len(mapping.removed), "float_for_no_reason": len(flagged),
              "precision": {p: sum(1 for v in var_names if mapping.precision[v] == p)
                            for p in ("fp32", "fp16", "int8", "int4")}}
    return {"baseline": base_entry.get("name"), "variant": var_entry.get("name"), "rows": rows, "counts": counts,
            "profile": profile_info, "overlays": [OVERLAY_TITLES[k] for _, k in panes[1]["node_data"]],
            "sensitivity": technique, "panes": [p["name"] for p in panes], "flagged": flagged}


def _pane_label(which: str, base_entry: dict, var_entry: dict) -> str:
    # Model Explorer splits "graphs://NAME/INDEX" on "/": keep names free of it.
    name = str((base_entry if which == "baseline" else var_entry).get("name") or which)
    label = "".join(ch if ch.isalnum() or ch in "-_.[]=," else "_" for ch in name)[:80]
    return label if which == "baseline" else (label if label != "baseline" else "variant")


def graph_view_entry(run_dir: str, variant_name: str, out_dir: str, sensitivity_dir: str | None = None,
                     profile: bool = True) -> dict:
    """In the worker: `build_graph_view`; reply with JSON types only. A run of a store profiles under the store's
    core lock, as its jobs time (one timing phase per core at a time)."""
    root = Path(run_dir).parent.parent
    if (root / INDEX_FILE).is_file():
        set_core_gate(RunStore(root).timing_cores)
    phase("mapping and profiling the graphs")
    return build_graph_view(run_dir, variant_name, out_dir, sensitivity_dir=sensitivity_dir, profile=profile)


def graph_view_isolated(run_dir: str | Path, variant_name: str, out_dir: str | Path, *,
                        sensitivity_dir: str | Path | None = None, profile: bool = True) -> dict:
    """`build_graph_view` in a worker process with the inspect limits: the models derive from a user's upload.

    Raises:
        FeatherweightError: the view failed (one line), or the worker crashed or ran out of time.
    """
    value = run_isolated("core.jobs.graph:graph_view_entry", str(run_dir), str(variant_name), str(out_dir),
                         None if sensitivity_dir is None else str(sensitivity_dir), bool(profile))
    if not isinstance(value, dict) or not isinstance(value.get("rows"), list):
        raise StepFailedError("the graph worker sent a malformed reply")
    return value


__all__ = ["build_graph_view", "graph_view_entry", "graph_view_isolated"]
