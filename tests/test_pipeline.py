"""The pipeline end to end: results contract, same-run baseline, failures and cancellation."""

import json

import pandas as pd
import pytest

from core.io.data import load_data
from core.pipeline.build import load_results
from core.pipeline.run import run, run_recipe
from core.spec.recipe import QuantizeConfig, Recipe, Variant

CONTRACT_KEYS = {"name", "status", "error", "steps", "size_bytes", "params", "accuracy", "agreement",
                 "cosine_mean", "cosine_min", "latency_ms", "throughput", "artifact"}


def _recipe(fast_bench, *variants, model="sample:digits-cnn"):
    return Recipe(model=model, data="sample:digits", benchmark=fast_bench, variants=tuple(variants))


def test_run_writes_the_contract_files(tmp_path, fast_bench):
    """results.json, results.csv and each variant's model are written per DESIGN.md."""
    recipe = _recipe(fast_bench, Variant("int8-static", (QuantizeConfig(mode="static"),)),
                     Variant("fp16", (QuantizeConfig(mode="fp16"),)))
    events = []
    result = run_recipe(recipe, tmp_path, on_progress=events.append)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["model"] == "sample:digits-cnn" and data["data"] == "sample:digits"
    assert data["environment"]["threads"] == 1 and "onnxruntime" in data["environment"]["versions"]
    assert [v["name"] for v in data["variants"]] == ["baseline", "int8-static", "fp16"]
    for v in data["variants"]:
        assert CONTRACT_KEYS <= set(v)
        assert v["status"] == "ok" and (tmp_path / v["artifact"]).is_file()
        assert set(v["latency_ms"]) == {"1", "32"} and {"p50", "p90", "p99"} <= set(v["latency_ms"]["1"])
        assert v["latency_ms"]["1"]["p50"] <= v["latency_ms"]["1"]["p99"]
    base, static = data["variants"][0], data["variants"][1]
    assert base["steps"] == [] and base["agreement"] == 1.0 and base["accuracy"] > 0.95
    assert static["size_bytes"] * 3 < base["size_bytes"]
    assert abs(static["accuracy"] - base["accuracy"]) < 0.01
    for v in data["variants"][1:]:  # every variant timed in the same rounds as the baseline, with an interval
        for batch in ("1", "32"):
            entry = v["speedup"][batch]
            assert entry["low"] <= entry["ratio"] <= entry["high"] and entry["rounds"] >= 2
            assert v["selection"]["speedup"][batch]["rounds"] >= 1  # the held-out rounds, for choosing
        assert v["selection"]["split"] == "validation" and v["selection"]["n"] == 180
    assert data["variants"][0]["speedup"] == {}
    timing = data["timing"]
    assert "interleaved rounds" in timing["method"] and set(timing["batches"]) == {"1", "32"}
    assert {"cpu_share", "steal_share", "involuntary_switches_per_s", "load_avg_1m"} <= set(
        timing["batches"]["32"]["contention"]) and isinstance(timing["contended"], bool)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame["name"]) == ["baseline", "int8-static", "fp16"]
    assert frame.loc[1, "x_smaller"] > 3
    assert frame.loc[1, "speedup_low_bs32"] <= frame.loc[1, "speedup_bs32"] <= frame.loc[1, "speedup_high_bs32"]
    assert 0 < frame.loc[1, "cpu_share_bs32"] <= 1
    assert Recipe.load(tmp_path / "recipe.yaml") == recipe
    assert events[0].kind == "start" and events[-1].kind == "done"
    assert [e.fraction for e in events] == sorted(e.fraction for e in events[:-1]) + [events[-1].fraction]
    assert sum(e.kind == "variant_done" for e in events) == 3
    assert load_results(tmp_path).variants[1].name == "int8-static" and result.status == "completed"


def _conv_only_model():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from core.io.graph import Model

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["y"], name="conv")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 6, 6])], [w])
    return Model("conv.onnx", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_failing_variant_does_not_stop_the_run(tmp_path, fast_bench):
    """A variant that cannot be built is recorded as failed with a one-line error; the others still run."""
    from core.io.data import synthetic_dataset

    model = _conv_only_model()
    recipe = Recipe(benchmark=fast_bench, variants=(Variant("int4", (QuantizeConfig(mode="int4"),)),
                                                    Variant("static", (QuantizeConfig(mode="static"),))))
    result = run(model, synthetic_dataset(model), recipe, tmp_path)
    assert [v.status for v in result.variants] == ["ok", "failed", "ok"]
    failed = result.variants[1]
    assert "MatMul" in failed.error and "\n" not in failed.error and failed.artifact is None
    assert result.variants[2].cosine_mean > 0.99  # not a classifier: fidelity by cosine
    assert json.loads((tmp_path / "results.json").read_text())["variants"][1]["status"] == "failed"


def test_cancel_marks_remaining_variants(tmp_path, fast_bench):
    """Stopping after the baseline leaves the other variants cancelled and the run cancelled."""
    recipe = _recipe(fast_bench, Variant("a", (QuantizeConfig(mode="static"),)),
                     Variant("b", (QuantizeConfig(mode="fp16"),)), model="sample:digits-mlp")
    stop = {"now": False}

    def on_progress(event):
        if event.kind == "variant_done":
            stop["now"] = True

    result = run_recipe(recipe, tmp_path, on_progress=on_progress, should_stop=lambda: stop["now"])
    assert result.status == "cancelled"
    assert [v.status for v in result.variants] == ["ok", "cancelled", "cancelled"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "cancelled"


def test_synthetic_data_gives_fidelity_without_accuracy(tmp_path, fast_bench, digits_mlp):
    """Without data the run reports agreement with the baseline but no accuracy."""
    recipe = Recipe(model="sample:digits-mlp", benchmark=fast_bench,
                    variants=(Variant("s", (QuantizeConfig(mode="static", samples=32),)),))
    result = run_recipe(recipe, tmp_path)
    assert result.data is None and result.variants[1].accuracy is None
    assert result.variants[1].agreement > 0.8


def test_data_that_does_not_fit_is_refused_before_running(tmp_path, fast_bench):
    """A model/data mismatch is a BadInputError naming both shapes."""
    import numpy as np

    from core.errors import BadInputError

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3, 4), np.float32))
    with pytest.raises(BadInputError, match=r"\(3, 4\).*\(1, 8, 8\)"):
        run_recipe(_recipe(fast_bench), tmp_path / "out", data_spec=str(tmp_path / "d.npz"))
    assert load_data  # imported for the public API
