"""Cost page: what each variant costs per million inferences and per month, its energy per inference (measured
or estimated) and CO2, and which target devices it fits — all under assumptions the user can edit."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from core.results import assumptions, cost
from core.results import devices as device_profiles
from core.views import cost as cost_view
from core.errors import FeatherweightError
from core.format import MISSING
from ui import services
from ui.process_cache import process_cached
from ui.run_picker import run_picker_ui
from ui.shell import ensure_app_shell
from ui import state as state_keys

ensure_app_shell()

DEVICE_EDITOR_KEY = "cost_device_editor"
RESET_ASSUMPTIONS_KEY = "cost_reset_assumptions"
RESET_DEVICES_KEY = "cost_reset_devices"
ALL_VARIANTS = "All variants"
DEFAULTS = {
    state_keys.COST_PRICING_KEY: assumptions.PRICING_MODES[0],
    state_keys.COST_PRICE_KEY: assumptions.DEFAULT_PRICE_PER_CORE_HOUR_USD,
    state_keys.COST_INSTANCE_PRICE_KEY: assumptions.DEFAULT_INSTANCE_PRICE_USD,
    state_keys.COST_CORES_KEY: assumptions.DEFAULT_INSTANCE_CORES,
    state_keys.COST_WATTS_KEY: assumptions.DEFAULT_WATTS_PER_CORE,
    state_keys.COST_GRID_KEY: assumptions.DEFAULT_GRID_G_PER_KWH,
    state_keys.COST_RPS_KEY: assumptions.DEFAULT_REQUESTS_PER_SECOND,
}


def _reset_assumptions() -> None:
    for key, value in DEFAULTS.items():
        st.session_state[key] = value


def _reset_devices() -> None:
    st.session_state[state_keys.COST_DEVICES_KEY] = device_profiles.devices_to_rows(device_profiles.DEFAULT_DEVICES)
    st.session_state.pop(DEVICE_EDITOR_KEY, None)


def assumptions_ui() -> assumptions.CostAssumptions | None:
    """The editable prices, power, grid intensity and traffic; None (with the error shown) when invalid."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.markdown("##### Assumptions")
    st.caption("These are assumptions, not measurements: the defaults are public figures (sources in each "
               "field's help and in the README). Edit them to your own prices and power.")
    mode = st.radio("Price", assumptions.PRICING_MODES, key=state_keys.COST_PRICING_KEY, horizontal=True,
                    help="Price a core-hour directly, or an instance-hour divided by the instance's cores.")
    c1, c2, c3, c4, c5 = st.columns(5)
    if mode == assumptions.PRICING_MODES[0]:
        price = c1.number_input("USD per core-hour", min_value=0.0, step=0.005, format="%.4f",
                                key=state_keys.COST_PRICE_KEY, help=assumptions.SOURCES["price_per_core_hour_usd"])
        cores = int(st.session_state[state_keys.COST_CORES_KEY])
    else:
        instance = c1.number_input("USD per instance-hour", min_value=0.0, step=0.01, format="%.4f",
                                   key=state_keys.COST_INSTANCE_PRICE_KEY,
                                   help="Default: AWS EC2 on-demand c7i.large (2 vCPU), us-east-1, Linux, "
                                        "$0.08925/h (list price; an assumption).")
        cores = int(c2.number_input("Cores per instance", min_value=1, step=1, key=state_keys.COST_CORES_KEY,
                                    help="vCPUs of the instance: its price is divided by this to price one "
                                         "core-hour."))
        price = instance / cores
        c1.caption(f"= ${price:.4f} per core-hour")
    watts = c3.number_input("Watts per busy core", min_value=0.0, step=0.5, format="%.2f", key=state_keys.COST_WATTS_KEY,
                            help=assumptions.SOURCES["watts_per_core"])
    grid = c4.number_input("Grid gCO2/kWh", min_value=0.0, step=25.0, format="%.0f",
                           key=state_keys.COST_GRID_KEY, help=assumptions.SOURCES["grid_g_per_kwh"])
    rps = c5.number_input("Requests per second", min_value=0.0, step=10.0, format="%.1f", key=state_keys.COST_RPS_KEY,
                          help=assumptions.SOURCES["requests_per_second"] + "; a month is " + assumptions.SOURCES["hours_per_month"])
    st.button("Reset assumptions to defaults", on_click=_reset_assumptions, icon=":material/restart_alt:",
              key=RESET_ASSUMPTIONS_KEY)
    try:
        return assumptions.CostAssumptions(price_per_core_hour_usd=float(price), cores=cores, watts_per_core=float(watts),
                                    grid_g_per_kwh=float(grid), requests_per_second=float(rps))
    except FeatherweightError as exc:
        st.error(str(exc))
        return None


