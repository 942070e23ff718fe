"""Datasets: samples, NPZ and CSV uploads, synthetic inputs, and shape checks."""

import io

import numpy as np
import pytest

from core.data import load_data, load_data_bytes, synthetic_dataset
from core.errors import BadInputError


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_digits_sample_has_fixed_stratified_splits(digits_cnn_data):
    """sample:digits gives deterministic splits with all ten classes in each."""
    data = digits_cnn_data
    assert (len(data.train), len(data.calib), len(data.eval)) == (1077, 180, 540)
    for split in (data.train, data.calib, data.eval):
        assert set(np.unique(split.y)) == set(range(10))
        assert split.first.shape[1:] == (1, 8, 8) and split.first.dtype == np.float32
    assert 0.0 <= data.eval.first.min() and data.eval.first.max() <= 1.0


def test_npz_upload_binds_and_splits(digits_mlp):
    """An NPZ with x and y is reshaped to the model input and split 60/10/30."""
    x = np.random.default_rng(0).random((100, 64)).astype(np.float64)
    y = np.arange(100) % 10
    data = load_data_bytes(_npz(x=x, y=y), "d.npz", digits_mlp)
    assert (len(data.train), len(data.calib), len(data.eval)) == (60, 10, 30)
    assert data.eval.first.shape == (30, 1, 8, 8) and data.eval.first.dtype == np.float32
    assert data.has_labels


def test_csv_upload_with_label_column(digits_mlp):
    """A CSV's numeric columns are features and 'label' holds the classes."""
    rows = ["," .join([f"f{i}" for i in range(64)] + ["label"])]
    rows += [",".join(["0.5"] * 64 + [str(i % 10)]) for i in range(20)]
    data = load_data_bytes("\n".join(rows).encode(), "d.csv", digits_mlp)
    assert data.has_labels and len(data.eval) == 6


@pytest.mark.parametrize("content, name, words", [
    (lambda: _npz(x=np.zeros((10, 5))), "d.npz", ["(5)", "(1, 8, 8)"]),
    (lambda: _npz(x=np.zeros((10, 64)), y=np.zeros(9)), "d.npz", ["labels", "(10,)"]),
    (lambda: _npz(x=np.full((10, 64), np.nan)), "d.npz", ["NaN"]),
    (lambda: b"a,b\n1,nan\n2,3\n", "d.csv", ["NaN", "row 1"]),
    (lambda: b"a,b\n1,x\n", "d.csv", ["not numeric"]),
    (lambda: b"", "d.csv", ["empty"]),
    (lambda: b"junk", "d.npz", ["NPZ"]),
    (lambda: b"1,2", "d.txt", [".npz", ".csv"]),
])
def test_bad_data_gets_one_line_naming_the_problem(digits_mlp, content, name, words):
    """Data that does not fit names both shapes or the bad value, in one line."""
    with pytest.raises(BadInputError) as info:
        load_data_bytes(content(), name, digits_mlp)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_pickled_npz_is_refused_and_never_executed(digits_mlp, tmp_path):
    """An object array in an NPZ is refused without unpickling it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([Payload()], dtype=object))
    with pytest.raises(BadInputError, match="pickle"):
        load_data_bytes(buffer.getvalue(), "evil.npz", digits_mlp)
    assert not marker.exists()


def test_synthetic_inputs_respect_the_spec(digits_mlp):
    """No data: floats in [0, 1) shaped like the input, no labels, deterministic by seed."""
    a = synthetic_dataset(digits_mlp, seed=3)
    b = synthetic_dataset(digits_mlp, seed=3)
    assert a.synthetic and not a.has_labels
    assert a.eval.first.shape[1:] == (1, 8, 8) and 0 <= a.eval.first.min() and a.eval.first.max() < 1
    np.testing.assert_array_equal(a.eval.first, b.eval.first)
    assert load_data(None, digits_mlp).synthetic
