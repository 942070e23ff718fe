"""Every recipe value is checked (issue 25, findings 6 and 7): dates, huge integers, binary and set values and
non-string scalars give one `error:` line naming the problem and exit 2 from the CLI, and one line on the
dashboard; variant names are capped and kept to a safe alphabet, so no error shows a server path."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main
from core.errors import BadInputError
from core.spec.recipe import MAX_VARIANT_NAME, Recipe, Variant, expand_sweep

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]

BASE = "model: sample:digits-mlp\nbenchmark: {batch_sizes: [1], runs: 3, warmup: 1}\n"
STEP = "variants: [{{name: v, steps: [{{technique: {technique}, {key}: {value}}}]}}]\n"
HUGE = "1" + "0" * 5000
BIG = "1" + "0" * 400

# (what, recipe text after BASE, a word the one line must hold)
HOSTILE = [
    ("impossible date seed", "seed: 2001-02-30\n", "date"),
    ("date seed", "seed: 2001-02-03\n", "date"),
    ("timestamp seed", "seed: 2001-02-03T04:05:06Z\n", "date"),
    ("impossible timestamp", "seed: 2001-02-30 25:61:00\n", "date"),
    ("explicit timestamp tag", "data: !!timestamp 2001-13-45\n", "date"),
    ("5,000-digit seed", f"seed: {HUGE}\n", "digits"),
    ("400-digit seed", f"seed: {BIG}\n", "digits"),
    ("negative 400-digit seed", f"seed: -{BIG}\n", "digits"),
    ("5,000 hex digits", f"seed: 0x{'f' * 5000}\n", "digits"),
    ("400-digit threads", f"benchmark: {{threads: {BIG}}}\n", "digits"),
    ("400-digit float option", STEP.format(technique="prune", key="lr", value=BIG), "digits"),
    ("400-digit amount", STEP.format(technique="prune", key="amount", value=BIG), "digits"),
    ("binary seed", "seed: !!binary aGVsbG8=\n", "binary"),
    ("set of variants", "variants: !!set {a, b}\n", "set"),
    ("ordered map", "benchmark: !!omap [{runs: 3}]\n", "omap"),
    ("date variant name", "variants: [{name: 2001-02-03, steps: []}]\n", "date"),
    ("number variant name", "variants: [{name: 12, steps: []}]\n", "variant name"),
    ("300-letter variant name", f"variants: [{{name: {'a' * 300}, steps: []}}]\n", f"{MAX_VARIANT_NAME} characters"),
    ("path in a variant name", "variants: [{name: ../../etc/passwd, steps: []}]\n", "variant name"),
    ("date in calibration overrides", STEP.format(technique="quantize", key="calibration_overrides",
                                                  value="{2001-02-03: minmax}"), "date"),
]


@pytest.mark.parametrize("what, text, word", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_recipe_value_is_one_error_line_and_exit_2(what, text, word, tmp_path, capsys):
    """`featherweight run` on the recipe: exit 2, one `error:` line on stderr naming the problem (before: an
    internal error, or a traceback)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE + text)
    code = main(["run", str(recipe), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    assert word in err[0] and "internal error" not in err[0], err[0]
    assert len(err[0]) < 400


def test_the_count_of_hostile_values():
    assert len(HOSTILE) == 20


@pytest.fixture
def make_optimize_page(tmp_path, monkeypatch):
    """An AppTest of the Optimize page with digits-mlp and a one-variant recipe (its own run store)."""
    from streamlit.testing.v1 import AppTest

    from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, DataChoice, ModelChoice, sample_card
    from ui import services

    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path / "home"))
    card = sample_card("digits-mlp")

    def make():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
        at.session_state["fw_owner"] = "browser-recipe-values"
        at.session_state[MODEL_KEY] = ModelChoice("sample:digits-mlp", "digits-mlp", card)
        at.session_state[DATA_KEY] = DataChoice("sample:digits", "sample:digits", None)
        at.session_state[RECIPE_KEY] = Recipe.from_text(BASE + "variants: [{name: v, steps: []}]\n")
        at.session_state[RECIPE_VERSION_KEY] = 1
        at.run()
        at.switch_page("pages/optimize.py").run()
        return at

    yield make
    services.shutdown_all()


