"""The Optimize page: presets, the technique forms, YAML editing, and a real run with progress, cancel and
exactly-once submission."""

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


def _optimize(make_app, recipe_text: str | None = None, owner: str = OWNER):
    from core.recipe import Recipe
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

    from core.recipe import QuantizeConfig

    at = _optimize(make_app)
    recipe = at.session_state["fw_recipe"]
    assert [v.name for v in recipe.variants] == ["int8-dynamic", "int8-static", "fp16"]
    labels = {w.label for w in list(at.radio) + list(at.checkbox) + list(at.number_input) + list(at.selectbox)
              + list(at.multiselect)}
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
    from core.store import RunStore

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
    from core.jobs import JobRunner
    from core.recipe import Recipe
    from core.session import RunLauncher
    from core.store import RunStore

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

    runner = services.launcher().runner
    _wait(at, lambda a: runner.worker_pid(run_id) is not None and (runner.status(run_id).progress or {}), 90)
    pid = runner.worker_pid(run_id)
    at.button(key=f"cancel.{run_id}").click().run()
    cancelled_at = time.monotonic()
    _wait(at, lambda a: runner.status(run_id).state not in ("queued", "running"), 40)
    assert runner.status(run_id).state == "cancelled"
    assert time.monotonic() - cancelled_at < 30
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert any("cancelled" in w.value for w in at.warning)
