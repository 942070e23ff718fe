"""Plotly figure builders and number formats for results and model cards (no Streamlit; the dashboard and the
HTML report draw the same figures)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.results.compare import (QUALITY_METRICS, Budget, chosen_on, latency_column, ok_rows, pareto_front,
                                  quality_drop_pt, within_budget)
from core.results.table import speedup_text

from core.io.runtimes import runtime_label
from core.results.runtimes import runtime_symbol
from core.format import (format_bytes, format_count, format_ms, format_pct, format_ratio, format_usd,
                         size_unit)

FONT = "Inter, 'Source Sans 3', 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
INK = "#1f2937"
MUTED = "#9ca3af"
GRID = "#e5e7eb"
ACCENT = "#4f46e5"
BASELINE_COLOR = "#111827"
OUT_OF_BUDGET = "#d1d5db"
# Categorical colours chosen for contrast on a projector and for colour-blind readers (Okabe-Ito based).
PALETTE = ["#4f46e5", "#e69f00", "#009e73", "#cc79a7", "#0072b2", "#d55e00", "#56b4e9", "#f0e442", "#6b7280"]
QUALITY_SCALE = "Viridis"


def layout(fig: go.Figure, *, title: str | None = None, height: int = 420, legend: bool = True,
           bargap: float | None = None) -> go.Figure:
    """The one chart style (fonts, colours, grid, legend on top) every figure of the dashboard and report uses."""
    fig.update_layout(
        template="plotly_white", height=height, font=dict(family=FONT, size=14, color=INK),
        title=dict(text=title, x=0, xanchor="left", font=dict(size=17)) if title else None,
        margin=dict(l=10, r=10, t=56 if title else 24, b=10), colorway=PALETTE, showlegend=legend,
        hoverlabel=dict(font=dict(family=FONT, size=13), bgcolor="white"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, title=None),
        paper_bgcolor="white", plot_bgcolor="white",
    )
    if bargap is not None:
        fig.update_layout(bargap=bargap)
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, ticks="outside", tickcolor=GRID,
                     title_font=dict(size=14))
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, ticks="outside", tickcolor=GRID,
                     title_font=dict(size=14))
    return fig


def empty_figure(message: str, height: int = 300) -> go.Figure:
    """A blank chart that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=15, color=MUTED), x=0.5, y=0.5,
                       xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return layout(fig, height=height, legend=False)


# --------------------------------------------------------------------------------------------------------------
# Results


def _hover_rows(rows: pd.DataFrame, batch_sizes: list[int]) -> tuple[np.ndarray, str]:
    """customdata (name first, so a click identifies the variant) and a hover template with every metric."""
    drop, drop_label = quality_drop_pt(rows)
    fields = [rows["name"].astype(str), rows["technique"].fillna("").astype(str),
              rows["size_bytes"].map(format_bytes), rows["x_smaller"].map(format_ratio),
              rows["params"].map(format_count), rows.get("accuracy", pd.Series(index=rows.index)).map(format_pct),
              drop.map(lambda d: "–" if pd.isna(d) else f"{d:.2f}"),
              rows.get("agreement", pd.Series(index=rows.index)).map(format_pct),
              rows.get("cosine_mean", pd.Series(index=rows.index)).map(
                  lambda c: "–" if c is None or pd.isna(c) else f"{c:.4f}")]
    template = ("<b>%{customdata[0]}</b><br>%{customdata[1]}<br>size %{customdata[2]} "
                "(%{customdata[3]} smaller), params %{customdata[4]}<br>accuracy %{customdata[5]}, "
                f"{drop_label} %{{customdata[6]}}<br>agreement %{{customdata[7]}}, cosine %{{customdata[8]}}")
    index = len(fields)
    for bs in batch_sizes:
        fields.append(rows.get(f"p50_ms_bs{bs}", pd.Series(index=rows.index)).map(format_ms))
        fields.append(rows.get(f"p99_ms_bs{bs}", pd.Series(index=rows.index)).map(format_ms))
        fields.append(pd.Series([speedup_text(row, bs) for _, row in rows.iterrows()], index=rows.index))
        fields.append(rows.get(f"usd_per_million_bs{bs}", pd.Series(index=rows.index)).map(format_usd))
        template += (f"<br>batch {bs}: p50 %{{customdata[{index}]}}, p99 %{{customdata[{index + 1}]}}, "
                     f"speed-up %{{customdata[{index + 2}]}}, %{{customdata[{index + 3}]}} per million")
        index += 4
    template += "<extra></extra>"
    return np.column_stack([f.to_numpy(dtype=object) for f in fields]), template