def devices_ui() -> list[device_profiles.DeviceProfile]:
    """The editable table of target devices; returns the valid ones (bad rows are named and skipped)."""
    if state_keys.COST_DEVICES_KEY not in st.session_state:
        st.session_state[state_keys.COST_DEVICES_KEY] = device_profiles.devices_to_rows(device_profiles.DEFAULT_DEVICES)
    st.markdown("##### Target devices")
    st.caption("Rough, illustrative profiles (derivations in the README): edit a cell, add a row for your "
               "device. Weight memory is a separate store for weights (a microcontroller's flash); leave it "
               "empty when weights share the memory.")
    base = pd.DataFrame(st.session_state[state_keys.COST_DEVICES_KEY],
                        columns=["name", "memory_mb", "weight_memory_mb", "int8_gops", "fp32_gflops",
                                 "bandwidth_gbps"])
    edited = st.data_editor(
        base, key=DEVICE_EDITOR_KEY, num_rows="dynamic", hide_index=True, width="stretch",
        column_config={
            "name": st.column_config.TextColumn("Device", required=True),
            "memory_mb": st.column_config.NumberColumn("Memory (MB)", min_value=0.0,
                                                       help="RAM for activations (and weights, unless weight "
                                                            "memory is set)"),
            "weight_memory_mb": st.column_config.NumberColumn("Weight memory (MB)", min_value=0.0,
                                                              help="Separate weight storage, e.g. flash; empty = "
                                                                   "shared with memory"),
            "int8_gops": st.column_config.NumberColumn("int8 GOPS", min_value=0.0,
                                                       help="Sustained int8 ops/s in billions (1 MAC = 2 ops)"),
            "fp32_gflops": st.column_config.NumberColumn("fp32 GFLOPS", min_value=0.0,
                                                         help="Sustained fp32 FLOP/s in billions (fp16 graphs "
                                                              "are assumed to run at this rate)"),
            "bandwidth_gbps": st.column_config.NumberColumn("Bandwidth (GB/s)", min_value=0.0,
                                                            help="Sustained memory bandwidth"),
        })
    devices, errors = device_profiles.devices_from_rows(edited.to_dict("records"))
    for error in errors:
        st.warning(f"Device table: {error}. That row is left out.")
    st.button("Reset devices", on_click=_reset_devices, icon=":material/restart_alt:", key=RESET_DEVICES_KEY)
    return devices


@process_cached(max_entries=32)
def _with_profiles(run_dir: str, mtime: float, _results: dict) -> dict:
    """The run's results with a compute profile for every variant (older runs: computed from the artifacts).
    Cached on the run's directory and results.json mtime; `services` has checked the session may open it."""
    from pathlib import Path

    for v in _results.get("variants") or []:
        v["compute"] = cost.variant_profile(_results, v, Path(run_dir))
    return _results


TABLE_COLUMNS = {
    "name": st.column_config.TextColumn("Variant"),
    "usd_per_million": st.column_config.NumberColumn("USD / million", format="$%.4g",
                                                     help="From measured throughput x the assumed price"),
    "monthly_cost_usd": st.column_config.NumberColumn("USD / month", format="dollar",
                                                      help="At the assumed request rate, 730 h a month"),
    "monthly_saving_usd": st.column_config.NumberColumn("Saving / month", format="dollar",
                                                        help="Baseline's monthly cost minus this variant's"),
    "saving_pct": st.column_config.NumberColumn("Saving", format="%.1f%%"),
    "energy_mj": st.column_config.NumberColumn("Energy / inference (mJ)", format="%.4g"),
    "energy_basis": st.column_config.TextColumn("Energy is", help="measured: CPU energy counters (RAPL); "
                                                                  "estimated: CPU time x watts per core"),
    "gco2_per_million": st.column_config.NumberColumn("gCO2 / million", format="%.4g"),
    "monthly_co2_kg": st.column_config.NumberColumn("kgCO2 / month", format="%.4g"),
    "macs": st.column_config.NumberColumn("MACs", format="compact"),
    "weight_bytes": st.column_config.NumberColumn("Weights (bytes)", format="compact"),
    "peak_activation_bytes": st.column_config.NumberColumn("Peak activations (bytes)", format="compact"),
}


