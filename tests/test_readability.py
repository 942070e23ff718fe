"""Readability of tables, the report and "best" (issue 16): one size format, no "None" in failed rows, the report
fits its page and says what "best" means, and a best variant far worse on another axis is called out."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent / "app"))
from app_support import synthetic_results  # noqa: E402

from core.compare import Budget, best_caveats, best_variant  # noqa: E402
from core.report import build_report  # noqa: E402
from core.results import results_frame  # noqa: E402


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
    assert html.count("plotly.js v") == 1  # the library is inlined once


def test_display_table_has_one_size_format_and_no_none():
    """The dashboard table writes sizes as format_bytes does ("160 kB") and leaves a failed row's numbers empty."""
    from core.viz import format_bytes
    from ui.tables import display_frame

    frame = results_frame(synthetic_results())
    table = display_frame(frame, [1, 256]).set_index("variant")
    assert table.loc["int8-static", "size"] == format_bytes(160_000) == "160 kB"
    broken = table.loc["broken"]
    assert broken["size"] == "–"
    for column in ("x_smaller", "params", "p50_ms_bs256", "speedup_bs256"):
        assert broken[column] is None or math.isnan(broken[column]), column
    assert not any(isinstance(v, str) and v == "None" for v in broken.values)
    assert pd.api.types.is_float_dtype(table["x_smaller"])
