"""The Cost page (AppTest): run picker and empty states, editable assumptions, instance pricing, the device
filter, a seeded device table and the measured / estimated energy labels."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.results import assumptions
from ui import state as state_keys

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "cost.py")
MCU = "Microcontroller (Cortex-M7 class)"


def _results(measured: bool) -> dict:
    """A small two-variant run: the int8 variant is 4x cheaper and small enough for the microcontroller."""
    energy = ({"joules_per_sample": {"32": 0.0005}, "source": "measured (RAPL powercap: package-0; whole CPU "
               "package, other processes included)", "note": None} if measured
              else {"joules_per_sample": {}, "source": None, "note": "no powercap interface at /sys/class/powercap"})
    compute = {"macs": 1_000_000, "int8_macs": 0, "float_macs": 1_000_000, "weight_bytes": 3_000_000,
               "peak_activation_bytes": 30_000, "bytes_moved": 3_100_000, "precision": "fp32"}
    latency = {"1": {"p50": 1.0, "p99": 1.2}, "32": {"p50": 30.0, "p99": 33.0}}
    return {"model": "sample:digits-cnn", "data": "sample:digits", "environment": {"threads": 1},
            "status": "completed", "variants": [
                {"name": "baseline", "status": "ok", "steps": [], "size_bytes": 3_000_000, "latency_ms": latency,
                 "throughput": {"1": 500.0, "32": 1000.0}, "cpu_ms_per_sample": {"1": 2.0, "32": 1.0},
                 "energy": energy, "compute": compute},
                {"name": "int8", "status": "ok", "steps": [{"technique": "quantize", "mode": "static"}],
                 "size_bytes": 800_000, "latency_ms": latency, "throughput": {"1": 1000.0, "32": 4000.0},
                 "cpu_ms_per_sample": {"1": 1.0, "32": 0.25}, "energy": energy,
                 "compute": {**compute, "int8_macs": 1_000_000, "float_macs": 0, "weight_bytes": 750_000,
                             "precision": "int8"}}]}


@pytest.fixture
def store_home(tmp_path, monkeypatch):
    """An empty run store in a temporary FEATHERWEIGHT_HOME."""
    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path))
    return tmp_path


def _add_run(home: Path, measured: bool = False, label: str = "digits-cnn test run", results=None) -> str:
    from core.io.files import write_atomic
    from core.jobs.store import RunStore

    store = RunStore(home)
    record = store.create("tester", "variants: []\n", label=label, model="sample:digits-cnn", data="sample:digits")
    write_atomic(store.run_dir(record.id) / "results.json", json.dumps(results or _results(measured)))
    store.set_status(record.id, "completed")
    return record.id


def _page() -> AppTest:
    """The Cost page as the browser that made the runs (a page lists only its session's runs)."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["fw_owner"] = "tester"
    return at


def _table(at: AppTest):
    """The cost table (the device editor is a dataframe element too)."""
    frame = next(d.value for d in at.dataframe if "usd_per_million" in d.value.columns)
    return frame.set_index("name")


def test_empty_store_says_there_are_no_runs(store_home):
    """With no runs the page explains where runs come from instead of drawing an empty table."""
    at = _page().run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert not [d for d in at.dataframe if "usd_per_million" in d.value.columns]


def test_default_assumptions_price_the_largest_batch_and_label_energy_estimated(store_home):
    """The run's variants are priced at the default $/core-hour at batch 32, with energy labelled estimated."""
    _add_run(store_home)
    at = _page().run()
    assert not at.exception
    table = _table(at)
    assert at.selectbox(key=state_keys.COST_BATCH_KEY).value == 32
    # 1,000 inferences/s on one core: 1e6 / 1000 s = 0.2778 core-hours x $0.044625.
    assert table.loc["baseline", "usd_per_million"] == pytest.approx(0.2778 * 0.044625, rel=1e-3)
    assert table.loc["int8", "saving_pct"] == pytest.approx(75.0)
    assert set(table["energy_basis"]) == {"estimated"}
    assert any("Energy estimated" in c.value and "3.5 W" in c.value for c in at.caption)
    assert "c7i.large" in at.number_input(key=state_keys.COST_PRICE_KEY).help


def test_changing_the_price_and_the_request_rate_recomputes_the_table(store_home):
    """Doubling the price doubles cost per million; the monthly saving follows the request rate."""
    _add_run(store_home)
    at = _page().run()
    at.number_input(key=state_keys.COST_PRICE_KEY).set_value(3.6).run()
    at.number_input(key=state_keys.COST_RPS_KEY).set_value(10.0).run()
    table = _table(at)
    assert table.loc["baseline", "usd_per_million"] == pytest.approx(1.0)
    assert table.loc["int8", "usd_per_million"] == pytest.approx(0.25)
    assert table.loc["int8", "monthly_saving_usd"] == pytest.approx(0.75 * 10 * 730 * 3600 / 1e6)
    at.button(key="cost_reset_assumptions").click().run()
    assert at.number_input(key=state_keys.COST_PRICE_KEY).value == pytest.approx(assumptions.DEFAULT_PRICE_PER_CORE_HOUR_USD)


def test_instance_pricing_divides_by_the_core_count(store_home):
    """Per-instance pricing: $0.40 an hour over 4 cores prices a core-hour at $0.10."""
    _add_run(store_home)
    at = _page().run()
    at.radio(key=state_keys.COST_PRICING_KEY).set_value("per instance-hour").run()
    at.number_input(key=state_keys.COST_INSTANCE_PRICE_KEY).set_value(0.4).run()
    at.number_input(key=state_keys.COST_CORES_KEY).set_value(4).run()
    assert not at.exception
    assert any("= $0.1000 per core-hour" in c.value for c in at.caption)
    assert _table(at).loc["baseline", "usd_per_million"] == pytest.approx(1e6 / 1000 / 3600 * 0.1, rel=1e-3)


def test_device_filter_keeps_only_variants_that_fit(store_home):
    """Choosing the microcontroller leaves only the int8 variant (0.75 MB of weights fit its 2 MB flash)."""
    _add_run(store_home)
    at = _page().run()
    assert set(_table(at).index) == {"baseline", "int8"}
    at.selectbox(key=state_keys.COST_DEVICE_FILTER_KEY).set_value(MCU).run()
    table = _table(at)
    assert list(table.index) == ["int8"] and bool(table.loc["int8", f"fits: {MCU}"])
    assert f"est. ms: {MCU}" in table.columns


def test_a_seeded_device_table_drives_the_filter(store_home):
    """Devices come from session state: a custom 0.5 MB board fits neither variant, and the page says so."""
    _add_run(store_home)
    at = _page()
    at.session_state[state_keys.COST_DEVICES_KEY] = [{"name": "Tiny board", "memory_mb": 0.5, "weight_memory_mb": None,
                                               "int8_gops": 2.0, "fp32_gflops": 1.0, "bandwidth_gbps": 1.0}]
    at.run()
    assert at.selectbox(key=state_keys.COST_DEVICE_FILTER_KEY).options == ["All variants", "Tiny board"]
    at.selectbox(key=state_keys.COST_DEVICE_FILTER_KEY).set_value("Tiny board").run()
    assert any("No variant of this run fits Tiny board" in i.value for i in at.info)


def test_measured_energy_is_labelled_with_its_source(store_home):
    """A run with RAPL readings shows energy 'measured' and names the counters."""
    _add_run(store_home, measured=True)
    at = _page().run()
    table = _table(at)
    assert set(table["energy_basis"]) == {"measured"} and table.loc["int8", "energy_mj"] == pytest.approx(0.5)
    assert any("RAPL powercap" in c.value for c in at.caption)


def test_picking_another_run_shows_its_numbers_and_opens_it_for_the_compare_page(store_home):
    """Choosing the other run in the picker switches the table to it and makes it the session's open run."""
    from core.session import RUN_KEY

    estimated = _add_run(store_home, label="estimated run")
    measured = _add_run(store_home, measured=True, label="measured run")
    at = _page()
    at.session_state[RUN_KEY] = estimated
    at.run()
    assert set(_table(at)["energy_basis"]) == {"estimated"}
    at.selectbox(key=state_keys.COST_RUN_KEY).set_value(measured).run()
    assert not at.exception
    assert set(_table(at)["energy_basis"]) == {"measured"} and at.session_state[RUN_KEY] == measured


def test_a_run_without_measured_variants_says_so(store_home):
    """A run whose results hold no throughput yet (the baseline failed) gets a plain message, not a table."""
    from core.io.files import write_atomic
    from core.jobs.store import RunStore

    store = RunStore(store_home)
    record = store.create("tester", "variants: []\n", label="broken run", model="x.onnx")
    write_atomic(store.run_dir(record.id) / "results.json",
                 json.dumps({"variants": [{"name": "baseline", "status": "failed", "error": "boom"}]}))
    at = _page().run()
    assert not at.exception
    assert any("no measured variants" in i.value for i in at.info)


def test_a_decoder_run_fits_devices_per_generated_token(store_home):
    """A decoder run's device fit comes from its per-token profiles (before: every fit column was empty): both
    variants fit the Pi, the int4 one reads faster, and the reasons name the KV cache."""
    from core.measure.compute import decoder_compute_profile

    config = {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 6,
              "num_key_value_heads": 2, "max_position_embeddings": 256, "vocab_size": 1000}
    tensors = [("model.layers.0.mlp.up_proj.weight", "F32", [512, 192]), ("lm_head.weight", "F32", [1000, 192])]
    results = {"task": "text-generation", "model": "sample:tiny-lm", "environment": {"threads": 1},
               "status": "completed", "variants": [
                   {"name": name, "status": "ok", "steps": [], "size_bytes": size, "throughput": {"1": tok_s},
                    "latency_ms": {"1": {"p50": 1000 / tok_s}}, "tokens_per_s": {"prefill": 4 * tok_s,
                                                                                 "decode": tok_s},
                    "cpu_ms_per_sample": {"1": 1000 / tok_s}, "energy": {},
                    "compute": decoder_compute_profile(config, tensors, weight_bytes=size, precision=precision,
                                                       accuracy_level=4)}
                   for name, size, tok_s, precision in (("baseline", 9_600_000, 200.0, "fp32"),
                                                        ("int4", 1_600_000, 500.0, "int4"))]}
    _add_run(store_home, label="tiny-lm run", results=results)
    at = _page().run()
    assert not at.exception
    table = _table(at)
    pi = "Raspberry Pi 4 class"
    assert table[f"fits: {pi}"].all() and table.loc["int4", f"est. ms: {pi}"] < table.loc["baseline", f"est. ms: {pi}"]
    reasons = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert reasons["reason"].str.contains("KV cache at 256 tokens").all()
    assert not any("recorded before" in c.value for c in at.caption)
    for v in results["variants"]:  # a decoder run from before the profiles: the page says why the fit is empty
        v.pop("compute")
    _add_run(store_home, label="older tiny-lm run", results=results)
    at = _page().run()
    assert any("recorded before decoder runs kept a per-token compute profile" in c.value for c in at.caption)
