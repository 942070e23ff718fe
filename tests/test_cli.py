"""The featherweight command: contract files, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest

from core.cli import main

RECIPE = """
model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1, 16], warmup: 1, runs: 5, max_seconds: 1}
variants:
  - name: int8-static
    steps: [{technique: quantize, mode: static, samples: 64}]
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
"""


def _cli(*args):
    """Run the installed entry point as a user would, returning (code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_run_writes_results_and_models(tmp_path):
    """`featherweight run` writes results.json, results.csv and each variant's model."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    code, out, err = _cli("run", str(recipe), "--out", str(tmp_path / "out"))
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["baseline", "int8-static", "int8-dynamic"]
    assert all((tmp_path / "out" / v["artifact"]).exists() for v in data["variants"])
    assert (tmp_path / "out" / "results.csv").exists() and "results.json" in out


def test_run_overrides_model(tmp_path, capsys):
    """--model replaces the recipe's model."""
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"benchmark": {"batch_sizes": [1], "warmup": 0, "runs": 3},
                                  "data": "sample:digits",
                                  "variants": [{"name": "fp16", "steps": [{"technique": "quantize",
                                                                           "mode": "fp16"}]}]}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "o"), "--model", "sample:digits-cnn"]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["model"] == "sample:digits-cnn"


@pytest.mark.parametrize("recipe_text, words", [
    ("variants: [{name: a, steps: [{technique: quantize, mode: int3}]}]", "int3"),
    ("{{{", "not valid YAML"),
    ("data: sample:digits\nvariants: []", "names no model"),
    ("model: sample:digits-mlp\ndata: sample:nope\nvariants: []", "unknown sample dataset"),
    ("model: /no/such/file.onnx\nvariants: []", "cannot read"),
])
def test_bad_input_exits_2_with_one_error_line(tmp_path, capsys, recipe_text, words):
    """Bad recipes, models and data exit 2 with one `error: ...` line and no traceback."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text)
    assert main(["run", str(recipe), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_inspect_prints_the_card(capsys):
    """`featherweight inspect` prints the model card as JSON."""
    assert main(["inspect", "sample:digits-cnn"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["params"] > 100_000 and card["inputs"][0]["name"] == "input"


def test_inspect_rejects_garbage_file(tmp_path):
    """A text file named .onnx gets exit 2 and one error line, from a real process."""
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model")
    code, out, err = _cli("inspect", str(bad))
    assert code == 2 and err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_samples_lists_the_fixed_names(capsys):
    """`featherweight samples` lists the sample models and datasets by their contract names."""
    assert main(["samples", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in rows["models"]}
    assert {"sample:digits-mlp", "sample:digits-cnn"} <= names
    assert "sample:digits" in {d["name"] for d in rows["datasets"]}


def test_run_refuses_a_billion_laughs_recipe_fast_and_small(tmp_path):
    """`featherweight run bomb.yaml` exits 2 with one short `error:` line, in seconds and little memory."""
    import time

    from tests.test_recipe import billion_laughs

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs(8))
    # A fresh parent, so that its RUSAGE_CHILDREN peak is the CLI's and its worker's only.
    measure = ("import resource, subprocess, sys, json\n"
               "p = subprocess.run([sys.executable, '-m', 'core', *sys.argv[1:]], capture_output=True, text=True)\n"
               "print(json.dumps([p.returncode, p.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", measure, "run", str(bomb), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    code, err, peak_kb = json.loads(proc.stdout)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "alias" in lines[0], err[:500]
    assert len(lines[0]) < 200
    assert elapsed < 30 and peak_kb < 400 * 1024, (elapsed, peak_kb)
    assert not (tmp_path / "o" / "results.json").exists()
