"""Results as tables: one row per variant with ratios to the same-run baseline."""

from __future__ import annotations

import pandas as pd

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


def quality_caption(results: dict) -> str:
    """One sentence for a results table: which split each quality number is from, and what a sample is worth."""
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


def batch_sizes_of(results: dict) -> list[int]:
    """Every batch size timed in the run, ascending."""
    sizes = set()
    for v in results.get("variants", []):
        sizes.update(int(b) for b in (v.get("latency_ms") or {}))
    return sorted(sizes)


def results_frame(results: dict) -> pd.DataFrame:
    """One row per variant: status, size, params, accuracy/fidelity, latency per batch size and ratios.

    Ratios are to the baseline of the same run: ``x_smaller`` = baseline size / size, ``speedup_bs{N}`` =
    baseline p50 / p50, ``accuracy_drop_pt`` = (baseline accuracy - accuracy) x 100. Fidelity against the baseline:
    ``flips`` / ``flip_rate`` (top-1 changed), ``agreement_confident`` on the ``confident_samples`` whose baseline
    margin is clear, ``topk_overlap`` (k = ``topk``). ``quality_split`` / ``quality_n`` name the split every quality
    number is from; ``selection_split`` the one the tuner chose on (tuned runs only).
    """
    variants = results.get("variants", [])
    base = next((v for v in variants if v.get("name") == "baseline"), variants[0] if variants else {})
    sizes = batch_sizes_of(results)
    threads = int((results.get("environment") or {}).get("threads") or 1)
    rows = []
    for v in variants:
        row = {"name": v.get("name"), "status": v.get("status"),
               "technique": steps_label(v.get("steps")),
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
            row[f"speedup_bs{bs}"] = _ratio(base_lat.get("p50"), lat.get("p50"))
        # Cost per million, monthly saving vs baseline, energy (mJ) and CO2 per batch size under the assumptions
        # stored with the run, plus MACs / weight / peak activation bytes (core.results.cost).
        row.update(results_columns(v, base, sizes, threads))
        if results.get("task") == "text-generation":
            row.update(decoder_columns(v, base))
        row["error"] = v.get("error")
        row["notes"] = " ".join(v.get("notes") or [])
        rows.append(row)
    return pd.DataFrame(rows)


def decoder_columns(variant: dict, baseline: dict) -> dict:
    """A decoder run's columns: tokens/s, time to first token, peak RSS, perplexity (and its increase over the
    same-run fp32 baseline), greedy agreement, first divergence, teacher-forced next-token agreement (all held-out
    positions, and those fp32 is decided on), decode speed-up and cost per million tokens."""
    rates = variant.get("tokens_per_s") or {}
    base_rates = baseline.get("tokens_per_s") or {}
    divergence = variant.get("greedy_divergence") or {}
    ppl, base_ppl = variant.get("perplexity"), baseline.get("perplexity")
    return {"prefill_tok_s": rates.get("prefill"), "decode_tok_s": rates.get("decode"),
            "decode_speedup": _ratio(rates.get("decode"), base_rates.get("decode")),
            "ttft_ms": variant.get("ttft_ms"), "peak_rss_mb": variant.get("peak_rss_mb"), "perplexity": ppl,
            "perplexity_increase_pct": round((ppl / base_ppl - 1) * 100, 4) if ppl and base_ppl else None,
            "greedy_agreement": variant.get("greedy_agreement"),
            "mean_first_divergence": divergence.get("mean_first_divergence"),
            "next_token_agreement": (variant.get("info") or {}).get("next_token_agreement"),
            "next_token_agreement_confident": (variant.get("info") or {}).get("next_token_agreement_confident"),
            "usd_per_million_tokens": (variant.get("cost") or {}).get("usd_per_million_tokens")}


def _ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


