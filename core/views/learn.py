"""Plotly figures for the Learn explainers, drawn from the plain numbers ``core.teach.explainers`` computes (no Streamlit)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.views.charts import MUTED, PALETTE, empty_figure, layout
from core.format import size_unit

# One colour per idea, the same on every chart: the original, its quantized / pruned form, and each method.
ORIGINAL = "#9ca3af"
QUANTIZED = PALETTE[0]
PER_TENSOR = PALETTE[1]
PER_CHANNEL = PALETTE[2]
METHOD_COLORS = {"minmax": PALETTE[0], "percentile": PALETTE[1], "entropy": PALETTE[2]}
STUDENT_COLORS = {"with teacher": PALETTE[0], "labels only": PALETTE[1]}
PRUNED_CELL = "#f3d9d9"  # the heatmap background shows through where a weight was pruned


def _layout(fig: go.Figure, *, height: int = 360, legend: bool = True, title: str | None = None) -> go.Figure:
    """The dashboard's chart style (`core.views.charts.layout`), at the Learn page's height and with touching
    histogram bars."""
    return layout(fig, title=title, height=height, legend=legend, bargap=0.02)


COMB_HEIGHT = 0.12  # the 8-bit grid's ticks, as a share of the histogram's height


def _vertical_lines(xs, y_top: float) -> tuple[list, list]:
    """x / y arrays drawing one vertical segment per x in a single trace (None breaks the line)."""
    x_out, y_out = [], []
    for x in xs:
        x_out += [float(x), float(x), None]
        y_out += [0.0, y_top, None]
    return x_out, y_out


def _bar_centres(hist: dict) -> tuple[np.ndarray, np.ndarray, float]:
    edges = np.asarray(hist["edges"], dtype=np.float64)
    return (edges[:-1] + edges[1:]) / 2, np.asarray(hist["counts"]), float(edges[1] - edges[0])


# --------------------------------------------------------------------------------------------------------------
# Quantization


def weight_grid_figure(hist: dict, grid: list, level_counts: list, *, bits: int, height: int = 380) -> go.Figure:
    """The weights' histogram, the quantization grid as vertical lines, and how many weights land on each level.

    Args:
        hist: {"counts", "edges"} of the original weights.
        grid: the real value of every integer code.
        level_counts: weights per grid value after quantization.
    """
    centres, counts, width = _bar_centres(hist)
    top = float(max(counts.max() if counts.size else 1, 1))
    fig = go.Figure()
    fig.add_bar(x=centres, y=counts, width=width, marker_color=ORIGINAL, name="weights (float32)",
                hovertemplate="%{x:.4g}: %{y} weights<extra></extra>")
    if len(grid) > 64:
        # 255 full-height lines at 0.25 opacity were invisible: many levels are drawn as a comb of solid ticks
        # under the histogram, one per level, dense where the grid is fine.
        xs, ys = _vertical_lines(grid, -top * COMB_HEIGHT)
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=QUANTIZED, width=1), opacity=0.9,
                        name=f"int{bits} grid ({len(grid)} levels, one tick each)", hoverinfo="skip")
        fig.update_yaxes(range=[-top * COMB_HEIGHT * 1.15, top * 1.08])
    else:
        xs, ys = _vertical_lines(grid, top * 1.05)
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=QUANTIZED, width=1.5), opacity=0.7,
                        name=f"int{bits} grid ({len(grid)} levels)", hoverinfo="skip")
    if len(grid) <= 64:  # with few levels, show where the weights pile up
        scale = top / max(1, max(level_counts))
        fig.add_scatter(x=grid, y=np.asarray(level_counts) * scale, mode="markers",
                        marker=dict(color=QUANTIZED, size=9, symbol="diamond"), name="weights per level (scaled)",
                        customdata=level_counts, hovertemplate="%{x:.4g}: %{customdata} weights<extra></extra>")
    fig.update_xaxes(title_text="weight value")
    fig.update_yaxes(title_text="count")
    return _layout(fig, height=height)


def channel_error_figure(table: pd.DataFrame, height: int = 340) -> go.Figure:
    """RMS quantization error of every output channel with one shared scale vs its own scale."""
    frame = table.sort_values("absmax").reset_index(drop=True)
    fig = go.Figure()
    fig.add_bar(x=frame.index, y=frame["rms_error_per_tensor"], name="one scale per tensor",
                marker_color=PER_TENSOR, customdata=frame[["channel", "absmax"]],
                hovertemplate="channel %{customdata[0]} (max |w| %{customdata[1]:.3g}): RMS error %{y:.3g}"
                              "<extra></extra>")
    fig.add_bar(x=frame.index, y=frame["rms_error_per_channel"], name="one scale per channel",
                marker_color=PER_CHANNEL, customdata=frame[["channel", "absmax"]],
                hovertemplate="channel %{customdata[0]} (max |w| %{customdata[1]:.3g}): RMS error %{y:.3g}"
                              "<extra></extra>")
    fig.update_layout(barmode="group", bargap=0.1)
    fig.update_xaxes(title_text="channels, small → large weights", showticklabels=False)
    fig.update_yaxes(title_text="RMS error")
    return _layout(fig, height=height)


def bit_width_figure(curve: pd.DataFrame, bits: int, height: int = 300) -> go.Figure:
    """Signal-to-quantization-noise ratio per bit width (higher is better), the chosen width marked."""
    fig = go.Figure()
    for column, name, color in (("sqnr_db_per_tensor", "per tensor", PER_TENSOR),
                                ("sqnr_db_per_channel", "per channel", PER_CHANNEL)):
        fig.add_scatter(x=curve["bits"], y=curve[column], mode="lines+markers", name=name,
                        line=dict(color=color, width=3), hovertemplate="%{x} bits: %{y:.1f} dB<extra></extra>")
    fig.add_vline(x=bits, line=dict(color=MUTED, dash="dot"))
    fig.update_xaxes(title_text="bits", dtick=1)
    fig.update_yaxes(title_text="SQNR (dB)")
    return _layout(fig, height=height)


def activation_ranges_figure(hist: dict, ranges: dict, *, log_y: bool = True, height: int = 380) -> go.Figure:
    """Real activation values with each calibration method's clipping range as a pair of vertical lines."""
    centres, counts, width = _bar_centres(hist)
    top = float(max(counts.max() if counts.size else 1, 1))
    fig = go.Figure()
    fig.add_bar(x=centres, y=counts, width=width, marker_color=ORIGINAL, name="activations",
                hovertemplate="%{x:.4g}: %{y}<extra></extra>")
    for i, (method, (lo, hi)) in enumerate(ranges.items()):
        xs, ys = _vertical_lines([lo, hi], top * (1.6 if log_y else 1.05))
        fig.add_scatter(x=xs, y=ys, mode="lines", name=f"{method} [{lo:.3g}, {hi:.3g}]",
                        line=dict(color=METHOD_COLORS.get(method, PALETTE[3 + i % 5]), width=3,
                                  dash=("solid", "dash", "dot")[i % 3]), hoverinfo="skip")
    fig.update_xaxes(title_text="activation value")
    fig.update_yaxes(title_text="count", type="log" if log_y else "linear")
    return _layout(fig, height=height)


