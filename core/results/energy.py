"""Energy per inference: measured (from `core.measure.energy`'s counters) or estimated (CPU time x watts per
core), and grams of CO2 at a grid intensity."""

from __future__ import annotations

from dataclasses import dataclass

from core.format import round_significant
from core.results.assumptions import CostAssumptions


JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class EnergyEstimate:
    """Joules per inference, whether they were measured or estimated, and what was assumed."""

    joules: float | None
    basis: str | None  # "measured" | "estimated" | None
    assumption: str


def energy_per_inference(cpu_ms_per_sample: float | None, measured_joules: float | None,
                         assumptions: CostAssumptions, *, source: str | None = None,
                         throughput_per_s: float | None = None, threads: int = 1) -> EnergyEstimate:
    """Joules per inference: measured when the energy counters gave a number, else estimated.

    Estimated = CPU seconds per inference x watts per core (CPU time counts every busy thread, so it already
    covers multi-threaded runs); without a recorded CPU time, wall time x threads stands in for it.
    """
    if measured_joules is not None and measured_joules > 0:
        return EnergyEstimate(round_significant(measured_joules), "measured", source or "measured (RAPL powercap)")
    watts = assumptions.watts_per_core
    if cpu_ms_per_sample is not None and cpu_ms_per_sample > 0:
        return EnergyEstimate(round_significant(cpu_ms_per_sample / 1000.0 * watts), "estimated",
                              f"estimated: CPU time x {watts:g} W per core")
    if throughput_per_s:
        return EnergyEstimate(round_significant(max(1, int(threads)) / throughput_per_s * watts), "estimated",
                              f"estimated: wall time x {max(1, int(threads))} thread(s) x {watts:g} W per core "
                              "(no CPU time recorded)")
    return EnergyEstimate(None, None, "not measured")


def co2_grams(joules: float | None, grid_g_per_kwh: float) -> float | None:
    """Grams of CO2 for `joules` of electricity at a grid intensity in gCO2/kWh."""
    if joules is None:
        return None
    return round_significant(joules / JOULES_PER_KWH * grid_g_per_kwh)
