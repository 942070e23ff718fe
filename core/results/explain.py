"""Why a variant is not faster: the thresholds (per-call overhead, speed-up noise, int8 instruction sets) and the
plain-language rules over a whole run. The diagnostics (`core.analysis.diagnose`) judge profiles by the same
thresholds."""

from __future__ import annotations

from core.format import format_bytes, format_speedup, speedup_verdict
from core.io.runtimes import runtime_label
from core.measure.quality import int8_fast
from core.results.compare import variant
from core.results.table import batch_sizes_of


# Below this batch-1 latency the time is mostly onnxruntime's per-call overhead (input binding, allocator,
# kernel dispatch), not arithmetic: an empty-ish graph measures ~0.01-0.03 ms on our 2-core CI box, so a
# variant that does less math can barely be faster.
CALL_OVERHEAD_MS = 0.1
# A variant is "not (much) faster" when its interval does not clear 1 (`core.format.speedup_verdict`: no measurable
# difference, or slower), or its ratio is below this: a 10% gain is under what an optimization's accuracy risk is
# usually worth, so the reasons are worth reading. Whether there is a difference at all is the interval's call.
NO_SPEEDUP_RATIO = 1.1


def not_faster(entry: dict | None) -> bool:
    """Whether a speedup entry ({ratio, low, high}, or a bare {ratio} from an older run) is "not (much) faster":
    its interval does not show a speed-up, or its ratio is below NO_SPEEDUP_RATIO. False when there is none."""
    if not entry or entry.get("ratio") is None:
        return False
    verdict = speedup_verdict(entry)
    return (verdict is not None and verdict != "faster") or float(entry["ratio"]) < NO_SPEEDUP_RATIO


def reason(rule: str, *, batch: int = 1, ms: float | None = None, share: float | None = None,
           runtime: str = "onnxruntime", count: int = 0, total: int = 0, detail: str = "", level: int = 0,
           bits: int = 4, bytes_: int = 0, cache: int = 0) -> tuple[str, str]:
    """The one wording of a "why not faster" rule, as (what happened, what to do): Compare's notes
    (`why_no_speedup`) and Insight's diagnosis (`core.analysis.diagnose.explain`) both say it this way.

    Args:
        rule: ``tiny_model``, ``no_vnni``, ``fp16_casts``, ``dense_sparsity``, or a runtime's (issue 30):
            ``int8_unfused`` (a runtime ran `count` of `total` heavy layers of an int8 graph in float; `detail`
            names whose Q/DQ layout it is), ``edge_delegation`` (the XNNPACK delegate took `share` of the
            operators; `detail` lists the others); for decoders ``nbits_float_compute``, ``cache_resident`` and
            ``contended``.
        batch, ms: the batch size and latency the per-call overhead rule speaks of.
        share: what the diagnosis measured, when it did: the Cast ops' share of the time (fp16), the zeroed
            share of the weights (sparsity), the delegated share of the operators (edge).
        runtime: the runtime a rule speaks of, as shown ("OpenVINO").
        level, bits: a decoder variant's accuracy_level and weight bits (nbits_float_compute).
        bytes_, cache: the fp32 weights' bytes and the last-level cache's (cache_resident).
    """
    if rule == "tiny_model":
        return (f"At batch {batch} this model runs in {ms:.3f} ms, mostly onnxruntime's per-call overhead "
                "(binding inputs, dispatching kernels), so doing less arithmetic barely shows.",
                "Batch requests together, or judge speed at a larger batch size.")
    if rule == "no_vnni":
        return ("No VNNI / AMX (or ARM dot-product) on this CPU: int8 kernels gain less over float here than on "
                "CPUs that have them.",
                "Expect more on a CPU with AVX512-VNNI, AVX-VNNI or AMX; for more speed here, combine int8 with "
                "structured pruning (fewer channels = less work on any CPU).")
    if rule == "fp16_casts":
        measured = f" (they take {share:.0%} of the time)" if share is not None else ""
        return (f"fp16 halves the size, but without fp16 arithmetic (most CPUs) onnxruntime computes in float32 "
                f"behind Cast ops{measured}, which cost time of their own.",
                "Use fp16 to halve the file, not for speed on this CPU; use static int8 for speed.")
    if rule == "dense_sparsity":
        zeros = f" ({share:.0%} of the weights are zero)" if share is not None else ""
        return (f"Unstructured sparsity: dense kernels still multiply every zero, so zeroed weights run no "
                f"faster{zeros}.",
                "Prune structurally (whole channels) for speed; unstructured pruning only shrinks the compressed "
                "file.")
    if rule == "int8_unfused":
        return (f"On {runtime}, {count} of {total} convolution / matmul layers of this int8 graph ran in float: "
                f"{runtime} did not fuse their Quantize/Dequantize pairs into int8 kernels ({detail}), so it "
                "converts to and from int8 around float work.",
                "Quantize for the runtime you ship on: `target: openvino` (NNCF) for OpenVINO, `target: "
                "onnxruntime` for onnxruntime.")
    if rule == "edge_delegation":
        return (f"The XNNPACK delegate covered {share:.0%} of the operators; the rest ({detail}) run on "
                "ExecuTorch's portable kernels, which are plain loops, and each switch between them and the "
                "delegate copies tensors.",
                "Replace the operators XNNPACK lacks in the model, or accept the portable kernels' cost for them.")
    if rule == "nbits_float_compute":
        return (f"MatMulNBits computes in float at accuracy_level {level}: each call unpacks the {bits}-bit weights "
                "block by block to float32 before multiplying, which costs more than fp32's plain matrix multiply"
                + (" (onnxruntime has no fast float kernel for 8-bit weights)" if bits == 8 else "") + ".",
                "Use accuracy_level auto (level 4, int8 compute, where it measures faster on this CPU) or 4.")
    if rule == "cache_resident":
        return (f"The fp32 weights ({format_bytes(bytes_)}) fit in this CPU's {format_bytes(cache)} last-level "
                "cache, so decoding one token is not limited by reading weights from memory; fewer weight bytes "
                "then buy little, and the kernels' own speed decides.",
                "Judge int4 / int8 decode speed on a model whose weights do not fit in cache (a 0.5B model is ~2 GB "
                "in fp32).")
    if rule == "contended":
        return ("The machine was busy while this was timed (the decoding workers got less CPU than they asked "
                "for), and the speed-up's interval includes 1: no measurable difference.",
                "Rerun on a quiet machine for a firmer figure.")
    raise ValueError(f"unknown rule {rule!r}")