# --------------------------------------------------------------------------------------------------------------
# Pruning


def mask_heatmaps_figure(matrices: dict, titles: dict | None = None, height: int = 360) -> go.Figure:
    """|w| heatmaps side by side, one per pruning pattern; pruned weights are blank (the pale background).

    Args:
        matrices: pattern -> 2-D array (NaN where pruned), or None where the pattern does not apply.
    """
    names = list(matrices)
    titles = titles or {}
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[titles.get(n, n) for n in names],
                        horizontal_spacing=0.03)
    finite = [np.nanmax(m) for m in matrices.values() if m is not None and np.isfinite(m).any()]
    zmax = float(max(finite)) if finite else 1.0
    for i, name in enumerate(names, start=1):
        matrix = matrices[name]
        if matrix is None:
            fig.add_annotation(text="not applicable<br>(inputs not a multiple of 4)", showarrow=False,
                               xref=f"x{i} domain" if i > 1 else "x domain",
                               yref=f"y{i} domain" if i > 1 else "y domain", x=0.5, y=0.5,
                               font=dict(color=MUTED))
            continue
        fig.add_heatmap(z=matrix, zmin=0, zmax=zmax, colorscale="Viridis", showscale=i == len(names),
                        colorbar=dict(title="|w|", thickness=12), hovertemplate="out %{y}, in %{x}: |w| %{z:.3g}"
                                                                                "<extra></extra>", row=1, col=i)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    fig = _layout(fig, height=height, legend=False)
    fig.update_layout(plot_bgcolor=PRUNED_CELL)
    return fig


