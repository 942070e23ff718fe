"""Concepts written once (issue 17): the step label, the byte format, the artifact-containment check, the fixed-batch
test and the job-kind registry, each checked where every caller now gets it from."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from core.errors import BadInputError
from core.format import format_bytes, is_missing
from core.io.files import inside_run
from core.io.graph import fixed_batch_of
from core.spec.labels import step_label, steps_label
from core.spec.recipe import DistillConfig, PruneConfig, QuantizeConfig


def test_step_label_reads_dicts_and_configs_alike_with_defaults():
    """A results.json step, a step config and a dict that leaves options out read the same."""
    assert step_label(QuantizeConfig(mode="dynamic")) == step_label({"technique": "quantize", "mode": "dynamic"}) \
        == "quantize dynamic"
    assert step_label({"technique": "quantize"}) == "quantize static"
    assert step_label(PruneConfig(amount=0.3)) == "prune structured 30%"
    assert step_label({"technique": "distill"}) == step_label(DistillConfig()) == "distill to width 0.25"
    assert steps_label([]) == "none" and steps_label(None) == "none"
    assert steps_label([PruneConfig(), QuantizeConfig()], " → ") == "prune structured 50% → quantize static"


def test_a_decoders_quantize_step_says_what_it_builds():
    """For a decoder, mode dynamic builds int8 weight-only MatMulNBits (not dynamic int8) and int4 its weight-only
    blocks: the label says so, in the results table and on Optimize (issue 28's 'quantize dynamic' on tiny-lm)."""
    from core.results.table import results_frame

    assert step_label({"technique": "quantize", "mode": "dynamic"}, decoder=True) == "int8 weight-only"
    assert step_label(QuantizeConfig(mode="int4"), decoder=True) == "int4 weight-only"
    assert step_label(QuantizeConfig(mode="int4", block_size=128), decoder=True) == "int4 weight-only, block 128"
    assert step_label(QuantizeConfig(mode="dynamic")) == "quantize dynamic"  # an encoder's stays as it was
    results = {"task": "text-generation", "variants": [
        {"name": "baseline", "status": "ok", "steps": []},
        {"name": "int8", "status": "ok", "steps": [{"technique": "quantize", "mode": "dynamic"}]}]}
    assert list(results_frame(results)["technique"]) == ["none", "int8 weight-only"]


def test_the_timing_caption_says_where_a_decoder_was_timed():
    """An encoder's variants are timed in one process; a decoder's each in a worker of its own, driven in turn."""
    from core.results.table import timing_caption

    timing = {"batches": {"1": {"rounds": 12, "converged": True}}}
    assert "in one process" in timing_caption({"timing": timing})
    decoder = timing_caption({"task": "text-generation", "timing": timing})
    assert "each in its own worker process" in decoder and "in one process" not in decoder


@pytest.mark.parametrize("value, text", [(None, "–"), (float("nan"), "–"), (512, "512 B"), (1_100_000, "1.1 MB"),
                                         (1_000_000, "1 MB"), (160_000, "160 kB"), (2.5e12, "2,500 GB")])
def test_format_bytes_is_none_safe_and_keeps_three_significant_digits(value, text):
    """One size format: None and NaN are a dash; three significant digits, no trailing zeros."""
    assert format_bytes(value) == text


def test_is_missing_knows_pandas_na():
    """The one "not there" test: None, NaN and pandas' NA; zero is a number."""
    import pandas as pd

    assert is_missing(None) and is_missing(float("nan")) and is_missing(pd.NA) and not is_missing(0)


def test_inside_run_refuses_paths_and_links_that_leave_the_run(tmp_path):
    """A results.json artifact path that climbs out, or a link pointing out, resolves to None."""
    run = tmp_path / "run"
    (run / "variants").mkdir(parents=True)
    (run / "variants" / "model.onnx").write_bytes(b"x")
    (tmp_path / "secret.onnx").write_bytes(b"y")
    os.symlink(tmp_path / "secret.onnx", run / "variants" / "link.onnx")
    assert inside_run(run, "variants/model.onnx") == (run / "variants" / "model.onnx").resolve()
    assert inside_run(run, "../secret.onnx") is None
    assert inside_run(run, "variants/link.onnx") is None
    assert inside_run(run, str(tmp_path / "secret.onnx")) is None  # an absolute path is not inside either


def test_fixed_batch_of_reads_specs_and_session_inputs_alike():
    """Axis 0 fixed at 4 on one input: 4; symbolic or absent: None (TensorSpecs and onnxruntime NodeArgs)."""
    specs = [SimpleNamespace(shape=("batch", 3)), SimpleNamespace(shape=(4, 3))]
    assert fixed_batch_of(specs) == 4
    assert fixed_batch_of([SimpleNamespace(shape=("batch", 8)), SimpleNamespace(shape=())]) is None
    assert fixed_batch_of([SimpleNamespace(shape=(0, 8))]) is None


def test_one_registry_of_job_kinds():
    """The queue, insight and the CLI share one registry; an unknown kind names the allowed ones."""
    from core.jobs import insight
    from core.jobs.kinds import JOB_KINDS, job_kind_of

    assert insight.KINDS == tuple(JOB_KINDS) == ("sensitivity", "tune", "diagnose")
    assert [k for k, v in JOB_KINDS.items() if v.summary is not None] == ["sensitivity", "tune"]
    with pytest.raises(BadInputError, match="allowed: sensitivity, tune, diagnose"):
        job_kind_of("profile")
    with pytest.raises(BadInputError, match="unknown key"):
        job_kind_of("diagnose").check({"source_run": "r1", "variants": ["a"], "colour": "red"})


@pytest.mark.parametrize("flags, fast", [({"avx", "avx2", "fma"}, False), ({"avx2", "avx512f", "avx512bw"}, False),
                                         ({"avx2", "avx_vnni"}, True), ({"avx2", "avx512f", "avx512_vnni"}, True),
                                         ({"avx2", "amx_tile"}, True), ({"asimd", "asimddp"}, True)])
def test_int8_is_fast_here_is_one_test(flags, fast, monkeypatch):
    """The ISA label, the "why not faster" rule and the Insight CPU panel agree on every CPU: one table
    (`core.measure.quality.INT8_ISAS`) behind all three. They disagreed on an AMX CPU with only ``amx_tile``."""
    from core.analysis import diagnose
    from core.measure.quality import INT8_ISAS, int8_fast, int8_isa
    from core.results.explain import why_no_speedup

    assert int8_fast(flags) is fast
    assert dict((name, has) for name, _, has in INT8_ISAS)[int8_isa(flags)] is fast
    monkeypatch.setattr(diagnose, "_cpu_flags", lambda: ("a CPU", set(flags)))
    assert diagnose.cpu_panel()["int8_fast"] is fast
    results = {"environment": {"cpu_flags": sorted(flags)}, "variants": [
        {"name": "baseline", "status": "ok", "latency_ms": {"64": {"p50": 10.0}}, "throughput": {"64": 6400.0}},
        {"name": "int8", "status": "ok", "steps": [{"technique": "quantize", "mode": "static"}],
         "latency_ms": {"64": {"p50": 10.0}}, "throughput": {"64": 6400.0}}]}
    said = any("No VNNI" in note for note in why_no_speedup(results, "int8"))
    assert said is not fast


def test_why_not_faster_reads_the_same_on_compare_and_insight():
    """A rule's wording lives once (`core.results.explain.reason`): Compare's note is its message and advice,
    Insight's finding the same message and fix."""
    from core.analysis.diagnose import explain
    from core.results.explain import reason, why_no_speedup

    steps = [{"technique": "quantize", "mode": "static"}]
    results = {"environment": {"cpu_flags": ["avx2"]}, "variants": [
        {"name": "baseline", "status": "ok", "latency_ms": {"64": {"p50": 10.0}}},
        {"name": "int8", "status": "ok", "steps": steps, "latency_ms": {"64": {"p50": 10.0}}}]}
    message, fix = reason("no_vnni")
    assert f"{message} {fix}" in why_no_speedup(results, "int8")
    finding = next(f for f in explain({"int8_fast": False, "fp16_arithmetic": False}, None, None, steps=steps)
                   if f.rule == "no_vnni")
    assert (finding.message, finding.fix) == (message, fix)