# Where a marker's label goes when another label is near: tried in this order (plotly textposition values).
_LABEL_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left",
                    "top left", "bottom right")


def label_positions(x, y, labels, *, x_range: tuple | None = None, y_range: tuple | None = None,
                    char_px: float = 7.5, width_px: float = 800, height_px: float = 420) -> list[str]:
    """A text position for each marker label so that labels do not overlap each other and stay inside the plot.

    A greedy placement on estimated label boxes (characters x `char_px`, in a plot about `width_px` x `height_px`):
    each label takes the first position in _LABEL_POSITIONS whose box overlaps no placed box and does not run
    past the plot's edges; when none fits, the one with the least overlap. Clustered variants (the tuner's
    int8-static family) and points at the right edge ("seline" for a clipped "baseline") read cleanly.
    """
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if not xs:
        return []
    x0, x1 = x_range or (min(0.0, min(xs)), max(xs))
    y0, y1 = y_range or (min(0.0, min(ys)), max(ys))
    sx = width_px / ((x1 - x0) or 1.0)
    sy = height_px / ((y1 - y0) or 1.0)
    placed: list[tuple[float, float, float, float]] = []
    out: list = []
    marker_px = 14.0  # half the largest marker (the best's star, 22 px) plus a little air
    for i in sorted(range(len(xs)), key=lambda k: (xs[k], ys[k])):
        px, py = (xs[i] - x0) * sx, (ys[i] - y0) * sy  # y up
        w, h = max(1, len(str(labels[i]))) * char_px, 16.0
        best, best_cost, best_box = _LABEL_POSITIONS[0], math.inf, None
        for position in _LABEL_POSITIONS:
            vertical, horizontal = position.split()
            cy = py + (marker_px + h / 2 if vertical == "top" else -marker_px - h / 2 if vertical == "bottom" else 0)
            cx = px + (marker_px + w / 2 if horizontal == "right" else -marker_px - w / 2 if horizontal == "left"
                       else 0)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            overlap = sum(max(0.0, min(box[2], b[2]) - max(box[0], b[0])) * max(0.0, min(box[3], b[3]) -
                                                                                 max(box[1], b[1])) for b in placed)
            outside = max(0.0, -box[0]) + max(0.0, box[2] - width_px) + max(0.0, box[3] - height_px - 24)
            cost = overlap + outside * h * 4
            if cost < best_cost:
                best, best_cost, best_box = position, cost, box
            if cost == 0:
                break
        placed.append(best_box)
        placed.append((px - marker_px / 2, py - marker_px / 2, px + marker_px / 2, py + marker_px / 2))
        out.append((i, best))
    return [position for _, position in sorted(out)]


# Metrics whose colour scale is in percent, and the least span a colour scale covers for each: a run where every
# variant scores 98.52% is one colour, not a scale from 98 to 99.5 that invents differences.
_PERCENT_METRICS = ("accuracy", "agreement")
_MIN_SPAN = {"accuracy": 1.0, "agreement": 1.0, "cosine_mean": 0.01, "cosine_min": 0.01}
_DOMAIN = {"accuracy": (0.0, 100.0), "agreement": (0.0, 100.0), "cosine_mean": (-1.0, 1.0),
           "cosine_min": (-1.0, 1.0)}


def color_range(values: pd.Series, metric: str) -> tuple[float, float]:
    """(cmin, cmax) for a quality colour scale: the values' range, widened to the metric's least span around its
    middle and kept inside the metric's domain (cosine never beyond 1, accuracy never beyond 100%)."""
    low, high = float(values.min()), float(values.max())
    span = _MIN_SPAN.get(metric, 0.0)
    if high - low < span:
        middle = (low + high) / 2
        low, high = middle - span / 2, middle + span / 2
    lo_bound, hi_bound = _DOMAIN.get(metric, (-math.inf, math.inf))
    if high > hi_bound:
        low, high = low - (high - hi_bound), hi_bound
    if low < lo_bound:
        low, high = lo_bound, min(hi_bound, high + (lo_bound - low))
    if math.isclose(low, high):
        low, high = low - 1, high + 1
    return low, high


