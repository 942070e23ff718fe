"""A newcomer's first hour (issue 16): the sidebar follows an upload at once, a reload keeps the model, data and
recipe, the forms and presets offer only what can run on the model, and pickers show fresh states."""

from __future__ import annotations

import pytest

from app_support import OWNER, errors_of

pytestmark = pytest.mark.timeout(180)


def _onnx_bytes(name: str = "digits-mlp") -> bytes:
    from core.io.model import load_model

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


def _upload_then_optimize(make_app, data: bytes, name: str = "convnet.onnx", preset: str | None = None):
    at = make_app().run()
    at.segmented_control(key="model_source").set_value("Upload").run()
    at.file_uploader(key="model_uploader").upload(name, data).run()
    assert not errors_of(at)
    at.switch_page("pages/optimize.py").run()
    if preset:
        at.pills(key="preset_pills").set_value(preset).run()
    return at


def _conv_only() -> bytes:
    from onnx_graphs import conv_only_classifier

    return conv_only_classifier()


def test_quick_preset_on_conv_only_upload_has_no_doomed_variant(make_app):
    """The default preset on a Conv-only ONNX upload leaves dynamic int8 out and says why in the caption."""
    at = _upload_then_optimize(make_app, _conv_only())
    names = [v.name for v in at.session_state["fw_recipe"].variants]
    assert names == ["int8-static", "fp16"]
    assert any("left out: int8-dynamic (no MatMul/Gemm" in c.value for c in at.caption)
    assert not any("cannot run" in e.label for e in at.expander)


def test_new_prune_variant_on_onnx_model_can_run(make_app):
    """On an ONNX-only model a new prune variant is unstructured without fine-tuning, and the fine-tuning options
    are disabled (structured pruning failed there, and epochs were accepted and silently skipped)."""
    at = _upload_then_optimize(make_app, _conv_only())
    at.multiselect(key="new_variant_techniques").set_value(["prune"]).run()
    [b for b in at.button if b.label == "Add"][0].click().run()
    variant = at.session_state["fw_recipe"].variants[-1]
    assert variant.steps[0].method == "unstructured" and variant.steps[0].finetune_epochs == 0
    version = at.session_state["fw_recipe_version"]
    index = len(at.session_state["fw_recipe"].variants) - 1
    epochs = at.number_input(key=f"r{version}.{index}.0.prune.finetune_epochs")
    assert epochs.disabled and epochs.value == 0
    assert not any("cannot run" in e.label for e in at.expander)


def test_structured_prune_on_onnx_model_is_flagged_before_run(make_app):
    """A recipe (YAML, or an old session) asking for structured pruning of an ONNX-only model shows "cannot
    run" with the reason on its variant, before Run."""
    from core.spec.recipe import PruneConfig, Recipe, Variant

    at = _upload_then_optimize(make_app, _conv_only())
    at.session_state["fw_recipe"] = Recipe(variants=(Variant("p", (PruneConfig(method="structured"),)),))
    at.session_state["fw_recipe_version"] = 7
    at.run()
    assert any("cannot run" in e.label for e in at.expander)
    assert any("structured pruning needs the torch model" in w.value for w in at.warning)


def test_expander_title_follows_the_form_in_the_same_run(make_app):
    """Changing a variant's mode shows the new mode in its title at once, not one rerun later."""
    from core.spec.recipe import QuantizeConfig, Recipe, Variant

    at = _upload_then_optimize(make_app, _conv_only())
    at.session_state["fw_recipe"] = Recipe(variants=(Variant("q", (QuantizeConfig(mode="static"),)),))
    at.session_state["fw_recipe_version"] = 3
    at.run()
    assert any("quantize static" in e.label for e in at.expander)
    at.radio(key="r3.0.0.quantize.mode").set_value("fp16").run()
    assert any("quantize fp16" in e.label for e in at.expander)


def test_sweep_too_big_for_the_server_is_refused_in_the_builder(make_app, monkeypatch):
    """With a server limit of 8 variants per run, a 10-variant sweep is refused when it is built (it used to be
    refused only after Run) and the Run button is off for a recipe over the limit."""
    monkeypatch.setenv("FEATHERWEIGHT_MAX_VARIANTS", "8")
    from core.spec.recipe import Recipe

    at = _upload_then_optimize(make_app, _conv_only())
    at.session_state["fw_recipe"] = Recipe()
    at.run()
    at.multiselect(key="sweep_builder.techniques").set_value(["prune"]).run()
    at.text_input(key="sweep_builder.prune.amount").set_value("0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95")
    at.run()
    assert any("one run on this server takes at most 8" in e for e in errors_of(at))
    assert at.button(key="sweep_builder.add").disabled


def test_slow_benchmark_is_warned_and_a_lighter_one_offered(make_app):
    """A model whose batch-256 run takes a minute gets a warning before Run, and the button applies lighter batch
    sizes to the recipe."""
    from core.spec.recipe import BenchmarkConfig, Recipe, QuantizeConfig, Variant
    from core.session import ModelChoice

    from app_support import sample_choice

    base = sample_choice("digits-cnn")
    big = ModelChoice(base.spec, "big", {**base.card, "macs": 4_100_000_000})
    recipe = Recipe(benchmark=BenchmarkConfig(batch_sizes=(1, 256)),
                    variants=(Variant("q", (QuantizeConfig(mode="static"),)),))
    at = make_app(fw_model=big, fw_recipe=recipe, fw_recipe_version=1).run()
    at.switch_page("pages/optimize.py").run()
    assert any("may take about" in w.value and "batch 256" in w.value for w in at.warning)
    [b for b in at.button if b.label.startswith("Use batch sizes")][0].click().run()
    assert max(at.session_state["fw_recipe"].benchmark.batch_sizes) < 256
    assert not any("may take about" in w.value for w in at.warning)


