"""Datasets: samples, NPZ and CSV uploads, synthetic inputs, and shape checks."""

import io

import numpy as np
import pytest

from core.io.data import load_data, load_data_bytes, synthetic_dataset
from core.errors import BadInputError


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_digits_sample_has_fixed_stratified_splits(digits_cnn_data):
    """sample:digits gives deterministic splits with all ten classes in each."""
    data = digits_cnn_data
    assert (len(data.train), len(data.calib), len(data.validation), len(data.eval)) == (1077, 180, 180, 360)
    for split in (data.train, data.calib, data.validation, data.eval):
        assert set(np.unique(split.y)) == set(range(10))
        assert split.first.shape[1:] == (1, 8, 8) and split.first.dtype == np.float32
    assert 0.0 <= data.eval.first.min() and data.eval.first.max() <= 1.0


def test_validation_is_a_fixed_third_of_the_held_out_samples_never_shared_with_test(digits_mlp, digits_mlp_data):
    """sample:digits' 540 held-out images become 180 validation + 360 test, disjoint, the same in every load."""
    from sample_models import SAMPLE_DATASETS

    _, y_held_out = SAMPLE_DATASETS["digits"].load()["eval"]
    x_held_out = SAMPLE_DATASETS["digits"].load()["eval"][0].reshape(540, -1)
    data = digits_mlp_data
    rows = {tuple(r) for r in x_held_out}
    val = {tuple(r) for r in data.validation.first.reshape(180, -1)}
    test = {tuple(r) for r in data.eval.first.reshape(360, -1)}
    assert val <= rows and test <= rows and not val & test
    assert sorted(np.concatenate([data.validation.y, data.eval.y])) == sorted(y_held_out)
    again = load_data("sample:digits", digits_mlp)
    np.testing.assert_array_equal(again.validation.first, data.validation.first)
    np.testing.assert_array_equal(again.eval.y, data.eval.y)
    assert data.selection is data.validation and data.selection_name == "validation"
    assert data.summary()["validation"] == 180 and data.summary()["eval"] == 360


def test_npz_upload_binds_and_splits(digits_mlp):
    """An NPZ with x and y is reshaped to the model input and split 60/10/10/20 (validation: a third held out)."""
    x = np.random.default_rng(0).random((100, 64)).astype(np.float64)
    y = np.arange(100) % 10
    data = load_data_bytes(_npz(x=x, y=y), "d.npz", digits_mlp)
    assert (len(data.train), len(data.calib), len(data.validation), len(data.eval)) == (60, 10, 10, 20)
    assert data.eval.first.shape == (20, 1, 8, 8) and data.eval.first.dtype == np.float32
    assert data.has_labels
    seen = np.concatenate([s.first.reshape(len(s), -1) for s in (data.train, data.calib, data.validation,
                                                                     data.eval)])
    assert len(np.unique(seen, axis=0)) == 100  # every sample in exactly one split


def test_npz_with_explicit_splits_uses_x_val_or_carves_it_from_x_eval(digits_mlp):
    """x_val / y_val are the validation split as given; without them a third of x_eval is."""
    rng = np.random.default_rng(1)
    arrays = dict(x_train=rng.random((40, 64)), y_train=np.arange(40) % 10, x_eval=rng.random((30, 64)),
                  y_eval=np.arange(30) % 10)
    carved = load_data_bytes(_npz(**arrays), "d.npz", digits_mlp)
    assert (len(carved.validation), len(carved.eval)) == (10, 20)
    given = load_data_bytes(_npz(**arrays, x_val=rng.random((7, 64)), y_val=np.arange(7)), "d.npz", digits_mlp)
    assert (len(given.validation), len(given.eval)) == (7, 30)
    np.testing.assert_array_equal(given.validation.y, np.arange(7))


def test_paraphrase_pairs_move_whole_into_validation_or_test():
    """A pair is never cut across validation and test; pair indices are renumbered within each part."""
    from core.io.data import Split, hold_out_validation

    x = np.arange(24, dtype=np.float32).reshape(12, 2)  # rows 2i and 2i + 1 paraphrase each other
    pairs = np.arange(12).reshape(6, 2)
    validation, test = hold_out_validation(Split({"x": x}, None, pairs))
    assert (len(validation), len(test)) == (4, 8) and len(validation.pairs) == 2 and len(test.pairs) == 4
    for part in (validation, test):
        rows = part.x["x"]
        assert all(rows[j, 0] == rows[i, 0] + 2 for i, j in part.pairs)  # still each other's paraphrase
    validation_only, test_only = hold_out_validation(Split({"x": x[:1]}))
    assert validation_only is None and len(test_only) == 1


def test_csv_upload_with_label_column(digits_mlp):
    """A CSV's numeric columns are features and 'label' holds the classes."""
    rows = ["," .join([f"f{i}" for i in range(64)] + ["label"])]
    rows += [",".join(["0.5"] * 64 + [str(i % 10)]) for i in range(20)]
    data = load_data_bytes("\n".join(rows).encode(), "d.csv", digits_mlp)
    assert data.has_labels and (len(data.validation), len(data.eval)) == (2, 4)


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
    assert len(a.validation) == 128 and not np.array_equal(a.validation.first, a.eval.first)
