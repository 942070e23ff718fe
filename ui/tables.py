"""The results table as the dashboard shows it: readable units, ratios to the baseline, failures explained."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.results.compare import quality_drop_pt
from core.results.table import speedup_text
from core.format import MISSING, format_bytes


def display_frame(frame: pd.DataFrame, batch_sizes: list[int], *, inside: pd.Series | None = None,
                  best: str | None = None) -> pd.DataFrame:
    """The columns a person reads, in order, with the variant's budget status and best mark."""
    drop, _ = quality_drop_pt(frame)
    out = pd.DataFrame({"variant": frame["name"], "technique": frame["technique"], "status": frame["status"]})
    if best is not None or inside is not None:
        out["budget"] = [("★ best" if n == best else "inside" if (inside is None or bool(inside.iloc[i]))
                          else "outside") if s == "ok" else "–"
                         for i, (n, s) in enumerate(zip(frame["name"], frame["status"]))]
    # Sizes as text, in the one format used everywhere ("641 kB", core.format.format_bytes): the grid's own "bytes"
    # format wrote "641KB" and clipped the first digit in a narrow column.
    out["size"] = frame["size_bytes"].map(format_bytes)
    out["x_smaller"] = frame["x_smaller"]
    out["params"] = frame["params"]
    if frame["accuracy"].notna().any():
        out["accuracy"] = frame["accuracy"]
    out["drop_pt"] = drop
    if frame["agreement"].notna().any():
        out["agreement"] = frame["agreement"]
    if frame["cosine_mean"].notna().any():
        out["cosine_mean"] = frame["cosine_mean"]
    decoder = "decode_tok_s" in frame  # a language model: its own quality and speed columns, batch 1
    for column in DECODER_COLUMNS if decoder else ():
        out[column] = frame.get(column)
    for bs in () if decoder else batch_sizes:
        out[f"p50_ms_bs{bs}"] = frame.get(f"p50_ms_bs{bs}")
        # "2.10x (2.00–2.20)": the ratio with its interval, "no measurable difference" when it holds 1
        out[f"speedup_bs{bs}"] = [speedup_text(row, bs) for _, row in frame.iterrows()]
    out["notes"] = [(e if isinstance(e, str) and e else n) for e, n in zip(frame["error"], frame["notes"])]
    # A failed variant has no numbers: empty cells, not "None".
    for column in out.columns:
        if column not in TEXT_COLUMNS and not column.startswith("speedup_bs"):
            out[column] = pd.to_numeric(out[column], errors="coerce")
        else:
            out[column] = out[column].map(lambda v: "–" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
    return out


TEXT_COLUMNS = {"variant", "technique", "status", "budget", "size", "notes"}
DECODER_COLUMNS = ("perplexity", "kl_per_token", "next_token_agreement", "decode_tok_s", "decode_speedup",
                   "decode_speedup_low", "decode_speedup_high", "prefill_tok_s", "ttft_ms", "peak_rss_mb",
                   "usd_per_million_tokens")


def column_config(batch_sizes: list[int], drop_label: str) -> dict:
    config = {
        "variant": st.column_config.TextColumn("Variant", pinned=True, width="medium"),
        "technique": st.column_config.TextColumn("Technique", width="medium"),
        "status": st.column_config.TextColumn("Status", width="small"),
        "budget": st.column_config.TextColumn("Budget", width="small"),
        "size": st.column_config.TextColumn("Size", width=90, help="ONNX file size"),
        "x_smaller": st.column_config.NumberColumn("× smaller", format="%.2f×", help="Baseline size / size"),
        "params": st.column_config.NumberColumn("Params", format="compact"),
        "accuracy": st.column_config.NumberColumn("Accuracy", format="percent"),
        "drop_pt": st.column_config.NumberColumn(drop_label.capitalize(), format="%.2f",
                                                 help="Perplexity up vs the fp32 baseline, in percent (negative = "
                                                      "better)" if drop_label.startswith("perplexity") else
                                                 "Percentage points lost vs the baseline (negative = better)"),
        "agreement": st.column_config.NumberColumn("Agreement", format="percent",
                                                   help="Top-1 predictions equal to the baseline's"),
        "cosine_mean": st.column_config.NumberColumn("Cosine", format="%.4f", help="Mean cosine to the baseline"),
        "notes": st.column_config.TextColumn("Notes", width="large"),
        # decoders (core.results.table.decoder_columns)
        "perplexity": st.column_config.NumberColumn("Perplexity", format="%.4f",
                                                    help="On the held-out text; lower is better"),
        "kl_per_token": st.column_config.NumberColumn("KL / token", format="%.2e",
                                                      help="KL(fp32 ‖ variant), nats per held-out token"),
        "next_token_agreement": st.column_config.NumberColumn("Next-token agreement", format="percent",
                                                              help="Teacher-forced top-1 equal to fp32's"),
        "decode_tok_s": st.column_config.NumberColumn("Decode tok/s", format="%.0f",
                                                      help="Batch 1 with the KV cache; higher is better"),
        "decode_speedup": st.column_config.NumberColumn("× faster decode", format="%.2f×",
                                                        help="Median per-round ratio, interleaved rounds"),
        "decode_speedup_low": st.column_config.NumberColumn("95% low", format="%.2f×"),
        "decode_speedup_high": st.column_config.NumberColumn("95% high", format="%.2f×"),
        "prefill_tok_s": st.column_config.NumberColumn("Prefill tok/s", format="%.0f"),
        "ttft_ms": st.column_config.NumberColumn("TTFT (ms)", format="%.2f", help="Time to first token"),
        "peak_rss_mb": st.column_config.NumberColumn("Peak RSS (MB)", format="%.0f",
                                                     help="The measuring worker's own high-water mark (VmHWM)"),
        "usd_per_million_tokens": st.column_config.NumberColumn("$ / million tokens", format="$%.4g"),
    }
    for bs in batch_sizes:
        config[f"p50_ms_bs{bs}"] = st.column_config.NumberColumn(f"p50 @ {bs} (ms)", format="%.3f",
                                                                 help=f"Median latency of a batch of {bs}")
        config[f"speedup_bs{bs}"] = st.column_config.TextColumn(
            f"Speed-up @ {bs}", help="Against the baseline of the same run, timed interleaved in rounds: the median "
            "per-round ratio and its 95% interval; an interval holding 1 reads 'no measurable difference'")
    return config


def results_table_ui(frame: pd.DataFrame, batch_sizes: list[int], *, inside: pd.Series | None = None,
                     best: str | None = None, key: str | None = None) -> None:
    """Draw the results table."""
    _, drop_label = quality_drop_pt(frame)
    table = display_frame(frame, batch_sizes, inside=inside, best=best)
    st.dataframe(table, hide_index=True, width="stretch", key=key, column_config=column_config(batch_sizes, drop_label),
                 placeholder=MISSING,
                 height=min(460, 38 + 35 * len(table)))
