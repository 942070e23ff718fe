"""Interleaved timing (core.measure.timing): a synthetic clock with a known ratio, heavy-tailed noise and bursts of
contention; the 95% interval must cover the truth in at least 90% of seeds, and an interval containing 1 never
reads "slower"."""

from __future__ import annotations

import numpy as np
import pytest

from core.format import format_speedup, speedup_verdict
from core.measure.timing import median_interval, speedup_of, time_in_rounds, within_target


class NoisyMachine:
    """A fake clock and runners whose calls take `true_s` seconds times noise: lognormal jitter, a Pareto tail
    (a preemption now and then), and bursts of contention that last tens of calls and slow whatever runs then."""

    def __init__(self, seed: int, burst_rate: float = 0.02, burst_calls: int = 40):
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.burst_left = 0
        self.burst_factor = 1.0
        self.burst_rate, self.burst_calls = burst_rate, burst_calls

    def clock(self) -> float:
        return self.now

    def runner(self, true_s: float):
        def call():
            if self.burst_left == 0 and self.rng.random() < self.burst_rate:
                self.burst_left = int(self.rng.integers(5, self.burst_calls))
                self.burst_factor = float(self.rng.uniform(1.5, 3.0))
            factor = self.burst_factor if self.burst_left else 1.0
            self.burst_left = max(0, self.burst_left - 1)
            jitter = self.rng.lognormal(0.0, 0.05)
            tail = 1.0 + (self.rng.pareto(2.5) * 0.3 if self.rng.random() < 0.05 else 0.0)
            self.now += true_s * factor * jitter * tail
        return call


@pytest.mark.parametrize("true_ratio", [1.0, 2.5])
def test_interval_covers_the_true_ratio_in_at_least_90_percent_of_seeds(true_ratio):
    """A known ratio under heavy-tailed, bursty noise: the 95% interval covers it in >= 90% of 60 seeds."""
    covered, widths = 0, []
    for seed in range(60):
        machine = NoisyMachine(seed)
        timing = time_in_rounds({"base": machine.runner(0.010), "fast": machine.runner(0.010 / true_ratio)},
                                "base", max_seconds=30.0, clock=machine.clock, seed=seed)
        s = timing.speedup["fast"]
        covered += s.low <= true_ratio <= s.high
        widths.append((s.high - s.low) / s.ratio)
    assert covered >= 54, f"covered {covered} of 60"
    assert np.median(widths) <= 0.10  # the rounds stop once the interval is within ±5%


def test_rounds_stop_at_the_target_or_the_cap():
    """Quiet noise converges in few rounds; a cap of a few rounds stops unconverged and says so."""
    machine = NoisyMachine(0, burst_rate=0.0)
    quiet = time_in_rounds({"a": machine.runner(0.01), "b": machine.runner(0.005)}, "a", clock=machine.clock)
    assert quiet.converged and quiet.rounds < 100
    assert within_target(quiet.speedup["b"].ratio, quiet.speedup["b"].low, quiet.speedup["b"].high)
    noisy = NoisyMachine(1, burst_rate=0.3)
    capped = time_in_rounds({"a": noisy.runner(0.01), "b": noisy.runner(0.01)}, "a", max_rounds=3,
                            clock=noisy.clock, target=0.001)
    assert capped.rounds == 3 and not capped.converged
    assert capped.latency_ms["a"]["runs"] >= 3


def test_cold_cache_turns_do_not_bias_the_ratio():
    """Runners that are slower on the first call after another runner (cold caches): the same for both, so the
    ratio of two identical runners stays 1."""
    state = {"now": 0.0, "last": None}

    def runner(name, seconds):
        def call():
            cold = state["last"] != name
            state["now"] += seconds * (1.5 if cold else 1.0)
            state["last"] = name
        return call

    timing = time_in_rounds({"a": runner("a", 0.01), "b": runner("b", 0.01)}, "a", clock=lambda: state["now"],
                            max_rounds=40, min_rounds=40)
    assert timing.speedup["b"].ratio == pytest.approx(1.0, abs=0.01)


def test_identical_runners_read_no_measurable_difference():
    """Two identical runners: an interval around 1, which reads 'no measurable difference', never 'slower'."""
    machine = NoisyMachine(3)
    timing = time_in_rounds({"a": machine.runner(0.01), "b": machine.runner(0.01)}, "a", clock=machine.clock)
    entry = timing.speedup["b"].to_dict()
    assert speedup_verdict(entry) == "no measurable difference"
    assert format_speedup(entry).startswith("no measurable difference (")


