"""Pruning: unstructured / structured / 2:4 on torch models, unstructured on ONNX-only models, composition."""

import numpy as np
import pytest
import torch
from torch import nn

from core.io.data import Dataset, Split
from core.errors import BadInputError, UnsupportedModelError
from core.io.graph import Model
from core.io.model import export_onnx
from core.pipeline.run import run
from core.spec.recipe import PruneConfig, QuantizeConfig, Recipe, Variant, step_from_dict
from core.techniques import Cancelled
from core.techniques.distill import accuracy, model_inputs
from core.techniques.prune import prunable_layers

from step_support import apply_to_copy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _prune(config, model, data, *, onnx_only=False, **context_args):
    return apply_to_copy(config, model, data, onnx_only=onnx_only, **context_args)[0]


def _eval_accuracy(module, model, data):
    return accuracy(module, model_inputs(data.eval, [s.name for s in model.inputs]), data.eval.y)


def _weights(module):
    return {name: layer.weight.detach().numpy() for name, layer in prunable_layers(module)}


def _ort_outputs(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# --------------------------------------------------------------------------------------------------------------
# Unstructured


def test_global_unstructured_zeroes_the_asked_fraction_of_all_weights(digits_mlp, digits_mlp_data):
    """Global scope: exactly `amount` of all Linear weights are zero, unevenly spread over the layers."""
    result = _prune(PruneConfig(method="unstructured", amount=0.7, finetune_epochs=0), digits_mlp, digits_mlp_data)
    weights = _weights(result.torch_module)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.size for w in weights.values())
    assert zeros / total == pytest.approx(0.7, abs=1e-4)
    assert result.info["sparsity"] == pytest.approx(0.7, abs=1e-4)
    layer = result.info["layer_sparsity"]
    assert set(layer) == {"net.1", "net.3", "net.5"}
    assert max(layer.values()) - min(layer.values()) > 0.05  # ranked across layers, not per layer
    assert result.onnx_model is None  # the pipeline re-exports the changed module
    assert any("no faster" in n and "compressed" in n for n in result.notes)


def test_layer_unstructured_zeroes_the_same_fraction_in_every_layer(digits_cnn, digits_cnn_data):
    """Layer scope: each Conv/Linear weight tensor loses `amount` of its entries."""
    result = _prune(PruneConfig(method="unstructured", amount=0.6, scope="layer", finetune_epochs=0),
                    digits_cnn, digits_cnn_data)
    for name, w in _weights(result.torch_module).items():
        assert (w == 0).mean() == pytest.approx(0.6, abs=1 / w.size + 1e-6), name
        assert result.info["layer_sparsity"][name] == pytest.approx(0.6, abs=1 / w.size + 1e-6)
    # the smallest magnitudes went: every kept weight is at least as large as every pruned one was
    original = _weights(digits_cnn.torch_module)["features.5"]
    pruned = _weights(result.torch_module)["features.5"]
    assert np.abs(original[pruned == 0]).max() <= np.abs(original[pruned != 0]).min()


def test_finetune_keeps_the_masks_and_recovers_accuracy(digits_mlp, digits_mlp_data):
    """Fine-tuning after heavy pruning raises accuracy while the pruned weights stay exactly zero."""
    reports = []
    config = PruneConfig(method="unstructured", amount=0.9, scope="layer", finetune_epochs=0)
    before = _prune(config, digits_mlp, digits_mlp_data)
    after = _prune(PruneConfig(method="unstructured", amount=0.9, scope="layer", finetune_epochs=2),
                   digits_mlp, digits_mlp_data, report=lambda m, f: reports.append((m, f)))
    mask_before = {k: w == 0 for k, w in _weights(before.torch_module).items()}
    for name, w in _weights(after.torch_module).items():
        assert np.array_equal(w == 0, mask_before[name]), name
    acc_before = _eval_accuracy(before.torch_module, digits_mlp, digits_mlp_data)
    acc_after = _eval_accuracy(after.torch_module, digits_mlp, digits_mlp_data)
    assert acc_after > acc_before + 0.1  # measured: 0.53 -> 0.68
    assert [p["epoch"] for p in after.info["finetune_curve"]] == [1, 2]
    assert after.info["finetune_curve"][-1]["eval_accuracy"] == pytest.approx(acc_after, abs=1e-6)
    epoch_reports = [r for r in reports if "epoch" in r[0]]
    assert len(epoch_reports) == 2 and epoch_reports[-1][1] == pytest.approx(1.0)


def test_finetune_is_seeded_and_can_be_cancelled(digits_mlp, digits_mlp_data):
    """The same seed gives the same weights; a stop request ends fine-tuning with Cancelled."""
    config = PruneConfig(method="unstructured", amount=0.5, finetune_epochs=1)
    first = _weights(_prune(config, digits_mlp, digits_mlp_data).torch_module)
    second = _weights(_prune(config, digits_mlp, digits_mlp_data).torch_module)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    with pytest.raises(Cancelled):
        _prune(config, digits_mlp, digits_mlp_data, should_stop=lambda: True)


