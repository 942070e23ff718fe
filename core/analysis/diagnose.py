"""Why is my optimized model not faster? The CPU's relevant features, per-operator time before and after from
onnxruntime's profiler, and rules that explain a missing speed-up in plain words with the fix.

Example::

    before = profile_ops(baseline_bytes, inputs, batch_size=256)
    after = profile_ops(variant_bytes, inputs, batch_size=256)
    rows = compare_ops(before, after)          # Conv 9.1 ms -> QLinearConv 4.2 ms, ...
    for finding in explain(cpu_panel(), before, after, steps=variant["steps"]):
        print(finding.message, "Fix:", finding.fix)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


from core.errors import BadInputError
from core.results.explain import CALL_OVERHEAD_MS, NO_SPEEDUP_RATIO, reason
from core.io.files import inside_run
from core.io.data import synthetic_inputs
from core.io.graph import Model, graph_inputs
from core.io.runtime import make_session, session_fixed_batch
from core.measure.quality import batch_inputs, cpu_info, int8_fast
from core.results.table import batch_sizes_of

# Shares of the variant's kernel time above which a cost is worth a finding.
QDQ_SHARE = 0.15
DYNAMIC_QUANT_SHARE = 0.10
CAST_SHARE = 0.10
FLOAT_LEFT_SHARE = 0.30
INT8_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "QAttention", "MatMulNBits")
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "MatMul", "Gemm", "FusedGemm", "FusedMatMul", "ConvTranspose")


# --------------------------------------------------------------------------------------------------------------
# The CPU


def _cpu_flags() -> tuple[str, set]:
    return cpu_info()


def cpu_panel(threads: int = 1) -> dict:
    """The CPU as it matters for inference speed: model, cores, and the instruction sets int8 / fp16 kernels use.

    Args:
        threads: the onnxruntime intra-op threads the benchmarks use.

    Returns:
        ``{"cpu", "cores", "physical_cores", "threads_used", "features": {name: bool}, "int8_fast": bool,
        "fp16_arithmetic": bool, "notes": [str]}``.
    """
    model, flags = _cpu_flags()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil is optional here
        physical = None
    features = {
        "AVX2": "avx2" in flags,
        "AVX-512": "avx512f" in flags,
        "VNNI": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "AMX": bool(flags & {"amx_tile", "amx_int8"}),
        "ARM dot-product": "asimddp" in flags,
        "ARM i8mm": "i8mm" in flags,
        "fp16 arithmetic": bool(flags & {"avx512_fp16", "asimdhp"}),
    }
    fast = int8_fast(flags)
    notes = []
    if not fast:
        # no figure: how much less int8 gains here is what the profile below measures, on this CPU
        notes.append("No VNNI / AMX / dot-product instructions: onnxruntime's int8 matrix kernels go through 16-bit "
                     "intermediate sums here, so int8 gains less over float on this CPU than on CPUs that have them.")
    else:
        notes.append("This CPU has fast int8 dot-product instructions: static int8 can be 2-4x faster than float.")
    if not features["fp16 arithmetic"]:
        notes.append("No fp16 arithmetic: fp16 models compute in float32 through Cast ops (smaller file, no "
                     "speed-up).")
    return {"cpu": model, "cores": os.cpu_count(), "physical_cores": physical, "threads_used": threads,
            "features": features, "int8_fast": fast, "fp16_arithmetic": features["fp16 arithmetic"],
            "flags": sorted(flags & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd",
                                     "asimddp", "asimdhp", "sve", "i8mm"}),
            "notes": notes}


# --------------------------------------------------------------------------------------------------------------
# Per-operator time from onnxruntime's profiler


def parse_profile(events: list, skip_runs: int = 0, max_nodes: int | None = 50) -> dict:
    """Kernel time per operator type from an onnxruntime profile (the JSON list of trace events).

    Node events (``cat == "Node"``) whose name ends in ``_kernel_time`` are summed by ``args.op_name``. The first
    `skip_runs` ``model_run`` events (warm-up) are left out.

    Returns:
        ``{"runs": n, "ops": [{"op", "ms", "calls", "share"}], "nodes": [{"node", "op", "ms"}], "total_ms"}`` with
        times per run, ops sorted by time.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e.get("ts", 0))
    start_ts = runs[skip_runs]["ts"] if len(runs) > skip_runs else 0
    counted = max(1, len(runs) - skip_runs) if runs else 1
    ops: dict[str, dict] = {}
    nodes: dict[str, dict] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < start_ts:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        entry = ops.setdefault(op, {"op": op, "us": 0.0, "calls": 0})
        entry["us"] += float(e.get("dur", 0))
        entry["calls"] += 1
        node = name[:-len("_kernel_time")]
        nodes.setdefault(node, {"node": node, "op": op, "us": 0.0})["us"] += float(e.get("dur", 0))
    total = sum(o["us"] for o in ops.values()) or 1.0
    rows = [{"op": o["op"], "ms": round(o["us"] / counted / 1000.0, 6), "calls": round(o["calls"] / counted, 3),
             "share": round(o["us"] / total, 6)} for o in ops.values()]
    rows.sort(key=lambda r: -r["ms"])
    node_rows = sorted(({"node": n["node"], "op": n["op"], "ms": round(n["us"] / counted / 1000.0, 6)}
                        for n in nodes.values()), key=lambda r: -r["ms"])
    return {"runs": counted, "ops": rows, "nodes": node_rows[:max_nodes], "total_ms": round(sum(r["ms"] for r in rows), 6)}


