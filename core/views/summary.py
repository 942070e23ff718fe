"""The one-screen summary as a figure (what Compare's Summary view shows) and as PNG / PDF files: the same plotly
figure, rendered by kaleido with the system's Chromium, offline."""

from __future__ import annotations

import textwrap
import threading

import plotly.graph_objects as go

from core import format as fmt
from core.errors import StepFailedError
from core.results.summary import Summary

WIDTH_PX, HEIGHT_PX = 1280, 720  # 16:9, one slide or one laptop screen
PNG_SCALE = 2  # 2560 x 1440 pixels: sharp when pasted into a slide
EXPORT_FORMATS = ("png", "pdf")
INK, MUTED, ACCENT, GOOD, BAD, TILE = "#111827", "#6b7280", "#4f46e5", "#15803d", "#b91c1c", "#f3f4f6"
PERPLEXITY_NOISE_PCT = 1.0  # DESIGN.md's decoder target: int4 / int8 perplexity within +1%
# One Chromium at a time: each export starts one (~300 MB for a few seconds), and a workshop clicks together.
_EXPORT_LOCK = threading.Lock()


def _tiles(summary: Summary) -> list[tuple[str, str, str, str]]:
    """(big number, what it is, detail, colour) for the four tiles."""
    smaller = summary.x_smaller
    size_colour = GOOD if smaller and smaller >= 1.1 else BAD if smaller and smaller <= 0.9 else INK
    speed = summary.speed_ratio
    if summary.speed_verdict is not None:
        speed_colour = {"faster": GOOD, "slower": BAD}.get(summary.speed_verdict, INK)
    else:
        speed_colour = GOOD if speed and speed >= 1.1 else BAD if speed and speed <= 0.9 else INK
    speed_detail = summary.speed_text.split(" ", 1)[1] if " " in summary.speed_text else ""
    if summary.speed_verdict == "no measurable difference":
        speed_detail = summary.speed_text
    drop = summary.quality_drop
    # below one test sample (classifiers) or 1% of perplexity (decoders, the bench's target) is not a loss to flag
    noise = PERPLEXITY_NOISE_PCT if summary.decoder else (summary.quality_resolution or 0.01) * 0.999
    quality_colour = INK if drop is None or abs(drop) < noise else BAD if drop > 0 else GOOD
    cost = (fmt.format_usd(summary.cost_usd), summary.cost_unit,
            f"baseline {fmt.format_usd(summary.base_cost_usd)}" if summary.base_cost_usd is not None else "")
    return [(fmt.format_ratio(smaller), "smaller", summary.size_text, size_colour),
            (fmt.format_ratio(speed), summary.speed_label, speed_detail.strip("()") if speed_detail else "",
             speed_colour),
            (summary.quality_change, f"{summary.quality_label} change", summary.quality_note, quality_colour),
            (*cost, INK)]


def summary_figure(summary: Summary) -> go.Figure:
    """The summary as one 16:9 figure: title, four tiles (×smaller, ×faster, quality change, cost per million),
    the verdict sentence and where it was measured."""
    fig = go.Figure()
    fig.update_layout(width=WIDTH_PX, height=HEIGHT_PX, margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      paper_bgcolor="white", plot_bgcolor="white", showlegend=False,
                      xaxis={"visible": False, "range": [0, 1], "fixedrange": True},
                      yaxis={"visible": False, "range": [0, 1], "fixedrange": True},
                      font={"family": "Inter, Segoe UI, Roboto, Helvetica, Arial, sans-serif", "color": INK})

    def text(x, y, value, size, colour=INK, bold=False, anchor="left"):
        fig.add_annotation(x=x, y=y, xref="paper", yref="paper", text=f"<b>{value}</b>" if bold else value,
                           showarrow=False, xanchor=anchor, yanchor="middle", align=anchor,
                           font={"size": size, "color": colour})

    text(0.04, 0.91, f"{summary.model} → {summary.variant}", 34, bold=True)
    text(0.04, 0.84, f"Featherweight summary · against the baseline measured in the same run · batch "
                     f"{summary.batch_size}", 16, MUTED)
    gap, left = 0.027, 0.04
    width = (0.92 - 3 * gap) / 4
    for i, (big, label, detail, colour) in enumerate(_tiles(summary)):
        x0 = left + i * (width + gap)
        fig.add_shape(type="rect", xref="paper", yref="paper", x0=x0, x1=x0 + width, y0=0.40, y1=0.76,
                      fillcolor=TILE, line={"width": 0}, layer="below")
        text(x0 + 0.02, 0.66, big, 44 if len(big) <= 9 else 30, colour, bold=True)
        text(x0 + 0.02, 0.545, label, 17)
        text(x0 + 0.02, 0.47, _shorten(detail, 30), 13, MUTED)
    verdict = "<br>".join(textwrap.wrap(summary.verdict, 105))
    fig.add_shape(type="rect", xref="paper", yref="paper", x0=0.04, x1=0.96, y0=0.13, y1=0.33,
                  fillcolor="#eef2ff", line={"width": 0}, layer="below")
    text(0.06, 0.23, verdict, 20, INK)
    text(0.04, 0.05, _shorten(f"Measured on {summary.measured_on}" + (f" · run {summary.run_id}"
                                                                     if summary.run_id else ""), 150), 13, MUTED)
    return fig


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 1] + "…"


def summary_image(summary: Summary, image_format: str) -> bytes:
    """The summary figure as PNG (2560 x 1440) or PDF (one page), rendered by kaleido with the system's Chromium.

    Raises:
        StepFailedError: an unknown format, kaleido missing, or no Chromium to render with (one line each).
    """
    if image_format not in EXPORT_FORMATS:
        raise StepFailedError(f"image format {image_format!r} is not supported; allowed: {', '.join(EXPORT_FORMATS)}")
    try:
        import kaleido  # noqa: F401 - plotly renders through it; a missing one gets our message, not plotly's
    except ImportError:
        raise StepFailedError("PNG / PDF export needs kaleido: pip install -e '.[export]'") from None
    figure = summary_figure(summary)
    with _EXPORT_LOCK:
        try:
            return figure.to_image(format=image_format, width=WIDTH_PX, height=HEIGHT_PX,
                                   scale=PNG_SCALE if image_format == "png" else 1)
        except Exception as exc:  # noqa: BLE001 - kaleido raises its own types (no Chrome found, a crash)
            raise StepFailedError(f"could not render the summary as {image_format.upper()}: "
                                  f"{fmt.first_line(exc)} (kaleido needs a Chrome or Chromium: apt-get install "
                                  "chromium)") from None


__all__ = ["EXPORT_FORMATS", "HEIGHT_PX", "PNG_SCALE", "WIDTH_PX", "summary_figure", "summary_image"]
