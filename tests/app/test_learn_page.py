"""The Learn page (Streamlit AppTest): moving each knob changes the numbers and charts it explains."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "learn.py")
TIMEOUT_S = 120  # the first run imports torch and calibrates; later runs hit the caches


@pytest.fixture
def page(tmp_path, monkeypatch):
    """The Learn page on an empty run store of its own, opened on the Quantization explainer (it opens on the
    lesson path otherwise)."""
    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S)
    at.session_state["learn_section"] = "Quantization"
    return at


def test_the_page_opens_on_the_lesson_path_without_loading_a_model(tmp_path, monkeypatch):
    """A new visitor lands on lesson 1 (goal, explainer link, exercise, expected results, the question); no model
    is loaded and no worker starts until an explainer is opened; a glossary word opens the glossary there."""
    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key="learn_section").value == "Lessons"
    assert [s.value for s in at.subheader] == ["Lesson 1: What a number is"]
    assert at.radio(key="learn_lesson").value == "numbers"
    assert not at.selectbox and not at.get("plotly_chart")  # no model picker, no explainer chart
    assert [b.label for b in at.button][:3] == ["Open the Quantization explainer", "Run the exercise",
                                                "Check my answer"]
    at.button(key="learn_check.numbers").click().run()
    assert any("No finished run of this exercise yet" in e.value for e in at.error)
    at.pills(key="learn_terms.numbers").set_value("sqnr").run()
    assert at.segmented_control(key="learn_section").value == "Glossary"
    assert any(m.value == "#### SQNR" for m in at.markdown)


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _number(text: str) -> float:
    return float(text.split()[0].rstrip("%"))


def _chart(at, key: str) -> dict:
    return json.loads(next(e for e in at.get("plotly_chart") if e.key == key).proto.spec)


def _values(field) -> list:
    """A trace's data field as a list: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(field, dict) and "bdata" in field:
        array = np.frombuffer(base64.b64decode(field["bdata"]), dtype=np.dtype(field["dtype"]))
        shape = field.get("shape")
        if isinstance(shape, str):  # "48, 144"
            shape = [int(d) for d in shape.split(",")]
        return array.reshape(shape).tolist() if shape else array.tolist()
    return list(field)


def _open(at, section: str) -> None:
    """Run the page straight into one explainer (as if its button had been clicked)."""
    at.session_state["learn_section"] = section
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key="learn_section").value == section


def test_default_render_explains_digits_cnn_quantization(page):
    """The page opens on digits-cnn's first weight at 8 bits, with scale max|w| / 127 and every chart drawn."""
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert page.selectbox(key="learn_model").value == "sample:digits-cnn"
    assert page.selectbox(key="learn_q_tensor").value == "features.0.weight"
    assert _metric(page, "Levels") == "255" and _metric(page, "Zero point") == "0"
    for key in ("learn_grid_chart", "learn_channel_chart", "learn_bits_chart", "learn_calibration_chart"):
        assert _chart(page, key)["data"], key
    page.segmented_control(key="learn_section").set_value("Size & speed").run()
    assert [s.value for s in page.subheader][0] == "What each technique does to bytes and arithmetic"


def test_bit_width_slider_changes_the_grid_and_the_error(page):
    """Dropping from 8 to 3 bits leaves 7 levels, a coarser grid and a larger error; the 8-bit grid is drawn as
    solid ticks under the histogram (255 faint full-height lines were invisible)."""
    page.run()
    error_8 = _number(_metric(page, "Mean squared error"))
    comb = _chart(page, "learn_grid_chart")["data"][1]
    grid_8 = comb["name"]
    assert comb["opacity"] >= 0.9 and max(y for y in _values(comb["y"]) if y is not None) <= 0
    page.slider(key="learn_bits").set_value(3).run()
    assert _metric(page, "Levels") == "7"
    assert _number(_metric(page, "Mean squared error")) > 100 * error_8
    assert _chart(page, "learn_grid_chart")["data"][1]["name"] != grid_8 == "int8 grid (255 levels, one tick each)"
    page.toggle(key="learn_symmetric").set_value(False).run()
    assert _metric(page, "Levels") == "8" and _metric(page, "Zero point") != "0"


