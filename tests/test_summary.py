"""The one-screen summary and the report that carries it: speed with its interval where the run timed one (never
"slower" when the interval holds 1), the p50 ratio said so where it did not, a verdict sentence, and a report under
1.5 MB that loads plotly once and never says "Best within budget" without a budget."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "app"))
from app_support import synthetic_results  # noqa: E402

from core.errors import BadInputError  # noqa: E402
from core.results.compare import Budget  # noqa: E402
from core.results.summary import default_summary_variant, run_summary, summary_variants  # noqa: E402
from core.views.report import BASIC_TRACES, build_report, plotly_script  # noqa: E402
from core.views.summary import summary_figure  # noqa: E402

REPORT_LIMIT_BYTES = 1_500_000  # issue 29: the report was 4.9 MB with the full plotly.js inlined


def _with_speedup(low: float, high: float, ratio: float) -> dict:
    results = copy.deepcopy(synthetic_results())
    for v in results["variants"]:
        if v["name"] == "int8-static":
            v["speedup"] = {"256": {"ratio": ratio, "low": low, "high": high, "rounds": 12}}
    return results


def test_interleaved_speedup_is_shown_with_its_interval():
    """A run with an interleaved `speedup` entry reads "2.6x (2.5–2.7)" and says faster."""
    summary = run_summary(_with_speedup(2.5, 2.7, 2.6), "int8-static", 256)
    assert summary.speed_text == "2.60x (2.50–2.70)" and summary.speed_verdict == "faster"
    assert "runs 2.6× faster at batch 256" in summary.verdict


def test_an_interval_holding_one_never_reads_slower():
    """An interval that contains 1 is "no measurable difference" in the numbers and in the verdict sentence."""
    summary = run_summary(_with_speedup(0.9, 1.05, 0.97), "int8-static", 256)
    assert summary.speed_verdict == "no measurable difference"
    assert "no measurable difference" in summary.speed_text
    assert "slower" not in summary.verdict and "no measurably faster" in summary.verdict


def test_without_an_interval_the_p50_ratio_is_labelled_as_such():
    """A run without `speedup` falls back to the p50 ratio, named so; size, quality and cost are all there."""
    summary = run_summary(synthetic_results(), "int8-static", 256)
    assert summary.speed_text == "2.7× (p50 ratio, one run)" and summary.speed_verdict is None
    assert summary.size_text == "600 kB → 160 kB" and summary.x_smaller == pytest.approx(3.75)
    assert summary.quality_label == "accuracy" and summary.quality_change == "−0.20 pt"
    assert summary.cost_usd is not None and summary.base_cost_usd > summary.cost_usd
    assert summary.verdict.startswith("int8-static is 3.8× smaller than the baseline and runs 2.7× faster")
    assert "losing 0.20 pt of accuracy" in summary.verdict and "less to serve" in summary.verdict
    assert "Test CPU" in summary.measured_on


def test_summary_choices_and_refusals():
    """The summary opens on the fastest variant within one test sample of quality; failed variants and the baseline
    are not offered; asking for one is refused naming what is measured."""
    results = synthetic_results()
    assert summary_variants(results) == ["int8-static", "fp16", "pruned"]
    assert default_summary_variant(results, 256) == "fp16"  # 0 pt drop; int8 (0.2 pt) and pruned (2 pt) lose more
    results["dataset"]["eval"] = 500
    for bad in ("broken", "baseline", "nope"):
        with pytest.raises(BadInputError, match="measured: int8-static, fp16, pruned"):
            run_summary(results, bad)


def test_summary_figure_holds_the_tiles_and_the_verdict():
    """The exported figure carries the four numbers and the sentence (what the PNG and PDF show)."""
    summary = run_summary(synthetic_results(), "pruned", 256, run_id="run-1")
    texts = " ".join(a.text for a in summary_figure(summary).layout.annotations)
    for part in ("7.5×", "4.4×", "−2.00 pt", "sample:digits-cnn → pruned", "run run-1"):
        assert part in texts, part
    assert "pruned is 7.5× smaller" in texts.replace("<br>", " ")


def test_report_is_small_loads_plotly_once_and_fits_its_charts():
    """The report inlines the basic plotly bundle once and stays under 1.5 MB (build_report falls back to the full
    bundle when a chart has a trace the basic one lacks, so the basic one inlined means every chart draws); its first
    paragraph is the verdict."""
    results = synthetic_results()
    html = build_report(results, batch_size=256, run_id="run-1")
    assert len(html.encode("utf-8")) < REPORT_LIMIT_BYTES, len(html.encode("utf-8"))
    script, basic = plotly_script()
    assert basic and "(basic - minified)" in script[:100] and set(BASIC_TRACES) >= {"scatter", "bar"}
    assert html.count(script[:200]) == 1 and html.count("Copyright 2012-") == 1
    assert html.count("Plotly.newPlot(") == 4
    assert "class='verdict'" in html and "smaller than the baseline" in html
    full, basic = plotly_script(full=True)
    assert not basic and len(full) > 3 * len(script)


def test_report_says_best_within_budget_only_with_a_budget():
    """Without a budget the report names the objective and "no budget set", never "Best within budget"."""
    html = build_report(synthetic_results(), batch_size=256)
    assert "Best within budget" not in html and "no budget set" in html
    html = build_report(synthetic_results(), batch_size=256, budget=Budget(max_drop_pt=0.5))
    assert "Best within budget" in html and "no budget set" not in html
