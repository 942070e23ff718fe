"""The bake-off's results: every variant x runtime as one point (size, latency, speed-ups, quality on that runtime),
the best point within a budget, and which runtime to ship each variant on (pure: results.json in, tables out)."""

from __future__ import annotations

import pandas as pd

from core.format import format_speedup
from core.io.runtimes import REFERENCE_RUNTIME, RUNTIMES, runtime_label
from core.results.table import batch_sizes_of
from core.spec.labels import steps_label

POINT_SEPARATOR = " · "


def run_runtimes(results: dict) -> list[str]:
    """The runtimes a run timed its variants on, in the recipe's order (onnxruntime for runs before issue 30)."""
    recipe = (results.get("recipe") or {}).get("benchmark") or {}
    named = list(recipe.get("runtimes") or [])
    for v in results.get("variants", []):
        for name in (v.get("runtimes") or {}):
            if name not in named:
                named.append(name)
    return named or [REFERENCE_RUNTIME]


def point_name(variant: str, runtime: str) -> str:
    """A point's label: 'int8 · OpenVINO'."""
    return f"{variant}{POINT_SEPARATOR}{runtime_label(runtime)}"


def runtime_entry(v: dict, runtime: str) -> dict:
    """A variant's entry for one runtime; onnxruntime's comes from the top-level fields when the run predates the
    `runtimes` block (older results.json files)."""
    entry = (v.get("runtimes") or {}).get(runtime)
    if entry is not None:
        return entry
    if runtime == REFERENCE_RUNTIME:
        return {"status": v.get("status"), "error": v.get("error"), "latency_ms": v.get("latency_ms") or {},
                "speedup": v.get("speedup") or {}, "selection": v.get("selection") or {}}
    return {}


def runtime_frame(results: dict) -> pd.DataFrame:
    """One row per variant x runtime: ``name`` (the point, 'int8 · OpenVINO'), ``variant``, ``runtime``, status and
    error, ``size_bytes`` (the ONNX file; the .pte program on ExecuTorch), quality measured on that runtime
    (``accuracy``, ``agreement``, ``cosine_mean``, ``accuracy_drop_pt`` against the baseline on onnxruntime),
    ``x_smaller`` against the baseline's ONNX file, and per batch size ``p50_ms_bs{N}``, ``speedup_bs{N}`` (against
    the baseline on the same runtime, same rounds, with ``speedup_low_bs{N}`` / ``speedup_high_bs{N}``) and
    ``vs_onnxruntime_bs{N}`` with ``_low`` / ``_high`` (against the baseline on onnxruntime, the one reference of
    every cross-runtime ratio); the ``selection_*`` columns a choice reads, as `results_frame` has them (validation
    quality on that runtime, the held-out timing rounds)."""
    variants = results.get("variants", [])
    base = next((v for v in variants if v.get("name") == "baseline"), variants[0] if variants else {})
    sizes = batch_sizes_of(results)
    rows = []
    for runtime in run_runtimes(results):
        for v in variants:
            entry = runtime_entry(v, runtime)
            if not entry:
                continue
            ok = v.get("status") == "ok" and entry.get("status") == "ok"
            size = entry.get("size_bytes") or v.get("size_bytes")
            onnx_quality = runtime == REFERENCE_RUNTIME
            row = {"name": point_name(v.get("name"), runtime), "variant": v.get("name"), "runtime": runtime,
                   "runtime_label": runtime_label(runtime), "status": "ok" if ok else (entry.get("status")
                                                                                      or v.get("status")),
                   "error": entry.get("error") or v.get("error"), "technique": steps_label(v.get("steps")),
                   "size_bytes": size if ok else None, "params": v.get("params"),
                   "accuracy": v.get("accuracy") if onnx_quality else entry.get("accuracy"),
                   "agreement": v.get("agreement") if onnx_quality else entry.get("agreement"),
                   "cosine_mean": v.get("cosine_mean") if onnx_quality else entry.get("cosine_mean"),
                   "x_smaller": round(base["size_bytes"] / size, 4) if ok and size and base.get("size_bytes")
                   else None}
            row["accuracy_drop_pt"] = (round((base["accuracy"] - row["accuracy"]) * 100, 4)
                                       if base.get("accuracy") is not None and row["accuracy"] is not None else None)
            # what a choice reads (core.results.compare.chosen_on): validation quality on this runtime and the
            # timing rounds held out for choosing; onnxruntime's are the variant's own
            chosen = (v.get("selection") if onnx_quality else entry.get("selection")) or {}
            row.update({"selection_accuracy": chosen.get("accuracy"), "selection_agreement": chosen.get("agreement"),
                        "selection_cosine_mean": chosen.get("cosine_mean"), "selection_n": chosen.get("n")})
            for bs in sizes:
                key = str(bs)
                lat = (entry.get("latency_ms") or {}).get(key) or {}
                speed = (entry.get("speedup") or {}).get(key) or {}
                cross = (entry.get("vs_onnxruntime") or {}).get(key) or {}
                row[f"p50_ms_bs{bs}"] = lat.get("p50") if ok else None
                row[f"p99_ms_bs{bs}"] = lat.get("p99") if ok else None
                row[f"speedup_bs{bs}"] = speed.get("ratio") if ok else None
                row[f"speedup_low_bs{bs}"], row[f"speedup_high_bs{bs}"] = speed.get("low"), speed.get("high")
                row[f"speedup_rounds_bs{bs}"] = speed.get("rounds")
                held = (entry.get("selection") or {}) if not onnx_quality else chosen
                row[f"selection_p50_ms_bs{bs}"] = ((held.get("latency_ms") or {}).get(key) or {}).get("p50")
                row[f"selection_speedup_bs{bs}"] = ((held.get("speedup") or {}).get(key) or {}).get("ratio")
                if runtime == REFERENCE_RUNTIME and v is base:
                    cross = {"ratio": 1.0, "low": 1.0, "high": 1.0}
                elif runtime == REFERENCE_RUNTIME and not cross:
                    cross = speed
                row[f"vs_onnxruntime_bs{bs}"] = cross.get("ratio") if ok else None
                row[f"vs_onnxruntime_low_bs{bs}"] = cross.get("low") if ok else None
                row[f"vs_onnxruntime_high_bs{bs}"] = cross.get("high") if ok else None
            rows.append(row)
    return pd.DataFrame(rows)