def timed_rows(frame: pd.DataFrame, batch_size: int) -> tuple[pd.DataFrame | None, str | None]:
    """The variants a size-vs-latency chart plots at `batch_size` (measured and timed there), or why there are
    none (the chart's empty-state message)."""
    rows = ok_rows(frame)
    y_col = latency_column(batch_size)
    if rows.empty:
        return None, "No measured variants yet: results appear here as each variant finishes."
    if y_col not in rows or rows[y_col].isna().all():
        return None, ("Not timed yet: every variant is timed together once all are built (sizes and quality are in "
                      "the table below).")
    return rows[rows[y_col].notna()].reset_index(drop=True), None


def pareto_figure(frame: pd.DataFrame, batch_size: int, *, color_by: str = "accuracy", budget: Budget | None = None,
                  best: str | None = None, selected: str | None = None, height: int = 480,
                  best_label: str = "best within budget") -> go.Figure:
    """Size vs p50 latency at `batch_size`, coloured by a quality metric, with the Pareto frontier drawn.

    Variants outside the budget are grey; the best one inside is starred (and labelled `best_label`: "fastest"
    when no budget is set); the baseline is a black diamond. Every marker's customdata starts with the variant name
    (for click-to-open).
    """
    if "decode_tok_s" in frame:  # a decoder run: tokens/s vs size vs perplexity
        return decoder_pareto_figure(frame, selected=selected, height=height, budget=budget, best=best)
    rows, why_empty = timed_rows(frame, batch_size)
    if rows is None:
        return empty_figure(why_empty)
    y_col = latency_column(batch_size)
    unit, scale = size_unit(rows["size_bytes"].max())
    x = rows["size_bytes"] / scale
    y = rows[y_col]
    sizes = sorted(int(c.split("bs")[1]) for c in rows.columns if c.startswith("p50_ms_bs"))
    custom, hover = _hover_rows(rows, sizes)
    inside = within_budget(chosen_on(rows), budget or Budget(), batch_size)  # judged as `best_variant` judges
    error_up, error_down = latency_error_bars(rows, batch_size)
    fig = go.Figure()

    x_top, y_top = float(x.max()) * 1.12 or 1.0, float(y.max()) * 1.12 or 1.0
    front = pareto_front(rows, "size_bytes", y_col)
    if front:
        # The frontier as a staircase, run out to the plot's edges: with one variant beating all the others it is
        # a corner, not a missing line (the caption promises a dotted line).
        ordered = rows.set_index("name").loc[front]
        fx = [float(v) for v in ordered["size_bytes"] / scale]
        fy = [float(v) for v in ordered[y_col]]
        fig.add_trace(go.Scatter(x=[fx[0]] + fx + [x_top], y=[y_top] + fy + [fy[-1]], mode="lines",
                                 line=dict(color=ACCENT, width=2, dash="dot", shape="hv"),
                                 name="Pareto frontier", hoverinfo="skip"))
    # Labels, and the "best within budget" note as one more label at the best point, placed apart (the note's
    # arrow used to land on the neighbours' labels).
    names = list(rows["name"])
    has_best = best is not None and best in set(names)
    bx = list(x) + ([float(x[names.index(best)])] if has_best else [])
    by = list(y) + ([float(y[names.index(best)])] if has_best else [])
    placed = label_positions(bx, by, names + ([best_label] if has_best else []), x_range=(0.0, x_top),
                             y_range=(0.0, y_top), height_px=max(200, height - 120))
    positions = dict(zip(names, placed))

    if color_by not in rows or rows[color_by].isna().all():
        color_by = next((m for m in QUALITY_METRICS if m in rows and rows[m].notna().any()), None)
    color_values = rows[color_by] * (100 if color_by in ("accuracy", "agreement") else 1) if color_by else None
    show_scale = color_by is not None

    by_runtime = "runtime" in rows and rows["runtime"].nunique() > 1
    for runtime in (dict.fromkeys(rows["runtime"]) if by_runtime else ()):  # the legend of marker shapes
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=runtime_label(runtime), hoverinfo="skip",
                                 marker=dict(symbol=runtime_symbol(runtime), size=12, color=MUTED)))
    for mask, name, symbol, faded in ((~inside, "outside budget", "circle", True),
                                      (inside, "variants", "circle", False)):
        part = rows[mask]
        if part.empty:
            continue
        is_base = part["name"] == "baseline"
        marker = dict(size=[22 if n == best else 16 for n in part["name"]],
                      symbol=["diamond" if b else ("star" if n == best else symbol)
                              for n, b in zip(part["name"], is_base)],
                      line=dict(width=[3 if n == selected else 1 for n in part["name"]],
                                color=[ACCENT if n == selected else "white" for n in part["name"]]))
        if by_runtime:  # a bake-off: the shape is the runtime, each runtime's baseline outlined in black
            is_base = part["variant"] == "baseline"
            marker["symbol"] = [runtime_symbol(r) for r in part["runtime"]]
            picked = [selected in (n, v) for n, v in zip(part["name"], part["variant"])]  # a variant: all its points
            marker["line"] = dict(width=[3 if p else 2.5 if b else 1 for p, b in zip(picked, is_base)],
                                  color=[ACCENT if p else BASELINE_COLOR if b else "white"
                                         for p, b in zip(picked, is_base)])
        if faded or color_values is None:
            marker["color"] = OUT_OF_BUDGET if faded else ACCENT
        else:
            cmin, cmax = color_range(color_values, color_by)
            marker.update(color=color_values[mask], colorscale=QUALITY_SCALE, cmin=cmin, cmax=cmax,
                          showscale=show_scale,
                          colorbar=dict(title=dict(text=QUALITY_METRICS.get(color_by, color_by), side="right"),
                                        thickness=14))
        fig.add_trace(go.Scatter(
            x=x[mask], y=y[mask], mode="markers+text", name=name, marker=marker, showlegend=faded,
            text=part["name"], textposition=[positions[n] for n in part["name"]], cliponaxis=False,
            textfont=dict(color=MUTED if faded else INK, size=13),
            error_y=dict(type="data", symmetric=False, array=error_up[mask].tolist(),
                         arrayminus=error_down[mask].tolist(), color=MUTED if faded else INK, thickness=1.2,
                         width=4),
            customdata=custom[mask.to_numpy()], hovertemplate=hover, opacity=0.55 if faded else 1.0))
    if has_best:
        point = rows[rows["name"] == best].iloc[0]
        vertical, horizontal = placed[-1].split()
        ax = {"left": -70, "right": 70}.get(horizontal, 0)
        ay = {"top": -34, "bottom": 34}.get(vertical, 0)
        fig.add_annotation(x=point["size_bytes"] / scale, y=point[y_col], text=best_label, showarrow=True,
                           arrowhead=2, ax=ax or 40, ay=ay, font=dict(color=ACCENT, size=13), arrowcolor=ACCENT)
    if budget is not None and budget.max_latency_ms is not None:
        fig.add_hline(y=budget.max_latency_ms, line=dict(color=MUTED, dash="dash", width=1))
    if budget is not None and budget.max_size_bytes is not None:
        fig.add_vline(x=budget.max_size_bytes / scale, line=dict(color=MUTED, dash="dash", width=1))
    fig.update_xaxes(title=f"Model file size ({unit})", range=[0, x_top])
    fig.update_yaxes(title=f"Latency p50 at batch {batch_size} (ms)", range=[0, y_top])
    layout(fig, height=height)
    fig.update_layout(legend=dict(itemclick=False, itemdoubleclick=False), clickmode="event+select")
    return fig


