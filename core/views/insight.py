"""Plotly figures for the Insight page: sensitivity ranking and heatmap, the tuner's trials, per-operator time
before / after, and batch x thread scaling (no Streamlit; built from the plain dicts the insight modules write)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from core.views.charts import ACCENT, BASELINE_COLOR, INK, MUTED, OUT_OF_BUDGET, PALETTE, layout, empty_figure, label_positions

SENSITIVITY_SCALE = "OrRd"


def _short(name: str, limit: int = 42) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def sensitivity_figure(result: dict, top: int = 30, height: int = 420) -> go.Figure:
    """Ranked horizontal bars: each layer's quality drop when it alone is changed, most sensitive on top,
    coloured by output SQNR (dB; lower = more damage)."""
    layers = [row for row in result.get("layers", []) if row.get("drop") is not None][:top]
    if not layers:
        return empty_figure("No sensitivity scan yet: run one to rank the layers.")
    names = [_short(row["name"]) for row in layers]
    drops = [row["drop"] for row in layers]
    sqnr = [row.get("sqnr_db") for row in layers]
    finite = [s for s in sqnr if s is not None]
    colors = [s if s is not None else (max(finite) if finite else 0.0) for s in sqnr]
    hover = [f"{row['name']} ({row.get('type')})<br>drop {row['drop']:.3g} pt<br>SQNR "
             f"{'identical' if row.get('sqnr_db') is None else format(row['sqnr_db'], '.1f') + ' dB'}"
             f"<br>agreement {'' if row.get('agreement') is None else format(row['agreement'] * 100, '.2f') + '%'}"
             for row in layers]
    # "0.56 =": tied within one validation sample with another layer (core.analysis.sensitivity.mark_ties)
    fig = go.Figure(go.Bar(
        x=drops, y=names, orientation="h", text=[f"{row['drop']:.2f}{' =' if row.get('tied') else ''}"
                                                  for row in layers], textposition="outside",
        marker=dict(color=colors, colorscale=SENSITIVITY_SCALE, reversescale=True, showscale=bool(finite),
                    colorbar=dict(title=dict(text="SQNR (dB)", side="right"), thickness=14)),
        hovertext=hover, hoverinfo="text"))
    what = "quantized" if result.get("technique") == "quantize" else \
        f"pruned {float((result.get('config') or {}).get('amount', 0.5)):.0%}"
    fig.update_xaxes(title=f"{result.get('metric', 'drop (pt)')} with only this layer {what}")
    fig.update_yaxes(title=None, autorange="reversed", type="category")
    return layout(fig, height=max(height, 90 + 26 * len(layers)), legend=False)


def sensitivity_heatmap(result: dict, top: int = 40, height: int = 420) -> go.Figure:
    """A heatmap of layers (rows, most sensitive first): for a prune scan with several amounts, the drop at each
    amount; otherwise the drop, the disagreement and the output noise (-SQNR), each column scaled 0..1."""
    layers = [row for row in result.get("layers", []) if row.get("drop") is not None][:top]
    if not layers:
        return empty_figure("No sensitivity scan yet.")
    names = [_short(row["name"]) for row in layers]
    by_amount = [row.get("by_amount") for row in layers]
    if all(by_amount) and len(by_amount[0]) > 1:
        amounts = sorted(by_amount[0], key=float)
        z = [[row["by_amount"].get(a) for a in amounts] for row in layers]
        fig = go.Figure(go.Heatmap(z=z, x=[f"{float(a):.0%}" for a in amounts], y=names,
                                   colorscale=SENSITIVITY_SCALE, text=[[f"{v:.2f}" for v in r] for r in z],
                                   texttemplate="%{text}", colorbar=dict(title=dict(text="drop (pt)", side="right")),
                                   hovertemplate="%{y}<br>pruned %{x}: drop %{z:.3g} pt<extra></extra>"))
        fig.update_xaxes(title="Share of the layer's weights zeroed", type="category")
    else:
        columns = {"drop (pt)": [row["drop"] for row in layers],
                   "disagreement (pt)": [None if row.get("agreement") is None else (1 - row["agreement"]) * 100
                                         for row in layers],
                   "noise (-SQNR dB)": [None if row.get("sqnr_db") is None else -row["sqnr_db"] for row in layers]}
        columns = {k: v for k, v in columns.items() if any(x is not None for x in v)}
        z, text = [], []
        for values in columns.values():
            present = [v for v in values if v is not None]
            lo, hi = (min(present), max(present)) if present else (0.0, 1.0)
            span = hi - lo if hi > lo else 1.0
            z.append([0.0 if v is None else (v - lo) / span for v in values])
            text.append(["—" if v is None else f"{v:.3g}" for v in values])
        fig = go.Figure(go.Heatmap(z=np.array(z).T, x=list(columns), y=names, text=np.array(text).T,
                                   texttemplate="%{text}", colorscale=SENSITIVITY_SCALE, zmin=0, zmax=1,
                                   colorbar=dict(title=dict(text="relative", side="right")),
                                   hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
        fig.update_xaxes(title=None, side="top")
    fig.update_yaxes(title=None, autorange="reversed", type="category")
    return layout(fig, height=max(height, 100 + 24 * len(layers)), legend=False)


def tune_figure(tune_log: dict, height: int = 460) -> go.Figure:
    """The tuner's trials as it chose: validation drop (x) against the speed-up it chose on, with its interval
    (latency objective), or file size (size objective); the drop budget as a dashed line, the Pareto frontier
    dotted, the best starred."""
    config = tune_log.get("config") or {}
    objective = config.get("objective", "latency")
    trials = [t for t in tune_log.get("trials", []) if t.get("status") == "ok" and t.get("drop_pt") is not None]
    if objective == "latency":
        trials = [t for t in trials if t.get("speedup")]
    else:
        trials = [t for t in trials if t.get("size_bytes")]
    if not trials:
        return empty_figure("No variant measured yet: trials appear here as the tuner measures them.")
    best = tune_log.get("best")

    def y_of(t):
        return t["speedup"] if objective == "latency" else t["size_bytes"] / 1e3

    fig = go.Figure()
    front = _front(trials, objective)
    if front:
        fig.add_trace(go.Scatter(x=[t["drop_pt"] for t in front], y=[y_of(t) for t in front], mode="lines",
                                 line=dict(color=ACCENT, width=2, dash="dot", shape="hv"), name="Pareto frontier",
                                 hoverinfo="skip"))
    # Labels placed so that a cluster (int8-static and its neighbours) does not print on top of itself.
    drops, ys = [t["drop_pt"] for t in trials], [y_of(t) for t in trials]
    x_range = (min(0.0, min(drops)), max(drops) * 1.1 or 1.0)
    positions = dict(zip([t["name"] for t in trials],
                         label_positions(drops, ys, [t["name"] for t in trials], x_range=x_range,
                                         y_range=(0.0, max(ys) * 1.1 or 1.0), height_px=max(200, height - 120))))
    for inside, label in ((False, "over the drop budget"), (True, "within budget")):
        part = [t for t in trials if bool(t.get("within_budget")) == inside]
        if not part:
            continue
        fig.add_trace(go.Scatter(
            x=[t["drop_pt"] for t in part], y=[y_of(t) for t in part], mode="markers+text", name=label,
            text=[t["name"] for t in part], textposition=[positions[t["name"]] for t in part], cliponaxis=False,
            textfont=dict(color=INK if inside else MUTED, size=12),
            marker=dict(size=[22 if t["name"] == best else 14 for t in part],
                        symbol=["diamond" if t["name"] == "baseline" else "star" if t["name"] == best else "circle"
                                for t in part],
                        color=[BASELINE_COLOR if t["name"] == "baseline" else ACCENT if inside else OUT_OF_BUDGET
                               for t in part], line=dict(width=1, color="white")),
            error_y=dict(type="data", symmetric=False, color=MUTED, thickness=1.2, width=3,
                         array=[max(0.0, (t.get("speedup_high") or t["speedup"]) - t["speedup"]) for t in part],
                         arrayminus=[max(0.0, t["speedup"] - (t.get("speedup_low") or t["speedup"])) for t in part],
                         visible=objective == "latency"),
            customdata=[t["name"] for t in part],
            hovertemplate="%{customdata}<br>drop %{x:.3g} pt<br>"
                          + ("%{y:.2f}x faster" if objective == "latency" else "%{y:,.1f} kB") + "<extra></extra>"))
    budget = config.get("max_drop_pt")
    if budget is not None:
        fig.add_vline(x=budget, line=dict(color=MUTED, dash="dash", width=1),
                      annotation=dict(text=f"budget {budget:g} pt", font=dict(color=MUTED)))
    fig.update_xaxes(title="Quality drop vs baseline (pt, lower is better)")
    if objective == "latency":
        fig.update_yaxes(title=f"Speed-up at batch {tune_log.get('timing_batch', config.get('batch_size'))}, "
                               "the timing it chose on (x, 95% interval)", rangemode="tozero")
        fig.add_hline(y=1.0, line=dict(color=MUTED, dash="dot", width=1))
    else:
        fig.update_yaxes(title="Model file size (kB, lower is better)", rangemode="tozero")
    return layout(fig, height=height)


def _front(trials: list, objective: str) -> list:
    """Trials no other trial beats on both drop (lower) and the objective, by ascending drop."""
    ordered = sorted(trials, key=lambda t: (t["drop_pt"], -t["speedup"] if objective == "latency"
                                            else t["size_bytes"]))
    front, best = [], -math.inf
    for t in ordered:
        value = t["speedup"] if objective == "latency" else -t["size_bytes"]
        if value > best:
            front.append(t)
            best = value
    return front


def op_time_figure(comparison: list, before_label: str = "baseline", after_label: str = "variant",
                   top: int = 15, height: int = 380) -> go.Figure:
    """Per-operator kernel time per run, before and after, side by side (ops summed by type)."""
    rows = comparison[:top]
    if not rows:
        return empty_figure("No profile yet: profile a variant to see where the time goes.")
    ops = [r["op"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=ops, x=[r["before_ms"] for r in rows], orientation="h", name=before_label,
                         marker_color=BASELINE_COLOR, hovertemplate="%{y}: %{x:.4g} ms<extra>" + before_label
                         + "</extra>"))
    fig.add_trace(go.Bar(y=ops, x=[r["after_ms"] for r in rows], orientation="h", name=after_label,
                         marker_color=PALETTE[2], hovertemplate="%{y}: %{x:.4g} ms<extra>" + after_label
                         + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="Kernel time per run (ms)", rangemode="tozero")
    fig.update_yaxes(title=None, autorange="reversed", type="category")
    return layout(fig, height=max(height, 90 + 44 * len(rows)))


def scaling_figure(rows: list, metric: str = "throughput", height: int = 420) -> go.Figure:
    """Throughput (samples/s) or p50 latency (ms) against batch size: one line per variant and thread count."""
    if not rows:
        return empty_figure("No scaling measured yet.")
    labels = {"throughput": "Throughput (samples/s)", "p50_ms": "Latency p50 (ms)",
              "ms_per_sample": "Latency per sample, p50 (ms)"}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    fig = go.Figure()
    for i, name in enumerate(variants):
        for j, t in enumerate(threads):
            part = sorted((r for r in rows if r["variant"] == name and r["threads"] == t),
                          key=lambda r: r["batch_size"])
            if not part:
                continue
            fig.add_trace(go.Scatter(
                x=[r["batch_size"] for r in part], y=[r[metric] for r in part], mode="lines+markers",
                name=f"{name} · {t} thread{'s' if t != 1 else ''}",
                line=dict(color=BASELINE_COLOR if name == "baseline" else PALETTE[i % len(PALETTE)],
                          dash=dashes[j % len(dashes)], width=2.5),
                hovertemplate=f"{name}, {t} thread(s)<br>batch %{{x}}: %{{y:,.4g}}<extra></extra>"))
    fig.update_xaxes(title="Batch size (samples)", type="log", tickvals=sorted({r["batch_size"] for r in rows}))
    fig.update_yaxes(title=labels.get(metric, metric), rangemode="tozero")
    return layout(fig, height=height)


__all__ = ["op_time_figure", "scaling_figure", "sensitivity_figure", "sensitivity_heatmap", "tune_figure"]
