"""The studio in a real browser: pick a sample, run a quantization, read the Pareto chart, download the recipe,
reload and find the run still there."""

from __future__ import annotations

import re
import time

import pytest
import yaml
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# One variant with a short benchmark: the browser flow, not the measurement, is under test here.
E2E_RECIPE = """seed: 0
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 2, runs: 20, max_seconds: 1.0}
variants:
- name: int8-static
  steps:
  - {technique: quantize, mode: static}
"""


IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until the script has finished running (Streamlit marks the app root)."""
    page.wait_for_selector(IDLE, timeout=timeout)


def button(page, name: str):
    return page.get_by_role("button", name=name, exact=True)


PARETO = "[data-testid='stVegaLiteChart']"  # Compare's charts are Vega-Lite, drawn as SVG; the Pareto chart first


def point_labels(page, timeout_s: float = 30.0) -> list[str]:
    """The text labels of Compare's Pareto chart markers (variant names), once drawn."""
    chart = page.locator(PARETO).first
    chart.wait_for(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    labels: list[str] = []
    while time.monotonic() < deadline:
        labels = chart.locator("[class*='labels_'] text").all_text_contents()
        if labels:
            break
        page.wait_for_timeout(250)
    return labels


def click_point(page, name: str) -> None:
    """Click the marker of variant `name` on Compare's Pareto chart (each marker's aria label is its variant)."""
    assert name in point_labels(page)
    marker = page.locator(PARETO).first.locator(f"[class*='markers'] path[aria-label='{name}']")
    assert marker.count() == 1, marker.count()
    marker.scroll_into_view_if_needed()  # a mouse click outside the window is lost
    box = marker.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def nav(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.wait_for_timeout(300)
    wait_idle(page)


def use_sample_with_recipe(page, url: str, sample: str, recipe: str) -> None:
    """Open the studio, choose sample model `sample`, and apply `recipe` in the Optimize page's YAML tab."""
    page.goto(url)
    wait_idle(page)
    button(page, f"Use {sample}").click()
    page.get_by_text(f"Model card · {sample}").wait_for(timeout=60_000)
    wait_idle(page)
    nav(page, "Optimize")
    apply_yaml(page, recipe)


def recipe_yaml(page) -> str:
    """The Optimize page's recipe as its YAML tab shows it (the tab is left open)."""
    page.get_by_role("tab", name="YAML").click()
    return page.get_by_role("textbox", name="Recipe (YAML)").input_value()


def apply_yaml(page, recipe: str) -> None:
    """On the Optimize page: type `recipe` into the YAML tab and apply it."""
    page.get_by_role("tab", name="YAML").click()
    editor = page.get_by_role("textbox", name="Recipe (YAML)")
    editor.fill(recipe)
    editor.press("Tab")  # commit the text area before pressing Apply
    wait_idle(page)
    button(page, "Apply YAML").click()
    page.get_by_text("Recipe applied.").wait_for(timeout=60_000)
    wait_idle(page)


def test_home_first_render(server, page):
    """The home page renders its sample gallery promptly after the server is up."""
    started = time.perf_counter()
    page.goto(server.url)
    wait_idle(page)
    page.get_by_text("digits-cnn", exact=True).first.wait_for()
    elapsed = time.perf_counter() - started
    print(f"\nfirst render of the home page: {elapsed:.2f} s")
    assert elapsed < 15, f"home page took {elapsed:.1f} s"  # generous: the benchmark harness owns the target
    assert page.get_by_text("No model yet").is_visible()


def test_quantize_compare_download_reload(server, page, tmp_path):
    """Pick digits-cnn, run a static-int8 recipe, see baseline and variant on the Pareto chart, download the recipe
    and the report, then reload and restart the server and find the run again."""
    use_sample_with_recipe(page, server.url, "digits-cnn", E2E_RECIPE)
    button(page, "Run 1 variant").click()
    clicked = time.perf_counter()
    page.get_by_text("Variant 1 of 2: baseline").or_(page.get_by_text("Run completed")).first.wait_for(timeout=120_000)
    page.get_by_text("Run completed").wait_for(timeout=120_000)
    print(f"\nrun finished {time.perf_counter() - clicked:.1f} s after Run")

    nav(page, "Compare")
    labels = point_labels(page)
    assert "baseline" in labels and "int8-static" in labels, labels
    assert page.get_by_text("Fastest (no budget set)").first.is_visible()  # never "Best within budget" unbudgeted

    # The detail opens on the best variant within budget. Which one that is depends on this CPU's int8 kernels and
    # its load ("fastest" at batch 32: a loaded 2-core box once measured int8 slower), so read the page's own pick.
    best = re.search(r"Fastest \(no budget set\): (\S+)",
                     page.get_by_text("Fastest (no budget set)").first.inner_text()).group(1)
    variant_box = page.get_by_role("combobox", name="Variant")
    expect(variant_box).to_have_value(best)
    if best == "baseline":  # start the click test from the other variant
        click_point(page, "int8-static")
        expect(variant_box).to_have_value("int8-static", timeout=15_000)
        wait_idle(page)
    click_point(page, "baseline")
    expect(variant_box).to_have_value("baseline", timeout=15_000)
    wait_idle(page)  # the rerun the click started has drawn the export buttons (a deferred download is per run)

    with page.expect_download() as info:
        button(page, "Recipe · recipe.yaml").click()
    saved = tmp_path / "recipe.yaml"
    info.value.save_as(saved)
    recipe = yaml.safe_load(saved.read_text())
    assert recipe["model"] == "sample:digits-cnn"
    assert [v["name"] for v in recipe["variants"]] == ["int8-static"]

    with page.expect_download(timeout=60_000) as info:
        button(page, "Report · report.html").click()
    report = tmp_path / "report.html"
    info.value.save_as(report)
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html and "int8-static" in html

    page.reload()
    wait_idle(page)
    labels = point_labels(page)
    assert "int8-static" in labels, "after a reload the run is gone from Compare"
    run_url = page.url.replace(server.url, "")
    assert "run=" in run_url

    server.restart()  # a server restart loses nothing; the first request of the new process is a deep link
    page.goto(server.url + run_url)
    wait_idle(page)
    assert "int8-static" in point_labels(page)
    assert page.get_by_test_id("stSidebarNav").get_by_text("Studio").is_visible()  # app.py's shell ran
    nav(page, "History")
    expect(page.get_by_role("combobox", name="Open a run")).to_have_value(re.compile(r"^digits-cnn · 1 variant · "
                                                                                       r"\d\d \w{3} \d\d:\d\d"))


def test_bad_upload_shows_one_error_and_keeps_model(server, page, tmp_path):
    """A corrupt .onnx upload shows one clear error and the sample chosen before stays the current model."""
    page.goto(server.url)
    wait_idle(page)
    button(page, "Use digits-mlp").click()
    page.get_by_text("Model card · digits-mlp").wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("radio", name="Upload").or_(page.get_by_role("button", name="Upload", exact=True)).first.click()
    wait_idle(page)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a model")
    page.locator("input[type='file']").first.set_input_files(str(bad))
    page.get_by_test_id("stAlertContentError").first.wait_for(timeout=30_000)
    wait_idle(page)
    errors = page.get_by_test_id("stAlertContentError").all_inner_texts()
    assert len(errors) == 1 and "broken.onnx" in errors[0], errors
    assert page.get_by_text("Model card · digits-mlp").is_visible()
