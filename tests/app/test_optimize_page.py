"""The Optimize page: presets, the technique forms, the sweep builder, YAML editing, and a real run with progress,
cancel, exactly-once submission and the Pareto chart growing as variants finish."""

from __future__ import annotations

import time

import pytest

from app_support import OWNER, errors_of, sample_choice

pytestmark = pytest.mark.timeout(240)

FAST_RECIPE = """
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 1, runs: 5, max_seconds: 0.5}
variants:
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
"""
# Timing alone would take minutes: the run is still going when Cancel is pressed.
SLOW_RECIPE = """
benchmark: {batch_sizes: [1], threads: 1, warmup: 0, runs: 1000000, max_seconds: 120}
variants:
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
  - name: fp16
    steps: [{technique: quantize, mode: fp16}]
"""
# No variants yet, the fast benchmark: the tests add theirs with the sweep builder.
EMPTY_RECIPE = """
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 1, runs: 5, max_seconds: 0.5}
variants: []
"""


def _optimize(make_app, recipe_text: str | None = None, owner: str = OWNER):
    from core.spec.recipe import Recipe
    from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, DataChoice

    state = {MODEL_KEY: sample_choice("digits-mlp"), DATA_KEY: DataChoice("sample:digits", "sample:digits", None)}
    if recipe_text:
        state[RECIPE_KEY] = Recipe.from_text(recipe_text)
        state[RECIPE_VERSION_KEY] = 1
    at = make_app(owner=owner, **state).run()
    at.switch_page("pages/optimize.py").run()
    return at


def _apply_yaml(at):
    [b for b in at.button if b.label == "Apply YAML"][0].click().run()


def _wait(at, done, timeout: float = 150.0, step: float = 0.5):
    """Rerun the script (as the page's polling fragment would) until `done(at)` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if done(at):
            return at
        time.sleep(step)
    raise AssertionError(f"timed out; errors: {errors_of(at)}, info: {[i.value for i in at.info]}")


def _sweep(at, name: str | None = None, techniques=(), **values):
    """Fill the sweep builder: `values` maps "technique__option" to a list (multiselect) or a text (numbers)."""
    if name is not None:
        at.text_input(key="sweep_builder.name").set_value(name)
    at.multiselect(key="sweep_builder.techniques").set_value(list(techniques)).run()
    for key, value in values.items():
        key = "sweep_builder." + key.replace("__", ".")
        (at.multiselect(key=key) if isinstance(value, list) else at.text_input(key=key)).set_value(value)
    return at.run()


def _add_sweep(at):
    return at.button(key="sweep_builder.add").click().run()


def _sweep_message(at) -> str:
    """The builder's "makes N variants" line (a caption, or a warning when the sweep is large or redundant)."""
    return next(m.value for m in list(at.caption) + list(at.warning) if "This sweep makes" in m.value)


def _chart_names(at) -> list[str] | None:
    """The variant names on the run view's Pareto chart (its markers' text labels), or None without a chart."""
    import json

    charts = [c for c in at.get("plotly_chart") if "progress_pareto" in c.proto.id]
    assert len(charts) <= 1, f"{len(charts)} Pareto charts"
    if not charts:
        return None
    figure = json.loads(charts[0].proto.spec)
    return sorted(name for trace in figure["data"] if trace.get("mode") == "markers+text" for name in trace["text"])


def test_without_model_points_to_model_page(make_app):
    """With no model chosen, the page says so and offers no Run button."""
    at = make_app().run()
    at.switch_page("pages/optimize.py").run()
    assert not errors_of(at)
    assert any("Pick a model first" in i.value for i in at.info)
    assert not [b for b in at.button if b.label.startswith("Run ")]


def test_default_preset_and_every_option_rendered(make_app):
    """The default preset fills three quantize variants, each showing every QuantizeConfig option with help."""
    import dataclasses

    from core.spec.recipe import QuantizeConfig

    at = _optimize(make_app)
    recipe = at.session_state["fw_recipe"]
    assert [v.name for v in recipe.variants] == ["int8-dynamic", "int8-static", "fp16"]
    labels = {w.label for w in list(at.radio) + list(at.checkbox) + list(at.number_input) + list(at.selectbox)
              + list(at.multiselect) + list(at.text_input)}  # text: calibration_overrides, a JSON mapping
    for f in dataclasses.fields(QuantizeConfig):
        assert f.name.replace("_", " ").capitalize() in labels, f.name
    assert all(r.help for r in at.radio if r.label == "Mode")
    assert at.button(key="run_button").label == "Run 3 variants"


