"""Why is my optimized model not faster? The CPU's relevant features, per-operator time before and after from
onnxruntime's profiler, and rules that explain a missing speed-up in plain words with the fix.

Example::

    profiled = profile_in_rounds({"baseline": baseline_bytes, "int8": variant_bytes}, inputs, batch_size=256)
    before, after = profiled["profiles"]["baseline"], profiled["profiles"]["int8"]
    rows = compare_ops(before, after)          # Conv 9.1 ms -> QLinearConv 4.2 ms, ...
    for finding in explain(cpu_panel(), before, after, steps=variant["steps"]):
        print(finding.message, "Fix:", finding.fix)
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.errors import BadInputError
from core.format import format_speedup
from core.measure.timing import cpu_clock_for, speedup_of, time_in_rounds, timing_cores
from core.results.explain import CALL_OVERHEAD_MS, decoder_reasons, not_faster, reason
from core.io.files import inside_run
from core.io.data import synthetic_inputs
from core.io.decoder import forward_inputs
from core.io.graph import Model, graph_inputs
from core.io.runtime import make_session, optimized_graph, session_fixed_batch
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


def parse_profile(events: list, skip_runs: int = 0, max_nodes: int | None = 50,
                  run_scale: list | None = None) -> dict:
    """Kernel time per operator type from an onnxruntime profile (the JSON list of trace events).

    Node events (``cat == "Node"``) whose name ends in ``_kernel_time`` are summed by ``args.op_name``. The first
    `skip_runs` ``model_run`` events (warm-up) are left out. `run_scale`, one factor per ``model_run`` in order
    (warm-up included), scales each run's kernel times (`on_cpu_ms`: the time other processes took out of it).

    Returns:
        ``{"runs": n, "ops": [{"op", "ms", "calls", "share"}], "nodes": [{"node", "op", "ms"}], "total_ms"}`` with
        times per run, ops sorted by time.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e.get("ts", 0))
    starts = [e.get("ts", 0) for e in runs]
    start_ts = runs[skip_runs]["ts"] if len(runs) > skip_runs else 0
    counted = max(1, len(runs) - skip_runs) if runs else 1
    ops: dict[str, dict] = {}
    nodes: dict[str, dict] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < start_ts:
            continue
        duration = float(e.get("dur", 0))
        if run_scale is not None:
            index = bisect.bisect_right(starts, e.get("ts", 0)) - 1
            duration *= run_scale[index] if 0 <= index < len(run_scale) else 1.0
        op = (e.get("args") or {}).get("op_name", "?")
        entry = ops.setdefault(op, {"op": op, "us": 0.0, "calls": 0})
        entry["us"] += duration
        entry["calls"] += 1
        node = name[:-len("_kernel_time")]
        nodes.setdefault(node, {"node": node, "op": op, "us": 0.0})["us"] += duration
    total = sum(o["us"] for o in ops.values()) or 1.0
    rows = [{"op": o["op"], "ms": round(o["us"] / counted / 1000.0, 6), "calls": round(o["calls"] / counted, 3),
             "share": round(o["us"] / total, 6)} for o in ops.values()]
    rows.sort(key=lambda r: -r["ms"])
    node_rows = sorted(({"node": n["node"], "op": n["op"], "ms": round(n["us"] / counted / 1000.0, 6)}
                        for n in nodes.values()), key=lambda r: -r["ms"])
    return {"runs": counted, "ops": rows, "nodes": node_rows[:max_nodes], "total_ms": round(sum(r["ms"] for r in rows), 6)}


def profile_ops(model_bytes: bytes, inputs: dict, *, batch_size: int = 1, runs: int = 20, warmup: int = 3,
                threads: int = 1, max_nodes: int | None = 50, max_seconds: float = 2.0) -> dict:
    """One model's kernel time per operator type (per run) from onnxruntime's profiler, timed in rounds on a held
    core as `profile_in_rounds` times several (the one method; alone, it has no speed-up to report).

    Args:
        model_bytes: the ONNX model, or its path (a model with external data beside it).
        inputs: input name -> array (cycled to `batch_size`).
        batch_size / warmup / threads: what to profile (warm-up runs are excluded); runs: the most rounds;
            max_seconds: the time cap.
        max_nodes: how many of the slowest nodes to keep per node (None: all).

    Returns:
        As `parse_profile`, plus ``batch_size``.
    """
    profiled = profile_in_rounds({"model": model_bytes}, inputs, baseline="model", batch_size=batch_size,
                                 threads=threads, warmup=warmup, max_rounds=runs, max_seconds=max_seconds,
                                 max_nodes=max_nodes)
    return profiled["profiles"]["model"]


