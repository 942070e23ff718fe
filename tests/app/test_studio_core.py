"""The dashboard's core helpers, without Streamlit: comparisons and budgets, figures and number formats, the
HTML report, presets and exports."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from app_support import sample_choice, synthetic_results

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def frame():
    from core.results.table import results_frame

    return results_frame(synthetic_results())


def test_pareto_front_keeps_only_undominated():
    """A point is on the frontier only if nothing is both smaller and faster."""
    from core.results.compare import pareto_front

    rows = pd.DataFrame({"name": list("abcde"), "size_bytes": [1, 2, 3, 4, 2],
                         "lat": [5.0, 3.0, 3.5, 1.0, 4.0]})
    assert pareto_front(rows, "size_bytes", "lat") == ["a", "b", "d"]


def test_budgets_and_best_variant(frame):
    """Budgets filter by latency, size and quality drop; the objective decides among what is left."""
    from core.results.compare import Budget, best_variant, within_budget

    assert best_variant(frame, Budget(), 256) == "pruned"
    assert best_variant(frame, Budget(max_drop_pt=1.0), 256) == "int8-static"
    assert best_variant(frame, Budget(max_drop_pt=1.0), 256, "smallest") == "int8-static"
    assert best_variant(frame, Budget(max_latency_ms=1.0, max_drop_pt=1.0), 256) is None
    assert best_variant(frame, Budget(), 256, "most accurate") == "baseline"
    inside = within_budget(frame, Budget(max_size_bytes=300_000), 256)
    assert list(frame["name"][inside]) == ["int8-static", "fp16", "pruned"]
    with pytest.raises(ValueError, match="allowed: fastest, smallest, most accurate"):
        best_variant(frame, Budget(), 256, "cheapest")


def test_quality_drop_falls_back_to_fidelity(frame):
    """Without labels, the quality budget acts on disagreement with the baseline."""
    from core.results.compare import quality_drop_pt

    unlabelled = frame.assign(accuracy=None, accuracy_drop_pt=None)
    drop, label = quality_drop_pt(unlabelled)
    assert label == "disagreement with baseline (pt)"
    assert drop.iloc[1] == pytest.approx(1.0)


def test_why_no_speedup_rules():
    """Tiny models get the call-overhead note; unstructured sparsity and int8 without VNNI are explained."""
    from core.results.explain import why_no_speedup

    results = synthetic_results()
    base = results["variants"][0]
    base["latency_ms"]["1"]["p50"] = 0.02
    tiny = results["variants"][1]
    tiny["latency_ms"]["1"]["p50"] = 0.021
    tiny["latency_ms"]["256"]["p50"] = 3.9
    notes = why_no_speedup(results, "int8-static", 256)
    assert any("per-call overhead" in n for n in notes)
    assert any("VNNI" in n for n in notes)
    sparse = results["variants"][3]
    sparse["steps"] = [{"technique": "prune", "method": "unstructured", "amount": 0.8}]
    sparse["latency_ms"]["256"]["p50"] = 4.0
    assert any("dense" in n for n in why_no_speedup(results, "pruned", 256))
    fast = synthetic_results()
    assert not any("overhead" in n for n in why_no_speedup(fast, "pruned", 256))  # 0.04 ms but faster
    assert any("fp16 arithmetic" in n for n in why_no_speedup(fast, "fp16", 256))  # 4.2 ms against 4.0: slower
    fast["variants"][2]["latency_ms"]["256"]["p50"] = 2.0
    assert not any("fp16" in n for n in why_no_speedup(fast, "fp16", 256))  # measured faster: no excuse needed


@pytest.mark.parametrize("value, text", [(None, "–"), (512, "512 B"), (1234, "1.23 kB"), (641_024, "641 kB"),
                                         (12_345_678, "12.3 MB")])
def test_format_bytes(value, text):
    """Sizes read in decimal units with three significant digits."""
    from core.format import format_bytes

    assert format_bytes(value) == text


def test_number_formats():
    """Latency, ratios, counts and accuracy changes read naturally."""
    from core import format as fmt

    assert fmt.format_ms(0.02134) == "0.021 ms" and fmt.format_ms(3.514) == "3.51 ms"
    assert fmt.format_ratio(3.4167) == "3.4×" and fmt.format_ratio(0.91) == "0.91×"
    assert fmt.format_count(159_626) == "160k" and fmt.format_count(22_700_000) == "22.7M"
    assert fmt.format_pt(0.19) == "−0.19 pt" and fmt.format_pt(-0.2) == "+0.20 pt"
    assert fmt.format_pct(0.98333) == "98.3%" and fmt.format_pct(float("nan")) == "–"


def test_every_figure_labels_its_axes_with_units(frame):
    """Each results figure names its axes with units; empty inputs give a chart that says why."""
    from core.views import charts as viz
    from core.results.compare import latency_table

    latency = latency_table(synthetic_results())
    figures = [viz.pareto_figure(frame, 256), viz.latency_percentiles_figure(latency, 256),
               viz.batch_scaling_figure(latency), viz.batch_scaling_figure(latency, "per_sample_ms"),
               viz.ratio_bars_figure(frame, 256)]
    for fig in figures:
        titles = [fig.layout.xaxis.title.text, fig.layout.yaxis.title.text]
        assert any(t and re.search(r"\((ms|kB|samples/s|×, higher is better)\)", t) for t in titles), titles
    card = sample_choice("digits-mlp").card
    assert viz.op_types_figure(card).layout.xaxis.title.text == "Nodes (count)"
    assert viz.layer_share_figure(card).layout.xaxis.title.text == "Share of weight bytes (%)"
    empty = viz.pareto_figure(frame.iloc[0:0], 256)
    assert "No measured variants" in empty.layout.annotations[0].text


def test_pareto_figure_marks_budget_best_and_baseline(frame):
    """Out-of-budget variants are a separate grey trace; the best is a star; the baseline a diamond."""
    from core.views import charts as viz
    from core.results.compare import Budget

    fig = viz.pareto_figure(frame, 256, budget=Budget(max_drop_pt=1.0), best="int8-static")
    traces = {t.name: t for t in fig.data}
    assert list(traces["outside budget"].text) == ["pruned"]
    inside = traces["variants"]
    symbols = dict(zip(inside.text, inside.marker.symbol))
    assert symbols["baseline"] == "diamond" and symbols["int8-static"] == "star"
    assert all(row[0] == name for row, name in zip(inside.customdata, inside.text))
    assert "p99" in inside.hovertemplate and "accuracy" in inside.hovertemplate
    assert "per million" in inside.hovertemplate
    assert any(str(value).startswith("$") for row in inside.customdata for value in row)


def test_report_is_self_contained(frame):
    """The HTML report inlines plotly.js once, loads nothing from the network, and holds settings and env."""
    from core.views.report import build_report

    html = build_report(synthetic_results(), run_id="run-1", batch_size=256)
    assert html.startswith("<!DOCTYPE html>") and html.count("</html>") == 1
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=\"http", html)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # the library itself is inline
    for text in ("Test CPU", "run-1", "int8-static", "pruned", "prune failed: boom", "featherweight run",
                 "fp16 halves the size"):
        assert text in html, text
    assert html.count("<tr class='best'>") == 2  # the best row in each table: size and quality, speed and cost
    assert "$ / million @ 256" in html and re.search(r"<td>\$[0-9.]+</td>", html)


def test_portable_recipe_names_uploads_by_file_name():
    """An exported recipe reproduces with `featherweight run`: uploads are referred to by their file name."""
    from core.spec.recipe import Recipe
    from core.spec.portable import portable_recipe

    results = synthetic_results()
    results["recipe"]["model"] = "/srv/home/runs/x/inputs/my_model.onnx"
    results["recipe"]["data"] = "/srv/home/runs/x/inputs/data.npz"
    recipe = portable_recipe(results)
    assert recipe.model == "my_model.onnx" and recipe.data == "data.npz"
    assert Recipe.from_text(recipe.to_yaml()) == recipe
    assert portable_recipe(synthetic_results()).model == "sample:digits-cnn"


def test_presets_fit_the_model():
    """Every preset builds a valid recipe; int4 needs MatMul weights; torch steps need the torch model."""
    from core.spec.presets import PRESETS, preset_recipe

    cnn = sample_choice("digits-cnn").card
    onnx_only = {**cnn, "format": "onnx", "op_types": {"Conv": 3, "Relu": 3}}
    for name in PRESETS:
        recipe, _ = preset_recipe(name, cnn)
        assert recipe.variants, name
        conv_only, _ = preset_recipe(name, onnx_only)
        steps = [s for v in conv_only.variants for s in v.steps]
        assert {s.technique for s in steps} <= {"quantize", "prune"}, name
        assert all(s.method == "unstructured" and s.finetune_epochs == 0 for s in steps if s.technique == "prune")
        assert not any(s.mode in ("int4", "dynamic") for s in steps if s.technique == "quantize"), name
    with pytest.raises(KeyError, match="allowed"):
        preset_recipe("Fastest everywhere", cnn)


def test_safe_filename():
    """Upload names lose directories and odd characters but keep their extension; others are refused."""
    from core.errors import BadInputError
    from core.session import MODEL_UPLOAD_TYPES, safe_filename

    assert safe_filename("../../x y.ONNX", MODEL_UPLOAD_TYPES) == "x_y.onnx"
    assert safe_filename("C:\\\\models\\\\net.pt", MODEL_UPLOAD_TYPES) == "net.pt"
    with pytest.raises(BadInputError, match="allowed: .onnx"):
        safe_filename("net.pkl", MODEL_UPLOAD_TYPES)
    with pytest.raises(BadInputError):
        safe_filename(".onnx", MODEL_UPLOAD_TYPES)  # a hidden file with no name