def test_preset_changes_recipe(make_app):
    """Choosing 'Compare everything' replaces the variants with one per available technique."""
    at = _optimize(make_app)
    at.pills(key="preset_pills").set_value("Compare everything").run()
    names = [v.name for v in at.session_state["fw_recipe"].variants]
    assert {"int8-dynamic", "int8-static", "fp16"} <= set(names)
    assert len(names) >= 4
    assert not errors_of(at)


def test_form_edit_updates_recipe_and_yaml(make_app):
    """Switching a variant's mode in its form changes the recipe and the YAML shown for download."""
    at = _optimize(make_app, FAST_RECIPE)
    at.radio(key="r1.0.0.quantize.mode").set_value("static").run()
    step = at.session_state["fw_recipe"].variants[0].steps[0]
    assert step.mode == "static"
    yaml_text = at.text_area[0].value
    assert "mode: static" in yaml_text and "model: sample:digits-mlp" in yaml_text


def test_yaml_apply_good_and_bad(make_app):
    """Valid YAML replaces the recipe; invalid YAML shows one error naming the problem and changes nothing."""
    at = _optimize(make_app, FAST_RECIPE)
    good = FAST_RECIPE.replace("int8-dynamic", "renamed").replace("mode: dynamic", "mode: fp16")
    at.text_area[0].set_value(good).run()  # the browser commits the text area before Apply is pressed
    _apply_yaml(at)
    assert [v.name for v in at.session_state["fw_recipe"].variants] == ["renamed"]
    assert any("Recipe applied" in s.value for s in at.success)

    before = at.session_state["fw_recipe"]
    at.text_area[0].set_value(good.replace("mode: fp16", "mode: int3")).run()
    _apply_yaml(at)
    assert len(at.error) == 1 and "int3" in at.error[0].value and "allowed" in at.error[0].value
    assert at.session_state["fw_recipe"] == before


def test_add_and_remove_variant(make_app):
    """Adding a prune+quantize variant orders its steps (prune first); removing a variant drops it."""
    at = _optimize(make_app, FAST_RECIPE)
    at.text_input(key="new_variant_name").set_value("pruned-int8")
    at.multiselect(key="new_variant_techniques").set_value(["quantize", "prune"])
    [b for b in at.button if b.label == "Add"][0].click().run()
    recipe = at.session_state["fw_recipe"]
    assert [v.name for v in recipe.variants] == ["int8-dynamic", "pruned-int8"]
    assert [s.technique for s in recipe.variants[1].steps] == ["prune", "quantize"]
    at.button(key=f"r{at.session_state['fw_recipe_version']}.0.remove").click().run()
    assert [v.name for v in at.session_state["fw_recipe"].variants] == ["pruned-int8"]


def test_run_flow_with_real_job_exactly_once(make_app, fw_home):
    """Run starts one worker job; reruns and a second tab do not start another; results appear; Compare opens."""
    from core.jobs.store import RunStore

    at = _optimize(make_app, FAST_RECIPE)
    at.button(key="run_button").click().run()
    assert not errors_of(at)
    run_id = at.session_state["fw_run"]
    assert at.query_params["run"] == run_id
    at.run()
    assert at.button(key="run_button").disabled  # a run of ours is active

    second_tab = _optimize(make_app, FAST_RECIPE)  # same browser (owner), same recipe
    assert second_tab.button(key="run_button").disabled
    assert second_tab.session_state["fw_run"] == run_id  # restored: the owner's latest run

    _wait(at, lambda a: any("Run completed" in s.value for s in a.success))
    assert len(RunStore(fw_home).list()) == 1
    table = at.dataframe[-1].value
    assert list(table["variant"]) == ["baseline", "int8-dynamic"]
    assert (table["status"] == "ok").all() and table["x_smaller"].iloc[1] > 1.5
    assert not at.button(key="run_button").disabled