# A profiled turn is capped at this many calls: the profiler writes an event per node per call, and 16 calls of a
# 10-node model per turn over 200 rounds is ~30,000 events a model (a few MB of JSON), where an uncapped turn of a
# 0.02 ms model would be a thousand calls.
PROFILE_CALLS_PER_ROUND = 16
# A profiled run whose wall time exceeds its CPU time by more than this (or 5%) was set aside by the scheduler:
# 20 us is above the clocks' own overhead (a few us) and far below a scheduler slice (milliseconds).
PREEMPTED_S = 20e-6


def on_cpu_ms(kernel_ms: float, wall_s: float, cpu_s: float) -> float:
    """A run's kernel time without the time the scheduler gave other processes: the profiler's kernel times are
    wall-clock, so a run that was set aside (wall well over CPU time) keeps its kernels' share of the run, applied
    to its CPU time. Beside a busy loop on its core, digits-cnn fp32 at batch 256 ran 34 ms wall for 8.7 ms of CPU,
    and no profiled run was left whole."""
    if wall_s - cpu_s <= max(PREEMPTED_S, 0.05 * wall_s) or wall_s <= 0:
        return kernel_ms
    return kernel_ms * cpu_s / wall_s


def run_kernel_ms(events: list) -> list[float]:
    """Each `model_run`'s kernel time (the sum of its nodes' ``*_kernel_time`` events), ms, in run order."""
    runs = sorted(((e.get("ts", 0), e.get("ts", 0) + e.get("dur", 0)) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run"))
    starts = [start for start, _ in runs]
    totals = [0.0] * len(runs)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        index = bisect.bisect_right(starts, e.get("ts", 0)) - 1
        if 0 <= index < len(runs) and e.get("ts", 0) <= runs[index][1]:
            totals[index] += float(e.get("dur", 0)) / 1000.0
    return totals


def profile_in_rounds(models: dict, inputs: dict, *, baseline: str = "baseline", batch_size: int = 1,
                      threads: int = 1, warmup: int = 3, max_rounds: int = 200, max_seconds: float = 2.0,
                      max_nodes: int | None = 50, should_stop=lambda: False) -> dict:
    """Profile models with onnxruntime's profiler, timed the way a run times them (the one method,
    `core.measure.timing`): interleaved in rounds with the baseline, in this process, on held cores.

    Per model: the kernel time per operator type and per node (mean per run, warm-up excluded), as `parse_profile`,
    without the time the scheduler gave other processes (`on_cpu_ms`).
    Per variant: the kernel-time speed-up against the baseline (median of per-round ratios of the runs' summed
    kernel times, with its 95% bootstrap interval) beside the wall-clock one of the same rounds (profiler on).

    Args:
        models: name -> ONNX bytes, or a path (a model with its external data beside it, a decoder's); must hold
            `baseline`.
        inputs: input name -> array (cycled to `batch_size`).
        max_seconds: per model (the whole timing is capped at `max_seconds` x the models).

    Returns:
        ``{"batch_size", "rounds", "converged", "contention", "profiles": {name: profile},
        "kernel_speedup": {name: {ratio, low, high, rounds, converged}}, "wall_speedup": {name: ...}}``.
    """
    import onnx

    first = models[baseline]
    specs = graph_inputs(onnx.load(str(first), load_external_data=False) if isinstance(first, Path)
                         else onnx.load_from_string(first))
    with tempfile.TemporaryDirectory(prefix="fw-profile-") as tmp, \
            timing_cores(threads, should_stop=should_stop) as cores:
        if cores is None:
            raise BadInputError("stopped while waiting for a core to profile on")
        sessions = {name: make_session(data, threads, profile_prefix=os.path.join(tmp, f"profile-{i}"))
                    for i, (name, data) in enumerate(models.items())}
        batch = session_fixed_batch(sessions[baseline]) or batch_size
        feed = batch_inputs(inputs, specs, batch)
        timed = time_in_rounds({name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()},
                               baseline, warmup=warmup, max_rounds=max_rounds, max_seconds=max_seconds * len(models),
                               threads=threads, max_calls_per_round=PROFILE_CALLS_PER_ROUND, should_stop=should_stop,
                               cpu_clock=cpu_clock_for(threads))
        events = {}
        for name, session in sessions.items():
            path = Path(session.end_profiling())
            try:
                events[name] = json.loads(path.read_text(encoding="utf-8"))
            finally:
                path.unlink(missing_ok=True)
    profiles, per_round = {}, {}
    for name, trace in events.items():
        skip = timed.warmup_calls[name]
        calls = [call for turn in timed.call_s[name] for call in turn]
        scale = [1.0] * skip + [on_cpu_ms(1.0, wall, cpu) for wall, cpu in calls]
        profiles[name] = {**parse_profile(trace, skip_runs=skip, max_nodes=max_nodes, run_scale=scale),
                          "batch_size": batch}
        kernel = [k * f for k, f in zip(run_kernel_ms(trace), scale)][skip:]
        per_round[name], position = [], 0
        for turn in timed.call_s[name]:
            runs = kernel[position:position + len(turn)]
            position += len(turn)
            if runs:
                per_round[name].append(float(np.median(runs)))
    kernel_speedup = {}
    for name in models:
        if name == baseline:
            continue
        count = min(len(per_round[baseline]), len(per_round[name]))
        if count:
            kernel_speedup[name] = speedup_of(per_round[baseline][:count], per_round[name][:count]).to_dict()
    return {"batch_size": batch, "rounds": timed.rounds, "converged": timed.converged,
            "contention": timed.contention, "profiles": profiles, "kernel_speedup": kernel_speedup,
            "wall_speedup": timed.speedup_dicts()}


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
    exclude = set(exclude or ())
    if not exclude:
        return []
    graph = optimized_graph(model_bytes, "basic")
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
            info: dict | None = None, speedup: dict | float | None = None, batch1_ms: float | None = None,
            requantized: list | None = None, profile_batch: int | None = None) -> list[Finding]:
    """Plain-language reasons a variant is not (much) faster than the baseline, each with the fix.

    Args:
        cpu: `cpu_panel()`.
        before / after: `profile_ops` of the baseline and the variant (either may be None).
        steps: the variant's steps as dicts (results.json ``steps``).
        info: the variant's ``info`` (sparsity, ...).
        speedup: the speed-up at the batch size of interest, when measured: a results.json entry ({ratio, low,
            high}) or a bare ratio.
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
    entry = {"ratio": float(speedup)} if isinstance(speedup, (int, float)) else speedup
    if not_faster(entry) and not found:
        found.append(Finding(
            "no_speedup",
            f"The variant measured {format_speedup(entry)} against the baseline and no specific cause was found in "
            "its operators.",
            "Compare the per-operator times above: the largest 'after' bars are where the time goes."))
    return found


# --------------------------------------------------------------------------------------------------------------
# A run's variants, diagnosed


def artifact_path(run_dir: Path, entry: dict) -> Path:
    """A variant's model file inside its run.

    Raises:
        BadInputError: the variant has no model file, or its path leaves the run directory.
    """
    artifact = entry.get("artifact")
    if not artifact:
        raise BadInputError(f"variant {entry.get('name')!r} has no model file (status {entry.get('status')})")
    path = inside_run(run_dir, artifact)
    if path is None:
        raise BadInputError(f"variant {entry.get('name')!r}: artifact path {artifact!r} leaves the run directory")
    return path


def artifact_bytes(run_dir: Path, entry: dict) -> bytes:
    path = artifact_path(run_dir, entry)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None


def is_decoder_artifact(path: Path) -> bool:
    """Whether a model file is an onnxruntime-genai decoder (genai_config.json beside it; its weights are external
    data beside it too, so it is opened by path, never from bytes)."""
    return (path.parent / "genai_config.json").is_file()


def decode_step_inputs(model_path: Path, results: dict) -> tuple[dict, int]:
    """One decode step's inputs for a decoder variant, at the middle of the run's timed decode (its prompt plus
    half the timed new tokens of KV cache): what results.json's per-token latency averages over. Returns
    (inputs, past tokens)."""
    import onnx

    dataset = results.get("dataset") or {}
    past = int(dataset.get("prompt_tokens") or 16) + int(dataset.get("timed_new_tokens") or 16) // 2
    specs = graph_inputs(onnx.load(str(model_path), load_external_data=False))
    return forward_inputs(model_path.parent, specs, tokens=1, past=past), past


def artifact_inputs(model_bytes: bytes, count: int = 64, sequence_length: int = 128, seed: int = 0) -> dict:
    """Synthetic inputs of the model's input shapes (timing does not depend on the values for the models here)."""
    import onnx

    return synthetic_inputs(Model("artifact", onnx.load_from_string(model_bytes)), count, seed=seed,
                            sequence_length=sequence_length)


def diagnose_run(run_dir: str | Path, results: dict, variants: list[str], *, batch_size: int | None = None,
                 threads: int = 1, runs: int = 200, max_seconds: float = 2.0, should_stop=lambda: False) -> dict:
    """Profile the baseline and each named variant of a finished run, interleaved in rounds (`profile_in_rounds`);
    compare and explain.

    Args:
        runs: the most rounds; max_seconds: per model.

    Returns:
        ``{"cpu", "batch_size", "baseline": profile, "rounds", "contention", "variants": {name: {"profile",
        "comparison", "findings", "speedup", "kernel_speedup", "wall_speedup"}}}``; `speedup` is the run's own
        entry at this batch size (its timing phase), None when the run did not time it.

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
    cpu = cpu_panel(threads)
    chosen = [n for n in dict.fromkeys(variants) if n != "baseline"]
    base_path = artifact_path(run_dir, entries["baseline"])
    decoder = is_decoder_artifact(base_path)
    if decoder:  # a decoder's speed is per decoded token at batch 1: profile one decode step
        models = {"baseline": base_path, **{name: artifact_path(run_dir, entries[name]) for name in chosen}}
        inputs, past = decode_step_inputs(base_path, results)
        batch = 1
    else:
        sequence = ((results.get("recipe") or {}).get("benchmark") or {}).get("sequence_length", 128)
        base_bytes = artifact_bytes(run_dir, entries["baseline"])
        inputs, past = artifact_inputs(base_bytes, count=min(batch, 256), sequence_length=sequence), None
        models = {"baseline": base_bytes, **{name: artifact_bytes(run_dir, entries[name]) for name in chosen}}
    try:
        profiled = profile_in_rounds(models, inputs, batch_size=batch, threads=threads, max_rounds=runs,
                                     max_seconds=max_seconds, should_stop=should_stop)
    except BadInputError:
        if should_stop():  # stopped while waiting for a core: nothing profiled, nothing to explain
            return {"cpu": cpu, "batch_size": batch, "baseline": None, "variants": {}}
        raise
    before = profiled["profiles"]["baseline"]
    base_lat = entries["baseline"].get("latency_ms") or {}
    batch1 = (base_lat.get("1") or {}).get("p50")
    out = {"cpu": cpu, "batch_size": profiled["batch_size"], "baseline": before, "rounds": profiled["rounds"],
           "contention": profiled["contention"], "variants": {}}
    if decoder:
        out["decode_step_past_tokens"] = past
    for name in chosen:
        entry = entries[name]
        after = profiled["profiles"][name]
        speedup = (entry.get("speedup") or {}).get(str(profiled["batch_size"]))
        if decoder:  # the rules of a decoder's decode (Compare's notes say the same)
            findings = [Finding(rule, *reason(rule, **numbers)) for rule, numbers in decoder_reasons(results, name)]
        else:
            # the nodes the quantize step kept in float (a static step keeps an `exclude` node only where that
            # improved validation); older runs without the record: the nodes the step asked for
            exclude = (entry.get("info") or {}).get("excluded_nodes")
            if exclude is None:
                exclude = [n for s in entry.get("steps") or [] if s.get("technique") == "quantize"
                           for n in s.get("exclude") or []]
            findings = explain(cpu, before, after, steps=entry.get("steps"), info=entry.get("info"),
                               speedup=speedup or profiled["wall_speedup"].get(name), batch1_ms=batch1,
                               requantized=requantized_excluded(models[name], exclude),
                               profile_batch=profiled["batch_size"])
        out["variants"][name] = {"profile": after, "comparison": compare_ops(before, after), "speedup": speedup,
                                 "kernel_speedup": profiled["kernel_speedup"].get(name),
                                 "wall_speedup": profiled["wall_speedup"].get(name),
                                 "findings": [f.to_dict() for f in findings]}
    return out


__all__ = ["Finding", "PROFILE_CALLS_PER_ROUND", "artifact_bytes", "artifact_path", "compare_ops", "cpu_panel",
           "decode_step_inputs", "diagnose_run", "explain", "is_decoder_artifact", "parse_profile", "profile_in_rounds",
           "profile_ops", "requantized_excluded", "run_kernel_ms"]
