"""Cost and device fit: dollars per million inferences, joules and grams of CO2 per variant (`core.results.energy`),
and roofline estimates of whether a variant fits a device (the figure is `core.views.cost`).

Every number that depends on a price, a wattage or a grid intensity is computed here from measured quantities
(throughput, CPU time, energy counters, the ONNX graph) and a `CostAssumptions`; the defaults are assumptions
with a stated source (see README, "Cost, energy and device fit"), never measurements.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import BadInputError
from core.format import format_bytes, format_money, round_significant
from core.measure.compute import compute_profile_isolated
from core.results.assumptions import SECONDS_PER_MONTH, SOURCES, CostAssumptions, check_number
from core.results.energy import JOULES_PER_KWH, co2_grams, energy_per_inference
from core.io.files import inside_run


# --------------------------------------------------------------------------------------------------------------
# Money


def cost_per_million(throughput_per_s: float | None, assumptions: CostAssumptions, threads: int = 1) -> float | None:
    """USD per million inferences at a measured throughput.

    The benchmark keeps `threads` cores busy, so a million inferences take ``1e6 / throughput`` seconds of
    ``threads`` cores: cost = that many core-hours x the price per core-hour.

    Args:
        throughput_per_s: measured samples per second (at one batch size).
        assumptions: the price per core-hour.
        threads: cores the benchmark used (the run's ``environment.threads``).

    Returns:
        USD per 1,000,000 inferences, 4 significant figures; None without a positive throughput.
    """
    if not throughput_per_s or throughput_per_s <= 0:
        return None
    core_hours = 1e6 / throughput_per_s * max(1, int(threads)) / 3600.0
    return round_significant(core_hours * assumptions.price_per_core_hour_usd)


def monthly_cost(usd_per_million: float | None, requests_per_second: float) -> float | None:
    """USD a month to serve `requests_per_second` (one inference each) for 730 hours."""
    if usd_per_million is None:
        return None
    return round_significant(usd_per_million * requests_per_second * SECONDS_PER_MONTH / 1e6)


def monthly_saving(baseline_usd_per_million: float | None, variant_usd_per_million: float | None,
                   requests_per_second: float) -> float | None:
    """USD saved a month by serving the variant instead of the baseline (negative: the variant costs more)."""
    if baseline_usd_per_million is None or variant_usd_per_million is None:
        return None
    return round_significant((baseline_usd_per_million - variant_usd_per_million) * requests_per_second
                      * SECONDS_PER_MONTH / 1e6)




# --------------------------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: memory, sustained int8 / fp32 throughput and memory bandwidth (rough, editable)."""

    name: str
    memory_bytes: int  # RAM for activations (and for weights when weight_memory_bytes is None)
    int8_gops: float  # sustained int8 ops/s in billions (1 multiply-accumulate = 2 ops)
    fp32_gflops: float  # sustained fp32 FLOP/s in billions (fp16 graphs are assumed to run at this rate)
    bandwidth_gbps: float  # sustained memory bandwidth, GB/s
    weight_memory_bytes: int | None = None  # separate weight storage (a microcontroller's flash); None = shared

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise BadInputError(f"a device needs a name; got {self.name!r}")
        for name in ("memory_bytes", "int8_gops", "fp32_gflops", "bandwidth_gbps"):
            check_number(f"{self.name}: {name}", getattr(self, name), 0, strict=True)
        if self.weight_memory_bytes is not None:
            check_number(f"{self.name}: weight_memory_bytes", self.weight_memory_bytes, 0, strict=True)

    def to_dict(self) -> dict:
        return asdict(self)


MB = 1_000_000
# Rough, illustrative profiles (derivations in README): peak = cores x clock x SIMD ops per cycle, derated ~50%
# for sustained kernels; bandwidth ~60% of the memory bus's theoretical rate. Edit them to your device.
DEFAULT_DEVICES = (
    # 4 big Arm Cortex-A7x-class cores ~2.8 GHz, 2x128-bit FMA (fp32 peak ~180 GFLOPS; int8 SDOT 4x that);
    # LPDDR5 64-bit 6400 MT/s = 51 GB/s theoretical. CPU only: an NPU is not counted. 1 GB app budget.
    DeviceProfile("Phone SoC (CPU cores)", 1000 * MB, int8_gops=360.0, fp32_gflops=90.0, bandwidth_gbps=30.0),
    # Raspberry Pi 4: 4x Cortex-A72 1.5 GHz (fp32 peak ~48 GFLOPS, no int8 dot product); LPDDR4 32-bit,
    # ~4-5 GB/s measured by STREAM-like tests. 2 GB of its 4 GB for the model.
    DeviceProfile("Raspberry Pi 4 class", 2000 * MB, int8_gops=40.0, fp32_gflops=20.0, bandwidth_gbps=4.0),
    # Cortex-M7 480 MHz (STM32H7-class): CMSIS-NN int8 2 MACs/cycle (~1.9 GOPS peak), single-precision FPU 1 FMA
    # per cycle (~1 GFLOPS peak); 1 MB SRAM for activations, 2 MB flash for weights.
    DeviceProfile("Microcontroller (Cortex-M7 class)", 1 * MB, int8_gops=1.0, fp32_gflops=0.5,
                  bandwidth_gbps=1.0, weight_memory_bytes=2 * MB),
)


def _profile_of(row) -> dict | None:
    """A compute profile from a results.json variant (its ``compute``) or a results / cost table row."""
    getter = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    compute = getter("compute", None)
    if isinstance(compute, dict) and compute:
        return compute
    profile = {}
    for key in ("macs", "int8_macs", "float_macs", "weight_bytes", "peak_activation_bytes", "bytes_moved",
                "precision"):
        value = getter(key, None)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            profile[key] = value
    return profile or None


def device_fit(profile: dict | None, device: DeviceProfile) -> dict:
    """Whether a variant's weights and peak activations fit `device`, and a roofline latency estimate.

    The estimate is ``max(compute time, memory time)`` with compute time = 2 x int8 MACs / int8 throughput +
    2 x float MACs / fp32 throughput and memory time = bytes moved / bandwidth, at batch 1: an estimate, not a
    measurement (no cache reuse, no kernel overheads, no operator support checks).

    Returns:
        ``{fits, latency_ms_estimate, bound, memory_needed_bytes, reason}``; ``fits`` is False when the profile
        is unknown.
    """
    if not profile or profile.get("weight_bytes") is None or profile.get("peak_activation_bytes") is None:
        return {"fits": False, "latency_ms_estimate": None, "bound": None, "memory_needed_bytes": None,
                "reason": "no compute profile recorded for this variant"}
    weights = int(profile["weight_bytes"])
    activations = int(profile["peak_activation_bytes"])
    if device.weight_memory_bytes is None:
        needed = weights + activations
        fits = needed <= device.memory_bytes
        reason = (f"weights {format_bytes(weights)} + peak activations {format_bytes(activations)} = "
                  f"{format_bytes(needed)} {'<=' if fits else '>'} memory {format_bytes(device.memory_bytes)}")
    else:
        needed = weights + activations
        weights_fit = weights <= device.weight_memory_bytes
        activations_fit = activations <= device.memory_bytes
        fits = weights_fit and activations_fit
        reason = (f"weights {format_bytes(weights)} {'<=' if weights_fit else '>'} weight memory "
                  f"{format_bytes(device.weight_memory_bytes)}; peak activations {format_bytes(activations)} "
                  f"{'<=' if activations_fit else '>'} memory {format_bytes(device.memory_bytes)}")
    int8_macs = profile.get("int8_macs")
    float_macs = profile.get("float_macs")
    if int8_macs is None and float_macs is None:
        macs = profile.get("macs") or 0
        int8_macs, float_macs = (macs, 0) if profile.get("precision") == "int8" else (0, macs)
    compute_s = 2.0 * (int8_macs or 0) / (device.int8_gops * 1e9) + 2.0 * (float_macs or 0) / (device.fp32_gflops * 1e9)
    memory_s = float(profile.get("bytes_moved") or weights + 2 * activations) / (device.bandwidth_gbps * 1e9)
    return {"fits": bool(fits), "latency_ms_estimate": round_significant(max(compute_s, memory_s) * 1000.0),
            "bound": "compute" if compute_s >= memory_s else "memory", "memory_needed_bytes": needed,
            "reason": reason}


def variants_fitting(results: dict, device: DeviceProfile) -> list[str]:
    """Names of the run's measured variants that fit `device` (results.json variants carry ``compute``)."""
    return [v["name"] for v in results.get("variants", [])
            if v.get("status") == "ok" and _profile_of(v) and fits(v, device)]


def fits(variant_row, device: DeviceProfile) -> bool:
    """Whether a variant (a results.json variant dict, or a results / cost table row) fits `device`."""
    return bool(device_fit(_profile_of(variant_row), device)["fits"])


def devices_to_rows(devices) -> list[dict]:
    """Device profiles as editable rows in friendly units (MB, GOPS, GFLOPS, GB/s)."""
    return [{"name": d.name, "memory_mb": d.memory_bytes / MB,
             "weight_memory_mb": None if d.weight_memory_bytes is None else d.weight_memory_bytes / MB,
             "int8_gops": d.int8_gops, "fp32_gflops": d.fp32_gflops, "bandwidth_gbps": d.bandwidth_gbps}
            for d in devices]


def devices_from_rows(rows) -> tuple[list[DeviceProfile], list[str]]:
    """Device profiles from edited rows (see `devices_to_rows`); a bad row is skipped and its error returned."""
    devices, errors, seen = [], [], set()
    for index, row in enumerate(rows, start=1):
        name = row.get("name")
        if name is None or (isinstance(name, float) and math.isnan(name)) or not str(name).strip():
            if any(_number(row.get(k)) is not None for k in ("memory_mb", "int8_gops", "fp32_gflops")):
                errors.append(f"row {index}: a device needs a name")
            continue
        name = str(name).strip()
        if name in seen:
            errors.append(f"row {index}: the name {name!r} is used twice")
            continue
        try:
            memory, weight_memory = _number(row.get("memory_mb")), _number(row.get("weight_memory_mb"))
            devices.append(DeviceProfile(
                name, memory_bytes=int(round(memory * MB)) if memory is not None else None,
                int8_gops=_number(row.get("int8_gops")), fp32_gflops=_number(row.get("fp32_gflops")),
                bandwidth_gbps=_number(row.get("bandwidth_gbps")),
                weight_memory_bytes=int(round(weight_memory * MB)) if weight_memory is not None else None))
            seen.add(name)
        except BadInputError as exc:
            errors.append(f"row {index}: {exc}")
    return devices, errors


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------------------------------------------
# Per-variant numbers, tables and figures


def _threads(results: dict) -> int:
    try:
        return max(1, int((results.get("environment") or {}).get("threads") or 1))
    except (TypeError, ValueError):
        return 1


def variant_cost(variant: dict, assumptions: CostAssumptions | None = None, threads: int = 1) -> dict:
    """A variant's cost and energy per batch size under `assumptions` (what results.json stores as ``cost``).

    Returns:
        ``{"usd_per_million": {bs}, "joules_per_inference": {bs}, "energy_basis": {bs}, "gco2_per_million": {bs},
        "assumptions": {...}, "threads": n}`` with batch sizes as strings.
    """
    assumptions = assumptions or CostAssumptions()
    throughput = variant.get("throughput") or {}
    cpu_ms = variant.get("cpu_ms_per_sample") or {}
    energy = variant.get("energy") or {}
    measured = energy.get("joules_per_sample") or {}
    out = {"usd_per_million": {}, "joules_per_inference": {}, "energy_basis": {}, "gco2_per_million": {},
           "assumptions": assumptions.to_dict(), "threads": threads}
    for bs in sorted(set(throughput) | set(cpu_ms) | set(measured), key=lambda b: int(b)):
        out["usd_per_million"][bs] = cost_per_million(throughput.get(bs), assumptions, threads)
        estimate = energy_per_inference(cpu_ms.get(bs), measured.get(bs), assumptions, source=energy.get("source"),
                                        throughput_per_s=throughput.get(bs), threads=threads)
        out["joules_per_inference"][bs] = estimate.joules
        out["energy_basis"][bs] = estimate.basis
        out["gco2_per_million"][bs] = co2_grams(None if estimate.joules is None else estimate.joules * 1e6,
                                                assumptions.grid_g_per_kwh)
    return out


def _baseline(variants: list) -> dict:
    return next((v for v in variants if v.get("name") == "baseline"), variants[0] if variants else {})


def results_columns(variant: dict, baseline: dict, batch_sizes, threads: int = 1,
                    assumptions: CostAssumptions | None = None) -> dict:
    """The cost / energy / compute columns `results_frame` adds to a variant's row (stored assumptions first)."""
    stored = (variant.get("cost") or {}).get("assumptions")
    assumptions = assumptions or CostAssumptions.from_dict(stored)
    mine = variant_cost(variant, assumptions, threads)
    base = variant_cost(baseline, assumptions, threads)
    row = {}
    for bs in batch_sizes:
        key = str(bs)
        usd = mine["usd_per_million"].get(key)
        joules = mine["joules_per_inference"].get(key)
        row[f"usd_per_million_bs{bs}"] = usd
        row[f"monthly_saving_usd_bs{bs}"] = monthly_saving(base["usd_per_million"].get(key), usd,
                                                           assumptions.requests_per_second)
        row[f"energy_mj_bs{bs}"] = None if joules is None else round_significant(joules * 1000.0)
        row[f"gco2_per_million_bs{bs}"] = mine["gco2_per_million"].get(key)
    bases = {b for b in mine["energy_basis"].values() if b}
    row["energy_basis"] = bases.pop() if len(bases) == 1 else ("mixed" if bases else None)
    compute = variant.get("compute") or {}
    for key in ("macs", "weight_bytes", "peak_activation_bytes"):
        row[key] = compute.get(key)
    return row


def cost_frame(results: dict, assumptions: CostAssumptions | None = None, devices=DEFAULT_DEVICES,
               batch_size: int | None = None, *, run_dir: str | Path | None = None):
    """One row per variant: cost per million, monthly cost and saving, energy (measured / estimated), CO2, and
    fit plus estimated latency on each device.

    Args:
        results: a results.json dict.
        assumptions: prices, power and traffic (defaults when None).
        devices: device profiles for the fit columns ``fits: NAME`` / ``est. ms: NAME``.
        batch_size: the serving batch size whose throughput is priced; the largest measured when None.
        run_dir: the run's directory; variants recorded before compute profiles existed get one from their
            artifact when it is given.

    Returns:
        A pandas DataFrame (empty, with the columns, when there are no variants).
    """
    import pandas as pd

    assumptions = assumptions or CostAssumptions()
    variants = results.get("variants") or []
    threads = _threads(results)
    sizes = sorted({int(b) for v in variants for b in (v.get("throughput") or {})})
    if batch_size is None or batch_size not in sizes:
        batch_size = sizes[-1] if sizes else None
    key = str(batch_size) if batch_size is not None else None
    base = _baseline(variants)
    base_usd = variant_cost(base, assumptions, threads)["usd_per_million"].get(key) if base else None
    rows = []
    for v in variants:
        numbers = variant_cost(v, assumptions, threads)
        usd = numbers["usd_per_million"].get(key)
        monthly = monthly_cost(usd, assumptions.requests_per_second)
        joules = numbers["joules_per_inference"].get(key)
        estimate = energy_per_inference((v.get("cpu_ms_per_sample") or {}).get(key),
                                        ((v.get("energy") or {}).get("joules_per_sample") or {}).get(key),
                                        assumptions, source=(v.get("energy") or {}).get("source"),
                                        throughput_per_s=(v.get("throughput") or {}).get(key), threads=threads)
        monthly_joules = None if joules is None else joules * assumptions.requests_per_second * SECONDS_PER_MONTH
        compute = v.get("compute") or (profile_from_artifact(run_dir, v) if run_dir else None) or {}
        row = {"name": v.get("name"), "status": v.get("status"), "batch_size": batch_size,
               "throughput": (v.get("throughput") or {}).get(key),
               "usd_per_million": usd, "monthly_cost_usd": monthly,
               "monthly_saving_usd": monthly_saving(base_usd, usd, assumptions.requests_per_second),
               "saving_pct": _saving_pct(base.get("throughput") or {}, v.get("throughput") or {}, key),
               "energy_mj": None if joules is None else round_significant(joules * 1000.0),
               "energy_basis": estimate.basis, "energy_assumption": estimate.assumption,
               "gco2_per_million": numbers["gco2_per_million"].get(key),
               "monthly_kwh": None if monthly_joules is None else round_significant(monthly_joules / JOULES_PER_KWH),
               "monthly_co2_kg": None if monthly_joules is None
               else round_significant(monthly_joules / JOULES_PER_KWH * assumptions.grid_g_per_kwh / 1000.0),
               "size_bytes": v.get("size_bytes"), "macs": compute.get("macs"),
               "weight_bytes": compute.get("weight_bytes"),
               "peak_activation_bytes": compute.get("peak_activation_bytes"), "precision": compute.get("precision")}
        for device in devices:
            fit = device_fit(compute, device)
            row[f"fits: {device.name}"] = fit["fits"]
            row[f"est. ms: {device.name}"] = fit["latency_ms_estimate"]
        rows.append(row)
    columns = ["name", "status", "batch_size", "throughput", "usd_per_million", "monthly_cost_usd",
               "monthly_saving_usd", "saving_pct", "energy_mj", "energy_basis", "energy_assumption",
               "gco2_per_million", "monthly_kwh", "monthly_co2_kg", "size_bytes", "macs", "weight_bytes",
               "peak_activation_bytes", "precision"]
    columns += [c for d in devices for c in (f"fits: {d.name}", f"est. ms: {d.name}")]
    return pd.DataFrame(rows, columns=columns)


def _saving_pct(base_throughput: dict, throughput: dict, key) -> float | None:
    """Percent of the baseline's cost saved: 1 - baseline throughput / variant throughput (same price, same
    threads), from the unrounded measurements."""
    base, mine = base_throughput.get(key), throughput.get(key)
    if not base or not mine:
        return None
    return round_significant((1.0 - base / mine) * 100.0)


def device_fit_frame(results: dict, devices=DEFAULT_DEVICES, *, run_dir: str | Path | None = None):
    """Long form: one row per (variant, device) with fits, estimated latency, what bounds it, and why."""
    import pandas as pd

    rows = []
    for v in results.get("variants") or []:
        if v.get("status") not in (None, "ok"):
            continue
        compute = v.get("compute") or (profile_from_artifact(run_dir, v) if run_dir else None) or {}
        for device in devices:
            fit = device_fit(compute, device)
            rows.append({"variant": v.get("name"), "device": device.name, "fits": fit["fits"],
                         "est_latency_ms": fit["latency_ms_estimate"], "bound": fit["bound"],
                         "reason": fit["reason"]})
    return pd.DataFrame(rows, columns=["variant", "device", "fits", "est_latency_ms", "bound", "reason"])


def profile_from_artifact(run_dir, variant: dict) -> dict | None:
    """The compute profile of a variant's model file inside `run_dir` (runs recorded before profiles existed)."""
    artifact = variant.get("artifact")
    if not artifact or variant.get("status") not in (None, "ok"):
        return None
    path = inside_run(run_dir, artifact)
    if path is None or not path.is_file():
        return None
    # Parsed in a worker with the upload limits: the file is a run's output, and a run may have been fed a
    # hostile model (issue 15).

    try:
        return compute_profile_isolated(str(path))
    except Exception:  # noqa: BLE001 - an unreadable artifact only loses its device-fit columns
        return None


def summary_lines(results: dict, assumptions: CostAssumptions | None = None) -> list[str]:
    """A short cost / energy summary of a run for the command line (largest batch size, stored assumptions)."""
    variants = [v for v in results.get("variants") or [] if v.get("status") == "ok"]
    if not variants:
        return []
    if assumptions is None:
        assumptions = CostAssumptions.from_dict((variants[0].get("cost") or {}).get("assumptions"))
    frame = cost_frame(results, assumptions, devices=())
    frame = frame[frame["status"] == "ok"]
    if frame.empty or frame["batch_size"].isna().all():
        return []
    batch = int(frame["batch_size"].iloc[0])
    lines = [f"cost and energy at batch {batch} (assumed: ${assumptions.price_per_core_hour_usd:.4g} per core-hour, "
             f"{assumptions.watts_per_core:g} W per busy core when estimated, {assumptions.requests_per_second:g} "
             f"req/s, {assumptions.grid_g_per_kwh:g} gCO2/kWh):"]
    sources = {(v.get("energy") or {}).get("source") for v in variants} - {None}
    notes = {(v.get("energy") or {}).get("note") for v in variants} - {None}
    if sources:
        lines.append("  energy " + "; ".join(sorted(sources)))
    if notes:
        lines.append(f"  energy estimated from CPU time x {assumptions.watts_per_core:g} W where not measured: "
                     + "; ".join(sorted(notes)))
    for row in frame.to_dict("records"):
        usd, energy_mj = _number(row["usd_per_million"]), _number(row["energy_mj"])
        price = "–" if usd is None else f"${usd:.4g}"
        energy = "–" if energy_mj is None else f"{energy_mj:.4g} mJ"
        saving_usd = _number(row["monthly_saving_usd"])
        saving = "" if row["name"] == "baseline" or saving_usd is None else (
            f", saves {format_money(saving_usd)}/month" if saving_usd >= 0
            else f", costs {format_money(-saving_usd)}/month more")
        lines.append(f"  {row['name']}: {price} per million, {energy} per inference "
                     f"({row['energy_basis'] or 'n/a'}){saving}")
    return lines


__all__ = ["CostAssumptions", "DEFAULT_DEVICES", "DeviceProfile", "SOURCES",
           "cost_frame", "cost_per_million", "device_fit", "device_fit_frame",
           "devices_from_rows", "devices_to_rows", "fits",
           "monthly_cost", "monthly_saving", "profile_from_artifact", "results_columns",
           "summary_lines", "variant_cost"]
