"""Results as tables: one row per variant with ratios to the same-run baseline."""

from __future__ import annotations

import pandas as pd

from core.format import format_speedup, is_missing
from core.io.text import summary_text
from core.results.cost import results_columns
from core.spec.labels import steps_label


def resolution_pt(samples: int | None) -> float | None:
    """What one sample is worth in points of accuracy (or agreement) on a split of `samples`: 100 / n."""
    return 100.0 / samples if samples else None


def resolution_text(samples: int | None) -> str:
    """"±1 sample = 0.28 pt" for 360 samples: the finest change a drop on that split can show."""
    step = resolution_pt(samples)
    return "" if step is None else f"±1 sample = {step:.2f} pt"


def split_sizes_text(splits: dict | None, classifier: bool = True) -> str:
    """One line with each split's size and, for the held-out ones, what a sample is worth: "128 calibration ·
    144 validation (1 sample = 0.69 pt) · 240 test (1 sample = 0.42 pt)"; a split with no samples is left out
    ("" for runs that predate `dataset.splits`)."""
    parts = []
    for name, entry in (splits or {}).items():
        n = (entry or {}).get("n")
        if not n:
            continue
        text = f"{n:,} {name}"
        if entry.get("asked") and entry["asked"] > n:
            text += f" (of {entry['asked']:,} asked)"
        if classifier and name in ("validation", "test"):
            text += f" (1 sample = {100.0 / n:.2f} pt)"
        parts.append(text)
    return " · ".join(parts)


def quality_split_of(results: dict) -> dict:
    """The split the run's quality numbers come from (the baseline's `split`), e.g. {"quality": "test", "n": 360};
    older runs without the field give {}."""
    for v in results.get("variants", []):
        if v.get("split"):
            return dict(v["split"])
    return {}


def is_decoder_run(results_or_frame) -> bool:
    """A text-generation run (results.json's task, or a frame with decode tokens/s)."""
    if isinstance(results_or_frame, dict):
        return results_or_frame.get("task") == "text-generation"
    return "decode_tok_s" in results_or_frame


def quality_caption(results: dict) -> str:
    """One sentence for a results table: which split each quality number is from, and what a sample is worth."""
    if is_decoder_run(results):
        return ("Perplexity, KL(fp32 ‖ variant) and next-token agreement are teacher-forced on the held-out text: "
                f"{summary_text(results.get('dataset') or {})}.")
    split = quality_split_of(results)
    if not split:
        return "Quality numbers are on the run's eval split (this run predates split labels)."
    n = split.get("n")
    text = f"Accuracy, agreement, flips and top-k are on the held-out {split.get('quality', 'test')} split ({n} samples"
    if results.get("task", "classification") == "classification":
        text += f"; {resolution_text(n)}"
    text += ")."
    if split.get("selection"):
        text += (f" The tuner chose on the {split['selection']} split ({split.get('selection_n')} samples), "
                 "never on these.")
    dataset = results.get("dataset") or {}
    sizes = split_sizes_text(dataset.get("splits"), results.get("task", "classification") == "classification")
    if sizes:
        text += f" Data: {sizes}."
    for warning in dataset.get("warnings") or []:
        text += f" Warning: {warning}."
    return text


def measured_on(results: dict) -> str:
    """The machine and day a run was measured on, in words: "Intel(R) Xeon(R) Processor (int8: AMX), 2 cores,
    1 thread, 2026-12-06"."""
    env = results.get("environment") or {}
    isa = f" (int8: {env['int8_isa']})" if env.get("int8_isa") else ""
    threads = env.get("threads") or 1
    parts = [f"{env.get('cpu') or 'an unrecorded CPU'}{isa}",
             f"{env['cores']} cores" if env.get("cores") else None,
             f"{threads} thread{'s' if threads != 1 else ''}", str(results.get("started_at") or "")[:10] or None]
    return ", ".join(p for p in parts if p)


def batch_sizes_of(results: dict) -> list[int]:
    """Every batch size timed in the run, ascending."""
    sizes = set()
    for v in results.get("variants", []):
        sizes.update(int(b) for b in (v.get("latency_ms") or {}))
    return sorted(sizes)


