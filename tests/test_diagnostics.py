"""Diagnostics: the profiler's per-operator time before and after (Conv -> QLinearConv, ConvInteger), the rules
that explain a missing speed-up, batch x thread scaling, and insight jobs through the JobRunner."""

import json

import pytest

from core.analysis.diagnose import (PROFILE_CALLS_PER_ROUND, compare_ops, cpu_panel, explain, parse_profile,
                                    profile_ops)

NO_VNNI_CPU = {"int8_fast": False, "fp16_arithmetic": False}
FAST_CPU = {"int8_fast": True, "fp16_arithmetic": True}


@pytest.fixture(scope="module")
def cnn_variants(digits_cnn, digits_cnn_data):
    """digits-cnn as float, static int8 and dynamic int8 with Conv quantized (ConvInteger)."""
    from core.spec.recipe import QuantizeConfig
    from core.techniques import Candidate, StepContext, apply_step

    context = StepContext(dataset=digits_cnn_data, baseline=digits_cnn)
    out = {"baseline": digits_cnn.onnx_bytes()}
    for name, config in (("static", QuantizeConfig(mode="static")),
                         ("dynamic-conv", QuantizeConfig(mode="dynamic", quantize_conv=True))):
        out[name] = apply_step(config, Candidate(onnx_model=digits_cnn.onnx_model), context).onnx_model \
            .SerializeToString()
    return out


def test_static_int8_turns_conv_into_qlinearconv_in_the_profile(cnn_variants, digits_cnn_data):
    inputs = digits_cnn_data.eval.x
    before = profile_ops(cnn_variants["baseline"], inputs, batch_size=8, runs=3, warmup=1)
    after = profile_ops(cnn_variants["static"], inputs, batch_size=8, runs=3, warmup=1)
    before_ops = {r["op"] for r in before["ops"]}
    after_ops = {r["op"] for r in after["ops"]}
    assert "Conv" in before_ops and "QLinearConv" not in before_ops
    assert "QLinearConv" in after_ops and "Conv" not in after_ops
    # 3 rounds (timed the one way, in rounds: core.measure.timing), each of 1 to PROFILE_CALLS_PER_ROUND calls
    assert 3 <= before["runs"] <= 3 * PROFILE_CALLS_PER_ROUND and before["batch_size"] == 8
    assert sum(r["share"] for r in after["ops"]) == pytest.approx(1.0, abs=1e-3)
    rows = {r["op"]: r for r in compare_ops(before, after)}
    assert rows["Conv"]["after_ms"] == 0.0 and rows["Conv"]["before_ms"] > 0
    assert rows["QLinearConv"]["before_ms"] == 0.0 and rows["QLinearConv"]["after_ms"] > 0
    rules = {f.rule for f in explain(NO_VNNI_CPU, before, after, steps=[{"technique": "quantize",
                                                                         "mode": "static"}])}
    assert "no_vnni" in rules and "conv_integer" not in rules
    assert "no_vnni" not in {f.rule for f in explain(FAST_CPU, before, after)}


def test_dynamic_int8_on_conv_is_explained_as_slow_convinteger(cnn_variants, digits_cnn_data):
    after = profile_ops(cnn_variants["dynamic-conv"], digits_cnn_data.eval.x, batch_size=8, runs=2, warmup=1)
    findings = {f.rule: f for f in explain(FAST_CPU, None, after)}
    assert "ConvInteger" in {r["op"] for r in after["ops"]}
    assert "static quantization" in findings["conv_integer"].fix
    assert "ConvInteger" in findings["conv_integer"].message


def test_rules_for_fp16_sparsity_tiny_models_and_quantize_overhead():
    after = {"ops": [{"op": "Cast", "ms": 1.0, "calls": 4, "share": 0.3},
                     {"op": "QuantizeLinear", "ms": 0.5, "calls": 2, "share": 0.1},
                     {"op": "DequantizeLinear", "ms": 0.5, "calls": 2, "share": 0.1},
                     {"op": "QLinearConv", "ms": 1.0, "calls": 2, "share": 0.5}]}
    rules = {f.rule: f for f in explain(NO_VNNI_CPU, None, after, steps=[
        {"technique": "prune", "method": "unstructured", "amount": 0.8},
        {"technique": "quantize", "mode": "fp16"}], info={"sparsity": 0.8}, batch1_ms=0.03)}
    assert {"fp16_casts", "dense_sparsity", "tiny_model", "qdq_overhead", "no_vnni"} <= set(rules)
    assert "80%" in rules["dense_sparsity"].message
    assert "fp16 arithmetic" in rules["fp16_casts"].message
    assert "per-call overhead" in rules["tiny_model"].message
    assert not explain(FAST_CPU, None, {"ops": [{"op": "Conv", "ms": 1, "calls": 1, "share": 1.0}]},
                       steps=[{"technique": "prune", "method": "structured"}], speedup=2.0, batch1_ms=1.0)