# --------------------------------------------------------------------------------------------------------------
# Structured


def test_structured_removes_channels_and_exports_faithfully(digits_cnn, digits_cnn_data):
    """50% structured: a really smaller dense model whose ONNX export matches the pruned torch module."""
    result = _prune(PruneConfig(method="structured", amount=0.5, scope="layer", finetune_epochs=1),
                    digits_cnn, digits_cnn_data)
    module = result.torch_module
    shapes = {name: tuple(layer.weight.shape) for name, layer in prunable_layers(module)}
    assert shapes["features.0"] == (16, 1, 3, 3)
    assert shapes["features.2"] == (32, 16, 3, 3)
    assert shapes["classifier.3"] == (10, 64)  # the head keeps its 10 outputs
    params = sum(p.numel() for p in module.parameters())
    assert result.info["params_before"] == 159626 and result.info["params_after"] == params
    assert params < 0.3 * result.info["params_before"]
    assert result.info["channels_kept"]["features.5"] == {"kept": 64, "of": 128}
    x = digits_cnn_data.eval.first[:64]
    proto = export_onnx(module, torch.from_numpy(x[:1]))
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort_outputs(proto, x), expected, atol=1e-4, rtol=1e-4)


def test_global_structured_ranks_across_layers_and_keeps_multiples_of_8(digits_cnn, digits_cnn_data):
    """Global scope cuts layers unevenly, then rounds each kept count to a multiple of 8 (fast CPU kernels)."""
    result = _prune(PruneConfig(method="structured", amount=0.5, finetune_epochs=0), digits_cnn, digits_cnn_data)
    kept = {name: v for name, v in result.info["channels_kept"].items() if name != "classifier.3"}
    assert all(v["kept"] % 8 == 0 and v["kept"] < v["of"] for v in kept.values())
    assert len({v["kept"] / v["of"] for v in kept.values()}) > 1  # not the same fraction everywhere
    assert 0.4 < result.info["channels_removed_fraction"] < 0.6
    assert result.info["head_layer"] == "classifier.3" and result.info["channels_kept"]["classifier.3"]["kept"] == 10


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_structured_works_on_every_sample_architecture(scope):
    """Every bundled sample shrinks under structured pruning and keeps its output shape."""
    from sample_models import SAMPLE_MODELS

    for name, sample in SAMPLE_MODELS.items():
        if sample.extra:
            continue
        torch.manual_seed(0)
        module = sample.build(1.0).eval()
        x = np.random.default_rng(0).random((8, *sample.input_shape), dtype=np.float32)
        proto = export_onnx(module, torch.from_numpy(x[:1]))
        model = Model(f"sample:{name}", proto, module, architecture=name)
        split = Split({model.inputs[0].name: x})
        data = Dataset(None, split, split, split, synthetic=True)
        result = _prune(PruneConfig(method="structured", amount=0.5, scope=scope, finetune_epochs=0), model, data)
        assert result.info["params_after"] < 0.45 * result.info["params_before"], name
        with torch.no_grad():
            assert result.torch_module(torch.from_numpy(x)).shape == module(torch.from_numpy(x)).shape


class _ResidualNet(nn.Module):
    """BatchNorm, a residual add and a concatenation: channels that must be pruned together."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.branch1, self.branch2 = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.mix, self.head = nn.Conv2d(32, 24, 1), nn.Linear(24, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        y = y + self.branch2(torch.relu(self.branch1(y)))
        y = torch.cat([y, torch.relu(y)], 1)
        return self.head(self.mix(y).mean((2, 3)))


class _HardCodedReshape(nn.Module):
    """A reshape with a hard-coded channel count: torch-pruning cannot map channels through it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):  # x: (batch, 1, 4, 4)
        y = (self.conv(x) * self.gain).reshape(x.shape[0], 8, -1)
        return self.fc(y.flatten(1))


def _custom_model(module, size=8):
    module.eval()
    x = np.random.default_rng(0).random((32, 1, size, size), dtype=np.float32)
    y = np.arange(32) % 10
    split = Split({"input": x}, y)
    return Model("custom", export_onnx(module, torch.from_numpy(x[:1])), module), Dataset("t", split, split, split)


def test_structured_respects_batchnorm_residual_and_concat():
    """Coupled channels (residual add, concat, BN) are pruned consistently; the export still matches."""
    model, data = _custom_model(_ResidualNet())
    result = _prune(PruneConfig(method="structured", amount=0.5, finetune_epochs=0), model, data)
    net = result.torch_module
    assert net.stem.out_channels == net.bn.num_features == net.branch2.out_channels < 16
    assert net.mix.in_channels == 2 * net.stem.out_channels and net.head.out_features == 10
    x = data.eval.first
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort_outputs(export_onnx(net, torch.from_numpy(x[:1])), x), expected, atol=1e-4)