def results_frame(results: dict) -> pd.DataFrame:
    """One row per variant: status, size, params, accuracy/fidelity, latency per batch size and ratios.

    Ratios are to the baseline of the same run: ``x_smaller`` = baseline size / size, ``speedup_bs{N}`` = the
    interleaved timing's median per-round ratio, with its 95% interval in ``speedup_low_bs{N}`` /
    ``speedup_high_bs{N}`` and its rounds in ``speedup_rounds_bs{N}`` (a run from before intervals: baseline p50 /
    p50, no interval), ``accuracy_drop_pt`` = (baseline accuracy - accuracy) x 100. Fidelity against the baseline:
    ``flips`` / ``flip_rate`` (top-1 changed), ``agreement_confident`` on the ``confident_samples`` whose baseline
    margin is clear, ``topk_overlap`` (k = ``topk``). ``quality_split`` / ``quality_n`` name the split every quality
    number is from; ``selection_split`` the one the tuner chose on (tuned runs only). What choices read and
    reports never show: ``selection_accuracy`` / ``selection_agreement`` / ``selection_cosine_mean`` on the
    validation split, ``selection_p50_ms_bs{N}`` / ``selection_speedup_bs{N}`` from the timing rounds held out
    for choosing (`core.results.compare.chosen_on`). ``cpu_share_bs{N}`` / ``contended_bs{N}``: the share of the CPU
    the run's timing phase got at that batch size and whether it was measured under contention.
    """
    variants = results.get("variants", [])
    base = next((v for v in variants if v.get("name") == "baseline"), variants[0] if variants else {})
    sizes = batch_sizes_of(results)
    threads = int((results.get("environment") or {}).get("threads") or 1)
    decoder = is_decoder_run(results)
    rows = []
    for v in variants:
        row = {"name": v.get("name"), "status": v.get("status"),
               "technique": steps_label(v.get("steps"), decoder=decoder),
               "size_bytes": v.get("size_bytes"), "compressed_bytes": v.get("compressed_bytes"),
               "params": v.get("params"), "accuracy": v.get("accuracy"), "agreement": v.get("agreement"),
               "cosine_mean": v.get("cosine_mean"), "cosine_min": v.get("cosine_min")}
        flips = v.get("flips") or {}
        split = v.get("split") or {}
        row.update({"flips": flips.get("count"), "flip_rate": flips.get("rate"),
                    "agreement_confident": v.get("agreement_confident"),
                    "confident_samples": v.get("confident_samples"),
                    "topk_overlap": v.get("topk_overlap"), "topk": v.get("topk"), "kl": v.get("kl"),
                    "quality_split": split.get("quality"), "quality_n": split.get("n"),
                    "selection_split": split.get("selection")})
        chosen = v.get("selection") or {}
        row.update({"selection_accuracy": chosen.get("accuracy"), "selection_agreement": chosen.get("agreement"),
                    "selection_cosine_mean": chosen.get("cosine_mean"), "selection_n": chosen.get("n")})
        row["x_smaller"] = _ratio(base.get("size_bytes"), v.get("size_bytes"))
        row["x_smaller_compressed"] = _ratio(base.get("compressed_bytes"), v.get("compressed_bytes"))
        row["x_fewer_params"] = _ratio(base.get("params"), v.get("params"))
        if base.get("accuracy") is not None and v.get("accuracy") is not None:
            row["accuracy_drop_pt"] = round((base["accuracy"] - v["accuracy"]) * 100, 4)
        else:
            row["accuracy_drop_pt"] = None
        for bs in sizes:
            lat = (v.get("latency_ms") or {}).get(str(bs)) or {}
            base_lat = (base.get("latency_ms") or {}).get(str(bs)) or {}
            row[f"p50_ms_bs{bs}"] = lat.get("p50")
            row[f"p99_ms_bs{bs}"] = lat.get("p99")
            row[f"throughput_bs{bs}"] = (v.get("throughput") or {}).get(str(bs))
            entry = (v.get("speedup") or {}).get(str(bs))
            if entry:
                row[f"speedup_bs{bs}"] = entry.get("ratio")
                row[f"speedup_low_bs{bs}"], row[f"speedup_high_bs{bs}"] = entry.get("low"), entry.get("high")
                row[f"speedup_rounds_bs{bs}"] = entry.get("rounds")
            else:  # the baseline (1 by definition), or a run from before intervals
                row[f"speedup_bs{bs}"] = _ratio(base_lat.get("p50"), lat.get("p50"))
                row[f"speedup_low_bs{bs}"] = row[f"speedup_high_bs{bs}"] = row[f"speedup_rounds_bs{bs}"] = None
            seen = (((results.get("timing") or {}).get("batches") or {}).get(str(bs)) or {}).get("contention") or {}
            row[f"cpu_share_bs{bs}"] = seen.get("cpu_share")  # what the run's timing phase got of the CPU
            row[f"contended_bs{bs}"] = seen.get("contended")  # "measured under contention" at this batch size
            held = chosen.get("latency_ms", {}).get(str(bs)) or {}
            row[f"selection_p50_ms_bs{bs}"] = held.get("p50")
            row[f"selection_speedup_bs{bs}"] = ((chosen.get("speedup") or {}).get(str(bs)) or {}).get("ratio")
        # Cost per million, monthly saving vs baseline, energy (mJ) and CO2 per batch size under the assumptions
        # stored with the run, plus MACs / weight / peak activation bytes (core.results.cost).
        row.update(results_columns(v, base, sizes, threads))
        if decoder:
            row.update(decoder_columns(v, base))
        row["error"] = v.get("error")
        row["notes"] = " ".join(v.get("notes") or [])
        rows.append(row)
    return pd.DataFrame(rows)


