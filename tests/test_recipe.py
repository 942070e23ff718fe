"""Recipe parsing, validation and round trips."""

import json

import pytest

from core.errors import BadInputError
from core.spec.recipe import (MAX_SWEEP_VARIANTS, BenchmarkConfig, DistillConfig, PruneConfig, QuantizeConfig, Recipe,
                         Variant, default_recipe, expand_sweep, step_from_dict, sweep_variant_count)

DESIGN_EXAMPLE = """
model: sample:digits-cnn          # path or sample:NAME
data: sample:digits
seed: 0
benchmark: {batch_sizes: [1, 256], threads: 1, warmup: 20, runs: 200}
variants:
  - name: int8-static
    steps:
      - {technique: quantize, mode: static, per_channel: true, calibration: minmax, samples: 128}
  - name: pruned-int8
    steps:
      - {technique: prune, method: structured, amount: 0.5, finetune_epochs: 10}
      - {technique: quantize, mode: static}
  - name: student
    steps:
      - {technique: distill, width: 0.25, temperature: 4, alpha: 0.7, epochs: 60}
"""


def test_design_example_parses_into_typed_steps():
    """The DESIGN.md example recipe parses into the right config types and values."""
    recipe = Recipe.from_text(DESIGN_EXAMPLE)
    assert recipe.model == "sample:digits-cnn" and recipe.data == "sample:digits"
    assert recipe.benchmark.batch_sizes == (1, 256)
    assert [v.name for v in recipe.variants] == ["int8-static", "pruned-int8", "student"]
    assert recipe.variants[0].steps[0] == QuantizeConfig(mode="static", per_channel=True, calibration="minmax",
                                                         samples=128)
    assert isinstance(recipe.variants[1].steps[0], PruneConfig) and recipe.variants[1].steps[0].amount == 0.5
    assert recipe.variants[2].steps[0] == DistillConfig(width=0.25, temperature=4.0, alpha=0.7, epochs=60)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_is_exact(fmt, tmp_path):
    """Saving and loading a recipe as YAML or JSON gives back an equal recipe."""
    recipe = Recipe.from_text(DESIGN_EXAMPLE).replace(
        variants=Recipe.from_text(DESIGN_EXAMPLE).variants + (
            Variant("excl", (QuantizeConfig(mode="dynamic", exclude=("a", "b")),)),))
    path = tmp_path / f"r.{fmt}"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    if fmt == "json":
        assert json.loads(path.read_text())["variants"][3]["steps"][0]["exclude"] == ["a", "b"]


@pytest.mark.parametrize("text, words", [
    ("variants: [{name: a, steps: [{technique: quantize, mode: int2}]}]", ["int2", "dynamic", "static", "fp16"]),
    ("variants: [{name: a, steps: [{technique: quantize, colour: red}]}]", ["colour", "mode", "per_channel"]),
    ("variants: [{name: a, steps: [{technique: shrink}]}]", ["shrink", "quantize", "prune", "distill"]),
    ("variants: [{name: a, steps: [{technique: prune, amount: 1.5}]}]", ["1.5", "(0.0, 1.0)"]),
    ("variants: [{name: a, steps: [{technique: prune, amount: 0}]}]", ["amount=0"]),
    ("variants: [{name: a, steps: [{technique: prune, method: random}]}]", ["random", "structured", "2:4"]),
    ("variants: [{name: a, steps: [{technique: quantize, calibration: mse}]}]", ["mse", "entropy", "percentile"]),
    ("modle: x", ["modle", "model", "variants"]),
    ("variants: [{name: a}, {name: a}]", ["unique", "a"]),
    ("variants: [{name: a, steps: [{technique: quantize}, {technique: prune}]}]", ["prune", "before"]),
    ("benchmark: {batch_sizes: [0]}", ["batch_sizes"]),
    ("benchmark: {threads: two}", ["threads", "two"]),
    ("variants: [{name: baseline, steps: [{technique: quantize}]}]", ["baseline"]),
    ("variants: [{name: '../x', steps: []}]", ["../x"]),
    ("{{{", ["not valid YAML"]),
    ("- just a list", ["mapping"]),
])
def test_bad_recipes_name_the_problem_and_the_allowed_values(text, words):
    """Every validation error names the bad value and what is allowed."""
    with pytest.raises(BadInputError) as info:
        Recipe.from_text(text)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_step_from_dict_coerces_ints_to_floats_and_lists_to_tuples():
    """Numbers written as ints in YAML become floats where the option is a float."""
    step = step_from_dict({"technique": "distill", "temperature": 2, "alpha": 1})
    assert step.temperature == 2.0 and isinstance(step.temperature, float)
    assert step_from_dict({"technique": "quantize", "exclude": ["n1"]}).exclude == ("n1",)


