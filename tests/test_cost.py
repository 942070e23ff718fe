"""Cost, energy and device fit: the arithmetic and its units, the measured / estimated energy switch over a fake
powercap tree, compute profiles of small hand-built graphs, and the new fields in a real run."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.results import assumptions, cost
from core.results import devices as device_profiles
from core.views import cost as views_cost
from core.results.assumptions import CostAssumptions
from core.results.cost import cost_frame, cost_per_million, monthly_cost, monthly_saving
from core.results.devices import DeviceProfile, device_fit, devices_from_rows, devices_to_rows, fits
from core.measure.energy import EnergyCounter
from core.results.energy import co2_grams, energy_per_inference
from core.measure.compute import model_compute_profile
from core.errors import BadInputError
from core.format import round_significant

# --------------------------------------------------------------------------------------------------------------
# Money


def test_cost_per_million_is_core_hours_times_price():
    """1,000 inferences/s on one core is 1e6 / 1000 s = 1/3.6 core-hours: $1 at $3.60 per core-hour."""
    price = CostAssumptions(price_per_core_hour_usd=3.6)
    assert cost_per_million(1000.0, price) == pytest.approx(1.0)
    assert cost_per_million(1000.0, price, threads=2) == pytest.approx(2.0)
    assert cost_per_million(2000.0, price) == pytest.approx(0.5)
    assert cost_per_million(0.0, price) is None and cost_per_million(None, price) is None


def test_results_are_rounded_to_four_significant_figures():
    """$0.044625 per core-hour at 3 inferences/s: 92.59 core-hours per million -> $4.132 (4 significant figures)."""
    value = cost_per_million(3.0, CostAssumptions())
    assert value == 4.132
    assert round_significant(0.000123456) == 0.0001235 and round_significant(123456.0) == 123500.0
    assert round_significant(0) == 0.0 and round_significant(float("nan")) is None


def test_instance_price_is_divided_by_its_cores_and_defaults_match_the_stated_source():
    """An instance-hour price over its core count is the per-core price; the default is c7i.large / 2 vCPU."""
    a = CostAssumptions.from_instance_price(0.2, 4, watts_per_core=5.0)
    assert a.price_per_core_hour_usd == pytest.approx(0.05) and a.cores == 4 and a.watts_per_core == 5.0
    assert a.price_per_instance_hour_usd == pytest.approx(0.2)
    default = CostAssumptions()
    assert default.price_per_core_hour_usd == pytest.approx(0.08925 / 2)
    assert default.grid_g_per_kwh == 475 and default.watts_per_core == 3.5
    assert "c7i.large" in assumptions.SOURCES["price_per_core_hour_usd"] and "IEA" in assumptions.SOURCES["grid_g_per_kwh"]
    assert CostAssumptions.from_dict({"watts_per_core": 2.0, "unknown": 1}).watts_per_core == 2.0


@pytest.mark.parametrize("kwargs, field", [({"price_per_core_hour_usd": -1}, "price_per_core_hour_usd"),
                                          ({"cores": 0}, "cores"), ({"watts_per_core": float("nan")}, "watts"),
                                          ({"requests_per_second": "many"}, "requests_per_second")])
def test_bad_assumptions_name_the_field_and_value(kwargs, field):
    """Negative, non-finite or non-numeric assumptions are rejected with the field and the value given."""
    with pytest.raises(BadInputError, match=field) as info:
        CostAssumptions(**kwargs)
    assert repr(next(iter(kwargs.values())))[:3] in str(info.value)


def test_monthly_cost_and_saving_use_730_hours():
    """At 100 req/s a month is 262.8 M requests: $1 / million costs $262.80; halving it saves $131.40."""
    assert monthly_cost(1.0, 100.0) == pytest.approx(262.8)
    assert monthly_saving(1.0, 0.5, 100.0) == pytest.approx(131.4)
    assert monthly_saving(0.5, 1.0, 100.0) == pytest.approx(-131.4)  # a variant that costs more
    assert monthly_saving(None, 0.5, 100.0) is None


# --------------------------------------------------------------------------------------------------------------
# Energy


def test_energy_is_measured_when_counters_gave_a_number_else_estimated_from_cpu_time():
    """Measured joules win; otherwise CPU ms x W per core; otherwise wall time x threads; each labelled."""
    a = CostAssumptions(watts_per_core=5.0)
    measured = energy_per_inference(2.0, 0.004, a, source="measured (RAPL powercap: package-0)")
    assert (measured.joules, measured.basis) == (0.004, "measured") and "RAPL" in measured.assumption
    estimated = energy_per_inference(2.0, None, a)
    assert estimated.joules == pytest.approx(0.01) and estimated.basis == "estimated"
    assert "5 W per core" in estimated.assumption
    wall = energy_per_inference(None, None, a, throughput_per_s=1000.0, threads=2)
    assert wall.joules == pytest.approx(0.01) and wall.basis == "estimated" and "wall time" in wall.assumption
    assert energy_per_inference(None, None, a).basis is None


def test_co2_grams_from_joules_and_grid_intensity():
    """One kWh (3.6 MJ) at 475 gCO2/kWh is 475 g; one joule is 1.319e-4 g."""
    assert co2_grams(3.6e6, 475.0) == pytest.approx(475.0)
    assert co2_grams(1.0, 475.0) == 0.0001319
    assert co2_grams(None, 475.0) is None


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int | None = 262143328850):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_powercap_counters_sum_packages_only_and_undo_a_wrap(tmp_path):
    """Two packages are summed; sub-zones and mmio duplicates are not; a wrap adds max_energy_range_uj."""
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 990_000, max_uj=1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 1)
    _zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1)
    counter = EnergyCounter(tmp_path, min_window_s=0)
    assert counter.available and [z.name for z in counter.zones] == ["package-0", "package-1"]
    before = counter.read()
    (p0 / "energy_uj").write_text("10000\n")  # wrapped: 990,000 -> 1,000,000 -> 10,000 is 20,000 uJ
    (p1 / "energy_uj").write_text("6000000\n")
    after = counter.read()
    assert counter.joules(before, after) == pytest.approx(0.02 + 1.0)
    assert "package-0 + package-1" in counter.source and counter.source.startswith("measured")


def test_energy_windows_that_cannot_be_trusted_give_none(tmp_path):
    """Too short a window, counters that did not move, or a wrap with no known range: no measured number."""
    zone = _zone(tmp_path, "intel-rapl:0", "package-0", 100, max_uj=None)
    counter = EnergyCounter(tmp_path, min_window_s=0.05)
    before = counter.read()
    assert counter.joules(before, before, window_s=1.0) is None  # did not advance
    (zone / "energy_uj").write_text("500\n")
    assert counter.joules(before, counter.read(), window_s=0.01) is None  # shorter than the update period
    assert counter.joules(before, counter.read(), window_s=1.0) == pytest.approx(400e-6)
    (zone / "energy_uj").write_text("50\n")
    assert counter.joules(before, counter.read(), window_s=1.0) is None  # wrapped, range unknown


def test_missing_or_unreadable_counters_fall_back_with_a_reason(tmp_path, monkeypatch):
    """No powercap tree, no RAPL zone, or permission denied (root-only since CVE-2020-8694): unavailable."""
    missing = EnergyCounter(tmp_path / "absent")
    assert not missing.available and "no powercap interface" in missing.reason
    (tmp_path / "empty").mkdir()
    assert "no RAPL energy counters" in EnergyCounter(tmp_path / "empty").reason
    _zone(tmp_path / "locked", "intel-rapl:0", "package-0", 1)
    original = Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    locked = EnergyCounter(tmp_path / "locked")
    assert not locked.available and "permission denied" in locked.reason and locked.read() == ()


class _TickingCounter(EnergyCounter):
    """A fake counter that gains 1 J (1e6 uJ) between readings."""

    def __init__(self, root):
        super().__init__(root, min_window_s=0)
        self.value = 0

    def read(self):
        self.value += 1_000_000
        return (self.value,)


def test_benchmark_records_cpu_time_and_switches_between_measured_and_estimated(tmp_path):
    """benchmark() records CPU ms per sample always and joules per sample only when counters are readable."""
    from core.measure.quality import benchmark
    from core.io.graph import graph_inputs

    _zone(tmp_path / "rapl", "intel-rapl:0", "package-0", 0)
    model = _conv_model()
    inputs = {"x": np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)}
    args = (model.SerializeToString(), graph_inputs(model), inputs, [1, 8])
    with_counters = benchmark(*args, warmup=1, runs=10, energy_counter=_TickingCounter(tmp_path / "rapl"))
    without = benchmark(*args, warmup=1, runs=10, energy_counter=EnergyCounter(tmp_path / "none"))

    runs = with_counters["latency_ms"]["8"]["runs"]
    # The counter is read around every turn of the rounds and ticks 1 J a read: 1 J per turn, summed over the turns
    # and divided over the samples the turns ran.
    turns = with_counters["energy"]["joules_per_sample"]["8"] * 8 * runs
    assert turns == pytest.approx(round(turns)) and 1 <= round(turns) <= runs
    assert with_counters["energy"]["source"].startswith("measured (RAPL powercap")
    assert without["energy"]["joules_per_sample"] == {} and without["energy"]["source"] is None
    assert "no powercap interface" in without["energy"]["note"]
    for timing in (with_counters, without):
        cpu_ms = timing["cpu_ms_per_sample"]
        assert set(cpu_ms) == {"1", "8"} and all(v > 0 for v in cpu_ms.values())

    variant = {"throughput": without["throughput"], "cpu_ms_per_sample": without["cpu_ms_per_sample"],
               "energy": without["energy"]}
    assert set(cost.variant_cost(variant)["energy_basis"].values()) == {"estimated"}
    variant.update(energy=with_counters["energy"])
    assert cost.variant_cost(variant)["energy_basis"] == {"1": "measured", "8": "measured"}


# --------------------------------------------------------------------------------------------------------------
# Compute profile


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_model(batch="batch"):
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 6, 6])], [w])


def test_conv_macs_weights_and_activations_at_batch_one():
    """A 4x1x3x3 Conv on 8x8: 4x6x6 outputs x 9 = 1,296 MACs; 36 fp32 weights; input 256 B + output 576 B."""
    profile = model_compute_profile(_conv_model())
    assert profile["macs"] == profile["float_macs"] == 1296 and profile["int8_macs"] == 0
    assert profile["weight_bytes"] == 36 * 4 and profile["peak_activation_bytes"] == 256 + 576
    assert profile["precision"] == "fp32" and profile["unknown_shapes"] == 0
    assert profile["bytes_moved"] == 144 + 256 + 576
    assert model_compute_profile(_conv_model(batch=4))["macs"] == 1296  # a fixed batch axis is divided out


def test_matmul_and_gemm_macs():
    """[1,16] x [16,10] MatMul is 160 MACs; a Gemm with transB on [1,10] x [10,3]^T adds 30."""
    w = numpy_helper.from_array(np.ones((16, 10), np.float32), "w")
    g = numpy_helper.from_array(np.ones((3, 10), np.float32), "g")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"]),
                    helper.make_node("Gemm", ["h", "g"], ["y"], transB=1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w, g])
    assert model_compute_profile(model)["macs"] == 190


def test_peak_activations_follow_liveness_and_node_order_does_not_matter():
    """x feeds a later Add, so x, a and b are alive together: peak = 3 tensors of 1 kB, not 2."""
    value = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["x", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = _model(nodes, [value("x", TensorProto.FLOAT, ["batch", 256])], [value("y", TensorProto.FLOAT, None)])
    assert model_compute_profile(model)["peak_activation_bytes"] == 3 * 1024
    shuffled = _model(nodes[::-1], [value("x", TensorProto.FLOAT, ["batch", 256])],
                      [value("y", TensorProto.FLOAT, None)])
    assert model_compute_profile(shuffled)["peak_activation_bytes"] == 3 * 1024


def test_qdq_conv_counts_as_int8_and_its_folded_weights_are_not_activations():
    """Conv between DequantizeLinear nodes is int8 work; the dequantized weight is folded, not an activation."""
    inits = [numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int8), "wq"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    profile = model_compute_profile(model)
    assert profile["int8_macs"] == 1296 and profile["float_macs"] == 0 and profile["precision"] == "int8"
    assert profile["weight_bytes"] == 36 + 4 + 1
    assert profile["peak_activation_bytes"] == 256 + 576  # xd (fp32) + y at the Conv; wd (144 B) never counts


# --------------------------------------------------------------------------------------------------------------
# Devices


def test_roofline_estimate_is_the_slower_of_compute_and_memory():
    """1 G float MACs at 10 GFLOPS = 200 ms; 1 GB at 10 GB/s = 100 ms: 200 ms, compute-bound."""
    device = DeviceProfile("d", 10_000 * device_profiles.MB, int8_gops=40.0, fp32_gflops=10.0, bandwidth_gbps=10.0)
    profile = {"int8_macs": 0, "float_macs": 1e9, "weight_bytes": 10, "peak_activation_bytes": 10,
               "bytes_moved": 1e9}
    fit = device_fit(profile, device)
    assert fit["latency_ms_estimate"] == 200.0 and fit["bound"] == "compute" and fit["fits"]
    int8 = device_fit({**profile, "int8_macs": 1e9, "float_macs": 0, "bytes_moved": 4e9}, device)
    assert int8["latency_ms_estimate"] == 400.0 and int8["bound"] == "memory"


def test_fit_checks_memory_and_a_separate_weight_store():
    """Weights + activations must fit shared memory; with flash, weights and activations are checked apart."""
    shared = DeviceProfile("board", 1 * device_profiles.MB, int8_gops=1, fp32_gflops=1, bandwidth_gbps=1)
    mcu = DeviceProfile("mcu", 1 * device_profiles.MB, int8_gops=1, fp32_gflops=1, bandwidth_gbps=1,
                        weight_memory_bytes=2 * device_profiles.MB)
    row = {"weight_bytes": 900_000, "peak_activation_bytes": 200_000}
    assert not fits(row, shared) and fits(row, mcu)
    assert "1.1 MB > memory 1 MB" in device_fit(row, shared)["reason"]
    assert not fits({"weight_bytes": 2_500_000, "peak_activation_bytes": 1}, mcu)
    assert not fits({"name": "old run"}, mcu)  # no profile: never claimed to fit
    assert fits(pd.Series(row), mcu) and fits({"compute": row}, mcu)


def _llama_tensors(config: dict, *, tied: bool) -> list:
    """The 2-d weights of a Llama checkpoint's safetensors headers (norms omitted: they hold no MACs)."""
    hidden, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    out = [("model.embed_tokens.weight", "F32", [vocab, hidden])]
    for i in range(config["num_hidden_layers"]):
        out += [(f"model.layers.{i}.self_attn.{n}_proj.weight", "F32", shape) for n, shape in
                (("q", [hidden, hidden]), ("k", [kv, hidden]), ("v", [kv, hidden]), ("o", [hidden, hidden]))]
        out += [(f"model.layers.{i}.mlp.{n}_proj.weight", "F32", shape) for n, shape in
                (("gate", [inner, hidden]), ("up", [inner, hidden]), ("down", [hidden, inner]))]
        out += [(f"model.layers.{i}.input_layernorm.weight", "F32", [hidden])]
    return out if tied else out + [("lm_head.weight", "F32", [vocab, hidden])]