def test_per_channel_scales_show_less_error_than_per_tensor(page):
    """The per-channel MSE shown is below the per-tensor one, for the tensor picked."""
    page.run()
    page.selectbox(key="learn_q_tensor").set_value("classifier.1.weight").run()
    per_tensor = _number(_metric(page, "Error with one scale per tensor (MSE)"))
    per_channel = _number(_metric(page, "Error with one scale per channel (MSE)"))
    assert per_channel < per_tensor


def test_onnxruntime_check_confirms_the_explainer(page):
    """The check button quantizes with onnxruntime and reports identical int8 codes."""
    page.run()
    page.button(key="learn_check_ort").click().run()
    assert any("Identical" in s.value for s in page.success)


def test_percentile_knob_moves_the_calibration_range(page):
    """A lower percentile clips more: its calibrated upper bound drops and more values are clipped."""
    page.run()
    table = page.dataframe[0].value.set_index("method")
    page.select_slider(key="learn_percentile").set_value(99.0).run()
    moved = page.dataframe[0].value.set_index("method")
    assert moved.loc["percentile", "high"] < table.loc["percentile", "high"]
    assert moved.loc["percentile", "clipped_pct"] > table.loc["percentile", "clipped_pct"]
    assert moved.loc["minmax", "high"] == table.loc["minmax", "high"]


def test_sparsity_slider_changes_the_masks(page):
    """Moving sparsity to 80% zeroes 80% for unstructured and channel masks; 2:4 stays at 50%."""
    _open(page, "Pruning")
    before = _chart(page, "learn_mask_chart")
    page.slider(key="learn_sparsity").set_value(80).run()
    assert _metric(page, "unstructured: weights zeroed") == "80%"
    assert _metric(page, "channel: weights zeroed") == "80%"
    assert _metric(page, "2:4: weights zeroed") == "50%"
    zeroed = np.isnan(np.array(_values(_chart(page, "learn_mask_chart")["data"][0]["z"]), dtype=float)).mean()
    assert zeroed > np.isnan(np.array(_values(before["data"][0]["z"]), dtype=float)).mean()


def test_sweep_button_draws_the_accuracy_curve(page):
    """Running the sweep (no fine-tuning, for speed) draws accuracy against sparsity, kept across reruns."""
    _open(page, "Pruning")
    page.radio(key="learn_sweep_epochs").set_value(0).run()
    assert not [e for e in page.get("plotly_chart") if e.key == "learn_sweep_chart"]
    page.button(key="learn_sweep_run").click().run()
    curve = _chart(page, "learn_sweep_chart")["data"]
    accuracy = _values(curve[0]["y"])
    assert len(curve) == 1 and len(accuracy) == 7 and accuracy[0] > 90 > accuracy[-1]
    page.slider(key="learn_sparsity").set_value(30).run()
    assert _values(_chart(page, "learn_sweep_chart")["data"][0]["y"]) == accuracy


def test_temperature_slider_changes_entropy(page):
    """Raising T from 1 to 8 raises the entropy of the teacher's soft targets; the label stays at 0 bits."""
    _open(page, "Distillation")
    page.slider(key="learn_temperature").set_value(1.0).run()
    cold = _number(_metric(page, "Entropy of the soft targets"))
    page.slider(key="learn_temperature").set_value(8.0).run()
    warm = _number(_metric(page, "Entropy of the soft targets"))
    assert warm > cold and _metric(page, "Entropy of the label") == "0 bits"
    assert _chart(page, "learn_soft_chart")["data"][1]["name"] == "teacher at T = 8"


def test_live_distillation_trains_two_students_and_keeps_the_curves(page):
    """Training draws both students' curves and reports the taught student against the one trained alone."""
    _open(page, "Distillation")
    page.slider(key="learn_distill_epochs").set_value(3).run()
    page.select_slider(key="learn_distill_examples").set_value(100).run()
    page.button(key="learn_distill_train").click().run()
    assert not page.exception, [e.value for e in page.exception]
    result = page.session_state["learn_distill_result"]
    assert len(result["points"]) == 8 and result["settings"]["epochs"] == 3
    assert "vs labels only" in next(m.delta for m in page.metric if m.label.endswith("eval accuracy"))
    page.slider(key="learn_temperature").set_value(2.0).run()  # a rerun keeps the trained curves
    names = {trace["name"] for trace in _chart(page, "learn_distill_chart")["data"]}
    assert names == {"with teacher", "labels only"}
    assert any("train again" in c.value for c in page.caption)