def sparsity_curve_figure(sweep: pd.DataFrame, *, current: float | None = None, height: int = 360) -> go.Figure:
    """Eval accuracy against sparsity, without and with a short fine-tune."""
    if sweep is None or sweep.empty:
        return empty_figure("Run the sweep to see the curve", height)
    fig = go.Figure()
    fig.add_scatter(x=sweep["sparsity"] * 100, y=sweep["accuracy"] * 100, mode="lines+markers",
                    name="pruned, no fine-tune", line=dict(color=PER_TENSOR, width=3),
                    hovertemplate="%{x:.0f}% zero: %{y:.1f}%<extra></extra>")
    tuned = sweep.dropna(subset=["accuracy_finetuned"]) if "accuracy_finetuned" in sweep else sweep.iloc[0:0]
    if not tuned.empty:
        fig.add_scatter(x=tuned["sparsity"] * 100, y=tuned["accuracy_finetuned"].astype(float) * 100,
                        mode="lines+markers", name="pruned + fine-tuned", line=dict(color=PER_CHANNEL, width=3),
                        hovertemplate="%{x:.0f}% zero: %{y:.1f}%<extra></extra>")
    if current is not None:
        fig.add_vline(x=current * 100, line=dict(color=MUTED, dash="dot"))
    fig.update_xaxes(title_text="weights set to zero (%)", range=[-2, 100])
    fig.update_yaxes(title_text="eval accuracy (%)", range=[0, 101])
    return _layout(fig, height=height)


# --------------------------------------------------------------------------------------------------------------
# Distillation


def soft_targets_figure(probs, label: int | None, temperature: float, height: int = 320) -> go.Figure:
    """The teacher's probabilities for one sample at temperature T, beside the one-hot label."""
    probs = np.asarray(probs, dtype=np.float64)
    classes = [str(i) for i in range(probs.size)]
    fig = go.Figure()
    if label is not None:
        fig.add_bar(x=classes, y=[100.0 if i == label else 0.0 for i in range(probs.size)], name="label (one-hot)",
                    marker_color=ORIGINAL, hovertemplate="class %{x}: %{y:.0f}%<extra></extra>")
    fig.add_bar(x=classes, y=probs * 100, name=f"teacher at T = {temperature:g}", marker_color=QUANTIZED,
                hovertemplate="class %{x}: %{y:.2f}%<extra></extra>")
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="probability (%)", range=[0, 101])
    return _layout(fig, height=height)


def temperature_figure(curve: pd.DataFrame, temperature: float, max_entropy_bits: float,
                       height: int = 300) -> go.Figure:
    """Mean entropy of the teacher's soft targets over the eval set as T grows, up to log2(classes)."""
    fig = go.Figure()
    fig.add_scatter(x=curve["temperature"], y=curve["mean_entropy_bits"], mode="lines+markers",
                    name="soft targets", line=dict(color=QUANTIZED, width=3),
                    hovertemplate="T = %{x:g}: %{y:.2f} bits<extra></extra>")
    fig.add_hline(y=max_entropy_bits, line=dict(color=MUTED, dash="dash"),
                  annotation_text=f"uniform guess ({max_entropy_bits:.2f} bits)", annotation_position="bottom left")
    fig.add_hline(y=0, line=dict(color=ORIGINAL, dash="dot"), annotation_text="one-hot label (0 bits)",
                  annotation_position="top right")
    fig.add_vline(x=temperature, line=dict(color=MUTED, dash="dot"))
    fig.update_xaxes(title_text="temperature T")
    fig.update_yaxes(title_text="mean entropy (bits)")
    return _layout(fig, height=height, legend=False)


