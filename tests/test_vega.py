"""Compare's Vega-Lite charts (core.views.vega): the same content as their plotly twins in the report, as specs a
browser draws without plotly.js."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent / "app"))

from app_support import synthetic_results  # noqa: E402
from core.results.compare import Budget  # noqa: E402
from core.results.table import results_frame  # noqa: E402
from core.views import charts, vega  # noqa: E402


def _points(spec: dict) -> dict:
    return {p["name"]: p for p in spec["datasets"]["points"]}


def _layer(spec: dict, name: str) -> dict:
    return next(layer for layer in spec["layer"] if layer.get("name") == name)


def test_pareto_spec_marks_best_budget_baseline_and_selection():
    """Every measured variant is a marker named for its variant; a budget greys out what it excludes; the best is
    a star with its label; the baseline a diamond; the markers carry the point selection on `name`; the frontier
    is the plotly chart's staircase; the spec is plain JSON drawn as SVG."""
    frame = results_frame(synthetic_results())
    spec = vega.pareto_spec(frame, 256, budget=Budget(max_drop_pt=1.0), best="int8-static", selected="fp16")
    json.dumps(spec)  # plain JSON: no numpy or NaN left
    points = _points(spec)
    assert sorted(points) == ["baseline", "fp16", "int8-static", "pruned"]  # 'broken' failed: not a point
    assert [n for n, p in points.items() if not p["inside"]] == ["pruned"]
    assert points["int8-static"]["shape"] == vega.STAR and points["baseline"]["shape"] == "diamond"
    assert points["fp16"]["stroke"] == charts.ACCENT and points["pruned"]["stroke"] == "white"
    markers = _layer(spec, "markers")
    assert markers["params"] == [{"name": vega.PICK, "select": {"type": "point", "fields": ["name"]}}]
    assert markers["encoding"]["description"] == {"field": "name"}  # the SVG marker's aria label is its variant
    assert _layer(spec, "best_label")  # and its label, placed apart from the variants' labels
    assert spec["datasets"]["best"][0]["text"] == "best within budget"
    figure = charts.pareto_figure(frame, 256, budget=Budget(max_drop_pt=1.0), best="int8-static")
    frontier = next(t for t in figure.data if t.name == "Pareto frontier")
    assert [(f["x"], f["y"]) for f in spec["datasets"]["frontier"]] == list(zip(frontier.x, frontier.y))
    assert spec["usermeta"]["embedOptions"]["renderer"] == "svg"


def test_pareto_spec_draws_latency_intervals_and_budget_lines():
    """A speed-up interval becomes an error bar on the latency (as on the plotly chart); budget lines are drawn."""
    results = synthetic_results()
    for v in results["variants"]:
        if v["name"] == "int8-static":
            v["speedup"] = {"256": {"ratio": 2.0, "low": 1.6, "high": 2.5, "rounds": 20}}
    frame = results_frame(results)
    spec = vega.pareto_spec(frame, 256, budget=Budget(max_latency_ms=2.0, max_size_bytes=500_000))
    point = _points(spec)["int8-static"]
    up, down = charts.latency_error_bars(frame[frame["name"] == "int8-static"].reset_index(drop=True), 256)
    assert (point["low"], point["high"]) == (point["y"] - down[0], point["y"] + up[0]) and point["high"] > point["low"]
    lines = [layer["encoding"] for layer in spec["layer"] if "data" not in layer]  # constant rules: the budgets
    assert lines == [{"y": {"datum": 2.0, "type": "quantitative"}}, {"x": {"datum": 500.0, "type": "quantitative"}}]


def test_decoder_and_empty_specs():
    """A decoder run plots tokens/s against size, coloured by perplexity (reversed: lower is better)."""
    frame = pd.DataFrame([
        {"name": "baseline", "status": "ok", "size_bytes": 4_000_000, "decode_tok_s": 100.0, "perplexity": 20.0},
        {"name": "int4", "status": "ok", "size_bytes": 1_000_000, "decode_tok_s": 180.0, "perplexity": 20.4}])
    spec = vega.pareto_spec(frame, 1, best="int4")
    json.dumps(spec)
    assert sorted(_points(spec)) == ["baseline", "int4"]
    markers = _layer(spec, "markers")
    assert markers["encoding"]["y"]["title"].startswith("Decode tokens/s")
    assert markers["encoding"]["color"]["scale"]["reverse"] is True
    empty = vega.pareto_spec(frame.iloc[0:0], 1)
    assert "No measured variants" in empty["datasets"]["message"][0]["text"]


def test_timing_specs_and_thumbnails():
    """The three timing charts and the sparsity bars are plain JSON; thumbnails enlarge by whole pixels."""
    frame = results_frame(synthetic_results())
    latency = pd.DataFrame([{"name": n, "batch_size": b, "p50": 1.0, "p90": 1.2, "p99": 1.5, "throughput": 100.0 * b,
                             "per_sample_ms": 1.0 / b} for n in ("baseline", "int8") for b in (1, 32)])
    for spec in (vega.latency_percentiles_spec(latency, 32), vega.batch_scaling_spec(latency),
                 vega.ratio_bars_spec(frame, 256),
                 vega.layer_sparsity_spec(pd.DataFrame({"layer": ["conv1", "fc"], "sparsity": [0.5, 0.25]}))):
        json.dumps(spec)
        assert spec["datasets"] and all(spec["datasets"].values())
    per_token = vega.latency_percentiles_spec(latency, 1, decoder=True)["encoding"]["y"]["title"]
    assert per_token == "Decode latency per token, batch 1 (ms)"  # a decoder's latency_ms['1'] is per token
    assert vega.batch_scaling_spec(latency, decoder=True)["encoding"]["y"]["title"] == "Decode throughput (tokens/s)"
    assert charts.latency_percentiles_figure(latency, 1, decoder=True).layout.yaxis.title.text == per_token  # report
    ratios = vega.ratio_bars_spec(frame, 256)["datasets"]["ratios"]
    assert {r["name"] for r in ratios} == {"fp16", "int8-static", "pruned"}  # no baseline bar (1x by definition)
    digit = np.arange(64, dtype=np.float32).reshape(8, 8)
    thumb = vega.thumbnails([digit], size=96)[0]
    assert thumb.shape == (96, 96) and thumb.dtype == np.uint8 and thumb[0, 0] == 0 and thumb[-1, -1] == 255
    assert (thumb[:12, :12] == thumb[0, 0]).all()  # one source pixel, 12x12 on screen, not blurred
