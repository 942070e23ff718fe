"""The Insight page (AppTest) over a temporary run store seeded with finished scan, tuning and profile jobs:
the CPU panel, the ranked scan and keep-top-k, the tuner's answer, the profile's findings, and submitting a scan."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.jobs import insight
from core.spec.recipe import QuantizeConfig, Recipe, Variant
from core.session import MODEL_KEY, OWNER_KEY, RECIPE_KEY, ModelChoice
from ui import state as state_keys

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "insight.py")
OWNER = "tester"
LAYERS = ["/features/features.0/Conv", "/classifier/classifier.3/Gemm", "/features/features.2/Conv"]


@pytest.fixture
def home(fw_home):
    """An empty run store in a temporary FEATHERWEIGHT_HOME (conftest's fw_home stops its job runners after)."""
    fw_home.mkdir(parents=True, exist_ok=True)
    return fw_home


def _add_job(home: Path, kind: str, files: dict, config: dict | None = None) -> str:
    """A finished insight job of `kind` with its output files, as a worker leaves it."""
    from core.io.files import write_atomic
    from core.jobs.store import RunStore

    store = RunStore(home)
    record = store.create(OWNER, "variants: []\n", label=f"{kind} · digits-cnn", model="sample:digits-cnn",
                          data="sample:digits")
    directory = store.run_dir(record.id)
    write_atomic(directory / "inputs" / insight.SPEC_FILE, json.dumps({"kind": kind, "config": config or {}}))
    for name, content in files.items():
        write_atomic(directory / name, content if isinstance(content, str) else json.dumps(content))
    store.set_status(record.id, "completed")
    return record.id


def _scan() -> dict:
    return {"technique": "quantize", "model": "sample:digits-cnn", "data": "sample:digits", "config": {},
            "metric": "accuracy drop (pt)", "baseline": {"accuracy": 0.985, "samples": 540}, "status": "completed",
            "layers": [{"name": LAYERS[0], "type": "Conv", "node": LAYERS[0], "drop": 1.5, "sqnr_db": 12.0,
                        "agreement": 0.98, "params": 320},
                       {"name": LAYERS[1], "type": "Gemm", "node": LAYERS[1], "drop": 0.2, "sqnr_db": 30.0,
                        "agreement": 0.998, "params": 1290},
                       {"name": LAYERS[2], "type": "Conv", "node": LAYERS[2], "drop": 0.0, "sqnr_db": 50.0,
                        "agreement": 1.0, "params": 18496}]}


def _page(state: dict | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[OWNER_KEY] = OWNER
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at


def test_without_a_model_the_page_explains_and_shows_the_cpu_panel(home):
    """With nothing chosen, the page points to the Model page, lists the CPU's int8 features and has no jobs."""
    at = _page().run()
    assert not at.exception
    assert any("Pick a model" in i.value for i in at.info)
    shown = " ".join(m.value for m in at.markdown)
    assert "AVX2" in shown and "VNNI" in shown and "AMX" in shown
    assert any("No scan yet" in i.value for i in at.info)


def test_a_scan_is_ranked_and_keep_top_k_fills_the_recipe_exclude(home):
    """The ranked scan is drawn and 'Keep the top 2 in float' puts the two most sensitive layers in exclude."""
    _add_job(home, "sensitivity", {"sensitivity.json": _scan()})
    recipe = Recipe(variants=(Variant("int8-static", (QuantizeConfig(mode="static"),)),))
    at = _page({RECIPE_KEY: recipe}).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 2
    assert at.metric[0].value == "3"
    at.number_input(key=state_keys.TOPK_KEY).set_value(2).run()
    at.button(key="keep_top_k").click().run()
    assert not at.exception
    updated = at.session_state[RECIPE_KEY]
    assert updated.variants[0].steps[0].exclude == tuple(LAYERS[:2])
    assert any("keeps" in s.value for s in at.success)


def test_a_tuning_run_shows_its_best_and_use_in_optimize_loads_best_yaml(home):
    """The tuner's best, trials and summary are shown; 'Use in Optimize' makes best.yaml the recipe."""
    best = Recipe(model="sample:digits-cnn", data="sample:digits", variants=(
        Variant("prune0.4+int8-static", (QuantizeConfig(mode="static", exclude=(LAYERS[0],)),)),))
    log = {"config": {"max_drop_pt": 0.5, "objective": "latency", "batch_size": 256}, "best": best.variants[0].name,
           "status": "completed", "timing_batch": 256, "summary": ["Best within 0.5 pt: prune0.4+int8-static."],
           "trials": [{"name": "baseline", "status": "ok", "drop_pt": 0.0, "speedup": 1.0, "size_bytes": 641024,
                       "within_budget": True, "reason": "the unmodified model"},
                      {"name": "int8-static", "status": "ok", "drop_pt": 0.19, "speedup": 1.6,
                       "size_bytes": 176628, "within_budget": True, "reason": "new best"},
                      {"name": "prune0.4+int8-static", "status": "ok", "drop_pt": 0.0, "speedup": 2.4,
                       "size_bytes": 80251, "within_budget": True, "reason": "new best"},
                      {"name": "prune0.6+int8-static", "status": "ok", "drop_pt": 1.2, "speedup": 3.1,
                       "size_bytes": 50000, "within_budget": False, "reason": "drops 1.20 pt"}]}
    _add_job(home, "tune", {"tune.json": log, "best.yaml": best.to_yaml()}, {"max_drop_pt": 0.5})
    at = _page().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Speed-up at batch 256"] == "2.40x"
    # the best trial's name is written whole (a metric cut long names: "int8-static[per_channel=F…")
    assert any(m.value.startswith("<small>Best</small>") and "**prune0.4+int8-static**" in m.value for m in at.markdown)
    assert any("Best within 0.5 pt" in m.value for m in at.markdown)
    at.button(key="tune_use").click().run()
    assert at.session_state[RECIPE_KEY].variants == best.variants
    assert at.session_state[RECIPE_KEY].model is None


def test_a_profile_shows_ops_side_by_side_and_explains_the_missing_speedup(home):
    """A finished profile draws before/after operator time and shows each finding with its fix."""
    diag = {"source_run": "x", "cpu": {}, "batch_size": 256, "scaling": None, "variants": {"int8-dynamic-conv": {
        "speedup": 0.6, "profile": {},
        "comparison": [{"op": "Conv", "before_ms": 9.0, "after_ms": 0.0},
                       {"op": "ConvInteger", "before_ms": 0.0, "after_ms": 15.0}],
        "findings": [{"rule": "conv_integer", "message": "3 Conv layer(s) run as ConvInteger",
                      "fix": "Use static quantization"}]}}}
    run_id = _add_job(home, "diagnose", {insight.DIAGNOSTICS_FILE: diag},
                      {"source_run": "x", "variants": ["int8-dynamic-conv"]})
    at = _page({state_keys.DIAG_RUN_KEY: run_id}).run()
    assert not at.exception
    assert any("ConvInteger" in w.value and "Use static quantization" in w.value for w in at.warning)
    assert any("int8-dynamic-conv vs baseline" in h.value for h in at.subheader)


def test_scan_layers_submits_a_sensitivity_job_for_the_current_model(home, monkeypatch):
    """Pressing 'Scan layers' queues a sensitivity job for the chosen model with the form's settings."""
    calls = []

    def fake_submit(runner, owner, kind, config, **kwargs):
        calls.append((owner, kind, config, kwargs))
        return "20990101-000000-abcdef"

    monkeypatch.setattr(insight, "submit_job", fake_submit)
    model = ModelChoice("sample:digits-mlp", "digits-mlp (sample)", {"format": "torch+onnx", "layers": []})
    at = _page({MODEL_KEY: model}).run()
    at.radio(key="scan_technique").set_value("prune").run()
    at.button(key="scan_start").click().run()
    assert not at.exception
    (owner, kind, config, kwargs), = calls
    assert (owner, kind, config["technique"], config["amount"]) == (OWNER, "sensitivity", "prune", 0.5)
    assert kwargs["model_spec"] == "sample:digits-mlp"
    assert at.session_state[state_keys.SCAN_RUN_KEY] == "20990101-000000-abcdef"


def test_run_picker_label_is_stable_and_the_status_fresh(home):
    """A scan that finishes keeps its picker label (a select box keeps the label it selected, so a status inside
    it stayed "queued"); the fresh status is shown under the picker instead."""
    from core.jobs.store import RunStore

    run_id = _add_job(home, "sensitivity", {"sensitivity.json": _scan()})
    RunStore(home).set_status(run_id, "queued")
    at = _page().run()
    picker = at.selectbox(key="scan_pick")
    before = list(picker.options)
    RunStore(home).set_status(run_id, "completed")
    at.run()
    assert list(at.selectbox(key="scan_pick").options) == before
    assert not any("queued" in o or "completed" in o for o in before)
    assert any(c.value == "Status: completed" for c in at.caption)


def test_scan_without_drop_is_not_an_alarm_and_tables_speak_words(home):
    """"Most sensitive ... no drop" is grey, not alarm red; the scan table's headers are words with units, not
    drop_pt / sqnr_db."""
    from streamlit.proto.Metric_pb2 import Metric as MetricProto

    scan = _scan()
    for layer in scan["layers"]:
        layer["drop"] = 0.0
    _add_job(home, "sensitivity", {"sensitivity.json": scan})
    at = _page().run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label.startswith("Most sensitive"))
    assert metric.proto.delta == "no drop" and metric.proto.color == MetricProto.MetricColor.GRAY
    assert metric.label == "Most sensitive (tied)"  # every layer dropped 0 pt: none is measurably first
    table = next(d for d in at.dataframe if "sqnr_db" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert config["sqnr_db"]["label"] == "SQNR (dB)" and config["drop"]["label"] == "Quality drop (pt)"


def test_a_decoder_runs_profile_is_one_decode_step_and_scaling_says_why_not(home):
    """A decoder's profile says it is one decode step and shows the decoder rule; the Scaling tab, given a decoder
    run, explains that its speed is per token at batch 1 instead of offering a batch-size grid that fails."""
    from core.io.files import write_atomic
    from core.jobs.store import RunStore

    store = RunStore(home)
    record = store.create(OWNER, "variants: []\n", label="tiny-lm · int8", model="sample:tiny-lm")
    write_atomic(store.run_dir(record.id) / "results.json", json.dumps({
        "task": "text-generation", "variants": [{"name": "baseline", "status": "ok"},
                                                {"name": "int8", "status": "ok"}]}))
    store.set_status(record.id, "completed")
    rule = ("MatMulNBits computes in float at accuracy_level 0", "Use accuracy_level auto")
    diag = {"cpu": {}, "batch_size": 1, "decode_step_past_tokens": 24, "variants": {"int8": {
        "speedup": {"ratio": 0.18, "low": 0.17, "high": 0.19}, "profile": {},
        "comparison": [{"op": "MatMul", "before_ms": 0.8, "after_ms": 0.0},
                       {"op": "MatMulNBits", "before_ms": 0.0, "after_ms": 11.0}],
        "findings": [{"rule": "nbits_float_compute", "message": rule[0], "fix": rule[1]}]}}}
    run_id = _add_job(home, "diagnose", {insight.DIAGNOSTICS_FILE: diag}, {"source_run": record.id,
                                                                          "variants": ["int8"]})
    at = _page({state_keys.DIAG_RUN_KEY: run_id, "fw_insight_scaling_source": record.id}).run()
    assert not at.exception
    assert any("one decode step" in c.value and "24 tokens of KV cache" in c.value for c in at.caption)
    assert any(rule[0] in w.value and rule[1] in w.value for w in at.warning)
    assert any("decodes one token at a time" in i.value for i in at.info)
    assert not any(m.key == "scaling_variants" for m in at.multiselect)