def test_launcher_deduplicates_identical_and_refuses_second(fw_home):
    """The RunLauncher attaches an identical request to the run in progress and points a different one at it."""
    from core.jobs.queue import JobRunner
    from core.spec.recipe import Recipe
    from core.session import RunLauncher
    from core.jobs.store import RunStore

    runner = JobRunner(RunStore(fw_home))
    try:
        launcher = RunLauncher(runner)
        model = sample_choice("digits-mlp")
        recipe = Recipe.from_text(SLOW_RECIPE)
        first = launcher.launch(OWNER, recipe, model, None)
        again = launcher.launch(OWNER, recipe, model, None)
        other = launcher.launch(OWNER, recipe.replace(seed=1), model, None)
        assert not first.reused and again.reused and again.run_id == first.run_id
        assert other.reused and other.run_id == first.run_id and "already" in other.message
        assert len(runner.store.list()) == 1
        # The same request from someone else is their own run, never an attachment to another owner's run.
        theirs = launcher.launch("someone-else", recipe, model, None)
        assert not theirs.reused and theirs.run_id != first.run_id
        assert runner.store.get(theirs.run_id).owner == "someone-else"
    finally:
        runner.shutdown()


def test_cancel_really_stops_the_worker(make_app, fw_home):
    """Cancel stops a long run within seconds; the run ends 'cancelled' and its worker process is gone."""
    import os

    at = _optimize(make_app, SLOW_RECIPE)
    at.button(key="run_button").click().run()
    run_id = at.session_state["fw_run"]
    from ui import services

    runner = services.process_launcher().runner
    _wait(at, lambda a: runner.worker_pid(run_id) is not None and (runner.status(run_id).progress or {}), 90)
    pid = runner.worker_pid(run_id)
    at.button(key=f"cancel.{run_id}").click().run()
    cancelled_at = time.monotonic()
    _wait(at, lambda a: runner.status(run_id).state not in ("queued", "running"), 40)
    assert runner.status(run_id).state == "cancelled"
    assert time.monotonic() - cancelled_at < 30
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    at.run()  # the wait's last rerun may have drawn the page a moment before the state changed
    assert any("cancelled" in w.value for w in at.warning)


def test_sweep_builder_adds_the_expanded_variants(make_app):
    """Two amounts x two modes from the builder make four named, editable variants; adding again renames them."""
    at = _optimize(make_app, FAST_RECIPE)
    _sweep(at, "grid", ["quantize", "prune"], prune__amount="0.25, 0.5", quantize__mode=["static", "dynamic"])
    assert not errors_of(at)
    assert "makes **4 variants**" in _sweep_message(at)
    _add_sweep(at)
    expected = ["grid[amount=0.25,mode=dynamic]", "grid[amount=0.25,mode=static]",
                "grid[amount=0.5,mode=dynamic]", "grid[amount=0.5,mode=static]"]
    recipe = at.session_state["fw_recipe"]
    assert [v.name for v in recipe.variants] == ["int8-dynamic"] + expected
    last = recipe.variants[-1]
    assert [s.technique for s in last.steps] == ["prune", "quantize"]
    assert last.steps[0].amount == 0.5 and last.steps[1].mode == "static"
    assert any("Added 4 variants" in s.value for s in at.success)
    version = at.session_state["fw_recipe_version"]
    assert at.text_input(key=f"r{version}.4.name").value == expected[-1]  # a normal variant form
    assert "grid[amount=0.5,mode=static]" in at.text_area[0].value  # and in the YAML
    assert at.button(key="run_button").label == "Run 5 variants"

    _add_sweep(at)  # the same sweep again: names must not collide
    names = [v.name for v in at.session_state["fw_recipe"].variants]
    assert names[5:] == [f"{n}-2" for n in expected] and len(set(names)) == 9


