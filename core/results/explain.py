"""Why a variant is not faster: the thresholds (per-call overhead, speed-up noise, int8 instruction sets) and the
plain-language rules over a whole run. The diagnostics (`core.analysis.diagnose`) judge profiles by the same
thresholds."""

from __future__ import annotations

from core.measure.quality import int8_fast
from core.results.compare import variant
from core.results.table import batch_sizes_of


# Below this batch-1 latency the time is mostly onnxruntime's per-call overhead (input binding, allocator,
# kernel dispatch), not arithmetic: an empty-ish graph measures ~0.01-0.03 ms on our 2-core CI box, so a
# variant that does less math can barely be faster.
CALL_OVERHEAD_MS = 0.1
# Speed-ups smaller than this are within run-to-run noise of a 1-thread benchmark on a shared machine.
NO_SPEEDUP_RATIO = 1.1
# CPU flags whose int8 dot-product instructions make int8 kernels clearly faster than float.


def why_no_speedup(results: dict, name: str, batch_size: int | None = None) -> list[str]:
    """Plain-language reasons a variant is not (much) faster than the baseline: the pipeline's own notes plus
    rules that need the whole run (call overhead on tiny models, no fast int8 instructions, dense kernels)."""
    v = variant(results, name)
    if v is None or v.get("status") != "ok":
        return []
    notes = list(v.get("notes") or [])
    base = variant(results, "baseline") or {}
    sizes = batch_sizes_of(results)
    if batch_size is None and sizes:
        batch_size = sizes[-1]
    speedup = _speedup(base, v, batch_size)
    steps = v.get("steps") or []
    smallest = min(sizes) if sizes else None
    if smallest is not None and name != "baseline":
        p50 = ((v.get("latency_ms") or {}).get(str(smallest)) or {}).get("p50")
        base_p50 = ((base.get("latency_ms") or {}).get(str(smallest)) or {}).get("p50")
        small_speedup = _speedup(base, v, smallest)
        if (p50 is not None and base_p50 is not None and min(p50, base_p50) < CALL_OVERHEAD_MS
                and small_speedup is not None and small_speedup < NO_SPEEDUP_RATIO):
            notes.append(f"At batch {smallest} this model runs in {p50:.3f} ms: the time is mostly onnxruntime's "
                         f"per-call overhead, not arithmetic, so doing less math barely shows. Compare at a larger "
                         f"batch size.")
    if speedup is not None and speedup < NO_SPEEDUP_RATIO:
        flags = set((results.get("environment") or {}).get("cpu_flags") or [])
        int8 = any(s.get("technique") == "quantize" and s.get("mode") in ("static", "dynamic") for s in steps)
        if int8 and flags and not int8_fast(flags):
            notes.append("This CPU has no VNNI / dot-product int8 instructions, so int8 kernels gain less over "
                         "float than on newer CPUs.")
        unstructured = any(s.get("technique") == "prune" and s.get("method") in ("unstructured", "2:4")
                           for s in steps)
        fp16 = any(s.get("technique") == "quantize" and s.get("mode") == "fp16" for s in steps)
        if fp16:
            notes.append("fp16 halves the size, but most CPUs have no fast fp16 kernels: onnxruntime runs the "
                         "layers in float32 behind casts, which cost time of their own.")
        if unstructured and not any("dense" in n.lower() for n in notes):
            notes.append("Zeroed weights are still stored and multiplied: dense CPU kernels run no faster. The "
                         "file compresses better; for speed, prune structurally.")
    return list(dict.fromkeys(notes))


def _speedup(base: dict, v: dict, batch_size: int | None) -> float | None:
    if batch_size is None:
        return None
    p50 = ((v.get("latency_ms") or {}).get(str(batch_size)) or {}).get("p50")
    base_p50 = ((base.get("latency_ms") or {}).get(str(batch_size)) or {}).get("p50")
    if not p50 or base_p50 is None:
        return None
    return base_p50 / p50


__all__ = ["CALL_OVERHEAD_MS", "NO_SPEEDUP_RATIO", "why_no_speedup"]
