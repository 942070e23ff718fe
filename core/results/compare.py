"""Comparing variants of a run: quality columns, budgets, the Pareto frontier, the best variant within budgets,
"why no speedup?" notes and latency tables (pure: the side-by-side predictions are `core.analysis.side_by_side`).

Everything here takes the plain results dict (results.json) or the frame from `core.results.table.results_frame`,
so the dashboard, the HTML report and tests share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from core.results.table import is_decoder_run, results_frame


QUALITY_METRICS = {
    "accuracy": "Accuracy (%)",
    "agreement": "Top-1 agreement with baseline (%)",
    "cosine_mean": "Mean cosine to baseline",
    "perplexity": "Perplexity on held-out text (lower is better)",
}
DECODER_DROP_LABEL = "perplexity increase (%)"


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
    so a budget on "quality drop" always has something to act on. A decoder's is its perplexity increase over
    fp32 in percent (label `DECODER_DROP_LABEL`).
    """
    metrics = quality_metrics(frame)
    if "perplexity" in metrics and "perplexity_increase_pct" in frame:  # a decoder: perplexity up is worse
        return frame["perplexity_increase_pct"].astype(float), DECODER_DROP_LABEL
    if "accuracy" in metrics and "accuracy_drop_pt" in frame:
        return frame["accuracy_drop_pt"].astype(float), "accuracy drop (pt)"
    if "agreement" in metrics:
        return (1.0 - frame["agreement"].astype(float)) * 100.0, "disagreement with baseline (pt)"
    if "cosine_mean" in metrics:
        return (1.0 - frame["cosine_mean"].astype(float)) * 100.0, "1 - cosine to baseline (pt)"
    return pd.Series([np.nan] * len(frame), index=frame.index), "quality drop (pt)"


def latency_column(batch_size: int) -> str:
    return f"p50_ms_bs{batch_size}"


def latency_label(results: dict, batch_size: int) -> str:
    """What the latency at `batch_size` measures: per call, or for a decoder per generated token."""
    if is_decoder_run(results):
        return "ms per generated token (batch 1, KV cache)"
    return f"latency at batch {batch_size} (ms)"


def chart_caption(results: dict) -> str:
    """What the Pareto chart's corners mean, and what is better on each axis."""
    if is_decoder_run(results):
        return ("Up and left is better: more decode tokens/s (batch 1, higher is better), a smaller file; colour is "
                "perplexity on the held-out text (lower is better). The dotted line is the frontier of smaller and "
                "faster variants; grey variants are outside the budget. Click a point to open it below.")
    return ("Lower-left is better. The dotted line is the Pareto frontier; grey variants are outside the budget. "
            "Error bars: the speed-up's 95% interval against the same-run baseline, carried onto the latency. "
            "Click a point to open it below.")


def generations_table(results: dict, name: str) -> pd.DataFrame:
    """A decoder variant's greedy continuation of each prompt beside fp32's, and how many tokens match before
    they part (texts decoded with the checkpoint's tokenizer when the run was measured)."""
    prompts = (results.get("dataset") or {}).get("prompt_text") or []
    base = ((variant(results, "baseline") or {}).get("info") or {}).get("continuations") or []
    entry = variant(results, name) or {}
    mine = (entry.get("info") or {}).get("continuations") or []
    firsts = (entry.get("greedy_divergence") or {}).get("first_divergence") or []
    rows = []
    for i, text in enumerate(mine):
        first = firsts[i] if i < len(firsts) else None
        rows.append({"prompt": prompts[i] if i < len(prompts) else "", "fp32": base[i] if i < len(base) else "",
                     name: text, "same tokens": "all" if first is None else str(first)})
    return pd.DataFrame(rows, columns=["prompt", "fp32", name, "same tokens"])


def drop_text(value: float | None, label: str) -> str:
    """A quality change in words: '0.12 pt' of accuracy (or agreement), '+0.05%' of perplexity, '–' unmeasured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.2f}%" if label == DECODER_DROP_LABEL else f"{value:.2f} pt"


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


def chosen_on(frame: pd.DataFrame) -> pd.DataFrame:
    """The numbers a choice reads: the frame with its quality columns replaced by the validation split's and its
    latency and speed-up columns by the timing rounds held out for choosing (where the run has them), so a budget
    and "best within budget" never pick on the test numbers and reported timing they then show.

    A run from before validation scoring keeps its own columns (`chose_on_reported` says so).
    """
    out = frame.copy()
    if "selection_accuracy" in frame and frame["selection_accuracy"].notna().any():
        out["accuracy"] = frame["selection_accuracy"]
        base = frame.loc[frame["name"] == "baseline", "selection_accuracy"]
        if len(base) and pd.notna(base.iloc[0]):
            out["accuracy_drop_pt"] = (float(base.iloc[0]) - frame["selection_accuracy"].astype(float)) * 100.0
    for column in ("agreement", "cosine_mean", "perplexity_increase_pct"):  # the last: a decoder's
        chosen = f"selection_{column}"
        if chosen in frame and frame[chosen].notna().any():
            out[column] = frame[chosen]
    for column in frame.columns:
        if column.startswith(("selection_p50_ms_bs", "selection_speedup_bs")):
            shown = column[len("selection_"):]  # the column a page shows: p50_ms_bs{N}, speedup_bs{N}
            if frame[column].notna().any():
                out[shown] = frame[column].where(frame[column].notna(), frame.get(shown))
    return out


def chose_on_reported(frame: pd.DataFrame) -> bool:
    """Whether the run has no held-out numbers to choose on (a run from before them): choices then read the
    reported figures, and a page says so."""
    return not any(column in frame and frame[column].notna().any()
                   for column in ("selection_accuracy", "selection_agreement", "selection_cosine_mean",
                                  "selection_perplexity_increase_pct"))


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

    Chosen on `chosen_on(frame)`: validation quality and the held-out timing rounds, never the test numbers and the
    reported speed-ups a page shows for the pick.

    Raises:
        ValueError: an unknown objective (names the allowed ones).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not supported; allowed: {', '.join(OBJECTIVES)}")
    rows = chosen_on(ok_rows(frame))
    if rows.empty:
        return None
    rows = rows[within_budget(rows, budget, batch_size)].copy()
    if rows.empty:
        return None
    rows["_latency"] = rows.get(latency_column(batch_size), pd.Series(np.nan, index=rows.index)).fillna(math.inf)
    rows["_drop"] = quality_drop_pt(rows)[0].fillna(math.inf)  # unmeasured quality is never "most accurate"
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
    # With an interval, "far slower" needs the whole interval there (its fast end too); a bare ratio is all an
    # older run has.
    fast_end = row.get(f"speedup_high_bs{batch_size}")
    fast_end = faster if fast_end is None or pd.isna(fast_end) else fast_end
    if faster is not None and not pd.isna(faster) and 0 < fast_end <= 1 / FAR_WORSE:
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
    frames = []
    for run_id, results in runs.items():
        frame = results_frame(results)
        frame.insert(0, "run", run_id)
        frame.insert(1, "model", results.get("model"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------------------
# Side-by-side predictions


