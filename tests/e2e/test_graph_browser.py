"""The Graph page in a real browser: a digits-cnn run with an int8 variant drawn by Model Explorer on the dashboard's
own port, its quantized nodes coloured int8 and the excluded one fp32, a node's latency read by hovering its row,
reached from Compare's "Open in graph"."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import ROOT, StudioServer
from tests.e2e.test_studio import wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FC1 = "/classifier/classifier.1/Gemm"
RECIPE = f"""
model: sample:digits-cnn
data: sample:digits
seed: 0
benchmark: {{batch_sizes: [1, 32], threads: 1, warmup: 2, runs: 10, max_seconds: 0.5}}
variants:
  - name: int8-static
    steps: [{{technique: quantize, mode: static, exclude: ["{FC1}"]}}]
"""
INT8_GREEN = "rgb(74, 222, 128)"
FP32_GREY = "rgb(209, 213, 219)"
FORCE_PICK = False  # True: always pick the variant by hand (the path taken when the page opens on the baseline)
SHOT = os.environ.get("FW_GRAPH_SCREENSHOT")  # a path: also save the page as the README's screenshot

# Every table Model Explorer's info panels show: header labels and rows of (node label, [(text, background)]).
TABLES_JS = """() => Array.from(document.querySelectorAll('table')).map(t => ({
  headers: Array.from(t.querySelectorAll('thead th')).map(h => h.innerText.trim()),
  rows: Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.querySelectorAll('td')).map(
    c => [c.innerText.trim(), getComputedStyle(c).backgroundColor])),
}))"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A server whose history is shared, with a real digits-cnn run (static int8, one Gemm kept in float)."""
    from core.jobs.store import RunStore
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe

    home = tmp_path_factory.mktemp("fw-graph")
    store = RunStore(home)
    recipe = Recipe.from_text(RECIPE)
    record = store.create("someone", recipe.to_yaml(), label="digits-cnn · 1 variant", model=recipe.model,
                          data=recipe.data)
    run_recipe(recipe, store.run_dir(record.id))
    store.set_status(record.id, "completed")
    server = StudioServer(home, env={"FEATHERWEIGHT_SHARED_HISTORY": "1"})
    try:
        server.start()
        server.run_id = record.id
        yield server
    finally:
        server.stop()


def _explorer(page):
    """Model Explorer's frame, once it has drawn both panes and loaded the overlays."""
    page.wait_for_selector("iframe[src*='model_explorer']", timeout=120_000)
    frame = next(f for f in page.frames if "model_explorer" in f.url)
    frame.get_by_text("int8-static | int8-static").wait_for(timeout=60_000)
    return frame


def _open_info_panel(frame, pane: int) -> None:
    """Open one pane's info panel, which starts collapsed (issue 29: open, it covered three quarters of the pane),
    with its own chevron toggle."""
    toggles = frame.locator("mat-icon", has_text="chevron_left")
    toggles.nth(pane).wait_for(timeout=60_000)
    assert toggles.count() == 2  # both panels start collapsed
    toggles.nth(pane).click()
    frame.page.wait_for_timeout(800)  # the panel's opening animation


def _variant_table(frame) -> tuple[list, list]:
    """The variant pane's per-node table: the one with Q/DQ rows and a Precision column."""
    for _ in range(180):  # 90 s: a loaded machine draws slowly
        for table in frame.evaluate(TABLES_JS):
            labels = [row[1][0] for row in table["rows"] if len(row) > 2]
            if any(h.startswith("Precision") or "Precision" in h for h in table["headers"]) and \
                    "QuantizeLinear" in labels and "Conv" in labels:
                return table["headers"], table["rows"]
        frame.page.wait_for_timeout(500)
    raise AssertionError("no per-node table with precision in the variant pane")


def _view_files(frame) -> Path:
    token = parse_qs(urlsplit(frame.url).query)["fw_view"][0]
    cache = Path(os.environ.get("FEATHERWEIGHT_CACHE", ROOT / ".featherweight" / "cache"))
    folders = list(cache.glob(f"model-explorer-*/views/{token}"))
    assert len(folders) == 1, folders
    return folders[0]


