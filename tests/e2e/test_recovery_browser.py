"""Accuracy recovery in a real browser: pick sample:shapes-mobile, choose the "Recover accuracy" preset, run its
post-training variants and find them on the Compare page."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_studio import apply_yaml, button, nav, point_labels, recipe_yaml, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# The preset's post-training variants with a short benchmark (QAT's epochs take minutes on 2 cores: its own test
# is tests/test_recovery.py; the preset's QAT variant is checked in the form, not run here).
RUN_VARIANTS = ("int8-per-tensor", "int8-per-tensor-recovered")
E2E_BENCH = "benchmark: {batch_sizes: [1], threads: 1, warmup: 2, runs: 10, max_seconds: 1.0}\n"


def test_recover_accuracy_preset_on_shapes_mobile(server, page):
    """The preset lists plain and recovered int8 variants (and QAT) for shapes-mobile; its recovered per-tensor
    variant runs to completion and shows on the Compare chart beside plain per-tensor int8."""
    page.goto(server.url)
    wait_idle(page)
    button(page, "Use shapes-mobile").click()
    page.get_by_text("Model card · shapes-mobile").wait_for(timeout=90_000)
    wait_idle(page)
    nav(page, "Optimize")
    page.get_by_role("button", name="Recover accuracy").or_(page.get_by_text("Recover accuracy", exact=True)) \
        .first.click()
    wait_idle(page)
    for name in ("int8-per-tensor", "int8-per-tensor-recovered", "int8-qat"):
        page.get_by_text(name, exact=False).first.wait_for(timeout=30_000)

    # Keep two of the preset's variants and a short benchmark: the YAML tab holds exactly what the preset made.
    text = recipe_yaml(page)
    assert "equalize: true" in text and "bias_correction: true" in text and "mode: qat" in text
    assert "weight_rounding: learned" in text and "epochs" not in text.split("mode: qat")[0]  # static: no epochs
    recipe = E2E_BENCH + "variants:\n" + "".join(
        f"- name: {name}\n  steps:\n  - {{technique: quantize, mode: static, per_channel: false"
        + (", equalize: true, bias_correction: true" if name.endswith("recovered") else "") + "}\n"
        for name in RUN_VARIANTS)
    apply_yaml(page, recipe)
    button(page, "Run 2 variants").click()
    started = time.perf_counter()
    page.get_by_text("Run completed").wait_for(timeout=300_000)
    print(f"\nrecovery run finished {time.perf_counter() - started:.1f} s after Run")

    nav(page, "Compare")
    labels = point_labels(page)
    assert "baseline" in labels and all(name in labels for name in RUN_VARIANTS), labels