def _insight_job(home, kind: str = "diagnose", label: str = "scaling · 3 variants") -> str:
    import json

    from app_support import add_run, synthetic_results
    from core.jobs.store import RunStore

    results = {**synthetic_results(), "variants": []}
    run_id = add_run(home, results, label=label)
    (RunStore(home).run_dir(run_id) / "inputs" / "insight.json").write_text(json.dumps({"kind": kind, "config": {}}))
    return run_id


def test_compare_and_history_list_only_recipe_runs(make_app, fw_home):
    """A scaling or sensitivity job is not offered as a run to compare (it opened as "no measured variants"); the
    History page leaves it out and says where it is."""
    from app_support import add_run, synthetic_results

    add_run(fw_home, synthetic_results(), label="real run")
    _insight_job(fw_home)
    _insight_job(fw_home, "sensitivity", "sensitivity · digits-cnn")
    at = make_app().run()
    at.switch_page("pages/compare.py").run()
    assert not errors_of(at)
    picker = at.selectbox(key="compare_run_pick")
    assert len(picker.options) == 1 and "real run" in picker.options[0]
    assert not any("no measured variants" in w.value for w in at.warning)
    at.switch_page("pages/history.py").run()
    assert list(at.dataframe[0].value["run"]) == ["real run"]
    assert any("2 Insight jobs are not listed here" in c.value for c in at.caption)


def test_pickled_main_module_is_named_as_written(make_app):
    """Uploading a pickled `__main__.MyCNN` gives one error that shows the name as written (it rendered as a
    bold "main.MyCNN") and the one-file export command."""
    import io
    import sys

    import torch

    class MyCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

    MyCNN.__module__, MyCNN.__qualname__ = "__main__", "MyCNN"
    main = sys.modules["__main__"]
    setattr(main, "MyCNN", MyCNN)
    try:
        buffer = io.BytesIO()
        torch.save(MyCNN(), buffer)
    finally:
        delattr(main, "MyCNN")
    at = make_app().run()
    at.segmented_control(key="model_source").set_value("Upload").run()
    at.file_uploader(key="model_uploader").upload("mycnn.pt", buffer.getvalue()).run()
    [error] = errors_of(at)
    assert r"\_\_main\_\_.MyCNN" in error
    assert "external\\_data=False" in error


def test_onnx_upload_after_a_pruning_preset_holds_run_and_offers_to_drop_the_doomed_variant(make_app):
    """A sample's structured-pruning preset is dropped with its model when an ONNX file is uploaded (the form says
    so), and a recipe that still prunes (pasted, or saved) is flagged at once: Run is held, one click removes the
    variant; the card no longer says "distill: yes" and the prune form no longer says "torch model" (issue 29's
    first hour: the variant failed at run time, after a reload)."""
    from core.session import RECIPE_VERSION_KEY
    from core.spec.recipe import Recipe

    at = make_app().run()
    [b for b in at.button if b.label == "Use digits-cnn"][0].click().run()
    at.switch_page("pages/optimize.py").run()
    at.pills(key="preset_pills").set_value("Fastest on this CPU").run()
    assert "pruned50-int8" in [v.name for v in at.session_state["fw_recipe"].variants]
    at.switch_page("pages/model.py").run()
    at.segmented_control(key="model_source").set_value("Upload").run()
    at.file_uploader(key="model_uploader").upload("convnet.onnx", _conv_only()).run()
    assert not at.session_state["fw_model"].card["capabilities"]["distill"].startswith("yes")
    at.switch_page("pages/optimize.py").run()
    assert any("made for **digits-cnn**" in i.value for i in at.info)
    assert "pruned50-int8" not in [v.name for v in at.session_state["fw_recipe"].variants]
    at.session_state["fw_recipe"] = Recipe.from_dict({"variants": [
        {"name": "pruned50-int8", "steps": [{"technique": "prune", "method": "structured", "amount": 0.5},
                                            {"technique": "quantize", "mode": "static"}]},
        {"name": "int8-static", "steps": [{"technique": "quantize", "mode": "static"}]}]})
    at.session_state[RECIPE_VERSION_KEY] = at.session_state[RECIPE_VERSION_KEY] + 1  # the form's widgets start over
    at.run()
    assert any("cannot run on convnet.onnx (pruned50-int8)" in w.value for w in at.warning)
    assert at.button(key="run_button").disabled
    assert not any("torch model, then" in m.value for m in at.markdown)
    at.button(key="remove_doomed").click().run()
    assert [v.name for v in at.session_state["fw_recipe"].variants] == ["int8-static"]
    assert not at.button(key="run_button").disabled


def test_the_run_banner_counts_the_wait_the_user_saw(make_app, fw_home):
    """A run measured in 2 s that the user waited 10 s for (queue, worker start) says 10 s, and why (it said 17.1 s
    for a run the user waited 25.7 s for)."""
    import sqlite3

    from app_support import add_run, sample_choice, synthetic_results
    from core.session import MODEL_KEY, RUN_KEY

    results = {**synthetic_results(), "duration_s": 2.0}
    run_id = add_run(fw_home, results)
    with sqlite3.connect(fw_home / "index.sqlite") as db:
        db.execute("UPDATE runs SET created_at = updated_at - 10 WHERE id = ?", (run_id,))
    at = make_app(**{MODEL_KEY: sample_choice("digits-mlp"), RUN_KEY: run_id}).run()
    at.switch_page("pages/optimize.py").run()
    banner = next(s.value for s in at.success if s.value.startswith("Run completed"))
    assert "in 10.0 s (2.0 s measuring; the rest in the queue and starting the worker)" in banner, banner
