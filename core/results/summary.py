"""The one-screen summary for stakeholders: one variant against the same-run baseline, as ×smaller, ×faster (with its
interval where the run timed it interleaved), quality change, cost per million and a one-sentence verdict. Pure:
the figure and its PNG / PDF are `core.views.summary`'s."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from core import format as fmt
from core.errors import BadInputError
from core.results.compare import ok_rows, quality_drop_pt
from core.results.table import measured_on, quality_split_of, resolution_pt, resolution_text, results_frame

# A size or p50 ratio within this of 1 reads "the same" / "about as fast": a p50 ratio of one run moves by 10% or more
# on a shared machine (README, "Scaling out"), and an interleaved interval says it better where the run has one.
SAME_RATIO = 0.10
# Compare's quality axes (core.results.compare.quality_drop_pt) as the summary names them.
QUALITY_NAMES = {"accuracy drop (pt)": "accuracy", "disagreement with baseline (pt)": "agreement with the baseline",
                 "1 - cosine to baseline (pt)": "cosine to the baseline"}


@dataclass(frozen=True)
class Summary:
    """What the summary shows, as numbers and the words for them."""

    model: str
    variant: str
    batch_size: int
    x_smaller: float | None
    size_text: str  # "641 kB → 177 kB"
    speed_text: str  # "2.1x (2.0–2.2)", or "2.3× (p50 ratio)" where the run has no interval
    speed_verdict: str | None  # "faster" | "slower" | "no measurable difference" | None (no interval)
    speed_ratio: float | None
    speed_label: str  # "faster at batch 256" / "faster decode"
    quality_label: str  # "accuracy" / "agreement with the baseline" / "perplexity"
    quality_text: str  # "−0.28 pt (±1 sample = 0.28 pt)" / "+0.05%"
    cost_text: str  # "$0.0153 → $0.0066 per million inferences"
    verdict: str
    measured_on: str
    run_id: str | None = None
    quality_change: str = "–"  # "−0.28 pt" / "+0.05%"
    quality_note: str = ""  # "±1 sample = 0.28 pt"
    quality_drop: float | None = None  # points (or % of perplexity), positive = worse
    quality_resolution: float | None = None
    cost_usd: float | None = None
    base_cost_usd: float | None = None
    cost_unit: str = "per million inferences"
    decoder: bool = False


def summary_variants(results: dict) -> list[str]:
    """The variants a summary can be about: every measured one but the baseline."""
    frame = ok_rows(results_frame(results))
    return [str(n) for n in frame["name"] if n != "baseline"]


def _speed(results: dict, row: pd.Series, name: str, batch_size: int, decoder: bool) -> tuple:
    """(text, verdict, ratio, label): the interleaved interval where the run has one, else the p50 ratio, said so."""
    if decoder:
        ratio = fmt.as_number(row.get("decode_speedup"))
        label = "faster decode (tokens/s)"
        return ((f"{fmt.format_ratio(ratio)} (median tokens/s ratio)" if ratio is not None else "–"), None, ratio,
                label)
    entry = next(((v.get("speedup") or {}).get(str(batch_size)) for v in results.get("variants") or []
                  if v.get("name") == name), None)
    label = f"faster at batch {batch_size}"
    if isinstance(entry, dict) and "ratio" in entry:
        return fmt.format_speedup(entry), fmt.speedup_verdict(entry), float(entry["ratio"]), label
    ratio = fmt.as_number(row.get(f"speedup_bs{batch_size}"))
    return ((f"{fmt.format_ratio(ratio)} (p50 ratio, one run)" if ratio is not None else "–"), None, ratio, label)


def _quality(results: dict, frame: pd.DataFrame, row: pd.Series, decoder: bool) -> tuple[str, str, float | None,
                                                                                         float | None]:
    """(label, change, drop in points or % (positive = worse), resolution): the same quality axis as Compare's."""
    if decoder:
        change = fmt.as_number(row.get("perplexity_increase_pct"))
        return "perplexity", ("–" if change is None else f"{change:+.2f}%"), change, None
    drop, label = quality_drop_pt(frame[frame["name"] == row["name"]])
    value = fmt.as_number(drop.iloc[0]) if len(drop) else None
    split = quality_split_of(results)
    step = resolution_pt(split.get("n")) if results.get("task", "classification") == "classification" else None
    name = QUALITY_NAMES.get(label, label.replace(" (pt)", ""))
    return name, fmt.format_pt(value), value, step


