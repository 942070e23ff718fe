"""Vega-Lite specs for the dashboard's Compare page (no Streamlit; the page passes them to st.vega_lite_chart).

Why a second chart grammar beside `core.views.charts` (plotly): a new browser that opens Compare compiles the
chart library before the first chart draws. Streamlit's plotly.js chunk is 4.7 MB and cost ~1.5 s of a 3.2-3.8 s
first render on a 2-core server (benchmarks/first_render.py); its Vega chunk is 0.8 MB. The charts carry the same
information as their plotly twins, built from the same helpers (frontier, label placement, budget, intervals),
and the HTML report and the other pages keep plotly.

Every spec is self-contained (data inline as named `datasets`) and renders as SVG, so a browser test can read a
marker's variant from its aria label. The Pareto chart's markers carry a point selection named `PICK` on the
field `name`: clicking one selects that variant (`ui.events.clicked_variant`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.format import format_bytes, format_ms, format_pct, format_ratio, format_usd, size_unit
from core.results.compare import (QUALITY_METRICS, Budget, chosen_on, latency_column, ok_rows, pareto_front,
                                  quality_drop_pt, within_budget)
from core.results.runtimes import runtime_symbol
from core.results.table import speedup_text
from core.views.charts import (ACCENT, BASELINE_COLOR, FONT, GRID, INK, MUTED, OUT_OF_BUDGET, PALETTE,
                               color_range, label_positions, latency_error_bars, timed_rows)

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
PICK = "pick"  # the Pareto chart's selection parameter
STAR = ("M0,-1L0.2245,-0.309L0.951,-0.309L0.363,0.118L0.588,0.809L0,0.382L-0.588,0.809L-0.363,0.118L-0.951,"
        "-0.309L-0.2245,-0.309Z")
CONFIG = {
    "font": FONT, "view": {"stroke": None},
    "axis": {"gridColor": GRID, "domainColor": GRID, "tickColor": GRID, "labelColor": INK, "titleColor": INK,
             "labelFontSize": 13, "titleFontSize": 14, "titleFontWeight": "normal"},
    "legend": {"labelColor": INK, "titleColor": INK, "labelFontSize": 13, "titleFontSize": 13,
               "titleFontWeight": "normal", "orient": "top"},
    "range": {"category": PALETTE},
}
# (dx, dy, align, baseline) of a label for each plotly-style text position `label_positions` picks.
_OFFSET = 13
_PLACEMENT = {"top": (-_OFFSET, "bottom"), "bottom": (_OFFSET, "top"), "middle": (0, "middle")}
_ALIGN = {"left": (-_OFFSET, "right"), "right": (_OFFSET, "left"), "center": (0, "center")}


def _spec(height: int, layers: list | None = None, **rest) -> dict:
    spec = {"$schema": SCHEMA, "height": height, "config": CONFIG,
            "usermeta": {"embedOptions": {"renderer": "svg", "actions": False}}, **rest}
    if layers is not None:
        spec["layer"] = layers
    return spec


def _clean(value):
    """A JSON-safe scalar: NaN and numpy types become None and plain Python numbers."""
    if value is None:
        return None
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def empty_spec(message: str, height: int = 300) -> dict:
    """A blank chart that says why it is blank."""
    return _spec(height, datasets={"message": [{"text": message}]}, data={"name": "message"},
                 mark={"type": "text", "fontSize": 15, "color": MUTED, "x": {"expr": "width / 2"},
                       "y": {"expr": "height / 2"}},
                 encoding={"text": {"field": "text"}})


def _label_layers(dataset: str, positions: set[str], x: dict, y: dict, color: dict) -> list[dict]:
    """One text layer per label position in use (a mark's offset is not an encoding in Vega-Lite), each named
    `labels_<k>` (its SVG group carries that class)."""
    layers = []
    for k, position in enumerate(sorted(positions)):
        vertical, horizontal = position.split()
        dy, baseline = _PLACEMENT[vertical]
        dx, align = _ALIGN[horizontal]
        layers.append({"name": f"labels_{k}", "data": {"name": dataset},
                       "transform": [{"filter": {"field": "label_at", "equal": position}}],
                       "mark": {"type": "text", "dx": dx, "dy": dy, "align": align, "baseline": baseline,
                                "fontSize": 13},
                       "encoding": {"x": x, "y": y, "text": {"field": "name"}, "color": color}})
    return layers


def _marker_layer(dataset: str, x: dict, y: dict, color: dict, tooltip: list[dict]) -> dict:
    return {"name": "markers", "data": {"name": dataset},
            "params": [{"name": PICK, "select": {"type": "point", "fields": ["name"]}}],
            "mark": {"type": "point", "filled": True, "cursor": "pointer"},
            "encoding": {"x": x, "y": y,
                         "shape": {"field": "shape", "type": "nominal", "scale": None},
                         "size": {"field": "area", "type": "quantitative", "scale": None},
                         "stroke": {"field": "stroke", "type": "nominal", "scale": None},
                         "strokeWidth": {"field": "stroke_width", "type": "quantitative", "scale": None},
                         "opacity": {"condition": {"test": "datum.inside", "value": 1.0}, "value": 0.55},
                         "color": color, "tooltip": tooltip, "description": {"field": "name"}}}


def _marker_style(name: str, best: str | None, selected: str | None, shape: str) -> dict:
    size = 22 if name == best else 16
    return {"shape": STAR if name == best and shape == "circle" else shape, "area": round(size * size * 0.9),
            "stroke": ACCENT if name == selected else "white", "stroke_width": 3 if name == selected else 1}


def _quality_color(rows: pd.DataFrame, color_by: str | None, *, reverse: bool = False, title: str | None = None
                   ) -> tuple[dict, pd.Series | None]:
    """The colour encoding: the quality metric on a viridis scale for variants inside the budget, grey outside."""
    if color_by is None or color_by not in rows or rows[color_by].isna().all():
        return {"condition": {"test": "datum.inside", "value": ACCENT}, "value": OUT_OF_BUDGET}, None
    values = rows[color_by] * (100 if color_by in ("accuracy", "agreement") else 1)
    low, high = color_range(values, color_by) if not reverse else (float(values.min()), float(values.max()))
    if math.isclose(low, high):
        high = low + 1e-6
    return {"condition": {"test": "!datum.inside", "value": OUT_OF_BUDGET}, "field": "quality",
            "type": "quantitative", "scale": {"scheme": "viridis", "domain": [low, high], "reverse": reverse},
            "legend": {"title": title or QUALITY_METRICS.get(color_by, color_by), "orient": "right",
                       "gradientLength": 200}}, values


def pareto_spec(frame: pd.DataFrame, batch_size: int, *, color_by: str = "accuracy", budget: Budget | None = None,
                best: str | None = None, selected: str | None = None, height: int = 480,
                best_label: str = "best within budget") -> dict:
    """Size vs p50 latency at `batch_size`, coloured by a quality metric, with the Pareto frontier dotted (as
    `core.views.charts.pareto_figure`): variants outside the budget grey, the best one inside a star labelled
    `best_label`, the baseline a diamond, each latency with the speed-up's 95% interval as an error bar."""
    if "decode_tok_s" in frame:
        return decoder_pareto_spec(frame, selected=selected, height=height, budget=budget, best=best)
    rows, why_empty = timed_rows(frame, batch_size)
    if rows is None:
        return empty_spec(why_empty)
    y_col = latency_column(batch_size)
    unit, scale = size_unit(rows["size_bytes"].max())
    x, y = rows["size_bytes"] / scale, rows[y_col].astype(float)
    x_top, y_top = float(x.max()) * 1.12 or 1.0, float(y.max()) * 1.12 or 1.0
    inside = within_budget(chosen_on(rows), budget or Budget(), batch_size)
    up, down = latency_error_bars(rows, batch_size)
    names = list(rows["name"])
    has_best = best is not None and best in set(names)
    placed = label_positions(list(x) + ([float(x[names.index(best)])] if has_best else []),
                             list(y) + ([float(y[names.index(best)])] if has_best else []),
                             names + ([best_label] if has_best else []), x_range=(0.0, x_top), y_range=(0.0, y_top),
                             height_px=max(200, height - 120))
    if color_by not in rows or rows[color_by].isna().all():
        color_by = next((m for m in QUALITY_METRICS if m in rows and rows[m].notna().any()), None)
    color, quality = _quality_color(rows, color_by)
    by_runtime = "runtime" in rows and rows["runtime"].nunique() > 1
    drop, drop_label = quality_drop_pt(rows)
    sizes = sorted(int(c.split("bs")[1]) for c in rows.columns if c.startswith("p50_ms_bs"))
    points = []
    for i, row in rows.iterrows():
        name = row["name"]
        if by_runtime:  # a bake-off: the shape is the runtime
            shape = runtime_symbol(row["runtime"])
            picked = selected in (name, row.get("variant"))
            style = {"shape": shape, "area": round((22 if name == best else 16) ** 2 * 0.9),
                     "stroke": ACCENT if picked else BASELINE_COLOR if row.get("variant") == "baseline" else "white",
                     "stroke_width": 3 if picked else 2.5 if row.get("variant") == "baseline" else 1}
        else:
            style = _marker_style(name, best, selected, "diamond" if name == "baseline" else "circle")
        points.append({
            "name": name, "x": float(x[i]), "y": float(y[i]), "low": float(y[i] - down[i]),
            "high": float(y[i] + up[i]), "inside": bool(inside[i]), "label_at": placed[i],
            "quality": None if quality is None else _clean(quality[i]), **style,
            "technique": str(row.get("technique") or ""), "size": format_bytes(row["size_bytes"]),
            "smaller": format_ratio(row["x_smaller"]), "p50": format_ms(row[y_col]),
            "speedup": speedup_text(row, batch_size), "accuracy": format_pct(row.get("accuracy")),
            "drop": "–" if pd.isna(drop[i]) else f"{drop[i]:.2f}",
            **{f"bs{bs}": (f"p50 {format_ms(row.get(f'p50_ms_bs{bs}'))}, p99 {format_ms(row.get(f'p99_ms_bs{bs}'))}, "
                           f"speed-up {speedup_text(row, bs)}, "
                           f"{format_usd(row.get(f'usd_per_million_bs{bs}'))} per million") for bs in sizes}})
    datasets = {"points": points}
    X = {"field": "x", "type": "quantitative", "title": f"Model file size ({unit})",
         "scale": {"domain": [0, x_top], "nice": False}}
    Y = {"field": "y", "type": "quantitative", "title": f"Latency p50 at batch {batch_size} (ms)",
         "scale": {"domain": [0, y_top], "nice": False}}
    layers: list[dict] = []
    front = pareto_front(rows, "size_bytes", y_col)
    if front:  # a staircase run out to the plot's edges, so one variant beating all is a corner, not nothing
        ordered = rows.set_index("name").loc[front]
        fx = [float(v) for v in ordered["size_bytes"] / scale]
        fy = [float(v) for v in ordered[y_col]]
        datasets["frontier"] = [{"i": i, "x": a, "y": b}
                                for i, (a, b) in enumerate(zip([fx[0]] + fx + [x_top], [y_top] + fy + [fy[-1]]))]
        layers.append({"data": {"name": "frontier"},
                       "mark": {"type": "line", "interpolate": "step-after", "strokeDash": [3, 4], "color": ACCENT,
                                "strokeWidth": 2, "clip": True},
                       "encoding": {"x": X, "y": Y, "order": {"field": "i", "type": "quantitative"}}})
    layers.append({"data": {"name": "points"}, "transform": [{"filter": "datum.high > datum.low"}],
                   "mark": {"type": "rule", "strokeWidth": 1.2},
                   "encoding": {"x": X, "y": {**Y, "field": "low"}, "y2": {"field": "high"},
                                "color": {"condition": {"test": "datum.inside", "value": INK}, "value": MUTED}}})
    tooltip = [{"field": "name", "title": "variant"}, {"field": "technique"}, {"field": "size"},
               {"field": "smaller", "title": "× smaller"}, {"field": "p50", "title": f"p50 at batch {batch_size}"},
               {"field": "speedup", "title": "speed-up"}, {"field": "accuracy"}, {"field": "drop", "title": drop_label},
               *({"field": f"bs{bs}", "title": f"batch {bs}"} for bs in sizes)]
    layers.append(_marker_layer("points", X, Y, color, tooltip))
    layers += _label_layers("points", {p["label_at"] for p in points}, X, Y,
                            {"condition": {"test": "datum.inside", "value": INK}, "value": MUTED})
    if has_best:
        vertical, horizontal = placed[-1].split()
        dy = {"top": -30, "bottom": 30}.get(vertical, 0)
        dx = {"left": -60, "right": 60}.get(horizontal, 0) or 40
        point = next(p for p in points if p["name"] == best)
        datasets["best"] = [{"x": point["x"], "y": point["y"], "text": best_label}]
        layers.append({"name": "best_label", "data": {"name": "best"},
                       "mark": {"type": "text", "dx": dx, "dy": dy, "color": ACCENT, "fontSize": 13},
                       "encoding": {"x": X, "y": Y, "text": {"field": "text"}}})
    if budget is not None and budget.max_latency_ms is not None:
        layers.append({"mark": {"type": "rule", "strokeDash": [6, 4], "color": MUTED},
                       "encoding": {"y": {"datum": float(budget.max_latency_ms), "type": "quantitative"}}})
    if budget is not None and budget.max_size_bytes is not None:
        layers.append({"mark": {"type": "rule", "strokeDash": [6, 4], "color": MUTED},
                       "encoding": {"x": {"datum": float(budget.max_size_bytes / scale), "type": "quantitative"}}})
    return _spec(height, layers, datasets=datasets)


def decoder_pareto_spec(frame: pd.DataFrame, *, selected: str | None = None, height: int = 480,
                        budget: Budget | None = None, best: str | None = None) -> dict:
    """A decoder run: model size vs decode tokens/s at batch 1, coloured by held-out perplexity (lower is
    better); the frontier (smaller and faster) dotted; outside the budget grey, the best inside a star."""
    rows = ok_rows(frame)
    if rows.empty or rows["decode_tok_s"].isna().all():
        return empty_spec("No measured variants yet: results appear here as each variant finishes.")
    rows = rows[rows["decode_tok_s"].notna()].reset_index(drop=True)
    unit, scale = size_unit(rows["size_bytes"].max())
    x, y = rows["size_bytes"] / scale, rows["decode_tok_s"].astype(float)
    x_top, y_top = float(x.max()) * 1.15 or 1.0, float(y.max()) * 1.15 or 1.0
    inside = within_budget(rows, budget or Budget(), 1)
    color, quality = _quality_color(rows, "perplexity" if "perplexity" in rows else None, reverse=True,
                                    title="Perplexity (lower is better)")
    kl = rows["kl_per_token"] if "kl_per_token" in rows else pd.Series([None] * len(rows))
    agreement = rows["next_token_agreement"] if "next_token_agreement" in rows else pd.Series([None] * len(rows))
    points = []
    for i, row in rows.iterrows():
        name = row["name"]
        points.append({
            "name": name, "x": float(x[i]), "y": float(y[i]), "inside": bool(inside[i]), "label_at": "top center",
            "quality": None if quality is None else _clean(quality[i]),
            **_marker_style(name, best, selected, "diamond" if name == "baseline" else "circle"),
            "size": format_bytes(row["size_bytes"]), "decode": f"{y[i]:,.0f}",
            "perplexity": "—" if quality is None or pd.isna(quality[i]) else f"{quality[i]:.3f}",
            "agreement": "—" if pd.isna(agreement[i]) else f"{agreement[i] * 100:.1f}%",
            "kl": "—" if pd.isna(kl[i]) else f"{kl[i]:.2e}"})
    datasets = {"points": points}
    X = {"field": "x", "type": "quantitative", "title": f"Model file size ({unit})",
         "scale": {"domain": [0, x_top], "nice": False}}
    Y = {"field": "y", "type": "quantitative", "title": "Decode tokens/s at batch 1 (higher is better)",
         "scale": {"domain": [0, y_top], "nice": False}}
    layers: list[dict] = []
    front, best_rate = [], -1.0
    for _, row in rows.sort_values("size_bytes").iterrows():  # smaller first: on it when faster than all smaller
        if row["decode_tok_s"] > best_rate:
            front.append((float(row["size_bytes"]) / scale, float(row["decode_tok_s"])))
            best_rate = row["decode_tok_s"]
    if front:
        datasets["frontier"] = [{"i": i, "x": a, "y": b} for i, (a, b) in enumerate(front + [(x_top, front[-1][1])])]
        layers.append({"data": {"name": "frontier"},
                       "mark": {"type": "line", "interpolate": "step-after", "strokeDash": [3, 4], "color": ACCENT,
                                "strokeWidth": 2},
                       "encoding": {"x": X, "y": Y, "order": {"field": "i", "type": "quantitative"}}})
    tooltip = [{"field": "name", "title": "variant"}, {"field": "size"}, {"field": "decode", "title": "tokens/s"},
               {"field": "perplexity"}, {"field": "kl", "title": "KL (nats/token)"},
               {"field": "agreement", "title": "next-token agreement"}]
    layers.append(_marker_layer("points", X, Y, color, tooltip))
    layers += _label_layers("points", {"top center"}, X, Y,
                            {"condition": {"test": "datum.inside", "value": INK}, "value": MUTED})
    return _spec(height, layers, datasets=datasets)


def latency_percentiles_spec(latency: pd.DataFrame, batch_size: int, height: int = 380, *,
                             decoder: bool = False) -> dict:
    """Grouped bars of p50 / p90 / p99 latency per variant at one batch size (a decoder run's latency is per
    decoded token: results.json's latency_ms['1'])."""
    rows = latency[latency["batch_size"] == batch_size]
    if rows.empty:
        return empty_spec(f"No latency measured at batch {batch_size}.")
    values = [{"name": r["name"], "percentile": pct, "ms": _clean(r[pct])}
              for r in rows.to_dict("records") for pct in ("p50", "p90", "p99")]
    order = list(dict.fromkeys(rows["name"]))
    return _spec(height, datasets={"latency": values}, data={"name": "latency"}, mark={"type": "bar"},
                 encoding={"x": {"field": "name", "type": "nominal", "sort": order, "title": "Variant",
                                 "axis": {"labelAngle": 0}},
                           "xOffset": {"field": "percentile", "sort": ["p50", "p90", "p99"]},
                           "y": {"field": "ms", "type": "quantitative",
                                 "title": "Decode latency per token, batch 1 (ms)" if decoder
                                 else f"Latency at batch {batch_size} (ms)"},
                           "color": {"field": "percentile", "type": "nominal", "title": None,
                                     "scale": {"domain": ["p50", "p90", "p99"],
                                               "range": [PALETTE[0], PALETTE[4], PALETTE[1]]}},
                           "tooltip": [{"field": "name", "title": "variant"}, {"field": "percentile"},
                                       {"field": "ms", "format": ".4g"}]})


def batch_scaling_spec(latency: pd.DataFrame, metric: str = "throughput", height: int = 380, *,
                       decoder: bool = False) -> dict:
    """Throughput (samples/s) or latency per sample (ms) against batch size, one line per variant (the baseline
    dashed); a decoder run's are decoded tokens."""
    if latency.empty:
        return empty_spec("No latency measured yet.")
    labels = ({"throughput": "Decode throughput (tokens/s)", "per_sample_ms": "Latency per decoded token, p50 (ms)"}
              if decoder else {"throughput": "Throughput (samples/s)", "per_sample_ms": "Latency per sample, p50 (ms)"})
    values = [{"name": r["name"], "batch_size": int(r["batch_size"]), "value": _clean(r[metric]),
               "baseline": r["name"] == "baseline"} for r in latency.to_dict("records")]
    order = list(dict.fromkeys(latency["name"]))
    colors = [BASELINE_COLOR if n == "baseline" else PALETTE[i % len(PALETTE)] for i, n in enumerate(order)]
    sizes = sorted(int(b) for b in latency["batch_size"].unique())
    spec = _spec(height, datasets={"scaling": values}, data={"name": "scaling"},
                 mark={"type": "line", "point": {"size": 70, "filled": True}, "strokeWidth": 2.5},
                 encoding={"x": {"field": "batch_size", "type": "quantitative", "title": "Batch size (samples)",
                                 "scale": {"type": "log"}, "axis": {"values": sizes}},
                           "y": {"field": "value", "type": "quantitative", "title": labels[metric]},
                           "color": {"field": "name", "type": "nominal", "title": None,
                                     "scale": {"domain": order, "range": colors}},
                           "strokeDash": {"condition": {"test": "datum.baseline", "value": [6, 4]}, "value": [1, 0]},
                           "tooltip": [{"field": "name", "title": "variant"}, {"field": "batch_size", "title": "batch"},
                                       {"field": "value", "title": labels[metric], "format": ",.4g"}]})
    if len(sizes) == 1:
        spec["title"] = {"text": "Only one batch size was timed: add more in the benchmark settings.",
                         "color": MUTED, "fontSize": 13, "fontWeight": "normal"}
    return spec


def ratio_bars_spec(frame: pd.DataFrame, batch_size: int, height: int = 360) -> dict:
    """How many times smaller and faster each variant is than the baseline (1x = no change), the speed-up with
    its 95% interval."""
    rows = ok_rows(frame)
    rows = rows[rows["name"] != "baseline"]
    if rows.empty:
        return empty_spec("No optimized variant measured yet.")
    smaller, faster = "× smaller (file)", f"× faster (batch {batch_size}, 95% interval)"
    values = []
    for _, row in rows.iterrows():
        values.append({"name": row["name"], "measure": smaller, "ratio": _clean(row["x_smaller"]),
                       "text": format_ratio(row["x_smaller"]), "low": None, "high": None})
        ratio = _clean(row.get(f"speedup_bs{batch_size}"))
        if ratio is not None:
            values.append({"name": row["name"], "measure": faster, "ratio": ratio,
                           "text": speedup_text(row, batch_size),
                           "low": _clean(row.get(f"speedup_low_bs{batch_size}")),
                           "high": _clean(row.get(f"speedup_high_bs{batch_size}"))})
    order = list(rows["name"])
    y = {"field": "name", "type": "nominal", "sort": order, "title": None}
    y_offset = {"field": "measure", "sort": [smaller, faster]}
    color = {"field": "measure", "type": "nominal", "title": None,
             "scale": {"domain": [smaller, faster], "range": [PALETTE[0], PALETTE[2]]}}
    x = {"field": "ratio", "type": "quantitative", "title": "Ratio to baseline (×, higher is better)"}
    layers = [{"mark": {"type": "bar"}, "encoding": {"y": y, "yOffset": y_offset, "x": x, "color": color,
                                                      "tooltip": [{"field": "name", "title": "variant"},
                                                                  {"field": "measure"}, {"field": "text"}]}},
              {"transform": [{"filter": "isValid(datum.low) && isValid(datum.high)"}],
               "mark": {"type": "rule", "color": INK},
               "encoding": {"y": y, "yOffset": y_offset, "x": {"field": "low", "type": "quantitative"},
                            "x2": {"field": "high"}}},
              {"mark": {"type": "text", "align": "left", "dx": 4, "color": INK},
               "encoding": {"y": y, "yOffset": y_offset, "x": x, "text": {"field": "text"}}},
              {"mark": {"type": "rule", "strokeDash": [6, 4], "color": MUTED},
               "encoding": {"x": {"datum": 1.0, "type": "quantitative"}}}]
    return _spec(max(height, 90 + 60 * len(rows)), layers, datasets={"ratios": values}, data={"name": "ratios"})


def layer_sparsity_spec(table: pd.DataFrame, height: int = 360) -> dict:
    """Fraction of zero weights per layer after pruning."""
    if table.empty or "sparsity" not in table:
        return empty_spec("This variant reports no per-layer sparsity.")
    values = [{"layer": str(r["layer"]), "percent": _clean(r["sparsity"] * 100)} for r in table.to_dict("records")]
    return _spec(max(height, 80 + 28 * len(table)), datasets={"sparsity": values}, data={"name": "sparsity"},
                 mark={"type": "bar", "color": PALETTE[2]},
                 encoding={"y": {"field": "layer", "type": "nominal", "sort": list(table["layer"].astype(str)),
                                 "title": None},
                           "x": {"field": "percent", "type": "quantitative", "title": "Weights removed or zero (%)",
                                 "scale": {"domain": [0, 100]}},
                           "tooltip": [{"field": "layer"}, {"field": "percent", "title": "% zeros", "format": ".1f"}]})


def thumbnails(images: list, size: int = 96) -> list[np.ndarray]:
    """Grey-scale input images as uint8 thumbnails about `size` px wide, enlarged by whole pixels (an 8x8 digit
    stays sharp), each scaled to its own range, for st.image."""
    out = []
    for image in images:
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 3 and array.shape[0] in (1, 3):  # CHW -> HWC
            array = array.transpose(1, 2, 0)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        factor = max(1, size // max(array.shape[:2]))
        array = np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)
        out.append((np.clip(array, 0, 1) * 255).astype(np.uint8))
    return out
