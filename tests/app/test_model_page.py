"""The Model page: samples, uploads through file_uploader (good and bad), data, and the model card."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app_support import errors_of, sample_choice

pytestmark = pytest.mark.timeout(180)


def _onnx_bytes(name: str = "digits-mlp") -> bytes:
    from core.io.model import load_model

    return load_model(f"sample:{name}").onnx_bytes()


def _upload_mode(at):
    at.segmented_control(key="model_source").set_value("Upload").run()
    return at


def test_home_shows_gallery_and_empty_state(make_app):
    """The first render lists the samples, says no model is chosen yet, and shows no error."""
    at = make_app().run()
    assert not errors_of(at)
    labels = [b.label for b in at.button]
    assert "Use digits-cnn" in labels and "Use digits-mlp" in labels
    assert any("No model yet" in i.value for i in at.info)
    assert any("None yet" in c.value for c in at.sidebar.caption)


def test_choose_sample_shows_card_and_data(make_app):
    """Using digits-mlp shows its parameter count, size, data summary, layer table and op-type chart."""
    at = make_app().run()
    at.button(key="use_digits-mlp").click().run()
    assert not errors_of(at)
    metrics = {m.label: m.value for m in at.metric}
    card = sample_choice("digits-mlp").card
    from core.format import format_bytes, format_count

    assert metrics["Parameters"] == format_count(card["params"])
    assert metrics["File size"] == format_bytes(card["size_bytes"])
    assert any("1,077 train" in c.value for c in at.caption)  # the digits split sizes
    layers = at.dataframe[-1].value
    assert set(layers.columns) >= {"name", "type", "params", "share"}
    assert abs(layers["share"].sum() - 1.0) < 1e-6
    assert len(at.get("plotly_chart")) >= 1


def test_upload_onnx_through_file_uploader(make_app):
    """An uploaded .onnx becomes the current model (spec inputs/NAME) with its card; data falls back to synthetic."""
    at = _upload_mode(make_app().run())
    at.file_uploader(key="model_uploader").upload("my model.onnx", _onnx_bytes()).run()
    assert not errors_of(at)
    model = at.session_state["fw_model"]
    assert model.spec == "inputs/my_model.onnx" and model.card["format"] == "onnx"
    assert any("Using my model.onnx" in s.value for s in at.success)
    assert at.session_state["fw_data"].spec is None


def test_upload_torch_state_dict(make_app):
    """A .pt state dict of a bundled architecture loads as that architecture."""
    import torch

    from core.io.model import load_sample_module

    buffer = io.BytesIO()
    torch.save(load_sample_module("digits-mlp").state_dict(), buffer)
    at = _upload_mode(make_app().run())
    at.file_uploader(key="model_uploader").upload("weights.pt", buffer.getvalue()).run()
    assert not errors_of(at)
    assert at.session_state["fw_model"].card["architecture"] == "digits-mlp"


def test_bad_upload_shows_one_error_and_keeps_model(make_app):
    """A corrupt .onnx shows exactly one error naming the file, and the sample chosen before stays current."""
    at = make_app().run()
    at.button(key="use_digits-mlp").click().run()
    _upload_mode(at)
    at.file_uploader(key="model_uploader").upload("broken.onnx", b"not a model at all").run()
    assert len(at.error) == 1 and "broken.onnx" in at.error[0].value
    assert not at.exception
    assert at.session_state["fw_model"].spec == "sample:digits-mlp"
    assert at.session_state["fw_data"].spec == "sample:digits"
    at.run()  # a rerun does not re-process the upload or lose the model
    assert len(at.error) == 1 and at.session_state["fw_model"].spec == "sample:digits-mlp"


def test_data_upload_good_then_bad(make_app):
    """A fitting NPZ becomes the data; a CSV with the wrong width is refused with one error and the NPZ stays."""
    at = make_app().run()
    at.button(key="use_digits-mlp").click().run()
    at.segmented_control(key="data_source.sample:digits-mlp").set_value("Upload NPZ / CSV").run()
    rng = np.random.default_rng(0)
    npz = io.BytesIO()
    np.savez(npz, x=rng.random((60, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 10, 60))
    at.file_uploader(key="data_uploader").upload("good.npz", npz.getvalue()).run()
    assert not errors_of(at)
    assert at.session_state["fw_data"].spec == "inputs/good.npz"
    assert at.session_state["fw_data"].summary["labels"] is True

    at.file_uploader(key="data_uploader").clear().upload("bad.csv", b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n").run()
    assert len(at.error) == 1 and "bad.csv" in at.error[0].value
    assert at.session_state["fw_data"].spec == "inputs/good.npz"


def test_apply_upload_functions_keep_state_on_error():
    """The upload handlers change nothing when the file is bad, whatever the reason."""
    from core.session import DATA_KEY, MODEL_KEY, NO_DATA, apply_data_upload, apply_model_upload

    before = {MODEL_KEY: sample_choice("digits-mlp"), DATA_KEY: NO_DATA}
    state = dict(before)
    for name, data in (("model.txt", b"x"), ("empty.onnx", b""), ("pickle.pt", b"\x80\x04K\x01."),
                       ("../../etc/passwd.onnx", b"junk")):
        outcome = apply_model_upload(state, name, data)
        assert outcome.error and state == before, name
    outcome = apply_data_upload(state, "x.parquet", b"junk")
    assert "unsupported" in outcome.error and state == before