def _cost(row: pd.Series, base: pd.Series, batch_size: int, decoder: bool) -> tuple[str, float | None,
                                                                                   float | None]:
    column = "usd_per_million_tokens" if decoder else f"usd_per_million_bs{batch_size}"
    unit = "per million generated tokens" if decoder else "per million inferences"
    mine, theirs = fmt.as_number(row.get(column)), fmt.as_number(base.get(column))
    if mine is None:
        return "–", None, theirs
    if theirs is None:
        return f"{fmt.format_usd(mine)} {unit}", mine, None
    return f"{fmt.format_usd(theirs)} → {fmt.format_usd(mine)} {unit}", mine, theirs


def verdict_sentence(name: str, x_smaller: float | None, speed_ratio: float | None, speed_verdict: str | None,
                     speed_label: str, quality_label: str, drop: float | None, resolution: float | None,
                     cost: float | None, base_cost: float | None, decoder: bool = False) -> str:
    """One sentence a stakeholder can repeat: size, speed, quality, cost, each said only as far as measured.

    e.g. "int8-static is 3.6× smaller than the baseline and runs 2.3× faster at batch 256, with no measurable
    accuracy loss; it costs 2.3× less to serve."
    """
    if x_smaller is None:
        text = f"{name}"
    elif x_smaller >= 1 + SAME_RATIO:
        text = f"{name} is {fmt.format_ratio(x_smaller)} smaller than the baseline"
    elif x_smaller <= 1 - SAME_RATIO:
        text = f"{name} is {fmt.format_ratio(1 / x_smaller)} larger than the baseline"
    else:
        text = f"{name} is about the same size as the baseline"
    where = "" if decoder else speed_label.replace("faster", "").strip()
    if speed_verdict is not None:  # an interleaved interval: its verdict, never "slower" when it holds 1
        speed = {"faster": f"runs {fmt.format_ratio(speed_ratio)} faster",
                 "slower": f"runs {fmt.format_ratio(1 / speed_ratio)} slower"}.get(speed_verdict,
                                                                                 "runs no measurably faster")
    elif speed_ratio is not None:
        speed = (f"runs {fmt.format_ratio(speed_ratio)} faster" if speed_ratio >= 1 + SAME_RATIO else
                 f"runs {fmt.format_ratio(1 / speed_ratio)} slower" if speed_ratio <= 1 - SAME_RATIO else
                 "runs about as fast")
    else:
        speed = None
    if speed and decoder:
        speed = speed.replace("runs", "decodes")
    if speed:
        text += f" and {speed} {where}".rstrip() if x_smaller is not None else f" {speed} {where}".rstrip()
    if drop is not None:
        if decoder:
            text += f", with perplexity {drop:+.2f}%"
        elif abs(drop) < (resolution or 0.01) * 0.999:  # less than one test sample: not a measured difference
            text += f", with no measurable {quality_label} loss"
        elif drop > 0:
            text += f", losing {drop:.2f} pt of {quality_label}"
        else:
            text += f", gaining {-drop:.2f} pt of {quality_label}"
    if cost is not None and base_cost:
        change = cost / base_cost
        if change <= 1 - SAME_RATIO:
            text += f"; it costs {fmt.format_ratio(1 / change)} less to serve"
        elif change >= 1 + SAME_RATIO:
            text += f"; it costs {fmt.format_ratio(change)} more to serve"
    return text + "."


