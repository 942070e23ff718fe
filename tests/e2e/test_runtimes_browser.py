"""The runtime bake-off in a real browser: a run with `runtimes: [onnxruntime, openvino]` shows both runtimes'
points on Compare's Pareto chart, names the best point's runtime, and says which runtime to ship each variant on."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.test_studio import button, nav, point_labels, use_sample_with_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

BAKEOFF_RECIPE = """seed: 0
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 2, runs: 20, max_seconds: 1.0,
            runtimes: [onnxruntime, openvino]}
variants:
- name: int8-ort
  steps:
  - {technique: quantize, mode: static}
- name: int8-openvino
  steps:
  - {technique: quantize, mode: static, target: openvino}
"""


def test_two_runtimes_on_one_pareto_and_the_best_names_its_runtime(server, page):
    """digits-cnn with both quantizers timed on onnxruntime and OpenVINO: every variant x runtime is a labelled
    point, the best-within-budget line names a variant and a runtime that is one of those points, and the ship
    table is shown."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    use_sample_with_recipe(page, server.url, "digits-cnn", BAKEOFF_RECIPE)
    button(page, "Run 2 variants").click()
    started = time.perf_counter()
    page.get_by_text("Run completed").wait_for(timeout=300_000)
    print(f"\nbake-off run finished {time.perf_counter() - started:.1f} s after Run")

    nav(page, "Compare")
    labels = point_labels(page)
    expected = {f"{variant} · {runtime}" for variant in ("baseline", "int8-ort", "int8-openvino")
                for runtime in ("onnxruntime", "OpenVINO")}
    assert expected <= set(labels), labels
    assert page.get_by_text("Runtimes", exact=True).first.is_visible()
    # no budget is set: the heading names the objective ("Fastest (no budget set)"), never "within budget"
    best_line = page.get_by_text("(no budget set):").first.inner_text()
    best = re.search(r"[A-Z][a-z ]+ \(no budget set\): (\S+) on (onnxruntime|OpenVINO)", best_line)
    assert best is not None, best_line
    assert f"{best.group(1)} · {best.group(2)}" in labels
    page.get_by_text("Which runtime to ship").first.wait_for(timeout=30_000)