def test_sweep_builder_refuses_bad_values_and_too_many_variants(make_app):
    """A bad number or too many variants shows one clear error, disables Add sweep and leaves the recipe alone;
    a large sweep and one with variants that build the same model are warned about."""
    at = _optimize(make_app, FAST_RECIPE)
    before = at.session_state["fw_recipe"]
    _sweep(at, None, ["prune"], prune__amount="0.5, abc")
    assert errors_of(at) == ["prune.amount: 'abc' is not a number; give numbers separated by commas, e.g. 0.5, 0.25"]
    assert at.button(key="sweep_builder.add").disabled

    at.text_input(key="sweep_builder.prune.amount").set_value("0.25, 1.5").run()
    [error] = errors_of(at)
    assert "prune.amount=1.5" in error and "allowed" in error

    at.text_input(key="sweep_builder.prune.amount").set_value("0.5").run()
    at.text_input(key="sweep_builder.prune.finetune_epochs").set_value(", ".join(map(str, range(257)))).run()
    [error] = errors_of(at)
    assert "makes 257 variants; the limit is 256" in error
    assert at.button(key="sweep_builder.add").disabled
    assert at.session_state["fw_recipe"] == before

    at.text_input(key="sweep_builder.prune.finetune_epochs").set_value(", ".join(map(str, range(25)))).run()
    assert not errors_of(at) and "takes a while" in _sweep_message(at)
    assert not at.button(key="sweep_builder.add").disabled

    _sweep(at, None, ["quantize"], quantize__mode=["dynamic", "static"], quantize__calibration=["minmax", "entropy"])
    assert "makes **4 variants**" in _sweep_message(at) and "1 of them" in _sweep_message(at)
    at.multiselect(key="sweep_builder.quantize.mode").set_value(["dynamic"]).run()
    assert at.multiselect(key="sweep_builder.quantize.calibration").disabled  # static mode only: not swept
    assert "makes **1 variant**" in _sweep_message(at)
    assert at.session_state["fw_recipe"] == before


def test_sweep_run_shows_its_variants_on_the_pareto_chart(make_app):
    """A sweep built from the forms runs, and the run view's Pareto chart shows the baseline and every variant."""
    at = _optimize(make_app, EMPTY_RECIPE)
    _add_sweep(_sweep(at, "modes", ["quantize"], quantize__mode=["dynamic", "fp16"]))
    at.button(key="run_button").click().run()
    assert not errors_of(at)
    _wait(at, lambda a: any("Run completed" in s.value for s in a.success))
    assert _chart_names(at) == ["baseline", "modes[mode=dynamic]", "modes[mode=fp16]"]
    assert list(at.dataframe[-1].value["variant"]) == ["baseline", "modes[mode=dynamic]", "modes[mode=fp16]"]


def _table_names(at) -> list[str]:
    return list(at.dataframe[-1].value["variant"]) if at.dataframe else []


def test_table_grows_while_the_run_is_in_progress(make_app):
    """Mid-run the table shows the variants built so far, with their quality (timing comes once all are built, in
    one phase); after Cancel it keeps them and marks the rest cancelled."""
    from ui import services

    at = _optimize(make_app, EMPTY_RECIPE)
    # One distillation epoch, then ten thousand: the second variant is still training when the first is listed.
    _add_sweep(_sweep(at, "students", ["distill"], distill__epochs="1, 10000"))
    at.button(key="run_button").click().run()
    run_id = at.session_state["fw_run"]
    runner = services.process_launcher().runner

    _wait(at, lambda a: "students[epochs=1]" in _table_names(a), 120)
    assert runner.status(run_id).state == "running"
    assert _table_names(at) == ["baseline", "students[epochs=1]"]
    assert at.dataframe[-1].value.set_index("variant").loc["students[epochs=1]", "accuracy"] > 0.5
    assert _chart_names(at) is None  # not timed yet: no latency to draw
    assert any("timed together in one phase" in c.value for c in at.caption)
    at.button(key=f"cancel.{run_id}").click().run()
    _wait(at, lambda a: runner.status(run_id).state == "cancelled", 40)
    at.run()  # the wait's last run may have drawn the page just before the state changed
    table = at.dataframe[-1].value.set_index("variant")
    assert table.loc["students[epochs=1]", "status"] == "ok" and table.loc["students[epochs=10000]", "status"] == \
        "cancelled"
    assert any("cancelled" in w.value for w in at.warning)