def test_tiny_model_rule_only_next_to_a_batch_1_profile():
    """"Tiny model: at batch 1 ..." is about per-call overhead at batch 1: next to a profile taken at batch 256
    it misled, so it appears only for a batch-1 profile."""
    after = {"ops": [{"op": "Gemm", "ms": 0.01, "calls": 2, "share": 1.0}]}
    at_256 = {f.rule for f in explain(FAST_CPU, None, after, batch1_ms=0.03, profile_batch=256)}
    at_1 = {f.rule for f in explain(FAST_CPU, None, after, batch1_ms=0.03, profile_batch=1)}
    assert "tiny_model" not in at_256 and "tiny_model" in at_1


def test_parse_profile_skips_warmup_runs_and_sums_kernel_time_by_op():
    def run(ts):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 50}

    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0), node("a", "Conv", 1, 1000), node("a", "Conv", 2, 999),
              run(100), node("a", "Conv", 101, 3000), node("b", "Relu", 102, 1000), node("a", "Conv", 103, 0),
              {"cat": "Node", "name": "a_fence_before", "ts": 104, "dur": 77, "args": {"op_name": "Conv"}},
              run(200), node("a", "Conv", 201, 1000), node("b", "Relu", 202, 1000)]
    parsed = parse_profile(events, skip_runs=1)
    ops = {r["op"]: r for r in parsed["ops"]}
    assert parsed["runs"] == 2
    assert ops["Conv"]["ms"] == pytest.approx(2.0) and ops["Relu"]["ms"] == pytest.approx(1.0)
    assert ops["Conv"]["share"] == pytest.approx(4 / 6)
    assert parsed["nodes"][0] == {"node": "a", "op": "Conv", "ms": pytest.approx(2.0)}


def test_cpu_panel_names_the_int8_and_fp16_features():
    cpu = cpu_panel(threads=1)
    assert set(cpu["features"]) >= {"AVX2", "AVX-512", "VNNI", "AMX", "ARM dot-product", "fp16 arithmetic"}
    assert cpu["threads_used"] == 1 and cpu["cores"] >= 1
    assert cpu["int8_fast"] == (cpu["features"]["VNNI"] or cpu["features"]["AMX"]
                                or cpu["features"]["ARM dot-product"] or cpu["features"]["ARM i8mm"])


def test_scaling_table_covers_every_batch_and_thread_count(digits_mlp, digits_mlp_data):
    from core.views.insight import scaling_figure
    from core.analysis.scaling import scaling_table

    rows = scaling_table({"baseline": digits_mlp.onnx_bytes()}, digits_mlp_data.eval.x, batch_sizes=(1, 16),
                         thread_counts=(1, 2), warmup=1, runs=3, max_seconds=0.2)
    assert {(r["batch_size"], r["threads"]) for r in rows} == {(1, 1), (16, 1), (1, 2), (16, 2)}
    assert all(r["throughput"] > 0 and r["ms_per_sample"] == pytest.approx(r["p50_ms"] / r["batch_size"], rel=1e-3)
               for r in rows)
    assert len(scaling_figure(rows).data) == 2


def test_a_sensitivity_job_runs_through_the_job_runner(tmp_path):
    """The JobRunner's worker runs an insight kind and writes its file; the job is labelled with its kind."""
    from core.jobs.insight import job_kind, submit_job
    from core.jobs.queue import JobRunner
    from core.jobs.store import RunStore

    runner = JobRunner(RunStore(tmp_path), poll_s=0.1)
    try:
        run_id = submit_job(runner, "tester", "sensitivity",
                            {"technique": "prune", "amount": 0.9, "max_samples": 100},
                            model_spec="sample:digits-mlp", data_spec="sample:digits")
        status = runner.wait(run_id, timeout=120)
    finally:
        runner.shutdown()
    assert status.state == "completed", status.error
    run_dir = runner.store.run_dir(run_id)
    assert job_kind(run_dir) == "sensitivity"
    written = json.loads((run_dir / "sensitivity.json").read_text())
    assert len(written["layers"]) == 3 and written["config"]["amount"] == 0.9
    with pytest.raises(Exception, match="allowed"):
        submit_job(runner, "tester", "distill", {}, model_spec="sample:digits-mlp", data_spec=None)
