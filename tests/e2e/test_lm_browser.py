"""sample:tiny-lm in a real browser: choose the decoder, run an int4 recipe, and read tokens/s on the Pareto chart."""

from __future__ import annotations

import time

import pytest

from test_studio import button, nav, point_labels, use_sample_with_recipe

pytest.importorskip("onnxruntime_genai")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

LM_RECIPE = """seed: 0
benchmark: {threads: 1, runs: 1}
variants:
- name: int4
  steps:
  - {technique: quantize, mode: int4, block_size: 32, accuracy_level: 4}
"""


def test_int4_recipe_on_tiny_lm_shows_tokens_per_second(server, page):
    """Pick tiny-lm, run an int4 recipe, and find baseline and int4 on a Pareto chart whose axis is decode tokens/s."""
    use_sample_with_recipe(page, server.url, "tiny-lm", LM_RECIPE)
    button(page, "Run 1 variant").click()
    clicked = time.perf_counter()
    page.get_by_text("Run completed").wait_for(timeout=300_000)
    print(f"\ntiny-lm int4 run finished {time.perf_counter() - clicked:.1f} s after Run")

    nav(page, "Compare")
    labels = point_labels(page, timeout_s=60)
    assert "baseline" in labels and "int4" in labels, labels
    chart = page.locator(".js-plotly-plot").first
    assert "Decode tokens/s" in chart.locator(".ytitle").text_content()
    assert "Perplexity" in chart.inner_text()