def test_a_decoders_profile_is_per_decoded_token_with_its_kv_cache():
    """tiny-lm's shapes (6 layers, width 192, 6 heads, 2 KV heads, 256-token window): each linear weight is one
    MAC per token, attention 2 x 6 x 32 per past token per layer, the KV cache 2 x 6 x 2 x 32 x 4 bytes per token;
    a tied embedding is the output head; int4 at accuracy level 4 computes in int8, at level 0 in float."""
    from core.measure.compute import decoder_compute_profile

    config = {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 6,
              "num_key_value_heads": 2, "max_position_embeddings": 256, "vocab_size": 1000}
    per_layer = 2 * 192 * 192 + 2 * 64 * 192 + 3 * 192 * 512
    head = 1000 * 192
    fp32 = decoder_compute_profile(config, _llama_tensors(config, tied=False), weight_bytes=9_600_000,
                                   precision="fp32")
    assert fp32["context_tokens"] == 256  # the window, shorter than the default 2048
    attention = 6 * 2 * 6 * 32 * 256
    assert fp32["macs"] == fp32["float_macs"] == 6 * per_layer + head + attention and fp32["int8_macs"] == 0
    assert fp32["kv_cache_bytes"] == 2 * 6 * 2 * 32 * 256 * 4
    assert fp32["bytes_moved"] > fp32["weight_bytes"] + fp32["kv_cache_bytes"]
    tied = decoder_compute_profile(config, _llama_tensors(config, tied=True), weight_bytes=8_800_000,
                                   precision="fp32", context_tokens=64)
    assert tied["macs"] == 6 * per_layer + head + 6 * 2 * 6 * 32 * 64 and tied["context_tokens"] == 64
    int4 = decoder_compute_profile(config, _llama_tensors(config, tied=False), weight_bytes=1_600_000,
                                   precision="int4", accuracy_level=4)
    assert int4["int8_macs"] == 6 * per_layer + head and int4["float_macs"] == attention
    assert int4["precision"] == "int4 weights, int8 compute"
    level0 = decoder_compute_profile(config, _llama_tensors(config, tied=False), weight_bytes=1_600_000,
                                     precision="int4", accuracy_level=0)
    assert level0["int8_macs"] == 0 and level0["precision"] == "int4 weights, fp32 compute"
    # Decoding is memory-bound on every default device, and the 6x smaller weights read faster.
    for device in device_profiles.DEFAULT_DEVICES[:2]:
        base_fit, int4_fit = device_fit(fp32, device), device_fit(int4, device)
        assert base_fit["bound"] == "memory" and base_fit["fits"]
        assert int4_fit["latency_ms_estimate"] < base_fit["latency_ms_estimate"] / 3
        assert "KV cache at 256 tokens" in base_fit["reason"]
    with pytest.raises(ValueError, match="hidden_size"):
        decoder_compute_profile({"num_hidden_layers": 2}, [], weight_bytes=1, precision="fp32")


