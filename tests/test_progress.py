"""Progress inside long steps (issue 16): a benchmark reports its own fraction and ETA, the run's timing phase
moves the run's bar, elapsed time ticks between events, and a stopped run says what it kept."""

from __future__ import annotations

import time

from core.measure import quality as measure
from core.io.graph import graph_inputs
from core.pipeline.run import run_recipe
from core.spec.recipe import BenchmarkConfig, QuantizeConfig, Recipe, Variant
from core.session import live_elapsed_s


def test_benchmark_reports_fraction_and_eta(monkeypatch, digits_cnn, digits_cnn_data):
    """Every round reports (with the throttle off): fractions climb to ~1 across batch sizes, messages give the
    batch size, the round, the most rounds and the time left."""
    monkeypatch.setattr(measure, "PROGRESS_EVERY_S", 0.0)
    events = []
    measure.benchmark(digits_cnn.onnx_bytes(), graph_inputs(digits_cnn.onnx_model), digits_cnn_data.eval.x,
                      (1, 8), warmup=3, runs=12, max_seconds=5.0, on_progress=lambda f, m: events.append((f, m)))
    fractions = [f for f, _ in events]
    assert len(events) >= 2 * (1 + 12)  # a warm-up report and one per round, per batch size
    assert fractions == sorted(fractions) and fractions[0] < 0.2 and fractions[-1] > 0.95
    assert any("timing batch 8" in m for _, m in events) and any("warm-up" in m for _, m in events)
    assert all(" left at this batch size" in m for _, m in events if "warm-up" not in m)
    assert any("round 12 of at most 12" in m for _, m in events)


def test_benchmark_throttles_reports(digits_cnn, digits_cnn_data):
    """With the default throttle a sub-second benchmark sends at most a couple of reports, not one per run."""
    events = []
    measure.benchmark(digits_cnn.onnx_bytes(), graph_inputs(digits_cnn.onnx_model), digits_cnn_data.eval.x,
                      (1,), warmup=2, runs=50, max_seconds=0.3, on_progress=lambda f, m: events.append(f))
    assert len(events) <= 2


def test_the_timing_phase_moves_the_bar(monkeypatch, tmp_path):
    """Every variant's quality arrives first (variant_done), then the timing phase of all of them together sends
    step events whose fraction grows through the last part of the bar, each stamped with its wall-clock time."""
    monkeypatch.setattr(measure, "PROGRESS_EVERY_S", 0.0)
    bench = BenchmarkConfig(batch_sizes=(1, 16), warmup=2, runs=10, max_seconds=1.0)
    recipe = Recipe(model="sample:digits-mlp", data="sample:digits", benchmark=bench,
                    variants=(Variant("int8", (QuantizeConfig(mode="dynamic"),)),))
    events = []
    before = time.time()
    run_recipe(recipe, tmp_path, on_progress=events.append)
    done = [i for i, e in enumerate(events) if e.kind == "variant_done"]
    assert len(done) == 2 and all(not e.result["latency_ms"] for e in (events[i] for i in done))  # scored, untimed
    timing = [e for e in events[done[-1]:] if e.kind == "step" and e.variant == "timing"]
    assert len(timing) >= 10
    fractions = [e.fraction for e in timing]
    assert fractions == sorted(fractions) and 2 / 3 <= fractions[0] and fractions[-1] <= 1.0  # the last of 3 parts
    assert any("timing batch 16" in e.message and "left" in e.message for e in timing)
    assert all(before <= e.emitted_at <= time.time() for e in events)


def test_elapsed_time_ticks_between_events():
    """The elapsed time shown grows with the clock while no event arrives (it stayed at '0.0 s' for minutes)."""
    event = {"elapsed_s": 2.0, "emitted_at": 1000.0}
    assert live_elapsed_s(event, now=1000.0) == 2.0
    assert live_elapsed_s(event, now=1240.0) == 242.0
    assert live_elapsed_s({"elapsed_s": 3.0}, now=5000.0) == 3.0  # an old event without a stamp
    assert live_elapsed_s(None) == 0.0