def speedup_entry(row, batch_size: int) -> dict | None:
    """The speed-up of a results-table row at `batch_size` as a results.json entry ({ratio, low, high, rounds};
    no low / high for a run from before intervals), for `core.format.format_speedup`; None when there is none."""
    ratio = row.get(f"speedup_bs{batch_size}")
    if is_missing(ratio):
        return None
    entry = {"ratio": float(ratio)}
    low, high = row.get(f"speedup_low_bs{batch_size}"), row.get(f"speedup_high_bs{batch_size}")
    if not is_missing(low) and not is_missing(high):
        entry.update(low=float(low), high=float(high), rounds=row.get(f"speedup_rounds_bs{batch_size}"))
    return entry


def speedup_text(row, batch_size: int) -> str:
    """A row's speed-up as people read it ('2.10x (2.00–2.20)', 'no measurable difference (0.97–1.04x)'); the
    baseline reads '1x (baseline)'."""
    if row.get("name") == "baseline":
        return "1x (baseline)"
    return format_speedup(speedup_entry(row, batch_size))


def timing_caption(results: dict) -> str:
    """One sentence on how the run's speed-ups were measured, with the contention flag when it was measured under
    contention; "" for a run from before the timing record."""
    timing = results.get("timing") or {}
    if not timing.get("batches"):
        return ""
    rounds = ", ".join(f"{entry.get('rounds', 0)} rounds at batch {bs}" + ("" if entry.get("converged") else
                                                                              " (interval wider than ±5%)")
                       for bs, entry in timing["batches"].items())
    # A decoder's variants are each timed in a worker process of their own (core.measure.decoding), driven in turn
    where = "each in its own worker process, driven in turn" if is_decoder_run(results) else "in one process"
    text = (f"Speed-ups: the baseline and every variant timed interleaved in rounds {where}; median of "
            f"per-round ratios with a 95% interval ({rounds}). An interval containing 1 reads \"no measurable "
            f"difference\".")
    if timing.get("contended"):
        text += " ⚠ " + timing.get("contention_note", "measured under contention") + "."
    return text


def decoder_columns(variant: dict, baseline: dict) -> dict:
    """A decoder run's columns: tokens/s, time to first token, peak RSS, perplexity (and its increase over the
    same-run fp32 baseline), KL(fp32 || variant) per token, teacher-forced next-token agreement (all held-out
    positions, and those fp32 is decided on), greedy tokens matching fp32's before the first difference, the decode
    speed-up (median per-round ratio of interleaved rounds, with its 95% interval) and cost per million tokens."""
    rates = variant.get("tokens_per_s") or {}
    base_rates = baseline.get("tokens_per_s") or {}
    divergence = variant.get("greedy_divergence") or {}
    ppl, base_ppl = variant.get("perplexity"), baseline.get("perplexity")
    interval = (variant.get("speedup") or {}).get("1") or {}
    speedup = interval.get("ratio") if interval else _ratio(rates.get("decode"), base_rates.get("decode"))
    if variant is baseline or variant.get("name") == baseline.get("name"):
        speedup = 1.0
    return {"prefill_tok_s": rates.get("prefill"), "decode_tok_s": rates.get("decode"),
            "decode_speedup": speedup, "decode_speedup_low": interval.get("low"),
            "decode_speedup_high": interval.get("high"),
            "ttft_ms": variant.get("ttft_ms"), "peak_rss_mb": variant.get("peak_rss_mb"), "perplexity": ppl,
            "perplexity_increase_pct": _increase_pct(ppl, base_ppl),
            "kl_per_token": variant.get("kl_per_token"),
            "next_token_agreement": variant.get("next_token_agreement") if variant.get("next_token_agreement")
            is not None else (variant.get("info") or {}).get("next_token_agreement"),  # runs before issue 28
            "next_token_agreement_confident": (variant.get("info") or {}).get("next_token_agreement_confident"),
            "mean_first_divergence": divergence.get("mean_first_divergence"),
            "usd_per_million_tokens": (variant.get("cost") or {}).get("usd_per_million_tokens"),
            # what a pick among the variants reads: the validation windows' perplexity (core.results.compare)
            "selection_perplexity_increase_pct": _increase_pct((variant.get("selection") or {}).get("perplexity"),
                                                               (baseline.get("selection") or {}).get("perplexity"))}


def _increase_pct(value, base):
    return round((value / base - 1) * 100, 4) if value and base else None


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


