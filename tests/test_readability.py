"""Readability of tables, the report and "best" (issue 16): one size format, no "None" in failed rows, the report
fits its page and says what "best" means, and a best variant far worse on another axis is called out."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "app"))
from app_support import synthetic_results  # noqa: E402

from core.results.compare import Budget, best_caveats, best_variant  # noqa: E402
from core.views.report import build_report  # noqa: E402
from core.results.table import results_frame  # noqa: E402


def _bloated() -> dict:
    """A zoo-style run: the fastest variant (pruned) has a file 50x larger than the baseline."""
    results = synthetic_results()
    for v in results["variants"]:
        if v["name"] == "pruned":
            v["size_bytes"] = 600_000 * 50
    return results


def test_best_variant_far_larger_is_called_out():
    """The fastest variant is still found, but best_caveats says its file is 50x larger; a fair best has none."""
    frame = results_frame(_bloated())
    best = best_variant(frame, Budget(), 256, "fastest")
    caveats = best_caveats(frame, best, 256)
    assert any("50.0× larger" in c for c in caveats), (best, caveats)
    fair = results_frame(synthetic_results())
    assert best_caveats(fair, best_variant(fair, Budget(), 256, "fastest"), 256) == []


def test_report_says_the_caveat_and_what_best_means():
    """The report's summary names the caveat, and without a budget it says "no budget set", not "(none)"."""
    html = build_report(_bloated(), batch_size=256)
    assert "(none)" not in html and "no budget set" in html
    assert "Caveat" in html and "larger than the baseline" in html
    html = build_report(synthetic_results(), batch_size=256, budget=Budget(max_drop_pt=0.5))
    assert "best = fastest within quality drop ≤ 0.50 pt" in html


def test_report_table_scrolls_inside_the_page_and_counts_variants_without_baseline():
    """The results table sits in a scrolling box (it pushed the page to 1511 px), and the header counts the
    variants besides the baseline, as the run labels do."""
    results = synthetic_results()
    html = build_report(results, batch_size=256)
    assert "<div class='table-wrap'><table>" in html and ".table-wrap { overflow-x: auto" in html
    others = sum(v["name"] != "baseline" for v in results["variants"])
    assert f"baseline and {others} variants" in html
    assert html.count("Copyright 2012-") == 1  # the library is inlined once


def test_display_table_has_one_size_format_and_no_none():
    """The dashboard table writes sizes as format_bytes does ("160 kB") and leaves a failed row's numbers empty."""
    from core.format import format_bytes
    from ui.tables import display_frame

    frame = results_frame(synthetic_results())
    table = display_frame(frame, [1, 256]).set_index("variant")
    assert table.loc["int8-static", "size"] == format_bytes(160_000) == "160 kB"
    broken = table.loc["broken"]
    assert broken["size"] == "–"
    for column in ("x_smaller", "params", "p50_ms_bs256"):
        assert broken[column] is None or math.isnan(broken[column]), column
    assert broken["speedup_bs256"] == "–"  # the speed-up is text ("2.10x (2.00–2.20)"): a dash when there is none
    assert table.loc["baseline", "speedup_bs256"] == "1x (baseline)"
    assert not any(isinstance(v, str) and v == "None" for v in broken.values)
    assert pd.api.types.is_float_dtype(table["x_smaller"])


def test_pareto_labels_do_not_overlap_or_leave_the_plot():
    """Three variants in one cluster and one at the right edge get label positions whose estimated boxes do not
    overlap, and the right-most label does not run past the edge (it read "seline")."""
    from core.views.charts import label_positions

    xs, ys = [10.0, 10.2, 10.4, 100.0], [5.0, 5.05, 4.95, 20.0]
    names = ["int8-static", "int8-static-2", "int8-static-3", "baseline"]
    positions = label_positions(xs, ys, names, x_range=(0, 100), y_range=(0, 22))
    assert len(set(positions[:3])) == 3  # the cluster's labels go three different ways
    assert "right" not in positions[3]  # the edge point's label goes left or stays centred above