def test_benchmark_batch_sizes_are_sorted_and_unique():
    """Batch sizes are normalised so results keys are stable."""
    assert BenchmarkConfig(batch_sizes=(256, 1, 1)).batch_sizes == (1, 256)


def test_default_recipe_round_trips():
    """The dashboard's default recipe survives YAML."""
    recipe = default_recipe()
    assert Recipe.from_text(recipe.to_yaml()) == recipe
    assert [v.name for v in recipe.variants] == ["int8-dynamic", "int8-static", "fp16"]


SWEEP = """
model: sample:digits-cnn
variants:
  - name: plain
    steps: [{technique: quantize, mode: fp16}]
sweep:
  name: grid
  steps:
    - {technique: prune, method: structured, amount: [0.25, 0.5, 0.75], finetune_epochs: 5}
    - {technique: quantize, mode: [dynamic, static], exclude: [conv1]}
"""


def test_sweep_expands_to_named_cartesian_product():
    """Each list-valued option is an axis; variants are named grid[key=value,...] after the explicit ones."""
    recipe = Recipe.from_text(SWEEP)
    names = [v.name for v in recipe.variants]
    assert names[0] == "plain" and len(names) == 7
    assert names[1:3] == ["grid[amount=0.25,mode=dynamic]", "grid[amount=0.25,mode=static]"]
    last = recipe.variants[-1]
    assert last.steps[0].amount == 0.75 and last.steps[0].finetune_epochs == 5
    assert last.steps[1].mode == "static" and last.steps[1].exclude == ("conv1",)
    assert Recipe.from_text(recipe.to_yaml()) == recipe


@pytest.mark.parametrize("sweep, words", [
    ("{name: g, steps: []}", "non-empty"),
    ("{name: g, steps: [{technique: quantize, mode: []}]}", "no values"),
    ("{name: g, steps: [{technique: quantize, mode: [int3]}]}", "int3"),
    ("{name: g, steps: [{technique: nope}]}", "technique"),
    ("{name: g, steps: [{technique: prune, amount: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}, "
     "{technique: quantize, samples: [1, 2, 3, 4, 5, 6, 7, 8], calibration: [minmax, entropy, percentile], per_channel: [true, false]}]}",
     "limit"),
])
def test_bad_sweeps_are_explained(sweep, words):
    """A malformed or oversized sweep is a one-line error."""
    with pytest.raises(BadInputError, match=words):
        Recipe.from_text(f"sweep: {sweep}")


def test_sweep_variant_count_matches_expansion_without_building():
    """The count is the product of the axis lengths, as expand_sweep makes them; above the limit it still counts."""
    sweep = {"name": "grid", "steps": [{"technique": "prune", "amount": [0.25, 0.5, 0.75]},
                                       {"technique": "quantize", "mode": ["dynamic", "static"], "exclude": ["fc"]}]}
    assert sweep_variant_count(sweep) == len(expand_sweep(sweep)) == 6
    assert sweep_variant_count({"name": "one", "steps": [{"technique": "quantize", "mode": "fp16"}]}) == 1
    huge = {"steps": [{"technique": "quantize", "samples": list(range(1, 101)), "mode": ["dynamic", "static", "fp16"]}]}
    assert sweep_variant_count(huge) == 300 > MAX_SWEEP_VARIANTS
    with pytest.raises(BadInputError, match="no values"):
        sweep_variant_count({"steps": [{"technique": "quantize", "mode": []}]})


@pytest.mark.parametrize("text", ["variants: [{name: v, steps: [{technique: prune, amount: .nan}]}]",
                                  "benchmark: {max_seconds: .inf}"])
