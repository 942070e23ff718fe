"""Learn explainers: the numbers they show are onnxruntime's numbers, and every knob moves them the right way."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from core.teach import explainers as learn
from core.errors import BadInputError
from core.io.graph import Model
from core.measure.card import model_card
from core.spec.recipe import QuantizeConfig
from core.techniques import Candidate, StepContext
from core.techniques import apply_step
from core.techniques.quantize import gemm_to_matmul

CALIBRATION = 32  # calibration samples for the quantized fixtures and the matching calibration study


@pytest.fixture(scope="module")
def cnn_static(digits_cnn, digits_cnn_data):
    """digits-cnn quantized by onnxruntime exactly as the pipeline does it: static int8 QDQ, per channel."""
    config = QuantizeConfig(mode="static", per_channel=True, samples=CALIBRATION)
    return apply_step(config, Candidate(onnx_model=digits_cnn.onnx_model), StepContext(digits_cnn_data, digits_cnn))


# --------------------------------------------------------------------------------------------------------------
# Weight quantization mirrors onnxruntime


def test_static_per_channel_int8_weights_equal_onnxruntime_graph(digits_cnn, cnn_static):
    tensors = learn.weight_tensors(digits_cnn.onnx_model)
    assert [t.name for t in tensors] == ["features.0.weight", "features.2.weight", "features.5.weight",
                                         "classifier.1.weight", "classifier.3.weight"]
    for tensor in tensors:
        original = learn.weight_array(digits_cnn.onnx_model, tensor.name)
        theirs = learn.read_quantized_weight(cnn_static.onnx_model, tensor.name)
        ours = learn.quantize_tensor(original, 8, symmetric=True, per_channel=True, axis=tensor.channel_axis)

        assert theirs.codes.dtype == np.int8 and theirs.scale.shape == (tensor.channels,)
        np.testing.assert_array_equal(ours.codes, theirs.codes.astype(np.int64))
        np.testing.assert_array_equal(ours.scale, theirs.scale)  # max|w| / 127 per output channel, as float32
        np.testing.assert_array_equal(ours.zero_point, theirs.zero_point.astype(np.int64))
        np.testing.assert_allclose(ours.dequantized, theirs.dequantized, rtol=0, atol=1e-7)
        their_mse = learn.error_stats(original, theirs.dequantized)[0]
        assert ours.mse == pytest.approx(their_mse, rel=1e-9)
        np.testing.assert_allclose(ours.scale, np.abs(np.moveaxis(original, tensor.channel_axis, 0))
                                   .reshape(tensor.channels, -1).max(axis=1) / 127, rtol=1e-6)


def test_static_per_tensor_int8_weights_equal_onnxruntime_graph(digits_cnn, digits_cnn_data):
    config = QuantizeConfig(mode="static", per_channel=False, samples=8)
    quantized = apply_step(config, Candidate(onnx_model=digits_cnn.onnx_model), StepContext(digits_cnn_data, digits_cnn))
    for tensor in learn.weight_tensors(digits_cnn.onnx_model):
        original = learn.weight_array(digits_cnn.onnx_model, tensor.name)
        theirs = learn.read_quantized_weight(quantized.onnx_model, tensor.name)
        ours = learn.quantize_tensor(original, 8)
        assert theirs.scale.size == 1
        np.testing.assert_array_equal(ours.codes, theirs.codes.astype(np.int64))
        assert float(ours.scale) == float(theirs.scale) == pytest.approx(np.abs(original).max() / 127, rel=1e-6)
        assert ours.mse == pytest.approx(learn.error_stats(original, theirs.dequantized)[0], rel=1e-9)


def test_dynamic_per_channel_matmul_weights_equal_onnxruntime_graph(digits_mlp, digits_mlp_data):
    config = QuantizeConfig(mode="dynamic", per_channel=True)
    quantized = apply_step(config, Candidate(onnx_model=digits_mlp.onnx_model), StepContext(digits_mlp_data, digits_mlp))
    as_matmul = gemm_to_matmul(onnx.load_from_string(digits_mlp.onnx_model.SerializeToString()))
    tensors = learn.weight_tensors(as_matmul)
    assert [t.op_type for t in tensors] == ["MatMul"] * 3 and all(t.channel_axis == 1 for t in tensors)
    for tensor in tensors:
        theirs = learn.read_quantized_weight(quantized.onnx_model, tensor.name)
        ours = learn.quantize_tensor(learn.weight_array(as_matmul, tensor.name), 8, per_channel=True, axis=1)
        np.testing.assert_array_equal(ours.codes, theirs.codes.astype(np.int64))
        np.testing.assert_array_equal(ours.scale, theirs.scale)
        np.testing.assert_allclose(ours.dequantized, theirs.dequantized, rtol=0, atol=1e-7)


def test_check_against_onnxruntime_reports_identical_codes(digits_mlp, digits_mlp_data):
    check = learn.check_against_onnxruntime(digits_mlp, digits_mlp_data, "net.3.weight")
    assert check["codes_equal"] and check["codes_differing"] == 0
    assert check["max_scale_diff"] == 0.0 and check["max_dequantized_diff"] == 0.0
    assert check["mse_ours"] == pytest.approx(check["mse_onnxruntime"], rel=1e-9)


def test_scale_and_zero_point_equal_onnxruntime_compute_scale_zp():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    rng = np.random.default_rng(0)
    for lo, hi in [(-1.3, 0.7), (0.2, 5.0), (-4.0, -0.5), (0.0, 0.0), *rng.normal(0, 3, (20, 2))]:
        lo, hi = np.float32(min(lo, hi)), np.float32(max(lo, hi))
        zp, scale = compute_scale_zp(lo, hi, np.uint8(0), np.uint8(255), symmetric=False)
        ours_scale, ours_zp = learn.scale_zero_point(lo, hi, 8, symmetric=False)
        assert float(ours_scale) == float(scale) and int(ours_zp) == int(zp)
        zp, scale = compute_scale_zp(lo, hi, np.int8(-127), np.int8(127), symmetric=True)
        ours_scale, ours_zp = learn.scale_zero_point(lo, hi, 8, symmetric=True)
        assert float(ours_scale) == float(scale) and int(ours_zp) == int(zp) == 0


def test_fewer_bits_mean_fewer_levels_and_more_error(digits_cnn):
    weight = learn.weight_array(digits_cnn.onnx_model, "features.2.weight")
    results = {bits: learn.quantize_tensor(weight, bits) for bits in range(2, 9)}
    assert [results[b].levels for b in range(2, 9)] == [2 ** b - 1 for b in range(2, 9)]
    mses = [results[b].mse for b in range(2, 9)]
    assert all(a > b for a, b in zip(mses, mses[1:]))
    for q in results.values():  # no clipping under a symmetric max-|w| range: error is at most half a step
        assert q.max_abs_error <= float(q.scale) / 2 * (1 + 1e-5)
        assert len(np.unique(q.codes)) <= q.levels
    per_channel = learn.quantize_tensor(weight, 4, per_channel=True, axis=0)
    assert per_channel.mse < results[4].mse
    curve = learn.bit_width_curve(weight, 0)
    assert (curve["sqnr_db_per_channel"] >= curve["sqnr_db_per_tensor"]).all()
    assert curve["sqnr_db_per_tensor"].diff().iloc[2:].between(5, 7.5).all()  # about 6 dB a bit from 4 bits on


def test_asymmetric_grid_covers_exactly_min_to_max():
    weight = np.linspace(0.5, 3.0, 101, dtype=np.float32)
    q = learn.quantize_tensor(weight, 4, symmetric=False)
    grid = q.grid()
    assert q.levels == 16 and int(q.zero_point) == 0  # the range is widened to include 0
    assert grid[0] == 0 and grid[-1] == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(BadInputError, match="allowed: 2..16"):
        learn.quantize_tensor(weight, 1)


def test_channel_error_table_shows_small_channels_gain_most(digits_cnn):
    weight = learn.weight_array(digits_cnn.onnx_model, "classifier.1.weight")
    table = learn.channel_error_table(weight, 0, bits=4)
    assert len(table) == 128
    assert (table["rms_error_per_channel"] <= table["rms_error_per_tensor"] + 1e-9).all()
    small = table.nsmallest(10, "absmax")
    gain = (small["rms_error_per_tensor"] / small["rms_error_per_channel"]).mean()
    big = table.nlargest(10, "absmax")
    assert gain > (big["rms_error_per_tensor"] / big["rms_error_per_channel"]).mean()


# --------------------------------------------------------------------------------------------------------------
# Calibration through onnxruntime


def test_minmax_activation_scales_equal_the_static_graph(digits_cnn, digits_cnn_data, cnn_static):
    study = learn.calibration_study(digits_cnn, digits_cnn_data, samples=CALIBRATION)
    graph = {i.name: numpy_helper.to_array(i) for i in cnn_static.onnx_model.graph.initializer}
    checked = 0
    for tensor, ranges in study.ranges.items():
        if f"{tensor}_scale" not in graph:
            continue
        scale, zero = learn.scale_zero_point(*ranges["minmax"], 8, symmetric=False)
        assert float(scale) == float(graph[f"{tensor}_scale"]), tensor
        assert int(zero) == int(graph[f"{tensor}_zero_point"]), tensor
        checked += 1
    assert checked >= 5  # input, the ReLU outputs and the logits


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_the_explainer_shows_the_ranges_the_quantizer_uses(digits_cnn, digits_cnn_data, method):
    """With its default knobs, the calibration explainer's entropy / percentile ranges are the scales a static
    int8 variant calibrated that way carries (and entropy is not minmax)."""
    import copy

    from core.spec.recipe import QuantizeConfig
    from core.techniques import Candidate, StepContext, apply_step

    study = learn.calibration_study(digits_cnn, digits_cnn_data, samples=CALIBRATION)
    result = apply_step(QuantizeConfig(mode="static", calibration=method, samples=CALIBRATION),
                        Candidate(onnx_model=copy.deepcopy(digits_cnn.onnx_model)),
                        StepContext(dataset=digits_cnn_data, baseline=digits_cnn))
    graph = {i.name: numpy_helper.to_array(i) for i in result.onnx_model.graph.initializer}
    checked = differs = 0
    for tensor, ranges in study.ranges.items():
        if f"{tensor}_scale" not in graph:
            continue
        scale, _ = learn.scale_zero_point(*ranges[method], 8, symmetric=False)
        assert float(scale) == pytest.approx(float(graph[f"{tensor}_scale"]), rel=1e-5), tensor
        differs += ranges[method] != ranges["minmax"]
        checked += 1
    assert checked >= 5 and differs >= 1


def test_calibration_methods_choose_different_clips_on_real_activations(digits_cnn, digits_cnn_data):
    tensor = "/features/features.3/Relu_output_0"
    study = learn.calibration_study(digits_cnn, digits_cnn_data, samples=CALIBRATION, percentile=99.9,
                                    entropy_bins=512, tensors=[tensor])
    assert study.tensors == [tensor]
    ranges = study.ranges[tensor]
    values = learn.activation_values(digits_cnn, digits_cnn_data, tensor, samples=CALIBRATION,
                                     max_values=10 ** 7)
    assert ranges["minmax"] == pytest.approx((float(values.min()), float(values.max())), rel=1e-6)
    assert ranges["percentile"][1] < ranges["minmax"][1]
    assert ranges["entropy"][1] < ranges["minmax"][1]
    table = learn.activation_range_table(values, ranges).set_index("method")
    assert table.loc["minmax", "clipped_pct"] == 0
    assert table.loc["percentile", "clipped_pct"] > 0
    assert table.loc["percentile", "scale"] < table.loc["minmax", "scale"]  # finer steps for the common values
    with pytest.raises(BadInputError, match="no calibrated tensor"):
        learn.calibration_study(digits_cnn, digits_cnn_data, samples=8, tensors=["nope"])


# --------------------------------------------------------------------------------------------------------------
# Pruning


def test_pattern_masks_have_their_shape_of_sparsity(digits_cnn):
    weight = learn.out_first(learn.weight_array(digits_cnn.onnx_model, "features.2.weight"), 0)  # (64, 32, 3, 3)
    unstructured = learn.pattern_mask(weight, 0.7, "unstructured")
    assert 1 - unstructured.mean() == pytest.approx(0.7, abs=1e-4)
    kept = np.abs(weight)[unstructured > 0]
    assert kept.min() >= np.abs(weight)[unstructured == 0].max()
    two_four = learn.pattern_mask(weight, 0.1, "2:4")
    groups = np.moveaxis(two_four, 1, -1).reshape(-1, 4)
    assert (groups.sum(axis=1) == 2).all()
    channels = learn.pattern_mask(weight, 0.25, "channel")
    rows = channels.reshape(64, -1)
    assert ((rows == 0).all(axis=1)).sum() == 16 and ((rows == 1).all(axis=1)).sum() == 48
    assert learn.pattern_mask(np.ones((4, 6)), 0.5, "2:4") is None
    facts = {p: learn.mask_facts(weight, learn.pattern_mask(weight, 0.5, p)) for p in ("unstructured", "channel")}
    assert facts["unstructured"]["kept_magnitude"] > facts["channel"]["kept_magnitude"]
    assert learn.heatmap_matrix(weight, channels).shape == (32, 96)
    with pytest.raises(BadInputError, match="allowed: unstructured, 2:4, channel"):
        learn.pattern_mask(weight, 0.5, "random")


def test_sparsity_sweep_loses_accuracy_and_fine_tuning_recovers_it(digits_mlp, digits_mlp_data):
    from core.techniques.distill import accuracy

    baseline = accuracy(digits_mlp.torch_module, [digits_mlp_data.eval.x["input"]], digits_mlp_data.eval.y)
    sweep = learn.sparsity_sweep(digits_mlp, digits_mlp_data, amounts=(0.0, 0.95), finetune_epochs=1)
    assert sweep["accuracy"].iloc[0] == pytest.approx(baseline)
    assert sweep["sparsity"].iloc[1] == pytest.approx(0.95, abs=1e-3)
    assert sweep["accuracy"].iloc[1] < baseline - 0.1
    assert sweep["accuracy_finetuned"].iloc[1] > sweep["accuracy"].iloc[1]
    assert np.allclose(digits_mlp.torch_module.net[1].weight.detach().numpy(),
                       learn.weight_array(digits_mlp.onnx_model, "net.1.weight"))  # the model was not touched


def test_channel_sweep_and_onnx_only_models(digits_mlp, digits_mlp_data):
    channel = learn.sparsity_sweep(digits_mlp, digits_mlp_data, pattern="channel", amounts=(0.5,), finetune_epochs=0)
    assert channel["accuracy_finetuned"].isna().all() and 0.4 < channel["sparsity"].iloc[0] < 0.5
    onnx_only = Model("upload.onnx", digits_mlp.onnx_model)
    sweep = learn.sparsity_sweep(onnx_only, digits_mlp_data, amounts=(0.0, 0.5), finetune_epochs=2)
    torch_side = learn.sparsity_sweep(digits_mlp, digits_mlp_data, amounts=(0.0,), finetune_epochs=0)
    assert sweep["accuracy"].iloc[0] == pytest.approx(torch_side["accuracy"].iloc[0], abs=0.002)
    assert sweep["sparsity"].iloc[1] == pytest.approx(0.5, abs=1e-3)
    assert sweep["accuracy_finetuned"].isna().all()


# --------------------------------------------------------------------------------------------------------------
# Distillation


def test_temperature_raises_entropy_toward_uniform(digits_cnn, digits_cnn_data):
    logits = learn.teacher_logits(digits_cnn, digits_cnn_data.eval, limit=64)
    curve = learn.temperature_curve(logits, temperatures=(0.5, 1, 2, 4, 8, 16))
    assert curve["mean_entropy_bits"].is_monotonic_increasing
    assert curve["mean_entropy_bits"].iloc[-1] < np.log2(10)
    p = learn.softmax(logits[:1], 1.0)
    np.testing.assert_allclose(p, np.exp(logits[:1]) / np.exp(logits[:1]).sum(), rtol=1e-5)
    assert learn.entropy_bits(np.eye(10)[3]) == 0.0
    assert learn.entropy_bits(np.full(10, 0.1)) == pytest.approx(np.log2(10))
    cold, warm = learn.soft_target_facts(logits[0], 1.0), learn.soft_target_facts(logits[0], 8.0)
    assert warm["entropy_bits"] > cold["entropy_bits"] and warm["top"] == cold["top"]
    with pytest.raises(BadInputError, match="must be > 0"):
        learn.softmax(logits, 0.0)


def test_live_distillation_yields_both_students_every_epoch(digits_mlp, digits_mlp_data):
    points = list(learn.distill_live(digits_mlp, digits_mlp_data, epochs=3, train_samples=300))
    assert [(p["epoch"], p["student"]) for p in points] == [
        (e, s) for e in range(4) for s in ("with teacher", "labels only")]
    start = [p for p in points if p["epoch"] == 0]
    assert start[0]["eval_accuracy"] == start[1]["eval_accuracy"]  # identical initial students
    end = {p["student"]: p for p in points if p["epoch"] == 3}
    assert all(p["eval_accuracy"] > 0.5 > 0.3 > p0["eval_accuracy"] for p, p0 in zip(end.values(), start))
    assert end["with teacher"]["student_params"] * 5 < end["with teacher"]["teacher_params"]
    again = list(learn.distill_live(digits_mlp, digits_mlp_data, epochs=3, train_samples=300))
    assert again == points  # seeded: a rerun in the workshop shows the same curves


# --------------------------------------------------------------------------------------------------------------
# Size estimates


def test_size_estimate_matches_quantized_graphs_and_exported_students(digits_cnn, cnn_static, digits_mlp,
                                                                      digits_mlp_data):
    static = learn.estimate_size(digits_cnn.onnx_model, [{"technique": "quantize", "mode": "static"}])
    assert static == pytest.approx(cnn_static.onnx_model.ByteSize(), rel=0.03)
    for mode in ("dynamic", "fp16"):
        config = QuantizeConfig(mode=mode)
        graph = apply_step(config, Candidate(onnx_model=digits_mlp.onnx_model), StepContext(digits_mlp_data, digits_mlp))
        assert learn.estimate_size(digits_mlp.onnx_model, [config]) == pytest.approx(graph.onnx_model.ByteSize(),
                                                                                     rel=0.03), mode
    baseline = learn.estimate_size(digits_cnn.onnx_model)
    assert baseline == digits_cnn.onnx_model.ByteSize()
    assert learn.estimate_size(digits_cnn.onnx_model, [{"technique": "prune", "method": "unstructured",
                                                        "amount": 0.8}]) == baseline
    from sample_models.architectures import DigitsCNN
    from core.techniques.distill import param_count

    student = learn.estimate_breakdown(digits_cnn.onnx_model, [{"technique": "distill", "width": 0.25}])
    assert student["params"] == param_count(DigitsCNN(0.25))


def test_size_estimate_from_a_card_is_close_to_the_graph_estimate(digits_cnn):
    card = model_card(digits_cnn)
    steps = [{"technique": "quantize", "mode": "static"}]
    assert learn.estimate_size(card, steps) == pytest.approx(learn.estimate_size(digits_cnn.onnx_model, steps),
                                                             rel=0.06)
    with pytest.raises(BadInputError, match="model card"):
        learn.estimate_size("model.onnx", steps)
    with pytest.raises(BadInputError, match="allowed"):
        learn.estimate_size(card, [{"technique": "quantize", "mode": "int3"}])


def test_technique_table_counts_bytes_per_weight_and_arithmetic(digits_cnn):
    table = learn.technique_table(digits_cnn.onnx_model).set_index("technique")
    assert table.loc["baseline (fp32)", "bytes_per_weight"] == pytest.approx(4.0)
    assert table.loc["fp16 weights", "bytes_per_weight"] == pytest.approx(2.0)
    assert 1.0 < table.loc["int8 static", "bytes_per_weight"] < 1.1  # + a scale per channel
    assert table.loc["int8 static", "x_smaller"] > 3.4
    macs = table["macs_per_sample"]
    assert macs.loc["int8 static"] == macs.loc["baseline (fp32)"] > 0
    assert macs.loc["structured prune 50%"] < macs.loc["baseline (fp32)"] / 2


def test_estimate_vs_measured_reads_a_run(tmp_path, digits_mlp):
    from core.jobs.store import RunStore

    store = RunStore(tmp_path / "home")
    record = store.create("tester", "model: sample:digits-mlp\n", model="sample:digits-mlp")
    results = {"model": "sample:digits-mlp", "variants": [
        {"name": "baseline", "status": "ok", "steps": [], "size_bytes": 204245},
        {"name": "int8-static", "status": "ok", "steps": [{"technique": "quantize", "mode": "static"}],
         "size_bytes": 62014},
        {"name": "broken", "status": "failed", "steps": [], "size_bytes": None}]}
    (store.run_dir(record.id) / "results.json").write_text(json.dumps(results))
    store.set_status(record.id, "completed")
    assert [r["id"] for r in learn.completed_runs(store)] == [record.id]
    table = learn.estimate_vs_measured(results, learn.run_baseline_proto(store, record.id, results))
    assert list(table["variant"]) == ["baseline", "int8-static"]
    assert table["error_pct"].abs().max() < 5
    assert list(table["steps"]) == ["none", "quantize static"]


def test_sources_name_samples_and_refuse_unknown_ones():
    assert "sample:digits-cnn" in learn.learnable_samples()
    source = learn.sample_source("sample:digits-mlp")
    assert source.data_spec == "sample:digits" and source.key == "sample:digits-mlp"
    with pytest.raises(BadInputError, match="available: sample:digits-cnn"):
        learn.sample_source("sample:nope")


def _run_with_model(tmp_path, spec: str):
    """A finished run in a fresh store whose results.json names `spec` as its model."""
    from core.jobs.store import RunStore

    store = RunStore(tmp_path / "home")
    record = store.create("tester", "variants: []\n", model="inputs/model.onnx")
    results = {"model": spec, "variants": [{"name": "baseline", "status": "ok", "steps": [], "size_bytes": 1000}]}
    (store.run_dir(record.id) / "results.json").write_text(json.dumps(results))
    return store, record.id, results


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_run_baseline_proto_reads_only_files_inside_the_run(tmp_path, digits_mlp, how):
    """A results.json naming a model outside its run directory (.., an absolute path, a symlink out) is refused
    before anything is parsed; the run's own inputs/ file is read."""
    import onnx

    outside = tmp_path / "elsewhere" / "model.onnx"
    outside.parent.mkdir()
    onnx.save(digits_mlp.onnx_model, outside)
    store, run_id, results = _run_with_model(tmp_path, "inputs/model.onnx")
    inputs = store.run_dir(run_id) / "inputs"
    inputs.mkdir(exist_ok=True)
    spec = {"dotdot": "../../../elsewhere/model.onnx", "absolute": str(outside), "symlink": "inputs/model.onnx"}[how]
    if how == "symlink":
        (inputs / "model.onnx").symlink_to(outside)
    results["model"] = spec
    with pytest.raises(BadInputError, match="inside its run directory"):
        learn.run_baseline_proto(store, run_id, results)
    (inputs / "model.onnx").unlink(missing_ok=True)
    onnx.save(digits_mlp.onnx_model, inputs / "model.onnx")
    results["model"] = "inputs/model.onnx"
    assert len(learn.run_baseline_proto(store, run_id, results).graph.node) == len(digits_mlp.onnx_model.graph.node)