def _note(rule: str, **numbers) -> str:
    return " ".join(reason(rule, **numbers))


def why_no_speedup(results: dict, name: str, batch_size: int | None = None) -> list[str]:
    """Plain-language reasons a variant is not (much) faster than the baseline: the pipeline's own notes plus
    rules that need the whole run (call overhead on tiny models, no fast int8 instructions, dense kernels)."""
    v = variant(results, name)
    if v is None or v.get("status") != "ok":
        return []
    if results.get("task") == "text-generation":
        return decoder_notes(results, name)
    notes = list(v.get("notes") or [])
    base = variant(results, "baseline") or {}
    sizes = batch_sizes_of(results)
    if batch_size is None and sizes:
        batch_size = sizes[-1]
    speedup = _speedup(base, v, batch_size)
    steps = v.get("steps") or []
    smallest = min(sizes) if sizes else None
    if name != "baseline" and not_faster(speedup):
        notes.append(f"At batch {batch_size} it measured {_measured(speedup)} against the baseline (same run).")
    if smallest is not None and name != "baseline":
        p50 = ((v.get("latency_ms") or {}).get(str(smallest)) or {}).get("p50")
        base_p50 = ((base.get("latency_ms") or {}).get(str(smallest)) or {}).get("p50")
        small_speedup = _speedup(base, v, smallest)
        if (p50 is not None and base_p50 is not None and min(p50, base_p50) < CALL_OVERHEAD_MS
                and not_faster(small_speedup)):
            notes.append(_note("tiny_model", batch=smallest, ms=p50))
    if not_faster(speedup):
        flags = set((results.get("environment") or {}).get("cpu_flags") or [])
        int8 = any(s.get("technique") == "quantize" and s.get("mode") in ("static", "dynamic") for s in steps)
        if int8 and flags and not int8_fast(flags):
            notes.append(_note("no_vnni"))
        unstructured = any(s.get("technique") == "prune" and s.get("method") in ("unstructured", "2:4")
                           for s in steps)
        fp16 = any(s.get("technique") == "quantize" and s.get("mode") == "fp16" for s in steps)
        if fp16:
            notes.append(_note("fp16_casts"))
        if unstructured and not any("dense" in n.lower() for n in notes):
            notes.append(_note("dense_sparsity"))
    return list(dict.fromkeys(notes))


# The share of operators below which the edge runtime's delegation is worth a note whatever the speed (the issue's
# example: "the XNNPACK delegate covered 60% of operators"); a reshape or two left outside are not.
EDGE_DELEGATED_SHARE = 0.9
LAYOUTS = {"openvino": "the layout NNCF makes for OpenVINO", "onnxruntime": "the layout onnxruntime's quantizer makes"}


