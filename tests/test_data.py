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


# ---- a run that trains nothing: no train split (issue 27)

def test_upload_for_a_run_that_trains_nothing_has_no_train_split(digits_mlp):
    """256 samples, 128 calibration asked: 128 calibration, 43 validation, 85 test, each sample once, no train."""
    x = np.random.default_rng(0).random((256, 64))
    data = load_data_bytes(_npz(x=x, y=np.arange(256) % 10), "d.npz", digits_mlp, train_needed=False,
                           calibration_samples=128)
    assert (len(data.train), len(data.calib), len(data.validation), len(data.eval)) == (0, 128, 43, 85)
    seen = np.concatenate([s.first.reshape(len(s), -1) for s in (data.calib, data.validation, data.eval)])
    assert len(np.unique(seen, axis=0)) == 256
    assert data.warnings() == []
    splits = data.summary()["splits"]
    assert splits["train"] == {"n": 0}
    assert splits["calibration"] == {"n": 128, "asked": 128}
    assert splits["test"] == {"n": 85, "resolution_pt": round(100 / 85, 4)}


def test_a_short_calibration_split_warns_in_one_line(digits_mlp):
    """40 samples cannot give 128 calibration inputs: half go to calibration and the warning names both counts."""
    data = load_data_bytes(_npz(x=np.random.default_rng(1).random((40, 64))), "d.npz", digits_mlp,
                           train_needed=False, calibration_samples=128)
    assert len(data.calib) == 20 and len(data.train) == 0
    (warning,) = data.warnings()
    assert "20" in warning and "128" in warning and "\n" not in warning
    assert data.summary()["warnings"] == [warning]


def test_npz_named_splits_are_used_as_given(digits_mlp):
    """calib / validation / test keys are those splits exactly; a train split nothing uses is dropped."""
    rng = np.random.default_rng(2)
    arrays = dict(calib=rng.random((30, 64)), validation=rng.random((12, 64)), y_validation=np.arange(12) % 10,
                  test=rng.random((25, 64)), y_test=np.arange(25) % 10, train=rng.random((50, 64)))
    data = load_data_bytes(_npz(**arrays), "d.npz", digits_mlp, train_needed=False, calibration_samples=128)
    assert (len(data.train), len(data.calib), len(data.validation), len(data.eval)) == (0, 30, 12, 25)
    np.testing.assert_allclose(data.calib.first.reshape(30, -1), arrays["calib"].astype(np.float32))
    np.testing.assert_array_equal(data.eval.y, np.arange(25) % 10)
    trained = load_data_bytes(_npz(**arrays), "d.npz", digits_mlp, train_needed=True)
    assert len(trained.train) == 50 and len(trained.calib) == 30


def test_npz_with_only_a_test_split_takes_calibration_from_it(digits_mlp):
    """A named test split alone: calibration (at most half) and validation (a third of the rest) come out of it."""
    data = load_data_bytes(_npz(x_test=np.random.default_rng(3).random((60, 64))), "d.npz", digits_mlp,
                           train_needed=False, calibration_samples=16)
    assert (len(data.calib), len(data.validation), len(data.eval)) == (16, 15, 29)


def test_named_splits_without_a_test_split_are_refused(digits_mlp):
    """Naming calib but no test split is one line saying what to add."""
    with pytest.raises(BadInputError, match="no test split"):
        load_data_bytes(_npz(calib=np.zeros((4, 64))), "d.npz", digits_mlp)


def test_synthetic_inputs_for_a_run_that_trains_nothing_have_no_train_split(digits_mlp):
    """Without data and without a step that trains, no train inputs are drawn."""
    assert len(synthetic_dataset(digits_mlp, train_needed=False).train) == 0


def test_a_recipe_trains_only_with_a_training_step(digits_cnn):
    """Quantize-only recipes need no train split, even on a torch model; fine-tuning, distillation and QAT do;
    the calibration asked for is the largest `samples`."""
    from core.io.graph import Model
    from core.pipeline.run import training_needed
    from core.spec.recipe import Recipe

    def recipe(*steps):
        return Recipe.from_dict({"variants": [{"name": f"v{i}", "steps": [s]} for i, s in enumerate(steps)]})

    static = {"technique": "quantize", "mode": "static", "samples": 300}
    assert not training_needed(recipe(static, {"technique": "quantize", "mode": "dynamic"}), digits_cnn)
    assert training_needed(recipe(static, {"technique": "prune", "finetune_epochs": 2}), digits_cnn)
    assert training_needed(recipe({"technique": "quantize", "mode": "qat"}), digits_cnn)
    assert not training_needed(recipe({"technique": "prune", "method": "unstructured", "finetune_epochs": 0}),
                               digits_cnn)
    onnx_only = Model(digits_cnn.source, digits_cnn.onnx_model)
    assert not training_needed(recipe({"technique": "distill"}), onnx_only)
    assert recipe(static, {"technique": "quantize", "mode": "static"}).calibration_samples() == 300
    assert recipe({"technique": "quantize", "mode": "dynamic"}).calibration_samples() == 128