def latency_error_bars(rows: pd.DataFrame, batch_size: int) -> tuple[pd.Series, pd.Series]:
    """(up, down) error bars in ms for each row's p50 at `batch_size`: the speed-up's 95% interval carried onto the
    latency (p50 x ratio / low up, p50 x ratio / high down), so a bar spans what the same-run comparison with the
    baseline allows; 0 for the baseline and for runs from before intervals."""
    p50 = rows.get(latency_column(batch_size), pd.Series(np.nan, index=rows.index)).astype(float)
    ratio = rows.get(f"speedup_bs{batch_size}", pd.Series(np.nan, index=rows.index)).astype(float)
    low = rows.get(f"speedup_low_bs{batch_size}", pd.Series(np.nan, index=rows.index)).astype(float)
    high = rows.get(f"speedup_high_bs{batch_size}", pd.Series(np.nan, index=rows.index)).astype(float)
    up = (p50 * (ratio / low - 1.0)).where(low > 0).fillna(0.0).clip(lower=0.0)
    down = (p50 * (1.0 - ratio / high)).where(high > 0).fillna(0.0).clip(lower=0.0)
    return up, down


def decoder_pareto_figure(frame: pd.DataFrame, *, selected: str | None = None, height: int = 480,
                          budget: Budget | None = None, best: str | None = None) -> go.Figure:
    """A decoder run: model size vs decode tokens/s at batch 1, coloured by held-out perplexity; the frontier
    (smaller and faster) dotted; variants outside the budget grey, the best one inside starred. Every marker's
    customdata starts with the variant name (for click-to-open)."""
    rows = ok_rows(frame)
    if rows.empty or rows["decode_tok_s"].isna().all():
        return empty_figure("No measured variants yet: results appear here as each variant finishes.")
    rows = rows[rows["decode_tok_s"].notna()].reset_index(drop=True)
    unit, scale = size_unit(rows["size_bytes"].max())
    x, y = rows["size_bytes"] / scale, rows["decode_tok_s"]
    x_top, y_top = float(x.max()) * 1.15 or 1.0, float(y.max()) * 1.15 or 1.0
    fig = go.Figure()
    ordered = rows.sort_values("size_bytes")
    front, best_rate = [], -1.0
    for _, row in ordered.iterrows():  # smaller first: on the frontier when faster than everything smaller
        if row["decode_tok_s"] > best_rate:
            front.append(row)
            best_rate = row["decode_tok_s"]
    if front:
        fx = [float(r["size_bytes"]) / scale for r in front]
        fy = [float(r["decode_tok_s"]) for r in front]
        fig.add_trace(go.Scatter(x=fx + [x_top], y=fy + [fy[-1]], mode="lines", name="Pareto frontier",
                                 line=dict(color=ACCENT, width=2, dash="dot", shape="hv"), hoverinfo="skip"))
    ppl = rows["perplexity"] if "perplexity" in rows else pd.Series([None] * len(rows))
    kl = rows["kl_per_token"] if "kl_per_token" in rows else pd.Series([None] * len(rows))
    agreement = rows["next_token_agreement"] if "next_token_agreement" in rows else pd.Series([None] * len(rows))
    custom = np.array([[n, format_bytes(b), f"{d:,.0f}", "—" if pd.isna(p) else f"{p:.3f}",
                        "—" if pd.isna(a) else f"{a * 100:.1f}%", "—" if pd.isna(k) else f"{k:.2e}"]
                       for n, b, d, p, a, k in zip(rows["name"], rows["size_bytes"], y, ppl, agreement, kl)],
                      dtype=object)
    inside = within_budget(rows, budget or Budget(), 1)
    hover = ("<b>%{customdata[0]}</b><br>size %{customdata[1]}<br>decode %{customdata[2]} tokens/s"
             "<br>perplexity %{customdata[3]} · KL %{customdata[5]} nats/token"
             "<br>next-token agreement with fp32 %{customdata[4]}<extra></extra>")
    for mask, faded in ((~inside, True), (inside, False)):  # outside the budget: grey, as on the other charts
        part = rows[mask]
        if part.empty:
            continue
        names = list(part["name"])
        marker = dict(size=[22 if n == best else 16 for n in names],
                      symbol=["diamond" if n == "baseline" else "star" if n == best else "circle" for n in names],
                      line=dict(width=[3 if n == selected else 1 for n in names],
                                color=[ACCENT if n == selected else "white" for n in names]))
        if faded or not ppl.notna().any():
            marker["color"] = OUT_OF_BUDGET if faded else ACCENT
        else:
            low, high = float(ppl.min()), float(ppl.max())
            marker.update(color=ppl[mask], colorscale=QUALITY_SCALE, reversescale=True, showscale=True, cmin=low,
                          cmax=high if high > low else low + 1e-6,
                          colorbar=dict(title=dict(text="Perplexity (lower is better)", side="right"), thickness=14))
        fig.add_trace(go.Scatter(
            x=x[mask], y=y[mask], mode="markers+text", name="outside budget" if faded else "variants", marker=marker,
            text=part["name"], textposition="top center", cliponaxis=False,
            textfont=dict(color=MUTED if faded else INK, size=13), customdata=custom[mask.to_numpy()],
            showlegend=faded, opacity=0.55 if faded else 1.0, hovertemplate=hover))
    fig.update_xaxes(title=f"Model file size ({unit})", range=[0, x_top])
    fig.update_yaxes(title="Decode tokens/s at batch 1 (higher is better)", range=[0, y_top])
    layout(fig, height=height)
    fig.update_layout(legend=dict(itemclick=False, itemdoubleclick=False), clickmode="event+select")
    return fig