def test_size_section_estimates_and_asks_for_a_run(page):
    """Without runs the page says to run a recipe; the what-if estimate shrinks with static int8."""
    _open(page, "Size & speed")
    assert any("run a recipe to compare" in i.value for i in page.info)
    page.selectbox(key="learn_whatif_quantize").set_value("none").run()
    full = _metric(page, "Estimated size")
    page.selectbox(key="learn_whatif_quantize").set_value("static").run()
    assert _metric(page, "Estimated size") != full
    table = page.dataframe[0].value.set_index("technique")
    assert table.loc["int8 static", "x_smaller"] > 3


def test_size_section_compares_estimate_with_a_measured_run(page, tmp_path):
    """With a finished run in the store, each variant's estimate stands beside its measured size."""
    from core.jobs.store import RunStore

    store = RunStore(tmp_path / "home")
    record = store.create("tester", "model: sample:digits-cnn\n", label="workshop run", model="sample:digits-cnn")
    results = {"model": "sample:digits-cnn", "variants": [
        {"name": "baseline", "status": "ok", "steps": [], "size_bytes": 641024},
        {"name": "int8-static", "status": "ok", "steps": [{"technique": "quantize", "mode": "static"}],
         "size_bytes": 176628}]}
    (store.run_dir(record.id) / "results.json").write_text(json.dumps(results))
    store.set_status(record.id, "completed")
    page.session_state["fw_owner"] = "tester"  # the browser that made the run: the picker lists only its runs
    _open(page, "Size & speed")
    assert page.selectbox(key="learn_run").value == record.id
    compare = page.dataframe[1].value.set_index("variant")
    assert list(compare.index) == ["baseline", "int8-static"]
    assert compare["error_pct"].abs().max() < 5
    assert {t["name"] for t in _chart(page, "learn_compare_chart")["data"]} == {"estimated before the run",
                                                                              "measured after the run"}


def test_model_spec_from_session_state_is_the_default(page):
    """A 'fw_model_spec' set by another page picks the model; its weights fill the tensor list."""
    page.session_state["fw_model_spec"] = "sample:digits-mlp"
    page.run()
    assert page.selectbox(key="learn_model").value == "sample:digits-mlp"
    assert page.selectbox(key="learn_q_tensor").value == "net.1.weight"
    assert [o.split(" ")[0] for o in page.selectbox(key="learn_q_tensor").options] == [
        "net.1.weight", "net.3.weight", "net.5.weight"]


def test_uploaded_current_model_is_explained_with_synthetic_inputs(page, digits_mlp):
    """The Model page's uploaded ONNX (no data) is preselected; explainers that need labels say so."""
    from core.session import MODEL_KEY, ModelChoice

    content = digits_mlp.onnx_bytes()
    page.session_state[MODEL_KEY] = ModelChoice("inputs/mlp.onnx", "mlp.onnx", {}, filename="mlp.onnx",
                                                content=content, digest="feed")
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert page.selectbox(key="learn_model").value == "upload:feed:synthetic"
    assert _metric(page, "Levels") == "255"
    assert any("synthetic inputs" in c.value for c in page.caption)
    page.segmented_control(key="learn_section").set_value("Pruning").run()
    assert any("needs labelled data" in i.value for i in page.info)
    page.segmented_control(key="learn_section").set_value("Distillation").run()
    assert _number(_metric(page, "Entropy of the soft targets")) >= 0
    assert any("needs labelled data" in i.value for i in page.info)


def test_session_sample_model_is_preselected_and_labelled_current(page):
    """The Model page's sample (with its own data) opens first, labelled as the current model."""
    from core.session import DATA_KEY, MODEL_KEY, DataChoice, ModelChoice

    page.session_state[MODEL_KEY] = ModelChoice("sample:digits-mlp", "digits-mlp", {})
    page.session_state[DATA_KEY] = DataChoice("sample:digits", "sample:digits")
    page.run()
    model = page.selectbox(key="learn_model")
    assert model.value == "sample:digits-mlp"
    assert model.options[0] == "digits-mlp (current model)" and "digits-cnn" in model.options