def _conv_row(page, latency_text: str):
    """The variant table's Conv row that shows `latency_text`. A loaded machine can redraw the component (its info
    panels then start collapsed again): find the frame and open the panel again rather than wait on a table that
    is gone."""
    for _ in range(3):
        frame = _explorer(page)
        row = frame.locator("tr", has=frame.locator("td.node-label", has_text="Conv")).filter(
            has_text=latency_text).first
        try:
            row.wait_for(timeout=10_000)
            return row
        except PlaywrightTimeout:
            if frame.locator("mat-icon", has_text="chevron_left").count() == 2:
                _open_info_panel(frame, 1)
    raise AssertionError(f"no Conv row showing {latency_text} in the variant pane")


def test_compare_opens_the_variant_graph_coloured_by_precision_with_latency(studio, page):
    """From Compare's int8-static detail, "Open in graph" draws both panes; Convs and the last Gemm are int8
    (green), the excluded Gemm fp32 (grey); hovering a Conv's row reads the latency the profiler measured."""
    page.goto(f"{studio.url}/compare?run={studio.run_id}")
    wait_idle(page)
    link = page.get_by_role("link", name="Open in graph")
    picker = page.get_by_role("combobox", name="Variant")
    picker.wait_for(timeout=120_000)  # the variant detail is drawn (it opens on the best variant within budget)
    wait_idle(page, timeout=120_000)
    if FORCE_PICK or not link.count():  # it opened on the baseline (int8 measured no faster): pick the variant
        picker.scroll_into_view_if_needed()
        picker.click()
        page.get_by_role("option", name="int8-static").click()
        wait_idle(page)
    link.first.wait_for(timeout=30_000)
    link.first.click()
    page.wait_for_url("**/graph?**", timeout=30_000)
    assert "variant=int8-static" in page.url
    wait_idle(page, timeout=120_000)
    frame = _explorer(page)
    assert frame.url.split("?")[0].endswith("/component/ui.graph_explorer.model_explorer/")
    if SHOT:  # the README's screenshot: 1400 x 1000, both info panels collapsed
        page.wait_for_timeout(3000)
        page.screenshot(path=SHOT)
    _open_info_panel(frame, 1)

    headers, rows = _variant_table(frame)
    column = next(i for i, h in enumerate(headers) if "Precision" in h)
    latency_column = next(i for i, h in enumerate(headers) if h.startswith("2") or "Latency (ms)" in h)
    by_label: dict[str, list] = {}
    for row in rows:
        by_label.setdefault(row[1][0], []).append(row)
    convs = by_label["Conv"]
    assert len(convs) == 3 and all(r[column] == ["8", INT8_GREEN] for r in convs), convs
    gemms = sorted(r[column][0] for r in by_label["Gemm"])
    assert gemms == ["32", "8"], by_label["Gemm"]
    assert any(r[column] == ["32", FP32_GREY] for r in by_label["Gemm"])

    # Hover the slowest Conv's row and read its latency: it is the profiler's number for that node.
    node_data = {}
    folder = _view_files(frame)
    view = json.loads((folder / "view.json").read_text())
    for source, target in zip(view["nodeData"], view["nodeDataTargets"]):
        if source.startswith("node_data://latency_ms/") and target == "int8-static":
            node_data = json.loads((folder / f"node_data_{source.rsplit('/', 1)[1]}.json").read_text())
    measured = {node: r["value"] for node, r in node_data["results"].items() if "Conv" in node}
    assert len(measured) == 3 and all(v > 0 for v in measured.values())
    shown = [row[latency_column][0] for row in convs]  # as Model Explorer prints them
    assert sorted(float(t) for t in shown) == pytest.approx(sorted(measured.values()), rel=1e-3), (shown, measured)
    slowest = next(t for t in shown if float(t) == pytest.approx(max(measured.values()), rel=1e-3))
    row = _conv_row(page, slowest)
    row.hover()
    assert row.locator("td").nth(latency_column).inner_text().strip() == slowest