def test_a_decoder_run_never_takes_an_artifacts_whole_sequence_profile(tmp_path):
    """A decoder variant without a recorded profile has none (its artifact's would be a whole-sequence profile,
    not one token's); a classifier's is read from its artifact."""
    results = {"task": "text-generation", "variants": [{"name": "baseline", "status": "ok",
                                                       "artifact": "variants/baseline/model.onnx"}]}
    assert cost.variant_profile(results, results["variants"][0], tmp_path) == {}
    recorded = {"weight_bytes": 1, "peak_activation_bytes": 1}
    assert cost.variant_profile(results, {"compute": recorded}, tmp_path) == recorded


def test_device_rows_round_trip_and_bad_rows_are_reported():
    """Default devices survive the editor's units; a row without a name or with zero bandwidth is named."""
    devices, errors = devices_from_rows(devices_to_rows(device_profiles.DEFAULT_DEVICES))
    assert devices == list(device_profiles.DEFAULT_DEVICES) and errors == []
    rows = [{"name": "ok", "memory_mb": 4, "int8_gops": 1, "fp32_gflops": 1, "bandwidth_gbps": 1},
            {"name": "", "memory_mb": 4, "int8_gops": 1, "fp32_gflops": 1, "bandwidth_gbps": 1},
            {"name": "slow", "memory_mb": 4, "int8_gops": 1, "fp32_gflops": 1, "bandwidth_gbps": 0},
            {"name": "ok", "memory_mb": 8, "int8_gops": 1, "fp32_gflops": 1, "bandwidth_gbps": 1},
            {"name": None, "memory_mb": float("nan")}]
    devices, errors = devices_from_rows(rows)
    assert [d.name for d in devices] == ["ok"] and devices[0].memory_bytes == 4_000_000
    assert len(errors) == 3 and "row 2" in errors[0] and "bandwidth_gbps" in errors[1] and "twice" in errors[2]