def cost_page() -> None:
    st.title("Cost & energy")
    st.caption("What each variant costs to serve, the energy it uses and whether it fits a target device. "
               "Throughput, CPU time and (where the CPU exposes them) energy counters are measured; prices, "
               "watts, grid intensity and device profiles are assumptions you can edit.")
    records = [r for r in services.visible_runs() if services.results_mtime(r.id)] + services.gallery_runs()
    if not records:
        st.info("No runs yet. Run a recipe on the **Optimize** page (or `featherweight run`) and its cost, "
                "energy and device fit appear here.", icon=":material/info:")
        return
    run_id = run_picker_ui(records, state_keys.COST_RUN_KEY).id
    results = services.run_results(run_id)
    if results:
        results = _with_profiles(str(services.run_dir(run_id)), services.results_mtime(run_id), results)
    variants = (results or {}).get("variants") or []
    sizes = sorted({int(b) for v in variants for b in (v.get("throughput") or {})})
    if not sizes:
        st.info("This run has no measured variants yet: cost needs a measured throughput.", icon=":material/info:")
        return

    assumptions = assumptions_ui()
    devices = devices_ui()
    if assumptions is None:
        return

    c1, c2 = st.columns(2)
    if st.session_state.get(state_keys.COST_BATCH_KEY) not in sizes:
        st.session_state[state_keys.COST_BATCH_KEY] = sizes[-1]
    batch = c1.selectbox("Serving batch size", sizes, key=state_keys.COST_BATCH_KEY,
                         help="Requests are priced at the throughput measured at this batch size.")
    names = [ALL_VARIANTS] + [d.name for d in devices]
    if st.session_state.get(state_keys.COST_DEVICE_FILTER_KEY) not in names:
        st.session_state[state_keys.COST_DEVICE_FILTER_KEY] = ALL_VARIANTS
    device = c2.selectbox("Show variants that fit", names, key=state_keys.COST_DEVICE_FILTER_KEY,
                          help="Weights and peak activations within the device's memory (an estimate).")
    device = None if device == ALL_VARIANTS else device

    frame = cost.cost_frame(results, assumptions, devices, batch)
    unit = cost.cost_unit(results)  # "generated token" for a decoder: every figure below is per generated token
    if results.get("task") == "text-generation":  # a decoder: its throughput is decode tokens/s at batch 1
        threads = int((results.get("environment") or {}).get("threads") or 1)
        per_token = [{"variant": v["name"], **{k: c[k] for k in ("usd_per_million_tokens",
                                                                  "usd_per_million_prompt_tokens")}}
                     for v in variants if v.get("status") == "ok"
                     for c in [cost.decoder_cost(v, assumptions, threads)]]
        st.caption(":material/token: A decoder run: a \"million\" below is a million generated tokens, priced at "
                   "the measured decode tokens/s at batch 1 (prompt tokens, priced at the prefill rate, cost less).")
        if any(v.get("status") == "ok" and not v.get("compute") for v in variants):
            st.caption(":material/info: This run was recorded before decoder runs kept a per-token compute profile: "
                       "its device fit is empty. Run its recipe again to get one.")
        st.dataframe(pd.DataFrame(per_token), hide_index=True, placeholder=MISSING, width="stretch", column_config={
            "usd_per_million_tokens": st.column_config.NumberColumn("USD / million generated tokens",
                                                                    format="$%.4g"),
            "usd_per_million_prompt_tokens": st.column_config.NumberColumn("USD / million prompt tokens",
                                                                           format="$%.4g")})
    shown = frame[frame["status"] == "ok"]
    if device is not None:
        shown = shown[shown[f"fits: {device}"].astype(bool)]
    energy_bases = set(shown["energy_basis"].dropna())
    if "measured" in energy_bases:
        source = next((v.get("energy", {}).get("source") for v in variants
                       if (v.get("energy") or {}).get("source")), "measured")
        st.caption(f":material/bolt: Energy {source}.")
    if "estimated" in energy_bases:
        note = next(((v.get("energy") or {}).get("note") for v in variants if (v.get("energy") or {}).get("note")),
                    None)
        st.caption(f":material/calculate: Energy estimated: CPU time x {assumptions.watts_per_core:g} W per busy "
                   f"core (assumption){f' — {note}' if note else ''}.")

    if shown.empty:
        st.info(f"No variant of this run fits {device}." if device else "No measured variants in this run.",
                icon=":material/info:")
    else:
        columns = list(TABLE_COLUMNS)
        config = dict(TABLE_COLUMNS)
        if unit != "inference":
            config.update(usd_per_million=st.column_config.NumberColumn(f"USD / million {unit}s", format="$%.4g"),
                          energy_mj=st.column_config.NumberColumn(f"Energy / {unit} (mJ)", format="%.4g"),
                          gco2_per_million=st.column_config.NumberColumn(f"gCO2 / million {unit}s", format="%.4g"))
        contexts = {(v.get("compute") or {}).get("context_tokens") for v in variants} - {None}
        context = f", per {unit} with a {max(contexts)}-token KV cache" if contexts else ""
        per_unit = " / token" if contexts else ""
        for d in devices if device is None else [d for d in devices if d.name == device]:
            columns += [f"fits: {d.name}", f"est. ms: {d.name}"]
            config[f"fits: {d.name}"] = st.column_config.CheckboxColumn(f"Fits {d.name}")
            config[f"est. ms: {d.name}"] = st.column_config.NumberColumn(
                f"Est. ms{per_unit} on {d.name}", format="%.4g", help=f"Roofline estimate at batch 1{context}, "
                "not a measurement")
        st.dataframe(shown[columns], hide_index=True, placeholder=MISSING, width="stretch", column_config=config)
        st.plotly_chart(cost_view.cost_figure(frame, device=device, unit=unit), width="stretch")
    with st.expander("Device fit, variant by variant (estimates)"):
        st.caption("Latency = max(2 x MACs / device throughput for the variant's precision, bytes moved / "
                   "bandwidth) at batch 1: a roofline estimate that ignores caches, kernel overheads and "
                   "operator support." + (" A decoder's is per generated token: every weight read once, plus the "
                                          "KV cache; memory holds the weights and the KV cache."
                                          if unit == "generated token" else ""))
        st.dataframe(cost.device_fit_frame(results, devices), hide_index=True, placeholder=MISSING, width="stretch")


cost_page()
