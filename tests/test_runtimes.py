"""The runtime bake-off's parts (issue 30): the recipe options, a runner per runtime, the cross-runtime fidelity check
(which must fail loudly on a broken runtime), NNCF's int8 for OpenVINO, the edge export, telemetry kept off, and the
"why not faster" rules per runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from step_support import apply_to_copy

from core.errors import BadInputError, StepFailedError
from core.io.runtimes import RUNTIMES, missing_reason, open_runner, run_all
from core.measure.runtime_fidelity import SAME_RELATIVE_ERROR, check_runtime_outputs, compare_outputs
from core.results.explain import why_not_faster_on
from core.spec.recipe import RUNTIME_NAMES, BenchmarkConfig, QuantizeConfig, Recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recipe_runtimes_and_target_round_trip_and_bad_values_name_the_allowed_ones():
    """benchmark.runtimes and quantize.target read back exactly; a bad value names the allowed ones."""
    recipe = Recipe.from_text("benchmark: {runtimes: [onnxruntime, openvino, executorch]}\n"
                              "variants: [{name: ov, steps: [{technique: quantize, target: openvino}]}]")
    assert recipe.benchmark.runtimes == ("onnxruntime", "openvino", "executorch")
    assert Recipe.from_text(recipe.to_yaml()) == recipe
    assert BenchmarkConfig().runtimes == ("onnxruntime",) and tuple(RUNTIMES) == RUNTIME_NAMES
    with pytest.raises(BadInputError, match="allowed: 'onnxruntime', 'openvino', 'executorch'"):
        BenchmarkConfig(runtimes=("onnxruntime", "tflite"))
    with pytest.raises(BadInputError, match="must include 'onnxruntime'"):
        BenchmarkConfig(runtimes=("openvino",))
    with pytest.raises(BadInputError, match="quantize.target='tensorrt' is not supported; allowed: 'onnxruntime', "
                                            "'openvino'"):
        QuantizeConfig(target="tensorrt")
    with pytest.raises(BadInputError, match="needs mode 'static'"):
        QuantizeConfig(mode="dynamic", target="openvino")
    with pytest.raises(BadInputError, match="does not take calibration"):
        QuantizeConfig(target="openvino", calibration="entropy")


def test_fidelity_rules_on_plain_arrays():
    """Same outputs pass; int8 near-ties pass on clear-sample agreement; NaN, a wrong shape and embeddings that
    point elsewhere fail."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 10)).astype(np.float32) * 4
    assert compare_outputs([logits + 1e-6], [logits], "classification", runtime="x").rule.startswith("same outputs")
    noisy = logits + rng.normal(scale=0.05, size=logits.shape).astype(np.float32)  # rounding-sized noise
    check = compare_outputs([noisy], [logits], "classification", runtime="x")
    assert check.passed and check.relative_error > SAME_RELATIVE_ERROR and "top-1 agreement" in check.rule
    assert not compare_outputs([np.full_like(logits, np.nan)], [logits], "classification", runtime="x").passed
    assert not compare_outputs([logits[:, :5]], [logits], "classification", runtime="x").passed
    emb = rng.normal(size=(50, 16)).astype(np.float32)
    assert compare_outputs([emb * 1.0001], [emb], "embedding", runtime="x").passed
    assert not compare_outputs([rng.normal(size=emb.shape).astype(np.float32)], [emb], "embedding",
                               runtime="x").passed