def why_not_faster_on(results: dict, name: str, runtime: str, batch_size: int | None = None) -> list[str]:
    """Plain-language reasons a variant is not (much) faster on `runtime` than that runtime's own baseline: int8
    layers the runtime ran in float (its kernel precisions, measured when the variant was timed), no fast int8
    instructions, operators the edge runtime's delegate did not take. Empty when the variant has no entry there."""
    v = variant(results, name)
    entry = ((v or {}).get("runtimes") or {}).get(runtime)
    if not entry or entry.get("status") != "ok":
        return []
    label = runtime_label(runtime)
    notes = []
    steps = v.get("steps") or []
    quantize = next((s for s in steps if s.get("technique") == "quantize"), None)
    int8 = quantize is not None and quantize.get("mode", "static") in ("static", "dynamic", "qat")
    sizes = batch_sizes_of(results)
    if batch_size is None and sizes:
        batch_size = sizes[-1]
    slow = not_faster((entry.get("speedup") or {}).get(str(batch_size)))
    kernels = entry.get("kernels") or {}
    excluded = len((quantize or {}).get("exclude") or [])
    if int8 and kernels.get("float", 0) > excluded:
        target = (quantize or {}).get("target", "onnxruntime")
        notes.append(_note("int8_unfused", runtime=label, count=kernels["float"],
                           total=kernels["float"] + kernels.get("int8", 0), detail=LAYOUTS.get(target, target)))
    flags = set((results.get("environment") or {}).get("cpu_flags") or [])
    if int8 and slow and flags and not int8_fast(flags):
        notes.append(_note("no_vnni"))
    export = entry.get("export") or {}
    share = export.get("delegated_share")
    if share is not None and (share < EDGE_DELEGATED_SHARE or (slow and share < 1.0)):
        others = ", ".join(f"{op} ×{n}" for op, n in (export.get("undelegated_ops") or {}).items()) or "none"
        notes.append(_note("edge_delegation", share=share, detail=others))
    return list(dict.fromkeys(notes + list(entry.get("notes") or [])))


def decoder_notes(results: dict, name: str) -> list[str]:
    """A decoder variant's notes, and when its decode is not faster than fp32 (interleaved speed-up below
    NO_SPEEDUP_RATIO), how fast it was and why (`decoder_reasons`)."""
    notes = list((variant(results, name) or {}).get("notes") or [])
    interval = _decode_interval(results, name)
    if name == "baseline" or not not_faster(interval):
        return notes
    found = [f"At batch 1 it decoded at {_measured(interval)} fp32's speed (same run)."]
    found += [_note(rule, **numbers) for rule, numbers in decoder_reasons(results, name)]
    return list(dict.fromkeys(notes + found))


def decoder_reasons(results: dict, name: str) -> list[tuple[str, dict]]:
    """Why a decoder variant's decode is not faster than fp32, as `reason` rules with their numbers: float compute
    in MatMulNBits (accuracy_level below 4), no int8 dot-product instructions, weights that fit in cache (decode
    not memory-bound), or a busy machine that left the interval around 1. Empty when it is faster."""
    interval = _decode_interval(results, name)
    if name == "baseline" or not not_faster(interval):
        return []
    v, base = variant(results, name) or {}, variant(results, "baseline") or {}
    build = (v.get("info") or {}).get("build") or {}
    precision, level = build.get("precision"), build.get("accuracy_level")
    environment = results.get("environment") or {}
    flags = set(environment.get("cpu_flags") or [])
    found = []
    if precision in ("int4", "int8") and isinstance(level, int) and level < 4:
        found.append(("nbits_float_compute", {"level": level, "bits": 4 if precision == "int4" else 8}))
    elif precision in ("int4", "int8") and flags and not int8_fast(flags):
        found.append(("no_vnni", {}))
    cache = environment.get("last_level_cache_bytes")
    if not found and cache and base.get("size_bytes") and base["size_bytes"] <= cache:
        found.append(("cache_resident", {"bytes_": base["size_bytes"], "cache": cache}))
    contended = (results.get("timing") or {}).get("contended")
    if contended and interval.get("low", 1.0) <= 1.0 <= interval.get("high", 1.0):
        found.append(("contended", {}))
    return found


def _decode_interval(results: dict, name: str) -> dict:
    """A decoder variant's decode speed-up at batch 1 (interleaved rounds); for a run from before interleaved
    decoder timing, the tokens/s ratio alone."""
    v, base = variant(results, name) or {}, variant(results, "baseline") or {}
    interval = (v.get("speedup") or {}).get("1") or {}
    if not interval:
        rate, base_rate = (v.get("tokens_per_s") or {}).get("decode"), (base.get("tokens_per_s") or {}).get("decode")
        interval = {"ratio": rate / base_rate} if rate and base_rate else {}
    return interval


def _speedup(base: dict, v: dict, batch_size: int | None) -> dict | None:
    """The variant's speedup entry at `batch_size` (the interleaved timing's ratio and interval), or for a run from
    before intervals the bare p50 ratio ({ratio} only)."""
    if batch_size is None:
        return None
    entry = (v.get("speedup") or {}).get(str(batch_size))
    if entry:
        return entry
    p50 = ((v.get("latency_ms") or {}).get(str(batch_size)) or {}).get("p50")
    base_p50 = ((base.get("latency_ms") or {}).get(str(batch_size)) or {}).get("p50")
    if not p50 or base_p50 is None:
        return None
    return {"ratio": base_p50 / p50}


def _measured(entry: dict) -> str:
    text = format_speedup(entry)
    verdict = speedup_verdict(entry)
    if verdict == "faster":
        return f"{text}: faster, but by less than {NO_SPEEDUP_RATIO:g}x"
    if verdict is None:
        return f"{text} (one p50 ratio, no interval: a run from before interleaved timing)"
    return f"{text}: slower" if verdict == "slower" else text


__all__ = ["CALL_OVERHEAD_MS", "EDGE_DELEGATED_SHARE", "NO_SPEEDUP_RATIO", "decoder_notes", "decoder_reasons",
           "not_faster", "reason", "why_no_speedup", "why_not_faster_on"]