# --------------------------------------------------------------------------------------------------------------
# Tables, figure, a real run


LATENCY = {"1": {"p50": 1.0}, "32": {"p50": 10.0}}


def _results(measured: bool = False) -> dict:
    energy = {"joules_per_sample": {"32": 0.0005}, "source": "measured (RAPL powercap: package-0)"} if measured \
        else {"joules_per_sample": {}, "source": None, "note": "no powercap interface"}
    compute = {"macs": 1000, "int8_macs": 0, "float_macs": 1000, "weight_bytes": 600_000,
               "peak_activation_bytes": 30_000, "bytes_moved": 700_000}
    return {"environment": {"threads": 1}, "variants": [
        {"name": "baseline", "status": "ok", "throughput": {"1": 500.0, "32": 1000.0}, "latency_ms": LATENCY,
         "cpu_ms_per_sample": {"1": 2.0, "32": 1.0}, "energy": energy, "compute": compute, "size_bytes": 600_000},
        {"name": "int8", "status": "ok", "throughput": {"1": 1000.0, "32": 4000.0}, "latency_ms": LATENCY,
         "cpu_ms_per_sample": {"1": 1.0, "32": 0.25}, "energy": {}, "size_bytes": 150_000,
         "compute": {**compute, "int8_macs": 1000, "float_macs": 0, "weight_bytes": 150_000}},
        {"name": "broken", "status": "failed", "error": "boom"}]}