def latency_percentiles_figure(latency: pd.DataFrame, batch_size: int, height: int = 380, *,
                               decoder: bool = False) -> go.Figure:
    """Grouped bars of p50 / p90 / p99 latency per variant at one batch size (a decoder's: per decoded token)."""
    rows = latency[latency["batch_size"] == batch_size]
    if rows.empty:
        return empty_figure(f"No latency measured at batch {batch_size}.")
    fig = go.Figure()
    for pct, color in (("p50", PALETTE[0]), ("p90", PALETTE[4]), ("p99", PALETTE[1])):
        fig.add_trace(go.Bar(x=rows["name"], y=rows[pct], name=pct, marker_color=color,
                             hovertemplate=f"%{{x}}<br>{pct} %{{y:.4g}} ms<extra></extra>"))
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(title="Variant")
    fig.update_yaxes(title="Decode latency per token, batch 1 (ms)" if decoder else f"Latency at batch {batch_size} (ms)",
                     rangemode="tozero")
    return layout(fig, height=height)


def batch_scaling_figure(latency: pd.DataFrame, metric: str = "throughput", height: int = 380, *,
                         decoder: bool = False) -> go.Figure:
    """Throughput (samples/s) or latency per sample (ms) against batch size, one line per variant (a decoder's:
    decoded tokens)."""
    if latency.empty or latency["batch_size"].nunique() < 1:
        return empty_figure("No latency measured yet.")
    labels = ({"throughput": "Decode throughput (tokens/s)", "per_sample_ms": "Latency per decoded token, p50 (ms)"}
              if decoder else {"throughput": "Throughput (samples/s)", "per_sample_ms": "Latency per sample, p50 (ms)"})
    fig = go.Figure()
    for i, (name, part) in enumerate(latency.groupby("name", sort=False)):
        part = part.sort_values("batch_size")
        fig.add_trace(go.Scatter(
            x=part["batch_size"], y=part[metric], mode="lines+markers", name=name,
            line=dict(color=BASELINE_COLOR if name == "baseline" else PALETTE[i % len(PALETTE)], width=2.5,
                      dash="dash" if name == "baseline" else "solid"),
            marker=dict(size=9), hovertemplate=f"{name}<br>batch %{{x}}: %{{y:,.4g}}<extra></extra>"))
    fig.update_xaxes(title="Batch size (samples)", type="log", tickvals=sorted(latency["batch_size"].unique()))
    fig.update_yaxes(title=labels[metric], rangemode="tozero")
    if latency["batch_size"].nunique() == 1:
        fig.add_annotation(text="Only one batch size was timed: add more in the benchmark settings.",
                           showarrow=False, x=0.5, y=1.0, xref="paper", yref="paper", font=dict(color=MUTED))
    return layout(fig, height=height)


