"""Cost and device fit: dollars per million inferences, joules and grams of CO2 per variant (`core.results.energy`),
and roofline estimates of whether a variant fits a device (the figure is `core.views.cost`).

Every number that depends on a price, a wattage or a grid intensity is computed here from measured quantities
(throughput, CPU time, energy counters, the ONNX graph) and a `CostAssumptions`; the defaults are assumptions
with a stated source (see README, "Cost, energy and device fit"), never measurements.
"""

from __future__ import annotations

from pathlib import Path

from core.format import as_number, format_money, round_significant
from core.measure.compute import compute_profile_isolated
from core.results.assumptions import SECONDS_PER_MONTH, CostAssumptions
from core.results.energy import JOULES_PER_KWH, co2_grams, energy_per_inference
from core.io.files import inside_run
from core.results.devices import DEFAULT_DEVICES, device_fit


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


def decoder_cost(variant: dict, assumptions: CostAssumptions | None = None, threads: int = 1) -> dict:
    """A decoder variant's cost per million generated tokens, from its measured decode tokens/s at batch 1.

    Generation is decode-bound (one forward pass per token), so the decode rate prices a token; prefill is
    faster per token and reported beside it. Same arithmetic as `cost_per_million`, with tokens for inferences.

    Returns:
        ``{"usd_per_million_tokens": decode-priced, "usd_per_million_prompt_tokens": prefill-priced,
        "basis": str, "assumptions": {...}, "threads": n}``.
    """
    assumptions = assumptions or CostAssumptions()
    rates = variant.get("tokens_per_s") or {}
    return {"usd_per_million_tokens": cost_per_million(rates.get("decode"), assumptions, threads),
            "usd_per_million_prompt_tokens": cost_per_million(rates.get("prefill"), assumptions, threads),
            "basis": "measured decode (and prefill) tokens/s at batch 1 x price per core-hour x threads",
            "assumptions": assumptions.to_dict(), "threads": threads}


def cost_unit(results: dict) -> str:
    """What one priced unit of a run is: an "inference", or for a decoder a "generated token" (its throughput is
    decode tokens/s at batch 1, so every price, energy and CO2 figure of the run is per generated token)."""
    return "generated token" if results.get("task") == "text-generation" else "inference"


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
        compute = variant_profile(results, v, run_dir)
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
        compute = variant_profile(results, v, run_dir)
        for device in devices:
            fit = device_fit(compute, device)
            rows.append({"variant": v.get("name"), "device": device.name, "fits": fit["fits"],
                         "est_latency_ms": fit["latency_ms_estimate"], "bound": fit["bound"],
                         "reason": fit["reason"]})
    return pd.DataFrame(rows, columns=["variant", "device", "fits", "est_latency_ms", "bound", "reason"])


def variant_profile(results: dict, variant: dict, run_dir: str | Path | None = None) -> dict:
    """A variant's compute profile: results.json's; for a run recorded before profiles existed, its artifact's when
    `run_dir` is given. A decoder's profile is per decoded token and comes only from its run: an artifact's
    whole-sequence profile would not be per token. Empty when there is none."""
    if variant.get("compute"):
        return variant["compute"]
    if run_dir is None or cost_unit(results) == "generated token":
        return {}
    return profile_from_artifact(run_dir, variant) or {}


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
    # A decoder's throughput is its decode tokens/s (core.pipeline.decoder), so every figure is per generated token.
    unit = cost_unit(results)
    rate = "generated tokens/s" if unit == "generated token" else "req/s"
    lines = [f"cost and energy at batch {batch} (assumed: ${assumptions.price_per_core_hour_usd:.4g} per core-hour, "
             f"{assumptions.watts_per_core:g} W per busy core when estimated, {assumptions.requests_per_second:g} "
             f"{rate}, {assumptions.grid_g_per_kwh:g} gCO2/kWh):"]
    sources = {(v.get("energy") or {}).get("source") for v in variants} - {None}
    notes = {(v.get("energy") or {}).get("note") for v in variants} - {None}
    if sources:
        lines.append("  energy " + "; ".join(sorted(sources)))
    if notes:
        lines.append(f"  energy estimated from CPU time x {assumptions.watts_per_core:g} W where not measured: "
                     + "; ".join(sorted(notes)))
    for row in frame.to_dict("records"):
        usd, energy_mj = as_number(row["usd_per_million"]), as_number(row["energy_mj"])
        price = "–" if usd is None else f"${usd:.4g}"
        energy = "–" if energy_mj is None else f"{energy_mj:.4g} mJ"
        saving_usd = as_number(row["monthly_saving_usd"])
        saving = "" if row["name"] == "baseline" or saving_usd is None else (
            f", saves {format_money(saving_usd)}/month" if saving_usd >= 0
            else f", costs {format_money(-saving_usd)}/month more")
        lines.append(f"  {row['name']}: {price} per million {unit}s, {energy} per {unit} "
                     f"({row['energy_basis'] or 'n/a'}){saving}")
    return lines


__all__ = ["cost_frame", "cost_per_million", "cost_unit", "device_fit_frame", "monthly_cost", "monthly_saving",
           "profile_from_artifact", "results_columns", "summary_lines", "variant_cost", "variant_profile"]