def test_cost_frame_prices_the_chosen_batch_size_against_the_baseline():
    """At batch 32 and $3.60 per core-hour: baseline $1 / million, int8 $0.25, saving 75% of $262.80 a month."""
    a = CostAssumptions(price_per_core_hour_usd=3.6, watts_per_core=4.0)
    frame = cost_frame(_results(measured=True), a).set_index("name")
    assert frame.loc["baseline", "batch_size"] == 32  # the largest measured by default
    assert frame.loc["baseline", "usd_per_million"] == pytest.approx(1.0)
    assert frame.loc["int8", "usd_per_million"] == pytest.approx(0.25)
    assert frame.loc["int8", "monthly_saving_usd"] == pytest.approx(197.1)
    assert frame.loc["int8", "saving_pct"] == pytest.approx(75.0)
    assert frame.loc["baseline", "energy_basis"] == "measured" and frame.loc["baseline", "energy_mj"] == 0.5
    assert frame.loc["int8", "energy_basis"] == "estimated" and frame.loc["int8", "energy_mj"] == pytest.approx(1.0)
    assert frame.loc["int8", "gco2_per_million"] == pytest.approx(1000 / 3.6e6 * 475, rel=1e-3)
    assert frame.loc["int8", "fits: Microcontroller (Cortex-M7 class)"]
    assert frame.loc["baseline", "est. ms: Phone SoC (CPU cores)"] > 0
    assert math.isnan(frame.loc["broken", "usd_per_million"])
    at_one = cost_frame(_results(), a, batch_size=1).set_index("name")
    assert at_one.loc["baseline", "usd_per_million"] == pytest.approx(2.0)
    assert cost_frame({"variants": []}).empty


