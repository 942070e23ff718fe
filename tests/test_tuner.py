"""Accuracy-aware tuner: it keeps the drop within budget (repairing a fragile layer by keeping it in float),
stops at its time budget with a usable answer, and best.yaml reproduces the best variant through the pipeline."""

import json

import numpy as np
import pytest

from core.errors import BadInputError
from core.spec.recipe import Recipe
from core.analysis.tuner import TuneConfig, load_tune_log, selection_speedup, tune
from core.io import runtime

QUICK = dict(runs=5, max_seconds=0.3, warmup=1, batch_size=32)


def test_fragile_layer_is_kept_in_float_to_meet_the_drop_budget(tmp_path):
    import torch

    from core.io.data import load_data
    from core.io.graph import Model
    from core.io.model import export_onnx, load_sample_module

    module = load_sample_module("digits-mlp")
    with torch.no_grad():  # as in test_sensitivity: layer 3 cannot survive int8 weights
        module.net[1].weight[0] = 0.0
        module.net[1].bias[0] = 0.0
        module.net[3].weight[:, 0] = 1000.0
    path = tmp_path / "fragile.onnx"
    path.write_bytes(export_onnx(module, torch.zeros(1, 1, 8, 8)).SerializeToString())
    model = Model(str(path), export_onnx(module, torch.zeros(1, 1, 8, 8)), None)  # ONNX-only: no pruning
    data = load_data("sample:digits", model)
    # The budget is judged on 180 validation samples, 0.56 pt each: at 0.5 pt a single sample that an int8 kernel
    # of one CPU rounds differently would decide the test. 2 pt (three samples) still separates a repaired model
    # from plain int8, which the fragile layer breaks by far more than 30 pt.
    budget_pt = 2.0
    outcome = tune(model, data, TuneConfig(max_drop_pt=budget_pt, budget_s=90, **QUICK), tmp_path / "out")

    trials = {t.name: t for t in outcome.trials}
    assert not trials["int8-static"].within_budget and trials["int8-static"].drop_pt > 30
    # Kept in float, layer 3 reads the float output of the (int8) layer before it, Relu included, so on every CPU
    # the rest of the MLP in int8 costs well under the budget (0.00 pt measured on AVX2; before the float input
    # kept its Relu, 1.11 pt on an AVX-512 VNNI CPU).
    top1 = next(t for t in outcome.trials if t.name.startswith("int8-static-float-top1") and t.phase == "exclude")
    assert top1.within_budget, top1.reason
    repaired = [t.name for t in outcome.trials if t.name.startswith("int8-static-float-top") and t.within_budget]
    assert repaired
    steps = {v["name"]: v["steps"] for v in outcome.run.recipe["variants"]}
    assert "/net/net.3/Gemm" in steps[repaired[0]][-1]["exclude"]
    for t in outcome.trials:  # nothing over budget is ever the answer
        assert t.status != "ok" or t.within_budget == (t.drop_pt <= budget_pt)
    assert trials[outcome.best].within_budget  # here the baseline: on a tiny MLP no int8 variant is faster
    assert (tmp_path / "out" / "sensitivity.json").exists()
    assert any("Structured pruning was not tried" in line for line in outcome.summary)
    # Issue 27: the post-training recovery steps came first, in one variant whose every unit was gated on
    # validation, and the summary says what each step kept and won back (this MLP has no conv pair to equalize).
    recovery = [t.name for t in outcome.trials if t.phase == "recovery"]
    assert recovery[0] == "int8-static[equalize,bias_correction,rounding=learned]"
    assert trials[recovery[0]].drop_pt < trials["int8-static"].drop_pt  # learned rounding and bias correction
    assert any(line.startswith("Recovery from plain static int8") for line in outcome.summary)
    assert any(line.strip() == "- equalization: nothing to try (the graph has no Conv layers)"
               for line in outcome.summary)
    assert any(line.strip().startswith("- learned rounding: kept, agreement +") for line in outcome.summary)