def test_colour_scale_covers_a_meaningful_range():
    """Every variant at 98.52%: the scale spans 1 pt around it, not 98-99.5; cosine all at 1.0: never past 1."""
    from core.views.charts import color_range

    low, high = color_range(pd.Series([98.52, 98.52, 98.52]), "accuracy")
    assert high - low == pytest.approx(1.0) and low < 98.52 < high
    low, high = color_range(pd.Series([1.0, 1.0]), "cosine_mean")
    assert high <= 1.0 and high - low == pytest.approx(0.01)
    assert color_range(pd.Series([90.0, 99.0]), "accuracy") == (90.0, 99.0)


def test_pareto_with_one_winner_still_draws_the_frontier():
    """A run where one variant beats every other still has the dotted frontier the caption promises."""
    from core.views import charts as viz

    fig = viz.pareto_figure(results_frame(synthetic_results()), 256)
    frontier = [t for t in fig.data if t.name == "Pareto frontier"]
    assert frontier and frontier[0].line.dash == "dot" and len(frontier[0].x) == 3
    assert all(t.cliponaxis is False for t in fig.data if t.mode == "markers+text")


def test_cost_chart_writes_dollars_not_si_prefixes():
    """The Cost chart's dollar axis has a $ prefix and no SI format ("100μ" dollars), and labels stay inside."""
    from core.views import cost as views_cost

    frame = pd.DataFrame({"name": ["baseline", "int8", "fp16"], "status": ["ok"] * 3,
                          "usd_per_million": [0.0004, 0.0001, 0.00011], "energy_mj": [3.0, 1.0, 1.05],
                          "energy_basis": ["estimated"] * 3, "monthly_cost_usd": [1.0, 0.3, 0.35],
                          "monthly_saving_usd": [0.0, 0.7, 0.65], "gco2_per_million": [1.0, 0.3, 0.3],
                          "weight_bytes": [600_000, 150_000, 300_000], "energy_assumption": ["3.5 W"] * 3,
                          "batch_size": [256] * 3})
    fig = views_cost.cost_figure(frame)
    axis = fig.layout.xaxis
    assert axis.tickprefix == "$" and "s" not in (axis.tickformat or "s")
    trace = fig.data[0]
    assert trace.cliponaxis is False and len(set(trace.textposition[1:])) == 2  # int8 / fp16 labels apart


def test_dollars_never_in_scientific_notation():
    """Tiny costs per million read as decimals ("$0.0000787"), not "$7.872e-05" (or "100μ")."""
    from core.format import format_usd

    assert format_usd(7.872e-05) == "$0.0000787"
    assert format_usd(0.0003377) == "$0.000338"
    assert format_usd(3.5) == "$3.5" and format_usd(12345) == "$12,345"
    table = build_report(synthetic_results(), batch_size=256).split("<h2>Results")[1].split("<h2>")[0]
    assert not re.search(r"\$[0-9.]+e-", table)


def test_every_dashboard_table_shows_a_dash_for_a_missing_number():
    """Each st.dataframe of the pages and ui/ passes placeholder=MISSING ("–"): Streamlit writes "None" in the
    empty cells otherwise (History's duration, the tuner's speed-up, Cost's devices, the model's label table)."""
    import ast

    from core.format import MISSING

    assert MISSING == "–"
    root = Path(__file__).resolve().parents[1]
    missing = []
    for path in sorted([*root.glob("pages/*.py"), *root.glob("ui/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dataframe":
                if not any(k.arg == "placeholder" for k in node.keywords):
                    missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"tables that would show 'None': {missing}"


def test_a_quantize_step_with_other_options_reads_differently_from_the_plain_one():
    """An int8 variant keeping a layer in float, or per tensor, or percentile-calibrated, no longer reads
    "quantize static" like the plain one; the plain step still does."""
    from core.spec.labels import step_label

    plain = {"technique": "quantize", "mode": "static", "per_channel": True, "calibration": "minmax", "exclude": []}
    assert step_label(plain) == "quantize static"
    assert step_label({**plain, "exclude": ["/fc/Gemm"]}) == "quantize static, 1 layer in float"
    assert step_label({**plain, "per_channel": False, "calibration": "percentile", "exclude": ["a", "b"]}) == \
        "quantize static, per tensor, percentile, 2 layers in float"
    assert step_label({**plain, "equalize": True, "bias_correction": True}) == \
        "quantize static, equalized, bias-corrected"
    assert step_label({"technique": "quantize", "mode": "int4", "block_size": 64}) == "quantize int4, block 64"