def test_results_frame_gains_cost_columns_with_the_stored_assumptions():
    """results.csv columns: USD / million, monthly saving, energy (mJ) and CO2 per batch size, and compute."""
    from core.results.table import results_frame

    results = _results()
    for v in results["variants"]:
        v["cost"] = {"assumptions": {"price_per_core_hour_usd": 3.6}}
    frame = results_frame(results).set_index("name")
    assert frame.loc["int8", "usd_per_million_bs32"] == pytest.approx(0.25)
    assert frame.loc["int8", "monthly_saving_usd_bs32"] == pytest.approx(197.1)
    assert frame.loc["int8", "energy_mj_bs1"] == pytest.approx(3.5)  # 1 ms CPU x 3.5 W default
    assert frame.loc["int8", "energy_basis"] == "estimated" and frame.loc["int8", "weight_bytes"] == 150_000


def test_cost_figure_marks_measured_and_estimated_and_greys_what_does_not_fit():
    """Filled markers for measured energy, open for estimated; variants that do not fit the device are grey."""
    tiny = DeviceProfile("tiny", 200_000, int8_gops=1, fp32_gflops=1, bandwidth_gbps=1)
    frame = cost_frame(_results(measured=True), CostAssumptions(), [tiny])
    fig = views_cost.cost_figure(frame, device="tiny")
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"energy measured", "energy estimated"}
    assert by_name["energy estimated"].marker.symbol == "circle-open"
    assert by_name["energy measured"].marker.color[0] == cost_figure_grey()  # baseline: 630 kB > 200 kB
    assert by_name["energy estimated"].marker.color[0] != cost_figure_grey()
    assert not views_cost.cost_figure(frame.iloc[0:0]).data