def profile_ops(model_bytes: bytes, inputs: dict, *, batch_size: int = 1, runs: int = 20, warmup: int = 3,
                threads: int = 1, max_nodes: int | None = 50) -> dict:
    """Run the model with onnxruntime's profiler on and return its kernel time per operator type (per run).

    Args:
        model_bytes: the ONNX model.
        inputs: input name -> array (cycled to `batch_size`).
        batch_size / runs / warmup / threads: what to profile (warm-up runs are excluded).
        max_nodes: how many of the slowest nodes to keep per node (None: all).

    Returns:
        As `parse_profile`, plus ``batch_size``.
    """
    import onnx

    specs = graph_inputs(onnx.load_from_string(model_bytes))
    with tempfile.TemporaryDirectory(prefix="fw-profile-") as tmp:
        session = make_session(model_bytes, threads, profile_prefix=os.path.join(tmp, "profile"))
        batch = session_fixed_batch(session) or batch_size
        feed = batch_inputs(inputs, specs, batch)
        for _ in range(warmup + runs):
            session.run(None, feed)
        path = session.end_profiling()
        try:
            events = json.loads(Path(path).read_text(encoding="utf-8"))
        finally:
            Path(path).unlink(missing_ok=True)
    result = parse_profile(events, skip_runs=warmup, max_nodes=max_nodes)
    result["batch_size"] = batch
    return result


def compare_ops(before: dict, after: dict) -> list[dict]:
    """Side by side: one row per operator type in either profile, ``{"op", "before_ms", "after_ms"}``, ordered by
    the larger of the two times (ops absent from one side have 0 there)."""
    b = {r["op"]: r["ms"] for r in before.get("ops", [])}
    a = {r["op"]: r["ms"] for r in after.get("ops", [])}
    rows = [{"op": op, "before_ms": round(b.get(op, 0.0), 6), "after_ms": round(a.get(op, 0.0), 6)}
            for op in set(b) | set(a)]
    rows.sort(key=lambda r: -max(r["before_ms"], r["after_ms"]))
    return rows


# --------------------------------------------------------------------------------------------------------------
# Layers kept in float that onnxruntime quantizes anyway