def ratio_bars_figure(frame: pd.DataFrame, batch_size: int, height: int = 360) -> go.Figure:
    """How many times smaller and faster each variant is than the baseline (1× = no change)."""
    rows = ok_rows(frame)
    rows = rows[rows["name"] != "baseline"]
    if rows.empty:
        return empty_figure("No optimized variant measured yet.")
    fig = go.Figure()
    fig.add_trace(go.Bar(y=rows["name"], x=rows["x_smaller"], orientation="h", name="× smaller (file)",
                         marker_color=PALETTE[0], text=rows["x_smaller"].map(format_ratio), textposition="outside",
                         cliponaxis=False,
                         hovertemplate="%{y}: %{x:.2f}× smaller<extra></extra>"))
    speed = rows.get(f"speedup_bs{batch_size}")
    if speed is not None:
        low = rows.get(f"speedup_low_bs{batch_size}", pd.Series(np.nan, index=rows.index)).astype(float)
        high = rows.get(f"speedup_high_bs{batch_size}", pd.Series(np.nan, index=rows.index)).astype(float)
        texts = [speedup_text(row, batch_size) for _, row in rows.iterrows()]
        fig.add_trace(go.Bar(y=rows["name"], x=speed, orientation="h", name=f"× faster (batch {batch_size}, 95% "
                             "interval)", marker_color=PALETTE[2], text=texts, textposition="outside",
                             cliponaxis=False, customdata=texts,
                             error_x=dict(type="data", symmetric=False, array=(high - speed).fillna(0.0).tolist(),
                                          arrayminus=(speed - low).fillna(0.0).tolist(), color=INK, thickness=1.2),
                             hovertemplate="%{y}: %{customdata}<extra></extra>"))
    fig.add_vline(x=1.0, line=dict(color=MUTED, dash="dash", width=1))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="Ratio to baseline (×, higher is better)", rangemode="tozero")
    fig.update_yaxes(title=None, autorange="reversed")
    return layout(fig, height=max(height, 90 + 60 * len(rows)))