@pytest.mark.parametrize("what, text, word", [HOSTILE[0], HOSTILE[6], HOSTILE[17]],
                         ids=[HOSTILE[i][0] for i in (0, 6, 17)])
def test_the_dashboard_shows_one_line_and_keeps_the_recipe(what, text, word, make_optimize_page):
    """The Optimize page's YAML editor: one error line naming the problem, no exception, the recipe unchanged."""
    at = make_optimize_page()
    before = at.session_state["fw_recipe"]
    at.text_area[0].set_value(BASE + text).run()
    [b for b in at.button if b.label == "Apply YAML"][0].click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and word in at.error[0].value and "\n" not in at.error[0].value, \
        [e.value for e in at.error]
    assert at.session_state["fw_recipe"] == before


def test_variant_names_are_capped_and_generated_names_stay_under_the_cap():
    """A name over MAX_VARIANT_NAME characters or outside the alphabet is refused in one line; the names the
    studio makes (sweeps with long axes, renamed duplicates, the tuner's) stay valid."""
    with pytest.raises(BadInputError, match=f"at most {MAX_VARIANT_NAME} characters"):
        Variant("x" * (MAX_VARIANT_NAME + 1))
    for bad in ("a/b", "a\\b", "a\nb", "a\0b", ".hidden", "naïve"):
        with pytest.raises(BadInputError, match="may use letters"):
            Variant(bad)
    Variant("grid[amount=0.25,mode=dynamic]")
    Variant("int8-static[calibration=percentile,per_channel=False]")
    long_axes = {"name": "a-sweep-with-a-long-name", "steps": [
        {"technique": "quantize", "mode": "static", "exclude": [["/features/features.0/Conv",
                                                                 "/features/features.3/Conv"], []],
         "calibration": ["minmax", "percentile", "entropy"]}]}
    names = [v.name for v in expand_sweep(long_axes)]
    assert len(set(names)) == 6 and all(len(n) <= MAX_VARIANT_NAME for n in names), names
    recipe = Recipe(variants=(Variant("y" * MAX_VARIANT_NAME),))
    added = recipe.add_variants(Variant("y" * MAX_VARIANT_NAME))
    assert len(added.variants[1].name) <= MAX_VARIANT_NAME and added.variants[1].name != added.variants[0].name


def test_the_tuners_longest_names_stay_under_the_cap():
    """Every quantize setting the tuner varies at once still makes a name within the cap."""
    from core.analysis.tuner import _quant_name
    from core.spec.recipe import QuantizeConfig

    step = QuantizeConfig(mode="static", calibration="percentile", per_channel=False, equalize=True,
                          bias_correction=True, exclude=tuple(f"n{i}" for i in range(12)),
                          calibration_overrides={"t": "entropy"})
    Variant(_quant_name(step))


def test_an_error_raised_for_a_visitor_names_no_server_path(tmp_path):
    """A worker's refusal that names a server file (here: a path that is not there) reaches a visitor's page with
    the file's name only; the same call from the command line keeps the whole path (it is the user's own)."""
    from core.format import hide_paths
    from core.io.pool import Requester, acting_for
    from core.jobs.entries import inspect_isolated

    missing = tmp_path / "srv" / "featherweight" / "runs" / "abc" / "model.onnx"
    with pytest.raises(BadInputError) as cli:
        inspect_isolated(str(missing))
    assert str(missing) in str(cli.value)
    acting_for(Requester("browser-visitor", None))
    try:
        with pytest.raises(BadInputError) as visitor:
            inspect_isolated(str(missing))
    finally:
        acting_for(None)
    assert "model.onnx" in str(visitor.value) and str(tmp_path) not in str(visitor.value), str(visitor.value)
    assert hide_paths("File name too long: /root/.featherweight/runs/x/variants/aaa/model.onnx") == \
        "File name too long: model.onnx"
    assert hide_paths("ratio 1/2, 3 km/h, https://example.org/a/b") == "ratio 1/2, 3 km/h, https://example.org/a/b"