DOOMED_ON_A_DECODER = """
benchmark: {batch_sizes: [1, 256], threads: 1}
variants:
  - name: int8-static
    steps: [{technique: quantize, mode: static, exclude: [/features/Conv]}]
  - name: pruned
    steps: [{technique: prune, method: structured, amount: 0.5}]
"""


def _optimize_decoder(make_app, recipe_text: str | None = None):
    from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, DataChoice
    from core.spec.recipe import Recipe

    state = {MODEL_KEY: sample_choice("tiny-lm"),
             DATA_KEY: DataChoice("sample:tiny-lm-text", "sample:tiny-lm-text", None)}
    if recipe_text:
        state[RECIPE_KEY] = Recipe.from_text(recipe_text)
        state[RECIPE_VERSION_KEY] = 1
    at = make_app(**state).run()
    at.switch_page("pages/optimize.py").run()
    return at


def test_a_decoder_gets_runnable_presets_and_only_its_options(make_app):
    """On tiny-lm the default preset is int4 and int8 weight-only at the level chosen for this CPU; presets that
    cannot apply to a decoder are not offered, the mode radio offers only int4 / dynamic, options a decoder does
    not take are disabled, a new variant can only quantize, and Run is enabled (before: all six presets ended with
    no runnable variant and Run stayed enabled)."""
    pytest.importorskip("onnxruntime_genai")
    at = _optimize_decoder(make_app)
    assert not errors_of(at)
    recipe = at.session_state["fw_recipe"]
    assert [(v.name, v.steps[0].mode, v.steps[0].accuracy_level) for v in recipe.variants] == \
        [("int4", "int4", "auto"), ("int8", "dynamic", "auto")]
    assert recipe.benchmark.batch_sizes == (1,)
    assert at.pills(key="preset_pills").options == ["Quick quantization", "Smallest", "Compare everything"]
    version = at.session_state["fw_recipe_version"]
    assert at.radio(key=f"r{version}.0.0.quantize.mode").options == ["dynamic", "int4"]
    assert at.checkbox(key=f"r{version}.0.0.quantize.per_channel").disabled
    assert not at.radio(key=f"r{version}.0.0.quantize.accuracy_level").disabled
    assert at.multiselect(key="new_variant_techniques").options == ["Quantize"]
    assert not at.button(key="run_button").disabled and at.button(key="run_button").label == "Run 2 variants"
    at.pills(key="preset_pills").set_value("Compare everything").run()
    assert "int4-level0" in [v.name for v in at.session_state["fw_recipe"].variants] and not errors_of(at)


def test_run_is_disabled_when_no_variant_can_run_on_the_model(make_app):
    """A recipe none of whose variants a decoder takes (static int8 with another model's excluded nodes, pruning)
    shows why on each variant and leaves Run disabled."""
    pytest.importorskip("onnxruntime_genai")
    at = _optimize_decoder(make_app, DOOMED_ON_A_DECODER)
    warnings = [w.value for w in at.warning]
    assert any("quantize.mode='static' is not offered for decoders" in w for w in warnings), warnings
    assert any("pruning and distillation of decoders are not offered" in w for w in warnings), warnings
    assert at.button(key="run_button").disabled
    assert any("None of these variants can run on this model" in c.value for c in at.caption)


def test_choosing_another_model_resets_the_recipe_and_says_so(make_app):
    """A recipe made for digits-mlp (with its excluded node names) is dropped when tiny-lm is chosen on the Model
    page; the Optimize form starts from the decoder preset and says why (before: it kept the old recipe and its
    exclude list)."""
    pytest.importorskip("onnxruntime_genai")
    at = _optimize(make_app, FAST_RECIPE.replace("mode: dynamic", "mode: static, exclude: [fc1]"))
    assert at.session_state["fw_recipe"].variants[0].steps[0].exclude == ("fc1",)
    at.switch_page("pages/model.py").run()
    at.button(key="use_tiny-lm").click().run()
    at.switch_page("pages/optimize.py").run()
    assert not errors_of(at)
    assert [v.name for v in at.session_state["fw_recipe"].variants] == ["int4", "int8"]
    assert any("the one you had was made for **digits-mlp**" in i.value for i in at.info)
    at.run()
    assert not any("made for" in i.value for i in at.info)  # said once