def test_openvino_matches_onnxruntime_and_a_broken_runtime_output_fails_loudly(digits_cnn, digits_cnn_data):
    """OpenVINO's CPU plugin computes digits-cnn as onnxruntime does (same threads, fp32); the same runner fed its
    images transposed (a layout bug) disagrees, and the check raises naming the runtime and the variant."""
    pytest.importorskip("openvino")
    model_bytes = digits_cnn.onnx_bytes()
    inputs = digits_cnn_data.eval.x
    reference = run_all(open_runner("onnxruntime", model_bytes), inputs)
    runner = open_runner("openvino", model_bytes, 1, batch=32)
    assert runner.settings()["inference_num_threads"] == "1"
    outputs = run_all(runner, inputs)
    assert check_runtime_outputs(outputs, reference, "classification", runtime="openvino",
                                 variant="baseline").rule.startswith("same outputs")
    broken = {name: np.ascontiguousarray(np.swapaxes(x, -1, -2)) for name, x in inputs.items()}
    with pytest.raises(StepFailedError, match=r"openvino does not compute the same 'baseline' as onnxruntime: "
                                              r"top-1 agreement .* \(at least 97% needed\)"):
        check_runtime_outputs(run_all(runner, broken), reference, "classification", runtime="openvino",
                              variant="baseline")


def test_nncf_int8_for_openvino_runs_int8_on_openvino(tmp_path, digits_cnn, digits_cnn_data):
    """quantize target openvino: NNCF's QDQ graph, 4x smaller, every heavy layer int8 on OpenVINO, accuracy kept;
    no telemetry file appears in the (temporary) home."""
    pytest.importorskip("nncf")
    config = QuantizeConfig(mode="static", target="openvino", samples=64)
    candidate, _ = apply_to_copy(config, digits_cnn, digits_cnn_data)
    assert candidate.info["quantizer"].startswith("NNCF") and candidate.info["quantized_nodes"]
    model_bytes = candidate.onnx_model.SerializeToString()
    assert len(model_bytes) * 3 < len(digits_cnn.onnx_bytes())
    runner = open_runner("openvino", model_bytes, 1, batch=32)
    kernels = runner.kernel_precisions()
    assert kernels["int8"] >= 3 and kernels["float"] == 0, kernels
    outputs = run_all(runner, digits_cnn_data.eval.x)[0]
    accuracy = float((outputs.argmax(1) == digits_cnn_data.eval.y).mean())
    assert accuracy >= 0.97


