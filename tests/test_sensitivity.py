"""Sensitivity scan: a deliberately fragile layer ranks first, rankings are stable, prune scans through torch and
through ONNX agree, and the scan's output feeds a recipe's exclude list."""

import json
import math

import numpy as np
import pytest

from core.errors import BadInputError
from core.spec.recipe import PruneConfig, QuantizeConfig, Recipe, Variant
from core.analysis.sensitivity import (SensitivityConfig, SensitivityResult, load_sensitivity, recipe_with_exclude, scan,
                              sqnr_db, top_layers)

FRAGILE = "/net/net.3/Gemm"


@pytest.fixture(scope="module")
def fragile():
    """digits-mlp with one hidden unit of layer 1 switched off (always 0) and a 1000x weight on that dead input
    in every row of layer 3: the float outputs are untouched, but int8 weights of layer 3 (per tensor or per
    output channel) round every real weight to zero."""
    import torch

    from core.io.data import load_data
    from core.io.graph import Model
    from core.io.model import export_onnx, load_sample_module

    module = load_sample_module("digits-mlp")
    with torch.no_grad():
        module.net[1].weight[0] = 0.0
        module.net[1].bias[0] = 0.0
        module.net[3].weight[:, 0] = 1000.0
    model = Model("fragile-mlp", export_onnx(module, torch.zeros(1, 1, 8, 8)), module)
    return model, load_data("sample:digits", model)


def test_a_fragile_layer_ranks_first_with_a_large_drop_and_the_lowest_sqnr(fragile):
    model, data = fragile
    result = scan(model, data, SensitivityConfig(technique="quantize", per_channel=False))
    names = [layer.name for layer in result.layers]
    assert names[0] == FRAGILE
    first, rest = result.layers[0], result.layers[1:]
    assert first.drop > 30.0  # layer 3's real weights all round to zero
    assert all(layer.drop < 2.0 for layer in rest)
    assert first.sqnr_db < min(layer.sqnr_db for layer in rest) - 10
    assert result.metric == "accuracy drop (pt)" and result.baseline["accuracy"] > 0.95
    assert top_layers(result, 1) == [FRAGILE]


def test_the_ranking_is_the_same_for_the_same_seed(fragile):
    model, data = fragile
    config = SensitivityConfig(technique="quantize", max_samples=150)
    first, second = scan(model, data, config), scan(model, data, config)
    assert [(l.name, l.drop, l.sqnr_db) for l in first.layers] == [(l.name, l.drop, l.sqnr_db) for l in second.layers]
    assert first.layers[0].name == FRAGILE
    assert first.baseline["samples"] == 150


def _relabelled(data, split: str, labels):
    import dataclasses

    return dataclasses.replace(data, **{split: dataclasses.replace(getattr(data, split), y=labels)})


def test_the_scan_scores_on_validation_and_never_reads_the_test_labels(fragile):
    """Scrambling the test split's labels changes nothing; scrambling validation's changes every drop."""
    model, data = fragile
    config = SensitivityConfig(technique="quantize", per_channel=False, layers=(FRAGILE, "/net/net.1/Gemm"))
    clean = scan(model, data, config)
    rng = np.random.default_rng(0)
    test_scrambled = scan(model, _relabelled(data, "eval", rng.permutation(data.eval.y)), config)
    validation_scrambled = scan(model, _relabelled(data, "validation", rng.permutation(data.validation.y)), config)

    assert clean.split == {"selection": "validation", "n": 180, "resolution_pt": pytest.approx(100 / 180)}
    assert clean.to_dict()["split"] == clean.split
    assert clean.baseline["samples"] == 180 and clean.baseline["split"] == "validation"
    assert [(l.name, l.drop, l.accuracy) for l in test_scrambled.layers] == \
        [(l.name, l.drop, l.accuracy) for l in clean.layers]
    by_name = {l.name: l for l in validation_scrambled.layers}
    assert clean.layers[0].name == FRAGILE and clean.layers[0].drop > 30
    assert by_name[FRAGILE].drop < 15  # against scrambled labels the baseline is no better than chance either
    assert validation_scrambled.baseline["accuracy"] < 0.3 < clean.baseline["accuracy"]


def test_prune_scan_through_torch_and_through_onnx_agree(digits_mlp, digits_mlp_data):
    from core.io.graph import Model

    config = SensitivityConfig(technique="prune", amount=0.5, amounts=(0.2, 0.95), max_samples=300)
    torch_result = scan(digits_mlp, digits_mlp_data, config)
    onnx_only = Model(digits_mlp.source, digits_mlp.onnx_model, None)
    onnx_result = scan(onnx_only, digits_mlp_data, config)
    by_node = {layer.node: layer for layer in onnx_result.layers}
    assert {layer.name for layer in torch_result.layers} == {"net.1", "net.3", "net.5"}
    for layer in torch_result.layers:
        assert layer.type == "Linear" and layer.node in by_node
        assert set(layer.by_amount) == {"0.2", "0.5", "0.95"}
        assert layer.drop == pytest.approx(by_node[layer.node].drop, abs=0.56)  # one validation sample at most
        assert layer.by_amount["0.95"] >= layer.by_amount["0.2"]
    assert max(layer.by_amount["0.95"] for layer in torch_result.layers) > 5.0


