"""Comparing variants of a run: quality columns, budgets, the Pareto frontier, the best variant within budgets,
"why no speedup?" notes, latency tables and side-by-side predictions against the baseline.

Everything here takes the plain results dict (results.json) or the frame from `core.results.table.results_frame`,
so the dashboard, the HTML report and tests share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.results.table import batch_sizes_of

# Below this batch-1 latency the time is mostly onnxruntime's per-call overhead (input binding, allocator,
# kernel dispatch), not arithmetic: an empty-ish graph measures ~0.01-0.03 ms on our 2-core CI box, so a
# variant that does less math can barely be faster.
CALL_OVERHEAD_MS = 0.1
# Speed-ups smaller than this are within run-to-run noise of a 1-thread benchmark on a shared machine.
NO_SPEEDUP_RATIO = 1.1
INT8_FAST_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
# Side by side searches at most this many test samples (evenly spaced) for flips: every sample of the samples'
# test splits (digits 360, shapes 1,333), and a bound on the time a large model's comparison takes.
SIDE_BY_SIDE_SCAN = 2048

QUALITY_METRICS = {
    "accuracy": "Accuracy (%)",
    "agreement": "Top-1 agreement with baseline (%)",
    "cosine_mean": "Mean cosine to baseline",
}


@dataclass(frozen=True)
class Budget:
    """Limits a variant must meet to count: latency at the chosen batch, file size and quality drop."""

    max_latency_ms: float | None = None
    max_size_bytes: float | None = None
    max_drop_pt: float | None = None


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Variants that built and were measured (failed / cancelled ones have no numbers)."""
    if frame.empty:
        return frame
    return frame[(frame["status"] == "ok") & frame["size_bytes"].notna()].reset_index(drop=True)


def quality_metrics(frame: pd.DataFrame) -> list[str]:
    """The quality columns this run has numbers for, best first (accuracy needs labels)."""
    return [m for m in QUALITY_METRICS if m in frame and frame[m].notna().any()]