def test_time_budget_is_respected_and_leaves_a_usable_answer(tmp_path, digits_cnn, digits_cnn_data):
    import time

    started = time.perf_counter()
    outcome = tune(digits_cnn, digits_cnn_data, TuneConfig(budget_s=4.0, finetune_epochs=50, **QUICK),
                   tmp_path)
    wall = time.perf_counter() - started
    assert outcome.status in ("budget", "completed")
    assert wall < 4.0 + 12.0  # one in-flight step (a calibration or a measurement) may finish after the deadline
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["variants"][0]["name"] == "baseline"
    assert Recipe.load(tmp_path / "best.yaml").model == digits_cnn.source
    log = load_tune_log(tmp_path)
    assert log["status"] == outcome.status and log["best"] == outcome.best
    assert [t["name"] for t in log["trials"]][0] == "baseline"


def test_best_yaml_reproduces_the_best_variant_with_featherweight_run(tmp_path, digits_mlp, digits_mlp_data):
    from core.pipeline.run import run_recipe

    config = TuneConfig(max_drop_pt=0.5, budget_s=60, finetune_epochs=3, prune_amounts=(0.5,), **QUICK)
    outcome = tune(digits_mlp, digits_mlp_data, config, tmp_path / "tune", model_spec="sample:digits-mlp",
                   data_spec="sample:digits")
    assert outcome.status == "completed"
    names = [t.name for t in outcome.trials]
    assert names[:2] == ["baseline", "int8-static"] and any(n.startswith("prune0.5") for n in names)
    tuned = {v.name: v for v in outcome.run.variants}[outcome.best]
    best = {t.name: t for t in outcome.trials}[outcome.best]
    assert best.drop_pt <= 0.5 + 1e-9  # judged on validation; the test drop is reported, not promised
    base = outcome.run.variants[0]
    assert best.test_drop_pt == pytest.approx((base.accuracy - tuned.accuracy) * 100, abs=1e-3)

    recipe = Recipe.load(tmp_path / "tune" / "best.yaml")
    assert [v.name for v in recipe.variants] == [outcome.best]
    rerun = run_recipe(recipe, tmp_path / "rerun")
    again = {v.name: v for v in rerun.variants}[outcome.best]
    assert again.status == "ok"
    assert again.accuracy == pytest.approx(tuned.accuracy, abs=0.002)
    assert again.size_bytes == pytest.approx(tuned.size_bytes, rel=0.02)


def _fragile_onnx_only(tmp_path):
    import torch

    from core.io.graph import Model
    from core.io.model import export_onnx, load_sample_module

    module = load_sample_module("digits-mlp")
    with torch.no_grad():  # as in test_sensitivity: plain int8 rounds layer 3's real weights to zero
        module.net[1].weight[0] = 0.0
        module.net[1].bias[0] = 0.0
        module.net[3].weight[:, 0] = 1000.0
    return Model(str(tmp_path / "fragile.onnx"), export_onnx(module, torch.zeros(1, 1, 8, 8)), None)


def _first_trial(model, data, out):
    """Tune until plain static int8 is judged (the user stop after its result), and return that trial."""
    done = []
    tune(model, data, TuneConfig(max_drop_pt=0.5, budget_s=60, **QUICK), out,
         on_progress=lambda e: done.append(e.variant == "int8-static" and e.kind == "variant_done"),
         should_stop=lambda: any(done))
    log = load_tune_log(out)
    return {t["name"]: t for t in log["trials"]}["int8-static"], log, json.loads((out / "results.json").read_text())


