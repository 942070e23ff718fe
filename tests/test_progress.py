"""Progress inside long steps (issue 16): a benchmark reports its own fraction and ETA, the baseline's measurement
moves the run's bar, elapsed time ticks between events, and a stopped run says what it kept."""

from __future__ import annotations

import time

from core.measure import quality as measure
from core.io.graph import graph_inputs
from core.pipeline.run import run_recipe
from core.spec.recipe import BenchmarkConfig, QuantizeConfig, Recipe, Variant
from core.session import live_elapsed_s


def test_benchmark_reports_fraction_and_eta(monkeypatch, digits_cnn, digits_cnn_data):
    """Every run reports (with the throttle off): fractions climb to ~1 across batch sizes, messages give the
    batch size, the run count and the time left."""
    monkeypatch.setattr(measure, "PROGRESS_EVERY_S", 0.0)
    events = []
    measure.benchmark(digits_cnn.onnx_bytes(), graph_inputs(digits_cnn.onnx_model), digits_cnn_data.eval.x,
                      (1, 8), warmup=3, runs=12, max_seconds=5.0, on_progress=lambda f, m: events.append((f, m)))
    fractions = [f for f, _ in events]
    assert len(events) >= 2 * (3 + 12) - 2
    assert fractions == sorted(fractions) and 0.0 < fractions[0] < 0.2 and fractions[-1] > 0.95
    assert any("timing batch 8" in m for _, m in events) and any("(warm-up)" in m for _, m in events)
    assert all(" left at this batch size" in m for _, m in events)
    assert any("run 15 of ~15" in m for _, m in events)


def test_benchmark_throttles_reports(digits_cnn, digits_cnn_data):
    """With the default throttle a sub-second benchmark sends at most a couple of reports, not one per run."""
    events = []
    measure.benchmark(digits_cnn.onnx_bytes(), graph_inputs(digits_cnn.onnx_model), digits_cnn_data.eval.x,
                      (1,), warmup=2, runs=50, max_seconds=0.3, on_progress=lambda f, m: events.append(f))
    assert len(events) <= 2


def test_baseline_measurement_moves_the_bar(monkeypatch, tmp_path):
    """Before the baseline is done, the run sends step events of the baseline whose fraction grows above zero
    (the bar sat at 0 % for minutes on a long baseline), each stamped with its wall-clock time."""
    monkeypatch.setattr(measure, "PROGRESS_EVERY_S", 0.0)
    bench = BenchmarkConfig(batch_sizes=(1, 16), warmup=2, runs=10, max_seconds=1.0)
    recipe = Recipe(model="sample:digits-mlp", data="sample:digits", benchmark=bench,
                    variants=(Variant("int8", (QuantizeConfig(mode="dynamic"),)),))
    events = []
    before = time.time()
    run_recipe(recipe, tmp_path, on_progress=events.append)
    done = next(i for i, e in enumerate(events) if e.kind == "variant_done")
    inside = [e for e in events[:done] if e.kind == "step" and e.variant == "baseline"]
    assert len(inside) >= 10
    fractions = [e.fraction for e in inside]
    assert fractions == sorted(fractions) and 0.4 < fractions[-1] <= 0.5  # the baseline is 1 of 2 parts
    assert any("timing batch 16" in e.message and "left" in e.message for e in inside)
    assert all(before <= e.emitted_at <= time.time() for e in events)
    variant_steps = [e for e in events[done:] if e.kind == "step" and "measuring: timing" in e.message]
    assert variant_steps and all(0.5 < e.fraction <= 1.0 for e in variant_steps)


def test_elapsed_time_ticks_between_events():
    """The elapsed time shown grows with the clock while no event arrives (it stayed at '0.0 s' for minutes)."""
    event = {"elapsed_s": 2.0, "emitted_at": 1000.0}
    assert live_elapsed_s(event, now=1000.0) == 2.0
    assert live_elapsed_s(event, now=1240.0) == 242.0
    assert live_elapsed_s({"elapsed_s": 3.0}, now=5000.0) == 3.0  # an old event without a stamp
    assert live_elapsed_s(None) == 0.0