def cost_figure_grey():
    from core.views.charts import OUT_OF_BUDGET

    return OUT_OF_BUDGET


def test_a_run_records_the_new_fields_and_the_cli_prints_a_cost_summary(tmp_path, capsys, fast_bench):
    """results.json gains cpu_ms_per_sample, energy, compute and cost; `featherweight run` prints the summary."""
    from core.cli import _print_cost_summary
    from core.pipeline.run import run_recipe
    from core.spec.recipe import QuantizeConfig, Recipe, Variant

    recipe = Recipe(model="sample:digits-mlp", data="sample:digits", benchmark=fast_bench,
                    variants=(Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)),))
    run_recipe(recipe, tmp_path)  # in-process: the CLI's isolated worker runs this same function
    data = json.loads((tmp_path / "results.json").read_text())
    base, int8 = data["variants"]
    assert set(base["cpu_ms_per_sample"]) == {"1", "32"} and base["cpu_ms_per_sample"]["32"] > 0
    assert "joules_per_sample" in base["energy"] and "source" in base["energy"]
    assert base["compute"]["macs"] == int8["compute"]["macs"] == 50432  # same layers, same work
    assert int8["compute"]["precision"] == "int8" and int8["compute"]["weight_bytes"] < base["compute"]["weight_bytes"]
    assert base["cost"]["assumptions"] == CostAssumptions().to_dict()
    assert set(base["cost"]["usd_per_million"]) == {"1", "32"} and base["cost"]["energy_basis"]["32"] in (
        "measured", "estimated")
    frame = pd.read_csv(tmp_path / "results.csv")
    assert {"usd_per_million_bs32", "monthly_saving_usd_bs32", "energy_mj_bs32", "macs"} <= set(frame.columns)

    _print_cost_summary(str(tmp_path))
    out = capsys.readouterr().out
    assert "cost and energy at batch 32" in out and "int8-dynamic: $" in out and "per inference (" in out


def test_profile_from_artifact_parses_in_a_worker_and_only_inside_the_run(tmp_path, digits_mlp, monkeypatch):
    """An old run's artifact is profiled in a worker (onnx.load refused here) with the same numbers as in
    process; a path outside the run directory is not read at all."""
    import onnx

    from core.results import cost

    run_dir = tmp_path / "run"
    (run_dir / "variants" / "baseline").mkdir(parents=True)
    onnx.save(digits_mlp.onnx_model, run_dir / "variants" / "baseline" / "model.onnx")
    onnx.save(digits_mlp.onnx_model, tmp_path / "outside.onnx")
    expected = model_compute_profile(digits_mlp.onnx_model)

    def refused(*args, **kwargs):
        raise AssertionError("onnx.load called in the server process")

    monkeypatch.setattr(onnx, "load", refused)
    variant = {"name": "baseline", "status": "ok", "artifact": "variants/baseline/model.onnx"}
    assert cost.profile_from_artifact(run_dir, variant) == json.loads(json.dumps(expected))
    assert cost.profile_from_artifact(run_dir, {**variant, "artifact": "../outside.onnx"}) is None
    assert cost.profile_from_artifact(run_dir, {**variant, "artifact": "variants/none.onnx"}) is None


def test_cli_cost_summary_of_a_decoder_run_counts_generated_tokens():
    """A decoder's throughput is decode tokens/s, so its summary prices a million generated tokens, gives energy per
    generated token and reads the traffic assumption as tokens/s; it never says "inference"."""
    from core.results.cost import decoder_cost, summary_lines

    def variant(name, decode):
        v = {"name": name, "status": "ok", "throughput": {"1": decode}, "latency_ms": {"1": {"p50": 1000 / decode}},
             "tokens_per_s": {"prefill": 4 * decode, "decode": decode}, "cpu_ms_per_sample": {}, "energy": {}}
        v["cost"] = decoder_cost(v)
        return v

    results = {"task": "text-generation", "variants": [variant("baseline", 200.0), variant("int4", 800.0)]}
    text = "\n".join(summary_lines(results))
    assert "inference" not in text
    assert "per million generated tokens" in text and "generated tokens/s" in text
    assert "int4: $" in text and "saves $" in text