def test_the_tuner_judges_the_budget_on_validation_and_reports_on_the_untouched_test_split(tmp_path):
    """Scrambling the test labels leaves the choice alone; giving validation labels the baseline always gets wrong
    makes plain int8 pass a budget it fails on the real labels."""
    import dataclasses

    from core.io.data import load_data

    model = _fragile_onnx_only(tmp_path)
    data = load_data("sample:digits", model)
    clean, log, results = _first_trial(model, data, tmp_path / "clean")
    scrambled_test = dataclasses.replace(data, eval=dataclasses.replace(
        data.eval, y=np.random.default_rng(0).permutation(data.eval.y)))
    on_test, _, test_results = _first_trial(model, scrambled_test, tmp_path / "test")
    predictions = model_predictions(model, data.validation.x)
    wrong_validation = dataclasses.replace(data, validation=dataclasses.replace(
        data.validation, y=(predictions + 1) % 10))
    on_validation, _, _ = _first_trial(model, wrong_validation, tmp_path / "validation")

    assert not clean["within_budget"] and clean["drop_pt"] > 30 and clean["test_drop_pt"] > 30
    assert (on_test["drop_pt"], on_test["within_budget"]) == (clean["drop_pt"], clean["within_budget"])
    assert on_test["test_drop_pt"] != clean["test_drop_pt"]  # the reported number did read the test labels
    assert on_validation["within_budget"] and on_validation["drop_pt"] <= 0
    assert log["split"]["selection"] == "validation" and log["split"]["selection_n"] == 180
    assert log["split"]["n"] == 360 and log["split"]["selection_resolution_pt"] == pytest.approx(100 / 180)
    assert "±1 sample = 0.56 pt" in clean["reason"] and "on validation" in clean["reason"]
    for variant in results["variants"]:
        assert variant["split"] == {"quality": "test", "n": 360, "resolution_pt": 0.2778, "selection": "validation",
                                    "selection_n": 180}
    int8 = {v["name"]: v for v in test_results["variants"]}["int8-static"]
    assert int8["accuracy"] < 0.3  # reported against the scrambled test labels: test is what results show
    assert any("Chosen on the validation split (180 samples, ±1 sample = 0.56 pt)" in line for line in log["summary"])


def model_predictions(model, x: dict) -> np.ndarray:
    from core.measure import quality as measure

    return runtime.run_batched(runtime.make_session(model.onnx_bytes()), x)[0].argmax(axis=1)


def test_selection_speedup_of_a_model_against_itself_is_about_one(digits_mlp, digits_mlp_data):
    """The tuner's selection timing (interleaved rounds) of a model against itself: about 1, with an interval."""
    from core.measure import quality as measure

    session = runtime.make_session(digits_mlp.onnx_bytes())
    feed = measure.batch_inputs(digits_mlp_data.eval.x, digits_mlp.inputs, 64)
    chosen = selection_speedup(session, session, feed, max_seconds=0.5)
    assert 0.5 < chosen.ratio < 2.0 and chosen.low <= chosen.ratio <= chosen.high and chosen.rounds >= 2


def test_config_errors_name_the_allowed_values():
    with pytest.raises(BadInputError, match="allowed: 'latency', 'size'"):
        TuneConfig(objective="energy")
    with pytest.raises(BadInputError, match="budget_s"):
        TuneConfig(budget_s=0)
    with pytest.raises(BadInputError, match="unknown key"):
        TuneConfig.from_dict({"max_drop": 1})
    assert TuneConfig.from_dict(TuneConfig(prune_amounts=(0.5, 0.3)).to_dict()).prune_amounts == (0.3, 0.5)


def test_a_trial_name_fits_the_variant_name_cap_and_stays_unique():
    """Every recovery option at once (the tuner's recovered variant with calibration overrides and a float layer)
    gave a 73-character name, which the recipe refuses (MAX_VARIANT_NAME): the name is shortened, then cut with a
    digest, so it fits and two different settings keep different names."""
    from core.analysis.tuner import _quant_name
    from core.spec.recipe import MAX_VARIANT_NAME, QuantizeConfig, Variant

    every = dict(mode="static", per_channel=False, calibration="percentile", equalize=True, bias_correction=True,
                 smooth_quant=True, weight_rounding="learned", exclude=("/a/Conv",))
    names = {_quant_name(QuantizeConfig(**every, calibration_overrides={f"t{i}": "entropy" for i in range(n)}))
             for n in (3, 12, 1000, 1001)}  # the last two only fit cut, with their digests
    assert len(names) == 4 and all(len(n) <= MAX_VARIANT_NAME for n in names), names
    for name in names:
        Variant(name, (QuantizeConfig(mode="static"),))  # the recipe accepts it
    assert _quant_name(QuantizeConfig(mode="static")) == "int8-static"