def history_figure(combined: pd.DataFrame, batch_size: int, height: int = 460) -> go.Figure:
    """Variants of several runs on one size-vs-latency chart, one colour per run."""
    y_col = latency_column(batch_size)
    rows = ok_rows(combined) if not combined.empty else combined
    if rows.empty or y_col not in rows:
        return empty_figure(f"None of the selected runs timed batch {batch_size}.")
    unit, scale = size_unit(rows["size_bytes"].max())
    fig = go.Figure()
    for i, (run, part) in enumerate(rows.groupby("run", sort=False)):
        fig.add_trace(go.Scatter(
            x=part["size_bytes"] / scale, y=part[y_col], mode="markers+text", name=f"{run} ({part['model'].iloc[0]})",
            text=part["name"], textposition="top center", marker=dict(size=14, color=PALETTE[i % len(PALETTE)],
                                                                      symbol=i % 10),
            hovertemplate="%{text}<br>%{x:.3g} " + unit + ", %{y:.4g} ms<extra>" + run + "</extra>"))
    fig.update_xaxes(title=f"Model file size ({unit})", rangemode="tozero")
    fig.update_yaxes(title=f"Latency p50 at batch {batch_size} (ms)", rangemode="tozero")
    return layout(fig, height=height)


# --------------------------------------------------------------------------------------------------------------
# Model cards


def op_types_figure(card: dict, height: int = 320) -> go.Figure:
    """How many nodes of each ONNX op type the model has."""
    ops = card.get("op_types") or {}
    if not ops:
        return empty_figure("The graph has no nodes.")
    items = sorted(ops.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker_color=PALETTE[0], text=[v for _, v in items], textposition="outside",
                           hovertemplate="%{y}: %{x} nodes<extra></extra>"))
    fig.update_xaxes(title="Nodes (count)", rangemode="tozero")
    fig.update_yaxes(title=None)
    return layout(fig, height=max(height, 60 + 26 * len(items)), legend=False)


def layer_share_figure(card: dict, height: int = 320, top: int = 15) -> go.Figure:
    """The layers holding the most weight bytes, as a share of the model's weights."""
    layers = sorted(card.get("layers") or [], key=lambda r: r["bytes"], reverse=True)[:top]
    if not layers:
        return empty_figure("No layer stores weights.")
    layers = layers[::-1]
    fig = go.Figure(go.Bar(x=[r["share"] * 100 for r in layers], y=[r["name"] for r in layers], orientation="h",
                           marker_color=PALETTE[2], customdata=[[r["type"], format_count(r["params"])]
                                                                 for r in layers],
                           hovertemplate="%{y} (%{customdata[0]})<br>%{customdata[1]} params, %{x:.1f}% of "
                                         "weights<extra></extra>"))
    fig.update_xaxes(title="Share of weight bytes (%)", rangemode="tozero")
    fig.update_yaxes(title=None)
    return layout(fig, height=max(height, 60 + 26 * len(layers)), legend=False)