def test_sqnr_is_none_for_identical_outputs_and_20_db_for_ten_percent_noise():
    y = [np.array([[3.0, -4.0]])]
    assert sqnr_db(y, [y[0].copy()]) is None
    assert sqnr_db(y, [y[0] * 1.1]) == pytest.approx(20.0, abs=1e-6)


def test_keep_top_k_fills_every_quantize_steps_exclude_or_adds_a_variant():
    recipe = Recipe(variants=(Variant("int8", (QuantizeConfig(mode="static"),)),
                              Variant("pruned-int8", (PruneConfig(), QuantizeConfig(mode="dynamic"))),
                              Variant("pruned", (PruneConfig(),))))
    updated = recipe_with_exclude(recipe, ["a", "b"])
    assert [v.steps[-1].exclude for v in updated.variants[:2]] == [("a", "b"), ("a", "b")]
    assert updated.variants[2] == recipe.variants[2]
    empty = recipe_with_exclude(Recipe(), ["a"])
    assert [v.name for v in empty.variants] == ["int8-static-float-top1"]
    assert empty.variants[0].steps[0].exclude == ("a",)
    assert Recipe.from_text(updated.to_yaml()) == updated


def test_result_round_trips_through_json_and_bad_configs_name_the_allowed_values(tmp_path):
    result = SensitivityResult("quantize", "m", None, {}, "accuracy drop (pt)", {"accuracy": 0.9})
    (tmp_path / "sensitivity.json").write_text(json.dumps(result.to_dict()))
    assert load_sensitivity(tmp_path).to_dict() == result.to_dict()
    with pytest.raises(BadInputError, match="allowed: 'quantize', 'prune'"):
        SensitivityConfig(technique="distill")
    with pytest.raises(BadInputError, match="amount"):
        SensitivityConfig(technique="prune", amount=1.5)
    with pytest.raises(BadInputError, match="unknown key"):
        SensitivityConfig.from_dict({"technique": "quantize", "bits": 4})
    assert not math.isnan(sqnr_db([np.ones((2, 2))], [np.zeros((2, 2))]))


def test_scan_refuses_unknown_layer_names(fragile):
    model, data = fragile
    with pytest.raises(BadInputError, match="no layer named nope"):
        scan(model, data, SensitivityConfig(layers=("nope",)))


def test_cli_writes_sensitivity_json_most_sensitive_first(tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("FEATHERWEIGHT_ISOLATION", "off")  # in-process: the worker path is tested by the jobs test
    code = main(["sensitivity", "sample:digits-mlp", "--data", "sample:digits", "--technique", "prune",
                 "--amount", "0.9", "--max-samples", "200", "--out", str(tmp_path)])
    assert code == 0
    written = json.loads((tmp_path / "sensitivity.json").read_text())
    assert written["technique"] == "prune"
    drops = [layer["drop"] for layer in written["layers"]]
    assert drops == sorted(drops, reverse=True)
    assert {"name", "type", "drop", "sqnr_db"} <= set(written["layers"][0])
    assert "most sensitive first" in capsys.readouterr().out
    assert main(["sensitivity", "sample:digits-mlp", "--technique", "prune", "--amount", "2",
                 "--out", str(tmp_path)]) == 2


def test_ranks_mark_layers_within_one_validation_sample_as_tied():
    """Drops within one validation sample of a group's first layer share its rank and are marked tied; a cosine
    drop (no samples to count) ties only equal drops; failures get no rank; old scans are ranked as read."""
    from core.analysis.sensitivity import LayerSensitivity, SensitivityResult, mark_ties, resolution_caption

    def layers(*drops):
        return [LayerSensitivity(f"l{i}", "Conv", drop=d) for i, d in enumerate(drops)]

    sample = 100 / 180  # drops of 6, 5, 3, 1 and 0 validation samples
    ranked = mark_ties(layers(6 * sample, 5 * sample, 3 * sample, sample, 0.0, None), sample)
    assert [(l.rank, l.tied) for l in ranked] == [(1, True), (1, True), (3, False), (4, True), (4, True),
                                                 (None, False)]
    assert [(l.rank, l.tied) for l in mark_ties(layers(0.02, 0.02, 0.01), None)] == [(1, True), (1, True),
                                                                                     (3, False)]
    old = {"metric": "accuracy drop (pt)", "split": {"selection": "validation", "n": 180},
           "layers": [{"name": "a", "type": "Conv", "drop": 1.11}, {"name": "b", "type": "Conv", "drop": 0.56}]}
    result = SensitivityResult.from_dict(old)
    assert [(l.rank, l.tied) for l in result.layers] == [(1, True), (1, True)]
    assert "180 validation samples: 1 sample = 0.56 pt" in resolution_caption(result)
