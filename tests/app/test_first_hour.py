"""A newcomer's first hour (issue 16): the sidebar follows an upload at once, a reload keeps the model, data and
recipe, the forms and presets offer only what can run on the model, and pickers show fresh states."""

from __future__ import annotations

import pytest

from app_support import OWNER, errors_of

pytestmark = pytest.mark.timeout(180)


def _onnx_bytes(name: str = "digits-mlp") -> bytes:
    from core.models import load_model

    return load_model(f"sample:{name}").onnx_bytes()


def _sidebar_text(at) -> str:
    return " ".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])


def test_sidebar_shows_the_upload_in_the_same_run(make_app):
    """After one upload the sidebar names the uploaded model, not "None yet" (it lagged one upload behind)."""
    at = make_app().run()
    at.segmented_control(key="model_source").set_value("Upload").run()
    at.file_uploader(key="model_uploader").upload("mycnn.onnx", _onnx_bytes()).run()
    assert not errors_of(at)
    assert "mycnn.onnx" in _sidebar_text(at)
    assert "None yet" not in _sidebar_text(at)
    assert any("Using mycnn.onnx" in s.value for s in at.success)  # the outcome survives the redraw
    at.file_uploader(key="model_uploader").upload("second.onnx", _onnx_bytes("digits-cnn")).run()
    assert "second.onnx" in _sidebar_text(at) and "mycnn.onnx" not in _sidebar_text(at)


def test_reload_keeps_uploaded_model_data_and_recipe(make_app):
    """A new session of the same browser (a reload, or a server restart) gets back the uploaded model, and the
    recipe as edited, instead of "Pick a model first"."""
    first = make_app().run()
    first.segmented_control(key="model_source").set_value("Upload").run()
    first.file_uploader(key="model_uploader").upload("mycnn.onnx", _onnx_bytes()).run()
    first.switch_page("pages/optimize.py").run()
    assert not errors_of(first)
    first.pills(key="preset_pills").set_value("Compare everything").run()
    names = [v.name for v in first.session_state["fw_recipe"].variants]
    assert names

    from ui import services

    services.shutdown_all()  # the server goes away; the store on disk stays
    again = make_app()
    again.switch_page("pages/optimize.py").run()
    assert not errors_of(again)
    assert not any("Pick a model first" in i.value for i in again.info)
    model = again.session_state["fw_model"]
    assert model.spec == "inputs/mycnn.onnx" and model.content == _onnx_bytes()
    assert [v.name for v in again.session_state["fw_recipe"].variants] == names
    assert "mycnn.onnx" in _sidebar_text(again)


def test_other_browser_does_not_get_my_session(make_app):
    """The saved session belongs to its owner: another browser starts empty."""
    first = make_app().run()
    first.button(key="use_digits-mlp").click().run()
    other = make_app(owner="browser-someone-else").run()
    assert "fw_model" not in other.session_state or other.session_state["fw_model"] is None
    assert any("None yet" in c.value for c in other.sidebar.caption)
    same = make_app(owner=OWNER).run()
    assert same.session_state["fw_model"].spec == "sample:digits-mlp"