def distill_curves_figure(points: list, *, epochs: int | None = None, height: int = 360) -> go.Figure:
    """Eval accuracy and eval loss per epoch of the two students (with and without the teacher)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["eval accuracy (%)", "eval loss (cross-entropy)"],
                        horizontal_spacing=0.1)
    frame = pd.DataFrame(points)
    for student in ("with teacher", "labels only"):
        rows = frame[frame["student"] == student] if not frame.empty else frame
        color = STUDENT_COLORS[student]
        fig.add_scatter(x=rows["epoch"] if not rows.empty else [], y=rows["eval_accuracy"] * 100
                        if not rows.empty else [], mode="lines+markers", name=student,
                        line=dict(color=color, width=3), legendgroup=student, row=1, col=1,
                        hovertemplate="epoch %{x}: %{y:.1f}%<extra></extra>")
        fig.add_scatter(x=rows["epoch"] if not rows.empty else [], y=rows["eval_loss"] if not rows.empty else [],
                        mode="lines+markers", name=student, line=dict(color=color, width=3), legendgroup=student,
                        showlegend=False, row=1, col=2, hovertemplate="epoch %{x}: %{y:.3f}<extra></extra>")
    if epochs:
        fig.update_xaxes(range=[-0.3, epochs + 0.3])
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 101], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig = _layout(fig, height=height)
    fig.update_layout(legend=dict(y=1.12), margin=dict(t=70))  # above the two subplot titles
    return fig


# --------------------------------------------------------------------------------------------------------------
# Size and speed


def technique_size_figure(table: pd.DataFrame, height: int = 380) -> go.Figure:
    """Per technique (rows, baseline on top): the estimated file size (left) and the multiply-adds per sample
    (right): size and arithmetic, the two things a technique changes."""
    unit, scale = size_unit(float(table["size_bytes"].max() or 1))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=(f"estimated size ({unit})", "multiply-adds per sample"))
    fig.add_trace(go.Bar(y=table["technique"], x=table["size_bytes"] / scale, orientation="h",
                         marker_color=QUANTIZED, customdata=np.stack([table["x_smaller"], table["bytes_per_weight"]],
                                                                     axis=1),
                         text=[f"{x:.1f}× smaller" if x > 1.05 else "same size" for x in table["x_smaller"]],
                         textposition="auto", hovertemplate="%{y}: %{x:.1f} " + unit +
                         " (%{customdata[1]:.2f} bytes per weight)<extra></extra>"), 1, 1)
    if "macs_per_sample" in table:
        macs = table["macs_per_sample"].astype(float)
        base = float(macs.iloc[0]) if len(macs) and macs.iloc[0] else None
        fig.add_trace(go.Bar(y=table["technique"], x=macs, orientation="h", marker_color=ORIGINAL,
                             text=[f"{base / m:.1f}× fewer" if base and m and base / m > 1.05 else "same" for m in macs],
                             textposition="auto", hovertemplate="%{y}: %{x:,.0f} MACs per sample<extra></extra>"),
                      1, 2)
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=height, legend=False)


def estimate_vs_measured_figure(table: pd.DataFrame, height: int = 360) -> go.Figure:
    """Estimated and measured size of every variant of a run, side by side."""
    if table is None or table.empty:
        return empty_figure("No finished variants in this run", height)
    unit, scale = size_unit(float(max(table["measured_bytes"].max(), (table["estimate_bytes"].max() or 0))))
    fig = go.Figure()
    fig.add_bar(x=table["variant"], y=table["estimate_bytes"].astype(float) / scale, name="estimated before the run",
                marker_color=ORIGINAL, hovertemplate="%{x}: %{y:.1f} " + unit + "<extra></extra>")
    fig.add_bar(x=table["variant"], y=table["measured_bytes"] / scale, name="measured after the run",
                marker_color=QUANTIZED, hovertemplate="%{x}: %{y:.1f} " + unit + "<extra></extra>")
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_yaxes(title_text=f"size ({unit})")
    return _layout(fig, height=height)


def finite(value) -> float | None:
    """A float for display, or None for inf / NaN."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def int4_block_figure(table: pd.DataFrame, height: int = 360) -> go.Figure:
    """int4 block quantization of a decoder's weights: error (left axis) and bits per weight (right axis) for each
    block size, from ``core.teach.int4.block_size_table`` (rows with block_size 0, the fp32 original, are left out)."""
    rows = table[table["block_size"] > 0] if not table.empty else table
    if rows.empty:
        return empty_figure("No weights to quantize.")
    labels = [str(int(b)) for b in rows["block_size"]]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=labels, y=rows["relative_rms_error"] * 100, name="relative RMS error (%)",
                         marker_color=QUANTIZED, hovertemplate="block %{x}: error %{y:.2f}%<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=rows["bits_per_weight"], name="bits per weight (4 + scale)",
                             mode="lines+markers", line=dict(color=PER_TENSOR, width=3),
                             hovertemplate="block %{x}: %{y:.2f} bits per weight<extra></extra>"), secondary_y=True)
    fig.update_xaxes(title="Block size (weights sharing one scale)", type="category")
    fig.update_yaxes(title="Relative RMS error (%)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="Bits per weight", secondary_y=True, rangemode="tozero", showgrid=False)
    return _layout(fig, height=height)


def depthwise_spread_figure(view: dict, height: int = 380) -> go.Figure:
    """Left: the worst depthwise layer's per-channel max |w|, largest first, before and after equalization (log
    scale). Right: every conv layer's range spread (largest / smallest channel) before and after."""
    layers = view.get("layers")
    if layers is None or len(layers) == 0:
        return empty_figure("This model has no Conv layers")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=(f"Channels of {view['worst']}", "Range spread per layer"))
    before = np.sort(np.asarray(view["ranges_before"], dtype=float))[::-1]
    after = np.sort(np.asarray(view["ranges_after"], dtype=float))[::-1]
    channels = np.arange(1, len(before) + 1)
    fig.add_trace(go.Bar(x=channels, y=before, name="before equalization", marker_color=PER_TENSOR), 1, 1)
    if len(after):
        fig.add_trace(go.Bar(x=channels, y=after, name="after equalization", marker_color=PER_CHANNEL), 1, 1)
    labels = [f"{i + 1}. {kind}" for i, kind in enumerate(layers["kind"])]
    fig.add_trace(go.Scatter(x=labels, y=layers["spread_before"], mode="markers+lines", name="spread before",
                             marker_color=PER_TENSOR, showlegend=False, text=layers["layer"],
                             hovertemplate="%{text}<br>spread %{y:.1f}x<extra>before</extra>"), 1, 2)
    fig.add_trace(go.Scatter(x=labels, y=layers["spread_after"], mode="markers+lines", name="spread after",
                             marker_color=PER_CHANNEL, showlegend=False, text=layers["layer"],
                             hovertemplate="%{text}<br>spread %{y:.1f}x<extra>after</extra>"), 1, 2)
    fig.update_yaxes(type="log", title_text="max |weight| of the channel", row=1, col=1)
    fig.update_yaxes(type="log", title_text="largest / smallest channel", row=1, col=2)
    fig.update_xaxes(title_text="channel (sorted)", row=1, col=1)
    fig.update_xaxes(title_text="conv layer, in graph order", showticklabels=False, row=1, col=2)
    fig.update_layout(barmode="overlay")
    fig.update_traces(opacity=0.75, selector=dict(type="bar"))
    _layout(fig, height=height)
    # The legend under the plots: on top it sat on the subplot titles.
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
                             margin=dict(t=40, b=70))