def test_openvino_and_nncf_send_nothing_and_write_nothing_home(tmp_path):
    """Through core.io.openvino_runtime.import_offline, importing OpenVINO and NNCF and compiling a model opens no
    socket, starts no sender thread and writes nothing under the home folder (a bare `import openvino` writes
    ~/intel and starts one)."""
    pytest.importorskip("nncf")
    script = """
import json, os, socket, threading
attempts = []
def refuse(*args, **kwargs):
    attempts.append(str(args[1:2]))
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.getaddrinfo = refuse
from core.io.openvino_runtime import import_offline
import_offline("openvino"); import_offline("nncf")
import torch
from core.io.model import export_onnx
from core.io.runtimes import open_runner
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
runner = open_runner("openvino", export_onnx(net, torch.zeros(1, 1, 8, 8)).SerializeToString(), 1, batch=1)
runner.run({runner.input_names[0]: __import__("numpy").zeros((1, 1, 8, 8), "float32")})
print(json.dumps({"attempts": attempts, "threads": [t.name for t in threading.enumerate()],
                  "ci": os.environ.get("CI")}))
"""
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": ROOT}
    env.pop("CI", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [] and report["ci"] is None
    assert not any("ThreadPoolExecutor" in name for name in report["threads"]), report["threads"]
    assert not (tmp_path / "intel").exists()


@pytest.mark.slow
def test_edge_export_of_digits_cnn_fp32_and_int8(tmp_path, digits_cnn, digits_cnn_data):
    """ExecuTorch with XNNPACK: the fp32 program computes what the torch module does, the PT2E int8 one agrees
    with its quantized module on clear samples and is >= 3x smaller; both report the delegated share."""
    pytest.importorskip("executorch")
    from core.pipeline.runtimes import prepare_runtimes

    inputs = digits_cnn_data.eval.x
    reference = run_all(open_runner("onnxruntime", digits_cnn.onnx_bytes()), inputs)
    entries = {}
    for name, steps in (("fp32", []), ("int8", [{"technique": "quantize", "mode": "static", "samples": 64}])):
        prepared = prepare_runtimes(name, name, digits_cnn.onnx_bytes(), digits_cnn.torch_module, steps,
                                    digits_cnn_data, "classification", ("onnxruntime", "executorch"), threads=1,
                                    max_batch=32, reference_outputs=reference, baseline_outputs=reference,
                                    out_dir=tmp_path)["executorch"]
        assert prepared.ready, prepared.entry
        entries[name] = prepared.entry
        assert (tmp_path / prepared.entry["artifact"]).read_bytes() == prepared.artifact
    fp32, int8 = entries["fp32"], entries["int8"]
    assert fp32["fidelity"]["rule"].startswith("same outputs") and fp32["agreement"] == 1.0
    assert int8["export"]["precision"] == "int8" and int8["fidelity"]["passed"]
    assert int8["size_bytes"] * 3 < fp32["size_bytes"]
    assert 0.8 <= int8["export"]["delegated_share"] <= 1.0 and int8["accuracy"] >= 0.97


def test_edge_plan_says_why_a_variant_has_no_program():
    """Dynamic int8, ONNX-only models and ONNX-quantizer options have no ExecuTorch counterpart, in one line."""
    from core.techniques.edge import edge_plan

    assert edge_plan([], True) == ("fp32", None)
    assert edge_plan([{"technique": "quantize", "mode": "static"}], True) == ("int8", None)
    assert "no torch module" in edge_plan([], False)[1]
    assert "dynamic" in edge_plan([{"technique": "quantize", "mode": "dynamic"}], True)[1]
    assert "equalize" in edge_plan([{"technique": "quantize", "mode": "static", "equalize": True}], True)[1]


def test_why_not_faster_on_a_runtime_names_unfused_layers_and_partial_delegation():
    """An int8 graph OpenVINO ran partly in float says how many layers and whose layout it is; an edge program
    whose delegate took 60% of the operators says so; a runtime with nothing to explain says nothing."""
    results = {"environment": {"cpu_flags": ["avx2", "avx512_vnni"]},
               "recipe": {"benchmark": {"batch_sizes": [1]}},
               "variants": [
                   {"name": "baseline", "status": "ok", "steps": [], "latency_ms": {"1": {"p50": 1.0}},
                    "runtimes": {"executorch": {"status": "ok", "speedup": {}, "export": {
                        "delegated_share": 0.6, "undelegated_ops": {"aten.upsample_bilinear2d": 2}}}}},
                   {"name": "int8", "status": "ok", "latency_ms": {"1": {"p50": 1.0}},
                    "steps": [{"technique": "quantize", "mode": "static", "target": "onnxruntime"}],
                    "runtimes": {"openvino": {"status": "ok", "speedup": {"1": {"ratio": 1.02}},
                                              "kernels": {"int8": 5, "float": 20}},
                                 "executorch": {"status": "failed", "error": "x"}}}]}
    notes = why_not_faster_on(results, "int8", "openvino", 1)
    assert any("20 of 25 convolution / matmul layers" in n and "onnxruntime's quantizer" in n for n in notes)
    assert any("covered 60% of the operators" in n and "aten.upsample_bilinear2d ×2" in n
               for n in why_not_faster_on(results, "baseline", "executorch", 1))
    assert why_not_faster_on(results, "int8", "executorch", 1) == []


def test_a_missing_runtime_says_which_extra_installs_it(monkeypatch):
    """A runtime whose package is absent is named with the extra that installs it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert missing_reason("openvino") == ("OpenVINO is not installed (pip install 'featherweight[openvino]', or "
                                          "`make setup`)")
    assert missing_reason("onnxruntime") is None


def _bakeoff() -> dict:
    """A finished two-runtime run with round numbers: int8 is fastest on OpenVINO, fp32 ties on both."""
    def timed(p50, ratio, low, high, cross=None):
        out = {"status": "ok", "latency_ms": {"1": {"p50": p50}}, "speedup": {"1": {"ratio": ratio, "low": low,
                                                                                 "high": high}}}
        if cross:
            out["vs_onnxruntime"] = {"1": dict(zip(("ratio", "low", "high"), cross))}
        return out

    q = {"technique": "quantize", "mode": "static"}
    base_ov = {**timed(1.0, 1.0, 1.0, 1.0, (1.0, 0.96, 1.04)), "accuracy": 0.9, "agreement": 1.0}
    int8_ov = {**timed(0.4, 2.5, 2.4, 2.6, (2.5, 2.4, 2.6)), "accuracy": 0.898, "agreement": 0.99}
    return {"environment": {"cpu_flags": ["avx2"]}, "task": "classification",
            "recipe": {"benchmark": {"batch_sizes": [1], "runtimes": ["onnxruntime", "openvino"]}},
            "variants": [
                {"name": "baseline", "status": "ok", "steps": [], "size_bytes": 400, "params": 100, "accuracy": 0.9,
                 "agreement": 1.0, "latency_ms": {"1": {"p50": 1.0}},
                 "runtimes": {"onnxruntime": timed(1.0, 1.0, 1.0, 1.0), "openvino": base_ov}},
                {"name": "int8", "status": "ok", "steps": [q], "size_bytes": 100, "params": 100, "accuracy": 0.9,
                 "agreement": 0.99, "latency_ms": {"1": {"p50": 0.5}},
                 "runtimes": {"onnxruntime": timed(0.5, 2.0, 1.9, 2.1), "openvino": int8_ov}},
                {"name": "dyn", "status": "ok", "steps": [{**q, "mode": "dynamic"}], "size_bytes": 300, "params": 100,
                 "accuracy": 0.9, "agreement": 1.0, "latency_ms": {"1": {"p50": 1.0}},
                 "runtimes": {"onnxruntime": timed(1.0, 1.0, 0.95, 1.05),
                              "openvino": {"status": "failed", "error": "OpenVINO's CPU plugin cannot compile"}}}]}


def test_bakeoff_points_best_and_which_runtime_to_ship():
    """Every variant x runtime is a point; the best within a 1 pt budget names its runtime; the ship table says
    int8 goes on OpenVINO (measurably faster), fp32 ties, a variant one runtime failed on ships on the other."""
    from core.results.compare import Budget, best_variant
    from core.results.runtimes import runtime_frame, ship_table
    from core.views.charts import pareto_figure

    frame = runtime_frame(_bakeoff())
    assert set(frame["name"]) == {"baseline · onnxruntime", "int8 · onnxruntime", "dyn · onnxruntime",
                                  "baseline · OpenVINO", "int8 · OpenVINO", "dyn · OpenVINO"}
    failed = frame[frame["name"] == "dyn · OpenVINO"].iloc[0]
    assert failed["status"] == "failed" and "cannot compile" in failed["error"]
    assert best_variant(frame, Budget(max_drop_pt=1.0), 1, "fastest") == "int8 · OpenVINO"
    ship = ship_table(_bakeoff(), 1).set_index("variant")
    assert ship.loc["int8", "ship_on"] == "OpenVINO" and ship.loc["int8", "margin"] == "measurably faster than " \
                                                                                     "onnxruntime"
    assert ship.loc["baseline", "margin"].startswith("no measurable difference")
    assert ship.loc["dyn", "ship_on"] == "onnxruntime" and ship.loc["dyn", "margin"] == "the only runtime that ran it"
    fig = pareto_figure(frame, 1, color_by="accuracy")
    legend = {t.name: t.marker.symbol for t in fig.data if t.hoverinfo == "skip" and t.mode == "markers"}
    assert legend == {"onnxruntime": "circle", "OpenVINO": "square"}


def test_report_and_terminal_summary_say_which_runtime_to_ship():
    """The HTML report of a bake-off has the ship table and its best point with the runtime; the terminal summary
    names the runtime per variant and the runtime that failed, with why."""
    from core.results.runtimes import ship_lines
    from core.views.report import build_report

    results = _bakeoff()
    html = build_report(results, batch_size=1)
    assert "Which runtime to ship" in html and "<b>int8 · OpenVINO</b>" in html
    lines = ship_lines(results)
    assert any(line.startswith("  int8: ship on OpenVINO, 2.50x (2.40–2.60)") for line in lines), lines
    assert any("dyn · OpenVINO: failed: OpenVINO's CPU plugin cannot compile" in line for line in lines)
    assert ship_lines({**results, "recipe": {"benchmark": {"runtimes": ["onnxruntime"]}},
                       "variants": [{k: v for k, v in var.items() if k != "runtimes"}
                                    for var in results["variants"]]}) == []


def test_a_near_uniform_classifier_is_judged_by_its_logits():
    """1,000 classes and no clear sample (top probability ~0.1): rounding-sized noise passes on the centred logits'
    cosine; the logits of another model with the same offset fail."""
    rng = np.random.default_rng(1)
    logits = (5.0 + rng.normal(scale=2.0, size=(100, 1000))).astype(np.float32)
    noisy = logits + rng.normal(scale=0.05, size=logits.shape).astype(np.float32)
    check = compare_outputs([noisy], [logits], "classification", runtime="x")
    assert check.passed and check.confident_samples < 20 and "mean cosine" in check.rule, check
    other = (5.0 + rng.normal(scale=2.0, size=logits.shape)).astype(np.float32)
    assert not compare_outputs([other], [logits], "classification", runtime="x").passed


def test_a_run_timed_on_two_runtimes_records_each_runtime_and_keeps_the_old_fields(tmp_path, digits_cnn,
                                                                                   digits_cnn_data):
    """digits-cnn with one int8 variant on onnxruntime and OpenVINO: the top-level latency and speed-up stay
    onnxruntime's; each variant's `runtimes` has OpenVINO's latency, its speed-up against OpenVINO's baseline and
    against onnxruntime fp32 (with intervals, same rounds), the passed fidelity check and the kernel counts."""
    pytest.importorskip("openvino")
    from core.pipeline.run import run
    from core.results.runtimes import runtime_frame
    from core.spec.recipe import Variant

    bench = BenchmarkConfig(batch_sizes=(1,), threads=1, warmup=1, runs=6, max_seconds=0.5,
                            runtimes=("onnxruntime", "openvino"))
    recipe = Recipe(benchmark=bench, variants=(Variant("int8", (QuantizeConfig(mode="static", samples=64),)),))
    run(digits_cnn, digits_cnn_data, recipe, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    base, int8 = results["variants"]
    assert results["environment"]["versions"]["openvino"]
    assert int8["latency_ms"]["1"]["p50"] > 0 and set(int8["speedup"]["1"]) >= {"ratio", "low", "high"}
    assert int8["runtimes"]["onnxruntime"]["speedup"] == int8["speedup"]
    assert int8["runtimes"]["onnxruntime"]["kernels"]["float"] == 0  # its own quantizer's layout: all fused
    ov = int8["runtimes"]["openvino"]
    assert ov["status"] == "ok" and ov["fidelity"]["passed"] and ov["kernels"]["int8"] >= 3
    assert ov["latency_ms"]["1"]["p50"] > 0
    for key in ("speedup", "vs_onnxruntime"):
        entry = ov[key]["1"]
        assert entry["low"] <= entry["ratio"] <= entry["high"], (key, entry)
    assert "vs_onnxruntime" in base["runtimes"]["openvino"] and not base["runtimes"]["openvino"].get("speedup")
    points = runtime_frame(results)
    assert sorted(points["name"]) == ["baseline · OpenVINO", "baseline · onnxruntime", "int8 · OpenVINO",
                                      "int8 · onnxruntime"]
    assert points["selection_agreement"].notna().all() and points["selection_p50_ms_bs1"].notna().all()
