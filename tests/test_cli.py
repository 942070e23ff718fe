"""The featherweight command: contract files, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.spec.recipe import Recipe

ROOT = Path(__file__).resolve().parent.parent  # the code root: nothing a run does may land here

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


def _cli(*args, cwd=None, home=None):
    """Run the command as a user would (in `cwd`, this code on the path, `home` as HOME when given), returning
    (code, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if home is not None:
        env["HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)
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


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    """`--out` naming a file is refused up front with one line naming it."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--out", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out {recipe} is a file; give a directory (new or existing)"]


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


# ---- paths: everything a user names resolves against their working directory; nothing lands elsewhere

SMALL_BENCH = "benchmark: {batch_sizes: [1], warmup: 1, runs: 3, max_seconds: 1}\n"


def _tree(directory: Path) -> set:
    """Every file and folder under `directory`, as paths relative to it."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


def _root_entries() -> set:
    """The code root's top-level entries, less the sample cache the tests keep there (FEATHERWEIGHT_CACHE):
    a library that writes to its working directory writes here when a worker runs in the code root."""
    cache = Path(os.environ.get("FEATHERWEIGHT_CACHE", ROOT / ".featherweight")).resolve()
    return {p.name for p in ROOT.iterdir() if p.resolve() not in (cache, *cache.parents)}


def _write_contrib_model(folder: Path) -> None:
    """net.onnx and data.npz in `folder`: a small classifier whose first op is onnxruntime's contrib `Inverse`.

    onnx's shape inference does not know the op, so the compute profile (core.results.cost) falls back to onnxruntime's
    symbolic shape inference, which cannot infer it either and saves the model as ``sym_shape_infer_temp.onnx``
    plus a ``<uuid>.data`` file (the 2 KiB weight) into the current directory before it gives up.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
               numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
               numpy_helper.from_array(rng.standard_normal((32, 3)).astype(np.float32), "w2"),
               numpy_helper.from_array(np.zeros(3, np.float32), "b2")]
    nodes = [helper.make_node("Inverse", ["x"], ["inverse"], domain="com.microsoft", name="inverse"),
             helper.make_node("Flatten", ["inverse"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"], name="fc1"),
             helper.make_node("Relu", ["hidden"], ["relu"], name="relu"),
             helper.make_node("Gemm", ["relu", "w2", "b2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, "inverse-net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "net.onnx"))
    x = np.eye(4, dtype=np.float32) + 0.1 * rng.standard_normal((120, 4, 4)).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=rng.integers(0, 3, len(x)))


def _run_leaves_only(mydir: Path, args: list, out: str) -> tuple:
    """Run the command in `mydir` with an empty HOME beside it (the sample cache is FEATHERWEIGHT_CACHE); check
    it wrote only under mydir/`out`: nothing else in mydir, in HOME or in the code root.

    Returns:
        (exit code, stdout, stderr, the new paths under mydir).
    """
    home = mydir.parent / "home"
    home.mkdir(exist_ok=True)
    before, root_before, home_before = _tree(mydir), _root_entries(), _tree(home)
    code, stdout, stderr = _cli(*args, cwd=mydir, home=home)
    new = _tree(mydir) - before
    stray = sorted(p for p in new if p != out and not p.startswith(f"{out}/"))
    assert not stray, f"files outside {out}/: {stray}"
    assert _root_entries() == root_before, f"new in the code root: {sorted(_root_entries() - root_before)}"
    assert _tree(home) == home_before, f"new in HOME: {sorted(_tree(home) - home_before)}"
    return code, stdout, stderr, new


@pytest.mark.parametrize("absolute_recipe, out", [(False, "out/"), (True, "o")])
def test_run_resolves_the_recipe_and_out_against_the_working_directory(tmp_path, absolute_recipe, out):
    """The README's `cd mydir && featherweight run recipe.yaml --out out/` (and an absolute recipe with
    `--out o`) writes into mydir/out, and nothing anywhere else."""
    mydir = tmp_path / "mydir"
    mydir.mkdir()
    (mydir / "recipe.yaml").write_text(RECIPE)
    recipe = str(mydir / "recipe.yaml") if absolute_recipe else "recipe.yaml"
    code, stdout, stderr, new = _run_leaves_only(mydir, ["run", recipe, "--out", out], out.rstrip("/"))
    assert code == 0, stderr
    results = mydir / out / "results.json"
    data = json.loads(results.read_text())
    assert [v["status"] for v in data["variants"]] == ["ok", "ok", "ok"]
    assert all((results.parent / v["artifact"]).is_file() for v in data["variants"])
    assert str(results.resolve()) in stdout  # the summary names the file it wrote, and reads it back
    assert "per million" in stdout


def test_paths_inside_a_recipe_resolve_against_the_recipe_folder(tmp_path):
    """`model:` / `data:` in a recipe are relative to the recipe's folder, not to the working directory; and
    the shape inference behind the compute profile leaves no temporary model in any working directory."""
    mydir = tmp_path / "mydir"
    _write_contrib_model(mydir / "exp")
    (mydir / "exp" / "recipe.yaml").write_text(
        "model: net.onnx\ndata: data.npz\n" + SMALL_BENCH
        + "variants: [{name: fp16, steps: [{technique: quantize, mode: fp16}]}]\n")
    code, _, stderr, new = _run_leaves_only(mydir, ["run", "exp/recipe.yaml", "--out", "out"], "out")
    assert code == 0, stderr
    data = json.loads((mydir / "out" / "results.json").read_text())
    assert data["model"] == "net.onnx"
    assert Path(data["recipe"]["model"]).resolve() == (mydir / "exp" / "net.onnx").resolve()
    assert Path(data["recipe"]["data"]).resolve() == (mydir / "exp" / "data.npz").resolve()
    assert [v["status"] for v in data["variants"]] == ["ok", "ok"]
    assert data["variants"][0]["accuracy"] is not None  # the labels in data.npz were read
    assert data["variants"][0]["params"] == 16 * 32 + 32 + 32 * 3 + 3
    # The recipe written beside the results names the files by absolute path, so it reruns from any folder.
    rerun = Recipe.load(mydir / "out" / "recipe.yaml")
    assert (rerun.model, rerun.data) == (data["recipe"]["model"], data["recipe"]["data"])


def test_model_and_data_overrides_resolve_against_the_working_directory(tmp_path):
    """`--model` / `--data` are relative to where the command runs, and win over the recipe's."""
    mydir = tmp_path / "mydir"
    _write_contrib_model(mydir / "models")
    (mydir / "recipe.yaml").write_text("model: sample:digits-mlp\ndata: sample:digits\n" + SMALL_BENCH
                                       + "variants: []\n")
    code, _, stderr, _ = _run_leaves_only(
        mydir, ["run", "recipe.yaml", "--out", "out/", "--model", "models/net.onnx", "--data", "models/data.npz"],
        "out")
    assert code == 0, stderr
    data = json.loads((mydir / "out" / "results.json").read_text())
    assert Path(data["recipe"]["model"]).resolve() == (mydir / "models" / "net.onnx").resolve()
    assert Path(data["recipe"]["data"]).resolve() == (mydir / "models" / "data.npz").resolve()
    assert data["variants"][0]["params"] == 16 * 32 + 32 + 32 * 3 + 3


def test_inspect_sensitivity_and_tune_read_relative_paths(tmp_path):
    """`featherweight inspect MODEL`, `sensitivity` and `tune` (MODEL --data DATA --out DIR) take paths relative
    to the working directory and write only under DIR; best.yaml names the model so that it reruns anywhere."""
    mydir = tmp_path / "mydir"
    _write_contrib_model(mydir / "models")
    code, stdout, stderr, new = _run_leaves_only(mydir, ["inspect", "models/net.onnx"], "-")
    assert code == 0, stderr
    assert json.loads(stdout)["params"] == 16 * 32 + 32 + 32 * 3 + 3 and not new
    code, stdout, stderr, _ = _run_leaves_only(
        mydir, ["sensitivity", "models/net.onnx", "--data", "models/data.npz", "--mode", "fp16", "--out", "scan"],
        "scan")
    assert code == 0, stderr
    layers = json.loads((mydir / "scan" / "sensitivity.json").read_text())["layers"]
    assert {layer["name"] for layer in layers} >= {"fc1", "fc2"}
    code, stdout, stderr, _ = _run_leaves_only(
        mydir, ["tune", "models/net.onnx", "--data", "models/data.npz", "--out", "tuned", "--budget-s", "3",
                "--no-prune", "--batch-size", "8"], "tuned")
    assert code == 0, stderr
    assert (mydir / "tuned" / "results.json").is_file()
    best = Recipe.load(mydir / "tuned" / "best.yaml")
    assert Path(best.model).resolve() == (mydir / "models" / "net.onnx").resolve()


def test_missing_recipe_names_the_absolute_path_it_tried(tmp_path):
    """A recipe that is not there: exit 2, one `error:` line naming the absolute path tried."""
    mydir = tmp_path / "mydir"
    mydir.mkdir()
    code, _, stderr, new = _run_leaves_only(mydir, ["run", "nope.yaml", "--out", "out"], "out")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    tried = Path(os.path.realpath(mydir)) / "nope.yaml"
    assert str(tried) in lines[0] or str(mydir / "nope.yaml") in lines[0], lines[0]
    assert not new


def test_isolated_workers_resolve_paths_where_their_caller_runs(tmp_path, monkeypatch):
    """A worker starts in its caller's working directory, so a relative path means the same file in both, and a
    module file there (onnx.py) does not shadow the real package in the worker."""
    from core.jobs.entries import inspect_isolated

    mydir = tmp_path / "mydir"
    _write_contrib_model(mydir / "models")
    (mydir / "onnx.py").write_text("raise SystemExit('the worker imported onnx.py from its working directory')\n")
    monkeypatch.chdir(mydir)
    card = inspect_isolated("models/net.onnx")
    assert card["params"] == 16 * 32 + 32 + 32 * 3 + 3


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


def test_run_of_an_onnx_model_prints_each_split_and_warns_of_a_short_calibration(tmp_path, capsys):
    """An ONNX file that nothing trains, with 40 samples: no train split, 20 calibration samples (half, of the 128
    asked), and one warning line on stderr; results.json records the splits and the warning."""
    import numpy as np

    from core.io.model import load_model

    (tmp_path / "m.onnx").write_bytes(load_model("sample:digits-mlp").onnx_bytes())
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((40, 64)).astype(np.float32),
             y=np.arange(40) % 10)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: m.onnx\ndata: d.npz\n" + SMALL_BENCH
                      + "variants:\n  - {name: int8, steps: [{technique: quantize, mode: static}]}\n")

    assert main(["run", str(recipe), "--out", str(tmp_path / "o")]) == 0

    out, err = capsys.readouterr()
    assert "data: 20 calibration (of 128 asked) · 7 validation (1 sample = 14.29 pt) · 13 test" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "20" in warnings[0] and "128" in warnings[0]
    dataset = json.loads((tmp_path / "o" / "results.json").read_text())["dataset"]
    assert dataset["splits"]["train"]["n"] == 0 and dataset["warnings"] == [warnings[0][len("warning: "):]]