# --------------------------------------------------------------------------------------------------------------
# Decoding (core.teach.decoding)

PRECISION_COLORS = {"fp32": ORIGINAL, "int8": PER_TENSOR, "int4": QUANTIZED}


def kv_cache_figure(view: dict, height: int = 340) -> go.Figure:
    """Bytes a decoded token reads: the weights at each precision (flat lines) and the KV cache, which grows with
    every token of the context (one key and one value vector per layer and KV head)."""
    tokens = view["kv_curve"]["tokens"]
    kv = np.asarray(view["kv_curve"]["bytes"], dtype=float)
    unit, scale = size_unit(max(max(view["weight_bytes"].values()), float(kv.max()) if kv.size else 1.0))
    fig = go.Figure()
    for precision, nbytes in view["weight_bytes"].items():
        fig.add_trace(go.Scatter(x=[tokens[0], tokens[-1]], y=[nbytes / scale] * 2, mode="lines",
                                 name=f"weights, {precision}", line=dict(color=PRECISION_COLORS[precision], width=3),
                                 hovertemplate=f"weights in {precision}: %{{y:.3g}} {unit} per token<extra></extra>"))
    fig.add_trace(go.Scatter(x=tokens, y=kv / scale, mode="lines", name="KV cache (float32)",
                             line=dict(color=MUTED, width=3, dash="dot"),
                             hovertemplate=f"%{{x}} tokens of context: KV cache %{{y:.3g}} {unit}<extra></extra>"))
    fig.update_xaxes(title="Tokens of context so far")
    fig.update_yaxes(title=f"Bytes read per decoded token ({unit})", rangemode="tozero")
    return _layout(fig, height=height)


def decode_roofline_figure(view: dict, height: int = 360) -> go.Figure:
    """Estimated tokens/s of each sequence against how many sequences decode together, per weight precision: flat
    while reading the weights is the limit (memory-bound), falling once the multiplies are (compute-bound)."""
    if not view.get("roofline"):
        return empty_figure("No bandwidth measured: no estimate.")
    fig = go.Figure()
    for precision, rates in view["roofline"].items():
        fig.add_trace(go.Scatter(x=view["batches"], y=rates, mode="lines+markers", name=precision,
                                 line=dict(color=PRECISION_COLORS[precision], width=3),
                                 hovertemplate=f"{precision}, %{{x}} sequences: %{{y:,.0f}} tokens/s each "
                                               "(estimate)<extra></extra>"))
    fig.update_xaxes(title="Sequences decoded together (batch)", type="log", tickvals=view["batches"])
    fig.update_yaxes(title="Tokens/s per sequence (roofline estimate)", type="log")
    return _layout(fig, height=height)