def run_summary(results: dict, variant: str, batch_size: int | None = None, run_id: str | None = None) -> Summary:
    """The summary of `variant` against the run's baseline at `batch_size` (default: the largest timed).

    Raises:
        BadInputError: no such measured variant, or no baseline.
    """
    frame = results_frame(results)
    measured = ok_rows(frame)
    rows = measured[measured["name"] == variant]
    base_rows = measured[measured["name"] == "baseline"]
    if rows.empty or base_rows.empty or variant == "baseline":
        raise BadInputError(f"variant {variant!r} has no measured result beside a baseline; measured: "
                            f"{', '.join(summary_variants(results)) or 'none'}")
    row, base = rows.iloc[0], base_rows.iloc[0]
    decoder = results.get("task") == "text-generation"
    sizes = sorted(int(c[len("p50_ms_bs"):]) for c in frame.columns if c.startswith("p50_ms_bs"))
    batch_size = batch_size if batch_size in sizes else (sizes[-1] if sizes else 1)
    x_smaller = fmt.as_number(row.get("x_smaller"))
    speed_text, verdict, ratio, speed_label = _speed(results, row, variant, batch_size, decoder)
    quality_label, quality_change, drop, resolution = _quality(results, frame, row, decoder)
    note = resolution_text(quality_split_of(results).get("n")) if resolution and drop is not None else ""
    quality_text = quality_change + (f" ({note})" if note else "")
    cost_text, cost, base_cost = _cost(row, base, batch_size, decoder)
    sentence = verdict_sentence(variant, x_smaller, ratio, verdict, speed_label, quality_label, drop, resolution,
                                cost, base_cost, decoder)
    return Summary(model=str(results.get("model") or "model"), variant=variant, batch_size=batch_size,
                   x_smaller=x_smaller,
                   size_text=f"{fmt.format_bytes(base.get('size_bytes'))} → {fmt.format_bytes(row.get('size_bytes'))}",
                   speed_text=speed_text, speed_verdict=verdict, speed_ratio=ratio, speed_label=speed_label,
                   quality_label=quality_label, quality_text=quality_text, cost_text=cost_text, verdict=sentence,
                   measured_on=measured_on(results), run_id=run_id, quality_change=quality_change,
                   quality_note=note, quality_drop=drop, quality_resolution=resolution, cost_usd=cost,
                   base_cost_usd=base_cost,
                   cost_unit="per million generated tokens" if decoder else "per million inferences",
                   decoder=decoder)


def default_summary_variant(results: dict, batch_size: int | None = None) -> str | None:
    """The variant a summary opens on: the fastest measured one whose quality drop is within one test sample
    (or the smallest drop when none is), ties broken by size."""
    frame = ok_rows(results_frame(results))
    frame = frame[frame["name"] != "baseline"]
    if frame.empty:
        return None
    drop, _ = quality_drop_pt(frame)
    split = quality_split_of(results)
    step = resolution_pt(split.get("n")) or 0.0
    sizes = sorted(int(c[len("p50_ms_bs"):]) for c in frame.columns if c.startswith("p50_ms_bs"))
    column = f"speedup_bs{batch_size if batch_size in sizes else (sizes[-1] if sizes else 1)}"
    if "decode_speedup" in frame and frame["decode_speedup"].notna().any():
        column = "decode_speedup"
    ranked = frame.assign(_drop=drop.fillna(math.inf), _speed=frame.get(column, pd.Series(0.0, index=frame.index))
                          .fillna(0.0))
    good = ranked[ranked["_drop"] <= step + 1e-9]
    pool = good if not good.empty else ranked[ranked["_drop"] == ranked["_drop"].min()]
    return str(pool.sort_values(["_speed", "size_bytes"], ascending=[False, True], kind="mergesort")
               .iloc[0]["name"])


__all__ = ["SAME_RATIO", "Summary", "default_summary_variant", "run_summary", "summary_variants",
           "verdict_sentence"]
