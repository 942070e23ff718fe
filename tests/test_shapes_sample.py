"""The shapes sample: deterministic generator, fixed splits, a 1M-parameter CNN and its shipped weights."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS  # noqa: E402
from sample_models.shapes import N_CLASSES, SPLITS, ShapesCNN, make_shapes  # noqa: E402


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_generator_is_deterministic_for_a_seed():
    x1, y1 = make_shapes(64, seed=7)
    x2, y2 = make_shapes(64, seed=7)
    x3, y3 = make_shapes(64, seed=8)

    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(y1, y3)


def test_generator_shapes_dtypes_and_range():
    x, y = make_shapes(50, seed=0)

    assert x.shape == (50, 1, 32, 32) and x.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.std() > 0.1  # images, not constant fields
    assert set(np.unique(y)) <= set(range(N_CLASSES))


def test_classes_are_balanced():
    _, y = make_shapes(1003, seed=3)

    counts = np.bincount(y, minlength=N_CLASSES)
    assert counts.min() >= 1003 // N_CLASSES and counts.max() <= 1003 // N_CLASSES + 1


def test_splits_are_fixed_sized_and_safe_to_mutate():
    dataset = SAMPLE_DATASETS["shapes"]

    first = dataset.load()
    first["eval"][0][:] = 0.0  # a caller scribbling on its copy
    second = dataset.load()

    assert {name: len(y) for name, (_, y) in second.items()} == {name: n for name, (n, _) in SPLITS.items()}
    assert second["eval"][0].max() > 0.0
    np.testing.assert_array_equal(second["eval"][1], make_shapes(*SPLITS["eval"])[1])
    assert not np.array_equal(second["train"][0][:10], second["eval"][0][:10])


def test_shapes_cnn_has_1m_params_and_a_quarter_width_student_is_10x_smaller():
    teacher, student = ShapesCNN(1.0), ShapesCNN(0.25)

    assert _params(teacher) >= 1_000_000
    assert _params(teacher) >= 10 * _params(student)
    assert teacher(torch.zeros(3, 1, 32, 32)).shape == (3, N_CLASSES)
    assert student(torch.zeros(3, 1, 32, 32)).shape == (3, N_CLASSES)


def test_shapes_cnn_exports_to_onnx_with_the_same_outputs():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = ShapesCNN(0.25).eval()
    x = torch.rand(4, 1, 32, 32)

    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])

    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-4)


def test_shipped_weights_reach_the_recorded_accuracy_well_below_100_percent():
    from safetensors import safe_open
    from safetensors.torch import load_file

    sample = SAMPLE_MODELS["shapes-cnn"]
    assert sample.weights_path.stat().st_size < 8 * 1024 * 1024
    with safe_open(str(sample.weights_path), "pt") as f:
        metadata = f.metadata()
    module = sample.build(1.0)
    module.load_state_dict(load_file(str(sample.weights_path)))
    module.eval()
    x, y = SAMPLE_DATASETS["shapes"].load()["eval"]

    with torch.no_grad():
        acc = float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())

    assert metadata["architecture"] == "shapes-cnn"
    assert acc == pytest.approx(float(metadata["eval_accuracy"]), abs=0.005)
    assert 0.70 < acc < 0.95