def test_explainer_views_from_the_worker_equal_the_in_process_ones(digits_cnn, digits_cnn_data):
    """Through explain_isolated, a sample's views come back bit for bit: arrays, frames and weight tensors."""
    from core.jobs.entries import explain_isolated

    source = learn.sample_source("sample:digits-cnn")
    stats: dict = {}
    facts = explain_isolated(source, "facts", stats=stats)
    assert stats["exit_code"] == 0 and stats["peak_rss_mb"] > 0  # it really ran in a worker
    assert facts == learn.model_facts(digits_cnn, digits_cnn_data)
    tensor = facts["weights"][1].name
    view = explain_isolated(source, "quantization", {"tensor": tensor, "bits": 4, "symmetric": False})
    here = learn.quantization_view(digits_cnn, digits_cnn_data, tensor, 4, False)
    for name in ("scale", "mse", "mse_per_channel", "grid", "level_counts", "hist"):
        assert view[name] == here[name], name
    pd.testing.assert_frame_equal(view["channel_table"], here["channel_table"])
    pd.testing.assert_frame_equal(view["bit_curve"], here["bit_curve"])
    teacher = explain_isolated(source, "teacher")
    assert teacher["logits"].dtype == np.float32 and np.array_equal(teacher["logits"],
                                                                    learn.teacher_view(digits_cnn, digits_cnn_data)
                                                                    ["logits"])


def test_live_distillation_in_a_worker_streams_every_point(digits_mlp, digits_mlp_data):
    """The worker sends each epoch's points as they come, and they equal an in-process run's."""
    from core.jobs.entries import explain_isolated

    settings = {"width": 0.25, "temperature": 4.0, "alpha": 0.7, "epochs": 2, "train_samples": 100}
    seen: list = []
    points = explain_isolated(learn.sample_source("sample:digits-mlp"), "distill", settings, on_point=seen.append)
    assert seen == points and len(points) == 2 * 3
    assert points == learn.distill_curves(digits_mlp, digits_mlp_data, **settings)


def test_explainer_worker_refuses_a_hostile_upload_with_one_line(tmp_path):
    """Uploaded bytes go to the worker; a corrupt file comes back as one BadInputError, the server untouched."""
    from core.jobs.entries import explain_isolated

    source = learn.LearnSource(key="upload:x", label="broken.onnx", model_filename="broken.onnx",
                               model_content=b"\x08\x07not a model")
    with pytest.raises(BadInputError) as info:
        explain_isolated(source, "facts")
    assert "\n" not in str(info.value) and "broken.onnx" in str(info.value)