def ship_table(results: dict, batch_size: int) -> pd.DataFrame:
    """Which runtime to ship each variant on at `batch_size`: the runtime where it is fastest, its speed against
    the baseline on onnxruntime (with the interval), and whether the runner-up is measurably slower.

    Columns: ``variant``, ``ship_on`` (runtime label), ``speed`` (vs onnxruntime fp32, as format_speedup writes
    it), ``p50_ms``, ``runner_up``, ``margin`` ('measurably faster than X', 'no measurable difference from X', or
    'the only runtime that ran it')."""
    frame = runtime_frame(results)
    rows = []
    if frame.empty:
        return pd.DataFrame(columns=["variant", "ship_on", "speed", "p50_ms", "runner_up", "margin"])
    col, low, high = (f"vs_onnxruntime_bs{batch_size}", f"vs_onnxruntime_low_bs{batch_size}",
                      f"vs_onnxruntime_high_bs{batch_size}")
    lat = f"p50_ms_bs{batch_size}"
    for variant in dict.fromkeys(frame["variant"]):
        part = frame[(frame["variant"] == variant) & (frame["status"] == "ok")]
        if col not in part or part[col].isna().all():
            continue
        part = part[part[col].notna()].sort_values(col, ascending=False, kind="mergesort")
        best = part.iloc[0]
        entry = {"ratio": best[col], "low": best[low], "high": best[high]}
        reference = variant == "baseline" and best["runtime"] == REFERENCE_RUNTIME
        speed = "1x (the reference)" if reference else format_speedup(entry)
        if len(part) == 1:
            runner_up, margin = None, "the only runtime that ran it"
        else:
            second = part.iloc[1]
            runner_up = second["runtime_label"]
            margin = (f"measurably faster than {runner_up}" if best[low] > second[high]
                      else f"no measurable difference from {runner_up}")
        rows.append({"variant": variant, "ship_on": best["runtime_label"], "speed": speed,
                     "p50_ms": best.get(lat), "runner_up": runner_up, "margin": margin})
    return pd.DataFrame(rows, columns=["variant", "ship_on", "speed", "p50_ms", "runner_up", "margin"])


def ship_lines(results: dict, batch_size: int | None = None) -> list[str]:
    """Which runtime to ship each variant on, as lines for a terminal or a summary (empty for a one-runtime run):
    'int8: ship on OpenVINO, 2.5x (2.4–2.6) against onnxruntime fp32 at batch 1, measurably faster than
    onnxruntime'; then every runtime that could not run a variant, with why."""
    if len(run_runtimes(results)) < 2:
        return []
    sizes = batch_sizes_of(results)
    if not sizes:
        return []
    batch_size = batch_size if batch_size in sizes else sizes[-1]
    lines = [f"which runtime to ship (speed against the baseline on onnxruntime at batch {batch_size}, 95% "
             "interval):"]
    for _, row in ship_table(results, batch_size).iterrows():
        lines.append(f"  {row['variant']}: ship on {row['ship_on']}, {row['speed']}, {row['margin']}")
    frame = runtime_frame(results)
    for _, row in frame[frame["status"] != "ok"].iterrows():
        lines.append(f"  {row['name']}: {row['status']}: {row['error']}")
    return lines


def runtime_symbol(runtime: str) -> str:
    """A runtime's marker shape on the Pareto chart (plotly symbol)."""
    return RUNTIMES[runtime].symbol if runtime in RUNTIMES else "circle"


__all__ = ["POINT_SEPARATOR", "point_name", "run_runtimes", "runtime_entry", "runtime_frame", "runtime_symbol",
           "ship_lines", "ship_table"]