def test_non_finite_numbers_are_refused(text):
    with pytest.raises(BadInputError, match="finite"):
        Recipe.from_text(text)


def billion_laughs(levels: int = 8, key: str = "seed") -> str:
    """A ~300-byte recipe whose aliases expand to 9**levels values (43 million at 8 levels) under yaml.safe_load."""
    parts = ['&a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        parts.append(f"&{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    return f"{key}: [" + ", ".join(parts) + "]\nvariants: []\n"


@pytest.mark.parametrize("key", ["seed", "model", "variants"])
def test_billion_laughs_recipe_is_refused_before_it_expands(key):
    """An alias bomb is refused at the first alias, in milliseconds and a few MiB, with one short line."""
    import time
    import tracemalloc

    text = billion_laughs(8, key)
    assert len(text) < 430
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(BadInputError) as info:
        Recipe.from_text(text)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    message = str(info.value)
    assert "alias" in message and "line 1" in message and "\n" not in message and len(message) < 200
    assert elapsed < 0.5 and peak < 5 * 2**20, (elapsed, peak)


@pytest.mark.parametrize("text, words", [
    ("seed: [" + ",".join(["1"] * 20_000) + "]", ["10,000 values"]),
    ("seed: " + "[" * 200 + "]" * 200, ["nested deeper than 32"]),
    ('{"seed": ' + "[" * 40 + "]" * 40 + "}", ["nested deeper than 32"]),
    ("model: '" + "a" * (300 * 1024) + "'", ["characters", "262,144"]),
    ("base: &b {technique: quantize}\nvariants: [{name: v, steps: [{<<: *b, mode: static}]}]", ["alias"]),
])
def test_oversized_or_deep_recipes_are_refused_with_one_short_line(text, words):
    """Size, value count and depth are bounded for YAML and JSON alike; the message says which limit."""
    with pytest.raises(BadInputError) as info:
        Recipe.from_text(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 200
    for word in words:
        assert word in message


@pytest.mark.parametrize("text, words", [
    ("seed: [" + ",".join(["123456789"] * 5000) + "]", ["seed=[123456789, 123456789", "must be an integer"]),
    ("model: [" + ",".join(["x"] * 5000) + "]", ["model=['x', 'x'", "path or sample:NAME"]),
    ("variants: [{name: '" + "v" * 5000 + "!', steps: []}]", ["variant name 'vvv", "letters, digits"]),
    ("variants: [{name: v, steps: [{technique: quantize, mode: '" + "m" * 5000 + "'}]}]",
     ["quantize.mode='mmm", "allowed: 'dynamic'"]),
    ("variants: [{name: v, steps: [{technique: [" + ",".join(["q"] * 5000) + "]}]}]",
     ["technique=['q'", "allowed: quantize"]),
    ("{" + ", ".join(f"k{i}: 1" for i in range(3000)) + ", 7: 1}", ["unknown key(s) 7, k0, k1", "and 2991 more"]),
])
def test_error_messages_echo_at_most_a_short_value(text, words):
    """A huge (or unhashable, or non-string) value is echoed as a short repr, never in full."""
    with pytest.raises(BadInputError) as info:
        Recipe.from_text(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, len(message)
    for word in words:
        assert word in message


def test_brief_repr_is_short_and_fast_for_huge_values():
    """brief_repr looks at a few items only, whatever the size of the value."""
    import time

    from core.spec.checks import ECHO_CHARS
    from core.spec.checks import brief_repr

    huge = [["x"] * 1000] * 100_000
    started = time.perf_counter()
    text = brief_repr(huge)
    assert time.perf_counter() - started < 0.05
    assert len(text) <= ECHO_CHARS and text.startswith("[['x', 'x'")
    assert brief_repr("static") == "'static'" and brief_repr(1.5) == "1.5"


def test_recipe_edits_are_recipe_methods():
    """Adding (renamed where a name is taken), removing and re-batching variants return new, valid recipes."""
    from core.spec.recipe import QuantizeConfig, Recipe, Variant

    int8 = Variant("int8", (QuantizeConfig(mode="static"),))
    recipe = Recipe().add_variants(int8, int8, Variant("int8-2", (QuantizeConfig(mode="dynamic"),)))
    assert [v.name for v in recipe.variants] == ["int8", "int8-2", "int8-2-2"]
    assert recipe.unique_name("int8") == "int8-3" and recipe.unique_name("fp16") == "fp16"
    assert [v.name for v in recipe.without_variant(1).variants] == ["int8", "int8-2-2"]
    with pytest.raises(BadInputError, match="no variant 3"):
        recipe.without_variant(3)
    assert recipe.with_batch_sizes((1, 8)).benchmark.batch_sizes == (1, 8)
    assert recipe.with_batch_sizes((1, 8)).benchmark.runs == recipe.benchmark.runs
    assert Recipe.from_text(recipe.to_yaml()) == recipe


def test_paths_with_a_home_tilde_mean_the_users_home(tmp_path, monkeypatch):
    """`model: ~/m.onnx` in a recipe (where no shell expands it) and on the command line (quoted) is the file in
    the user's home, not a folder named "~" under the recipe's folder; FEATHERWEIGHT_HOME and FEATHERWEIGHT_CACHE
    given as `~/...` or relative are made absolute once, so a worker with another working directory agrees."""
    from core.io.model import cache_dir
    from core.jobs.store import default_root
    from core.spec.recipe import Recipe, resolve_spec

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert resolve_spec("~/models/m.onnx", tmp_path / "elsewhere") == str(home / "models" / "m.onnx")
    recipe_file = tmp_path / "recipes" / "r.yaml"
    recipe_file.parent.mkdir()
    recipe_file.write_text("model: ~/m.onnx\ndata: data/d.npz\n")
    recipe = Recipe.load(recipe_file)
    assert recipe.model == str(home / "m.onnx") and recipe.data == str(tmp_path / "recipes" / "data" / "d.npz")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATHERWEIGHT_HOME", "~/fw")
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", "cache")
    assert default_root() == home / "fw"
    assert cache_dir() == tmp_path / "cache"


# ---- one config per quantization scheme in what we write (issue 28, item 6)

EVERY_QUANTIZE_KEY = {"technique": "quantize", "per_channel": True, "calibration": "minmax", "samples": 128,
                      "exclude": [], "quantize_conv": False, "block_size": 32, "accuracy_level": 0,
                      "equalize": False, "bias_correction": False, "calibration_overrides": {},
                      "weight_rounding": "nearest", "smooth_quant": False, "epochs": 3, "lr": 0.0001}


@pytest.mark.parametrize("mode, keys", [
    ("static", {"per_channel", "calibration", "samples", "exclude", "equalize", "bias_correction",
                "calibration_overrides", "weight_rounding", "smooth_quant", "target"}),
    ("dynamic", {"per_channel", "exclude", "quantize_conv", "accuracy_level"}),
    ("fp16", {"exclude"}),
    ("int4", {"block_size", "accuracy_level", "exclude"}),
    ("qat", {"per_channel", "samples", "epochs", "lr", "exclude"}),
])
def test_a_written_quantize_step_lists_only_its_modes_options(mode, keys):
    """A recipe that spells every key still loads; what it writes back holds the mode's own options only (static
    int8 carries no epochs, lr or block_size)."""
    from core.spec.recipe import SCHEMES, QuantizeConfig

    step = step_from_dict({**EVERY_QUANTIZE_KEY, "mode": mode})
    written = step.to_dict()
    assert set(written) == keys | {"technique", "mode"}
    assert type(step.scheme()) is SCHEMES[mode] and step.scheme().mode == mode
    assert step_from_dict(written) == step
    assert Recipe.from_text(Recipe(variants=(Variant("v", (step,)),)).to_yaml()).variants[0].steps[0] == step
    assert isinstance(step, QuantizeConfig)


def test_options_a_mode_does_not_use_do_not_make_two_steps_differ():
    """Two static steps that differ only in QAT's epochs build the same model, and are equal."""
    from core.spec.recipe import QuantizeConfig

    assert QuantizeConfig(mode="static", epochs=7, lr=0.5, block_size=64) == QuantizeConfig(mode="static")
    assert QuantizeConfig(mode="qat", epochs=7) != QuantizeConfig(mode="qat")