def quality_drop_pt(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """Loss of quality vs the baseline in percentage points, and what it measures.

    Accuracy drop when the run has labels; otherwise top-1 disagreement (classifiers) or 1 - cosine (embeddings),
    so a budget on "quality drop" always has something to act on.
    """
    metrics = quality_metrics(frame)
    if "accuracy" in metrics and "accuracy_drop_pt" in frame:
        return frame["accuracy_drop_pt"].astype(float), "accuracy drop (pt)"
    if "agreement" in metrics:
        return (1.0 - frame["agreement"].astype(float)) * 100.0, "disagreement with baseline (pt)"
    if "cosine_mean" in metrics:
        return (1.0 - frame["cosine_mean"].astype(float)) * 100.0, "1 - cosine to baseline (pt)"
    return pd.Series([np.nan] * len(frame), index=frame.index), "quality drop (pt)"


def latency_column(batch_size: int) -> str:
    return f"p50_ms_bs{batch_size}"


def within_budget(frame: pd.DataFrame, budget: Budget, batch_size: int) -> pd.Series:
    """True for each row that meets every limit of `budget` (a missing number fails a set limit)."""
    keep = pd.Series(True, index=frame.index)
    if budget.max_latency_ms is not None:
        latency = frame.get(latency_column(batch_size))
        keep &= latency.notna() & (latency <= budget.max_latency_ms + 1e-12) if latency is not None else False
    if budget.max_size_bytes is not None:
        keep &= frame["size_bytes"].notna() & (frame["size_bytes"] <= budget.max_size_bytes)
    if budget.max_drop_pt is not None:
        drop, _ = quality_drop_pt(frame)
        keep &= drop.notna() & (drop <= budget.max_drop_pt + 1e-9)
    return keep.astype(bool)


def pareto_front(frame: pd.DataFrame, x: str = "size_bytes", y: str = "p50_ms_bs1") -> list[str]:
    """Names of the variants no other variant beats on both `x` and `y` (both lower-is-better), by ascending x."""
    rows = frame[[c for c in ("name", x, y) if c in frame]].dropna()
    if y not in rows or rows.empty:
        return []
    rows = rows.sort_values([x, y], kind="mergesort")
    front, best_y = [], math.inf
    for name, y_value in zip(rows["name"], rows[y]):
        if y_value < best_y:
            front.append(name)
            best_y = y_value
    return front


OBJECTIVES = {"fastest": "lowest latency", "smallest": "smallest file", "most accurate": "smallest quality drop"}


def best_variant(frame: pd.DataFrame, budget: Budget, batch_size: int, objective: str = "fastest") -> str | None:
    """The best variant inside the budget: by latency, size or quality drop, ties broken by the others.

    Raises:
        ValueError: an unknown objective (names the allowed ones).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not supported; allowed: {', '.join(OBJECTIVES)}")
    rows = ok_rows(frame)
    if rows.empty:
        return None
    rows = rows[within_budget(rows, budget, batch_size)].copy()
    if rows.empty:
        return None
    rows["_latency"] = rows.get(latency_column(batch_size), pd.Series(np.nan, index=rows.index)).fillna(math.inf)
    rows["_drop"] = quality_drop_pt(rows)[0].fillna(0.0)
    order = {"fastest": ["_latency", "size_bytes", "_drop"], "smallest": ["size_bytes", "_latency", "_drop"],
             "most accurate": ["_drop", "_latency", "size_bytes"]}[objective]
    return str(rows.sort_values(order, kind="mergesort").iloc[0]["name"])


# "Far worse": a variant at least this many times larger or slower than the baseline is never called best without
# saying so (a zoo model whose quantized file came out 50x larger was crowned "best within budget").
FAR_WORSE = 1.5


def best_caveats(frame: pd.DataFrame, name: str, batch_size: int) -> list[str]:
    """What a variant called best is far worse at than the baseline (size, speed at `batch_size`), in words;
    empty when it is not far worse on any axis."""
    rows = frame[frame["name"] == name]
    if rows.empty:
        return []
    row = rows.iloc[0]
    caveats = []
    smaller = row.get("x_smaller")
    if smaller is not None and not pd.isna(smaller) and 0 < smaller <= 1 / FAR_WORSE:
        caveats.append(f"its file is {1 / smaller:.1f}× larger than the baseline's")
    faster = row.get(f"speedup_bs{batch_size}")
    if faster is not None and not pd.isna(faster) and 0 < faster <= 1 / FAR_WORSE:
        caveats.append(f"it is {1 / faster:.1f}× slower than the baseline at batch {batch_size}")
    return caveats


def latency_table(results: dict) -> pd.DataFrame:
    """One row per measured variant and batch size: p50 / p90 / p99 / mean latency (ms), throughput (samples/s)
    and latency per sample (ms)."""
    rows = []
    for v in results.get("variants", []):
        if v.get("status") != "ok":
            continue
        for bs, lat in (v.get("latency_ms") or {}).items():
            rows.append({"name": v["name"], "batch_size": int(bs), "p50": lat.get("p50"), "p90": lat.get("p90"),
                         "p99": lat.get("p99"), "mean": lat.get("mean"), "runs": lat.get("runs"),
                         "throughput": (v.get("throughput") or {}).get(bs),
                         "per_sample_ms": lat.get("p50") / int(bs) if lat.get("p50") is not None else None})
    columns = ["name", "batch_size", "p50", "p90", "p99", "mean", "runs", "throughput", "per_sample_ms"]
    return pd.DataFrame(rows, columns=columns)


def variant(results: dict, name: str) -> dict | None:
    """The results.json entry of one variant, by name."""
    return next((v for v in results.get("variants", []) if v.get("name") == name), None)


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
        if int8 and flags and not flags & set(INT8_FAST_FLAGS):
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


def layer_sparsity_table(info: dict) -> pd.DataFrame:
    """Per-layer sparsity from a variant's info (a {layer: fraction} mapping or a list of rows)."""
    raw = (info or {}).get("layer_sparsity")
    rows = []
    if isinstance(raw, dict):
        for layer, value in raw.items():
            if isinstance(value, dict):
                rows.append({"layer": layer, "sparsity": value.get("sparsity"), **{k: v for k, v in value.items()
                                                                                   if k != "sparsity"}})
            else:
                rows.append({"layer": layer, "sparsity": value})
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                layer = item.get("layer") or item.get("name")
                rows.append({"layer": layer, **{k: v for k, v in item.items() if k not in ("layer", "name")}})
    frame = pd.DataFrame(rows)
    if not frame.empty and "sparsity" in frame:
        frame["sparsity"] = pd.to_numeric(frame["sparsity"], errors="coerce")
    return frame


def combine_runs(runs: dict[str, dict]) -> pd.DataFrame:
    """Results of several runs in one frame (a `run` column first); ratios stay same-run ratios."""
    from core.results.table import results_frame

    frames = []
    for run_id, results in runs.items():
        frame = results_frame(results)
        frame.insert(0, "run", run_id)
        frame.insert(1, "model", results.get("model"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------------------
# Side-by-side predictions


@dataclass
class SideBySide:
    """A few eval samples run through the baseline and a variant: a table, and the inputs when they are images."""

    table: pd.DataFrame
    images: list | None  # 2-D arrays (H, W) for single-channel image inputs, else None
    task: str
    flips: int | None = None  # classifiers: samples among the `scanned` whose top-1 differs from the baseline's
    scanned: int | None = None  # how many test samples were searched for flips


def _resolve_data_spec(spec: str | None, run_dir: Path) -> str | None:
    """Data specs of uploads point into the run's inputs/ folder; never follow a path outside the run."""
    if not spec or spec.startswith("sample:"):
        return spec
    path = Path(spec)
    candidate = (run_dir / "inputs" / path.name).resolve()
    inputs = (run_dir / "inputs").resolve()
    if candidate.parent != inputs or not candidate.exists():
        raise FileNotFoundError(f"the run's data file {path.name!r} is no longer in {inputs}")
    return str(candidate)


def side_by_side(run_dir: str | Path, results: dict, name: str, count: int = 8) -> SideBySide:
    """Run the test split (up to SIDE_BY_SIDE_SCAN samples) through the baseline's and the variant's artifacts
    with onnxruntime and show `count` of them, the interesting ones first.

    Args:
        run_dir: the run's directory (artifacts are relative to it).
        results: the run's results.json.
        name: the variant to compare.
        count: how many samples to show: classifiers' flipped samples (top-1 differs from the baseline's) first,
            in sample order, then agreeing ones spread evenly over the split; other outputs lowest cosine first.

    Returns:
        A SideBySide: for classifiers, label / predictions / confidences / agreement per sample and the flip
        count over the searched samples; for other outputs, cosine and max absolute difference per sample.

    Raises:
        BadInputError / FileNotFoundError: the artifacts or the data are gone or unreadable.
    """
    from core.io.data import load_data
    from core.errors import BadInputError
    from core.measure.quality import class_probabilities, prediction_changes
    from core.io.runtime import make_session, run_batched
    from core.io.graph import Model
    from core.io.safety import validate_onnx_bytes

    run_dir = Path(run_dir)
    base = variant(results, "baseline")
    other = variant(results, name)
    if base is None or other is None or not base.get("artifact") or not other.get("artifact"):
        raise BadInputError(f"variant {name!r} has no model file to compare")

    def artifact_bytes(entry):
        path = (run_dir / entry["artifact"]).resolve()
        if run_dir.resolve() not in path.parents:
            raise BadInputError(f"artifact {entry['artifact']!r} is outside the run directory")
        return path.read_bytes()

    base_bytes, other_bytes = artifact_bytes(base), artifact_bytes(other)
    model = Model(results.get("model") or "baseline", validate_onnx_bytes(base_bytes, what="baseline artifact"))
    dataset = load_data(_resolve_data_spec(results.get("data"), run_dir), model,
                        seed=(results.get("recipe") or {}).get("seed", 0))
    n = len(dataset.eval)
    searched = np.unique(np.linspace(0, n - 1, num=min(SIDE_BY_SIDE_SCAN, n)).round().astype(int))
    scan_feed = {k: v[searched] for k, v in dataset.eval.x.items()}
    base_all = run_batched(make_session(base_bytes), scan_feed)[0]
    other_all = run_batched(make_session(other_bytes), scan_feed)[0]
    task = results.get("task") or "classification"
    flips = None
    if task == "classification":
        flipped = prediction_changes(other_all, base_all)["flipped"]
        flips = int(len(flipped))
        order = _flipped_first(flipped, len(searched), count)
    else:
        a_all = base_all.reshape(len(searched), -1).astype(np.float64)
        b_all = other_all.reshape(len(searched), -1).astype(np.float64)
        denominator = np.linalg.norm(a_all, axis=1) * np.linalg.norm(b_all, axis=1)
        cosine_all = np.where(denominator > 0, (a_all * b_all).sum(axis=1) / np.maximum(denominator, 1e-30), 1.0)
        order = np.argsort(cosine_all, kind="stable")[:count]  # the least faithful first
    picks = searched[order]
    feed = {k: v[order] for k, v in scan_feed.items()}
    labels = None if dataset.eval.y is None else dataset.eval.y[picks]
    base_out, other_out = base_all[order], other_all[order]
    rows = []
    if task == "classification":
        base_p, other_p = class_probabilities(base_out), class_probabilities(other_out)
        for i, index in enumerate(picks):
            b, o = int(base_p[i].argmax()), int(other_p[i].argmax())
            rows.append({"sample": int(index), "label": None if labels is None else int(labels[i]),
                         "baseline": b, "baseline_conf": float(base_p[i, b]), name: o,
                         f"{name}_conf": float(other_p[i, o]), "agree": b == o})
    else:
        a = base_out.reshape(len(picks), -1).astype(np.float64)
        b = other_out.reshape(len(picks), -1).astype(np.float64)
        for i, index in enumerate(picks):
            rows.append({"sample": int(index), "cosine": float(cosine_all[order[i]]),
                         "max_abs_diff": float(np.abs(a[i] - b[i]).max())})
    images = None
    first = next(iter(feed.values()))
    if first.ndim == 4 and first.shape[1] in (1, 3) and min(first.shape[2:]) >= 8:
        images = [np.asarray(img, dtype=np.float32).mean(axis=0) for img in first]
    elif first.ndim == 3 and min(first.shape[1:]) >= 8 and np.issubdtype(first.dtype, np.floating):
        images = [np.asarray(img, dtype=np.float32) for img in first]
    return SideBySide(pd.DataFrame(rows), images, task, flips, int(len(searched)))


def _flipped_first(flipped: np.ndarray, n: int, count: int) -> np.ndarray:
    """Positions to show: the flipped ones first (sample order), then agreeing ones spread evenly, `count` in all."""
    shown = list(flipped[:count])
    rest = np.setdiff1d(np.arange(n), flipped)
    room = count - len(shown)
    if room > 0 and len(rest):
        shown += list(rest[np.unique(np.linspace(0, len(rest) - 1, num=min(room, len(rest))).round().astype(int))])
    return np.asarray(shown, dtype=int)


def side_by_side_isolated(run_dir: str | Path, name: str, count: int = 8) -> SideBySide:
    """`side_by_side` in a worker process with the inspect limits: the artifacts derive from a user's upload, and
    a model that crashes or exhausts onnxruntime must take down a worker, never the dashboard.

    Raises:
        FeatherweightError: the comparison failed (one line), or the worker crashed or ran out of time.
    """
    from core.io.sandbox import run_isolated

    value = run_isolated("core.results.compare:_side_by_side_entry", str(run_dir), name, int(count))
    if not isinstance(value, dict) or not isinstance(value.get("rows"), list):
        from core.errors import StepFailedError

        raise StepFailedError("the side-by-side worker sent a malformed reply")
    table = pd.DataFrame([r for r in value["rows"] if isinstance(r, dict)], columns=value.get("columns"))
    images = value.get("images")
    images = [np.asarray(img, dtype=np.float32) for img in images] if isinstance(images, list) else None
    flips, scanned = value.get("flips"), value.get("scanned")
    return SideBySide(table, images, str(value.get("task") or "classification"),
                      flips if isinstance(flips, int) else None, scanned if isinstance(scanned, int) else None)


def _side_by_side_entry(run_dir: str, name: str, count: int) -> dict:
    """In the worker: read the run's results.json and compare; reply with JSON types only."""
    import json

    from core.io.sandbox import phase

    phase("reading the run's models")
    results = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    result = side_by_side(run_dir, results, name, count)
    table = result.table.astype(object).where(result.table.notna(), None)
    return {"rows": table.to_dict("records"), "columns": [str(c) for c in result.table.columns],
            "images": None if result.images is None else [img.tolist() for img in result.images],
            "task": result.task, "flips": result.flips, "scanned": result.scanned}