def test_formats_and_verdicts():
    """'2.1x (2.0–2.2)' for a clear speed-up; a clear slow-down keeps its figure; no entry is '–'."""
    assert format_speedup({"ratio": 2.1, "low": 2.0, "high": 2.2, "rounds": 30}) == "2.10x (2.00–2.20)"
    assert speedup_verdict({"ratio": 0.6, "low": 0.55, "high": 0.65}) == "slower"
    assert speedup_verdict({"ratio": 0.97, "low": 0.9, "high": 1.01}) == "no measurable difference"
    assert format_speedup(None) == "–"


def test_median_interval_is_deterministic_and_brackets_the_median():
    """The bootstrap is seeded: the same ratios give the same interval, and it brackets the median."""
    ratios = np.random.default_rng(0).lognormal(0.7, 0.1, 50)
    first, second = median_interval(ratios, seed=4), median_interval(ratios, seed=4)
    assert first == second
    median, low, high = first
    assert low <= median <= high
    assert speedup_of([1.0] * 5, [0.5] * 5).ratio == pytest.approx(2.0)


def test_holdout_rounds_are_disjoint_from_the_reported_ones():
    """With a holdout, the reported figures come from the even rounds and `selection` from the odd ones: a variant
    twice as fast in even rounds and even with the baseline in odd ones reads 2x reported, 1x for choosing."""
    state = {"now": 0.0, "fast_calls": 0}

    def base():
        state["now"] += 0.010

    def fast():
        timed_round = state["fast_calls"] - 1  # its first call is the warm-up; then one call a round (10 ms >> 1 ms)
        state["fast_calls"] += 1
        state["now"] += 0.005 if timed_round % 2 == 0 else 0.010

    timing = time_in_rounds({"base": base, "fast": fast}, "base", warmup=1, min_rounds=20, max_rounds=20,
                            round_seconds=0.001, holdout=True, clock=lambda: state["now"])
    assert timing.rounds == 20 and timing.holdout
    assert timing.speedup["fast"].ratio == pytest.approx(2.0) and timing.speedup["fast"].rounds == 10
    assert timing.selection["fast"].ratio == pytest.approx(1.0) and timing.selection["fast"].rounds == 10
    assert timing.latency_ms["fast"]["p50"] == pytest.approx(5.0)
    assert timing.selection_latency_ms["fast"]["p50"] == pytest.approx(10.0)
    assert timing.usage["fast"]["calls"] == 20  # usage counts every round, both halves


def test_converged_needs_the_minimum_rounds():
    """A quick look capped below the minimum rounds never reads 'converged', however narrow its interval."""
    machine = NoisyMachine(0, burst_rate=0.0)
    quick = time_in_rounds({"a": machine.runner(0.01), "b": machine.runner(0.005)}, "a", max_rounds=5,
                           clock=machine.clock)
    assert quick.rounds == 5 and not quick.converged and not quick.speedup["b"].converged
    s = quick.speedup["b"]
    assert within_target(s.ratio, s.low, s.high)  # narrow, but 5 rounds are not enough to trust it


def test_a_ratio_without_an_interval_gets_no_verdict():
    """An older run's bare p50 ratio is shown as a figure, with no 'faster' / 'slower' claim."""
    assert speedup_verdict({"ratio": 0.97}) is None
    assert format_speedup({"ratio": 0.97}) == "0.97x"
    assert format_speedup({"ratio": 2.1, "low": None, "high": None}) == "2.10x"


def test_ratios_read_the_cpu_clock_so_time_given_to_other_processes_does_not_count():
    """A long call set aside for another process's slice more often than a short one: on the wall clock the ratio
    inflates; on the thread's CPU clock it is the true 2x. The latency percentiles stay wall-clock."""
    rng = np.random.default_rng(0)
    state = {"wall": 0.0, "cpu": 0.0}

    def runner(seconds, preempted_share):
        def call():
            state["cpu"] += seconds
            state["wall"] += seconds + (0.030 if rng.random() < preempted_share else 0.0)
        return call

    def timing(cpu_clock):
        return time_in_rounds({"base": runner(0.010, 0.8), "fast": runner(0.005, 0.1)}, "base", min_rounds=30,
                              max_rounds=30, round_seconds=0.2, clock=lambda: state["wall"], cpu_clock=cpu_clock)

    on_wall, on_cpu = timing(None), timing(lambda: state["cpu"])
    assert on_wall.speedup["fast"].ratio > 3.0 and on_wall.ratio_clock == "wall"
    assert on_cpu.speedup["fast"].ratio == pytest.approx(2.0) and on_cpu.ratio_clock == "thread CPU"
    assert on_cpu.latency_ms["base"]["p50"] > 30.0  # wall-clock percentiles: preempted calls show