def test_structured_names_the_layer_it_cannot_handle():
    """A hard-coded reshape stops structured pruning with an error naming the layer and the op."""
    model, data = _custom_model(_HardCodedReshape(), size=4)
    with pytest.raises(UnsupportedModelError, match=r"layer 'fc' \(Linear\).*Reshape"):
        _prune(PruneConfig(method="structured", amount=0.5, finetune_epochs=0), model, data)


# --------------------------------------------------------------------------------------------------------------
# 2:4


def test_two_four_keeps_two_of_every_four_input_weights(digits_cnn, digits_cnn_data):
    """2:4: in each group of 4 consecutive input weights, at least 2 are zero; a 1-input conv is skipped."""
    result = _prune(PruneConfig(method="2:4", finetune_epochs=0), digits_cnn, digits_cnn_data)
    weights = _weights(result.torch_module)
    assert result.info["skipped_layers"] == ["features.0"]
    for name, w in weights.items():
        if name == "features.0":
            continue
        groups = np.moveaxis(w, 1, -1).reshape(-1, 4)
        assert ((groups == 0).sum(axis=1) >= 2).all(), name
    assert result.info["layer_sparsity"]["classifier.1"] == pytest.approx(0.5)
    assert 0.49 < result.info["sparsity"] < 0.5
    assert any("GPU" in n and "no speed-up" in n for n in result.notes)


# --------------------------------------------------------------------------------------------------------------
# ONNX-only models


def test_onnx_only_unstructured_zeroes_the_asked_fraction(digits_cnn, digits_cnn_data):
    """Without torch weights, the ONNX Conv/Gemm initializers are pruned in place; no fine-tuning is possible."""
    from onnx import numpy_helper

    result = _prune(PruneConfig(method="unstructured", amount=0.6, finetune_epochs=5), digits_cnn, digits_cnn_data,
                    onnx_only=True)
    weights = [numpy_helper.to_array(i) for i in result.onnx_model.graph.initializer if len(i.dims) >= 2]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.size for w in weights) == pytest.approx(0.6, abs=1e-4)
    assert result.info["sparsity"] == pytest.approx(0.6, abs=1e-4) and len(result.info["layer_sparsity"]) == 5
    assert any("not fine-tuned" in n for n in result.notes)
    logits = _ort_outputs(result.onnx_model, digits_cnn_data.eval.first)
    assert (logits.argmax(1) == digits_cnn_data.eval.y).mean() > 0.8  # 60% of small weights barely matter


@pytest.mark.parametrize("method", ["structured", "2:4"])
def test_onnx_only_structured_and_two_four_are_refused(digits_cnn, digits_cnn_data, method):
    """Structured and 2:4 pruning need torch weights; the error says what to upload."""
    with pytest.raises(UnsupportedModelError, match=r"needs a torch model \(upload the \.pt/\.safetensors"):
        _prune(PruneConfig(method=method), digits_cnn, digits_cnn_data, onnx_only=True)


@pytest.mark.parametrize("amount", [0, 0.0, 1, 1.0, -0.2, 1.5])
def test_amount_outside_the_open_unit_interval_is_rejected(amount):
    """amount must lie strictly between 0 and 1, and the message says so."""
    with pytest.raises(BadInputError, match=r"prune.amount=.*allowed: \(0.0, 1.0\)"):
        step_from_dict({"technique": "prune", "amount": amount})


# --------------------------------------------------------------------------------------------------------------
# Through the pipeline


def test_prune_finetune_quantize_compose_in_the_pipeline(tmp_path, digits_cnn, digits_cnn_data, fast_bench):
    """prune -> fine-tune -> static int8 in one variant, next to unstructured pruning, both measured."""
    recipe = Recipe(model="sample:digits-cnn", data="sample:digits", benchmark=fast_bench, variants=(
        Variant("pruned50-int8", (PruneConfig(method="structured", amount=0.5, finetune_epochs=2),
                                  QuantizeConfig(mode="static"))),
        Variant("sparse80", (PruneConfig(method="unstructured", amount=0.8, finetune_epochs=1),)),
    ))
    result = run(digits_cnn, digits_cnn_data, recipe, tmp_path)
    base, pruned, sparse = result.variants
    assert [v.status for v in result.variants] == ["ok"] * 3, [v.error for v in result.variants]
    assert pruned.size_bytes * 8 < base.size_bytes and pruned.params < 0.3 * base.params
    assert pruned.accuracy > base.accuracy - 0.03
    assert pruned.info["quantized_nodes"] and pruned.info["params_after"] < pruned.info["params_before"]
    assert sparse.info["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert sparse.compressed_bytes * 3 < base.compressed_bytes and sparse.size_bytes == pytest.approx(
        base.size_bytes, rel=0.01)
    assert sparse.accuracy > base.accuracy - 0.02
    assert any("no faster" in n for n in sparse.notes)