def requantized_excluded(model_bytes: bytes, exclude) -> list[str]:
    """Nodes of `exclude` whose weights onnxruntime quantizes anyway when it loads the model.

    onnxruntime's WeightBiasQuantization graph optimization (on at the default optimization levels) gives a
    Conv / Gemm whose activation comes from a DequantizeLinear, and whose output goes on to a QuantizeLinear,
    symmetric per-tensor int8 weights, "completing" what looks like a half-quantized node. A layer a quantize step
    kept in float between two quantized neighbours is exactly that, so its float weights are quantized at load
    time; a layer with outlier weights then breaks although it was excluded. Measured on digits-mlp with one
    1000x weight: excluded alone it still dropped 92 pt; with the optimization disabled, 0 pt.
    """
    import onnx
    import onnxruntime as ort

    exclude = set(exclude or ())
    if not exclude:
        return []
    with tempfile.TemporaryDirectory(prefix="fw-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    hits = []
    for node in graph.node:
        if node.name in exclude and node.op_type in FLOAT_COMPUTE_OPS:
            weights = [producers.get(name) for name in node.input[1:]]
            if any(p is not None and p.op_type == "DequantizeLinear" for p in weights):
                hits.append(node.name)
    return hits


# --------------------------------------------------------------------------------------------------------------
# Rules: why no (or little) speed-up


@dataclass(frozen=True)
class Finding:
    """One explanation of a missing speed-up: which rule fired, what it means, and what to do."""

    rule: str
    message: str
    fix: str

    def to_dict(self) -> dict:
        return asdict(self)


def _share(profile: dict | None, ops) -> float:
    if not profile:
        return 0.0
    return float(sum(r["share"] for r in profile.get("ops", []) if r["op"] in ops))


def _ops(profile: dict | None) -> dict:
    return {r["op"]: r for r in (profile or {}).get("ops", [])}


def explain(cpu: dict, before: dict | None, after: dict | None, *, steps: list | None = None,
            info: dict | None = None, speedup: float | None = None, batch1_ms: float | None = None,
            requantized: list | None = None, profile_batch: int | None = None) -> list[Finding]:
    """Plain-language reasons a variant is not (much) faster than the baseline, each with the fix.

    Args:
        cpu: `cpu_panel()`.
        before / after: `profile_ops` of the baseline and the variant (either may be None).
        steps: the variant's steps as dicts (results.json ``steps``).
        info: the variant's ``info`` (sparsity, ...).
        speedup: baseline latency / variant latency at the batch size of interest, when measured.
        batch1_ms: the baseline's batch-1 latency (ms), for the per-call overhead rule.
        requantized: excluded layers onnxruntime quantizes anyway (`requantized_excluded`).
        profile_batch: the batch size `before` / `after` were profiled at; the per-call overhead rule speaks of
            batch 1, so it applies only to a batch-1 profile (next to a batch-256 profile it misled).
    """
    steps = steps or []
    info = info or {}
    found: list[Finding] = []
    after_ops = _ops(after)
    modes = {s.get("mode") for s in steps if s.get("technique") == "quantize"}
    prune_methods = {s.get("method") for s in steps if s.get("technique") == "prune"}
    if "ConvInteger" in after_ops:
        share = after_ops["ConvInteger"]["share"]
        found.append(Finding(
            "conv_integer",
            f"{after_ops['ConvInteger']['calls']:g} Conv layer(s) run as ConvInteger ({share:.0%} of the time), "
            "which has no fast kernel on CPUs and is often slower than float Conv.",
            "Use static quantization (Conv becomes QLinearConv), or leave Conv in float under dynamic quantization."))
    int8 = bool(set(after_ops) & set(INT8_OPS)) or bool(modes & {"static", "dynamic"})
    if int8 and not cpu.get("int8_fast", True):
        found.append(Finding("no_vnni", *reason("no_vnni")))
    cast_share = _share(after, ("Cast",))
    if ("fp16" in modes or cast_share >= CAST_SHARE) and not cpu.get("fp16_arithmetic", False):
        found.append(Finding("fp16_casts", *reason("fp16_casts", share=cast_share)))
    sparsity = info.get("sparsity")
    if prune_methods & {"unstructured", "2:4"} or (sparsity is not None and sparsity >= 0.3
                                                   and "structured" not in prune_methods):
        found.append(Finding("dense_sparsity", *reason("dense_sparsity", share=sparsity)))
    if batch1_ms is not None and batch1_ms < CALL_OVERHEAD_MS and (profile_batch or 1) == 1:
        found.append(Finding("tiny_model", *reason("tiny_model", batch=1, ms=batch1_ms)))
    qdq = _share(after, ("QuantizeLinear", "DequantizeLinear"))
    if qdq >= QDQ_SHARE:
        found.append(Finding(
            "qdq_overhead",
            f"{qdq:.0%} of the time goes to QuantizeLinear / DequantizeLinear: converting between float and int8 "
            "where quantized and float layers meet.",
            "Keep fewer layers in float (a shorter exclude list), so the int8 stretches are longer."))
    dyn = _share(after, ("DynamicQuantizeLinear",))
    if dyn >= DYNAMIC_QUANT_SHARE:
        found.append(Finding(
            "dynamic_activation_quant",
            f"Dynamic quantization spends {dyn:.0%} of the time computing activation scales on every call.",
            "Use static quantization: scales come from calibration, once."))
    float_left = _share(after, FLOAT_COMPUTE_OPS)
    if int8 and float_left >= FLOAT_LEFT_SHARE:
        heavy = [r["op"] for r in (after or {}).get("ops", []) if r["op"] in FLOAT_COMPUTE_OPS][:3]
        found.append(Finding(
            "float_left",
            f"{float_left:.0%} of the time still runs in float ({', '.join(heavy)}): those layers were kept in float "
            "or could not be quantized in this mode.",
            "Check the exclude list and the quantization mode (dynamic leaves Conv in float; static covers Conv)."))
    if requantized:
        found.append(Finding(
            "excluded_requantized",
            f"{', '.join(requantized)} {'was' if len(requantized) == 1 else 'were'} kept in float, but onnxruntime "
            "quantizes their weights anyway when it loads the model (its WeightBiasQuantization optimization "
            "completes a float layer that sits between quantized neighbours), so excluding them changes nothing.",
            "Keep the neighbouring layer in float too (exclude the next layer as well), so the excluded layer's "
            "output is not quantized; or load the model with that optimization disabled "
            "(disabled_optimizers=['WeightBiasQuantization'])."))
    if speedup is not None and speedup < NO_SPEEDUP_RATIO and not found:
        found.append(Finding(
            "no_speedup",
            f"The variant is only {speedup:.2f}x the baseline's speed and no specific cause was found in its "
            "operators.",
            "Compare the per-operator times above: the largest 'after' bars are where the time goes."))
    return found


# --------------------------------------------------------------------------------------------------------------
# A run's variants, diagnosed


def artifact_bytes(run_dir: Path, entry: dict) -> bytes:
    artifact = entry.get("artifact")
    if not artifact:
        raise BadInputError(f"variant {entry.get('name')!r} has no model file (status {entry.get('status')})")
    path = inside_run(run_dir, artifact)
    if path is None:
        raise BadInputError(f"variant {entry.get('name')!r}: artifact path {artifact!r} leaves the run directory")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None


def artifact_inputs(model_bytes: bytes, count: int = 64, sequence_length: int = 128, seed: int = 0) -> dict:
    """Synthetic inputs of the model's input shapes (timing does not depend on the values for the models here)."""
    import onnx

    return synthetic_inputs(Model("artifact", onnx.load_from_string(model_bytes)), count, seed=seed,
                            sequence_length=sequence_length)


def diagnose_run(run_dir: str | Path, results: dict, variants: list[str], *, batch_size: int | None = None,
                 threads: int = 1, runs: int = 20, should_stop=lambda: False) -> dict:
    """Profile the baseline and each named variant of a finished run; compare and explain.

    Returns:
        ``{"cpu", "batch_size", "baseline": profile, "variants": {name: {"profile", "comparison", "findings",
        "speedup"}}}``.

    Raises:
        BadInputError: an unknown variant, or one without a model file.
    """
    run_dir = Path(run_dir)
    entries = {v.get("name"): v for v in results.get("variants", [])}
    if "baseline" not in entries:
        raise BadInputError("the run has no measured baseline to compare with")
    unknown = [n for n in variants if n not in entries]
    if unknown:
        raise BadInputError(f"no variant named {', '.join(unknown)}; variants: {', '.join(entries)}")
    sizes = batch_sizes_of(results)
    batch = batch_size or (max(sizes) if sizes else 1)
    sequence = ((results.get("recipe") or {}).get("benchmark") or {}).get("sequence_length", 128)
    base_bytes = artifact_bytes(run_dir, entries["baseline"])
    inputs = artifact_inputs(base_bytes, count=min(batch, 256), sequence_length=sequence)
    cpu = cpu_panel(threads)
    before = profile_ops(base_bytes, inputs, batch_size=batch, runs=runs, threads=threads)
    base_lat = entries["baseline"].get("latency_ms") or {}
    batch1 = (base_lat.get("1") or {}).get("p50")
    out = {"cpu": cpu, "batch_size": before["batch_size"], "baseline": before, "variants": {}}
    for name in variants:
        if name == "baseline" or should_stop():
            continue
        entry = entries[name]
        after = profile_ops(artifact_bytes(run_dir, entry), inputs, batch_size=batch, runs=runs, threads=threads)
        lat = ((entry.get("latency_ms") or {}).get(str(batch)) or {}).get("p50")
        blat = (base_lat.get(str(batch)) or {}).get("p50")
        speedup = round(blat / lat, 4) if lat and blat else None
        variant_bytes = artifact_bytes(run_dir, entry)
        # the nodes the quantize step kept in float (a static step keeps an `exclude` node only where that
        # improved validation); older runs without the record: the nodes the step asked for
        exclude = (entry.get("info") or {}).get("excluded_nodes")
        if exclude is None:
            exclude = [n for s in entry.get("steps") or [] if s.get("technique") == "quantize"
                       for n in s.get("exclude") or []]
        findings = explain(cpu, before, after, steps=entry.get("steps"), info=entry.get("info"), speedup=speedup,
                           batch1_ms=batch1, requantized=requantized_excluded(variant_bytes, exclude),
                           profile_batch=before["batch_size"])
        out["variants"][name] = {"profile": after, "comparison": compare_ops(before, after), "speedup": speedup,
                                 "findings": [f.to_dict() for f in findings]}
    return out


__all__ = ["Finding", "artifact_bytes", "compare_ops", "cpu_panel", "diagnose_run", "explain", "parse_profile",
           "profile_ops", "requantized_excluded"]
