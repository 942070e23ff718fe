"""The Compare page: the Pareto chart, budgets and the best variant, the results table, a variant's detail with
side-by-side predictions, and the exports."""

from __future__ import annotations

import json

import pytest

from app_support import add_real_run, add_run, errors_of, synthetic_results

pytestmark = pytest.mark.timeout(180)


def _compare(make_app, run_id):
    at = make_app().run()
    at.switch_page("pages/compare.py").run()
    assert at.session_state["fw_run"] == run_id
    return at


def _chart(at, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _values(array) -> list:
    """A plotly JSON array, decoded when plotly sent it as a typed array ({dtype, bdata})."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _best_message(at) -> str:
    return next(s.value for s in at.success if "Best within budget" in s.value)


def test_no_runs_empty_state(make_app):
    """Without runs the page explains where results come from."""
    at = make_app().run()
    at.switch_page("pages/compare.py").run()
    assert not errors_of(at)
    assert any("No runs yet" in i.value for i in at.info)


def test_pareto_chart_has_every_measured_variant(make_app, fw_home):
    """The chart plots baseline and variants (not the failed one) with the frontier, and names the best."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    assert not errors_of(at)
    spec = _chart(at)
    names = [n for trace in spec["data"] if trace.get("text") for n in trace["text"]]
    assert sorted(names) == ["baseline", "fp16", "int8-static", "pruned"]
    # pruned beats all: the frontier is one corner at it, run out to the plot's edges (the caption promises a line)
    frontier = next(t for t in spec["data"] if t["name"] == "Pareto frontier")
    assert _values(frontier["x"])[1] == 80.0 and _values(frontier["y"])[1] == 0.9 and len(_values(frontier["x"])) == 3
    assert spec["layout"]["xaxis"]["title"]["text"] == "Model file size (kB)"
    assert spec["layout"]["yaxis"]["title"]["text"] == "Latency p50 at batch 256 (ms)"
    assert "pruned" in _best_message(at)
    assert any("broken" in c.value and "boom" in c.value for c in at.caption)


def test_pareto_frontier_drawn(make_app, fw_home):
    """When no variant beats all others, the frontier links the undominated ones in order of size."""
    results = synthetic_results()
    results["variants"][3]["latency_ms"]["256"]["p50"] = 1.6  # pruned: smallest, but slower than int8-static
    run_id = add_run(fw_home, results)
    at = _compare(make_app, run_id)
    frontier = next(t for t in _chart(at)["data"] if t["name"] == "Pareto frontier")
    assert _values(frontier["x"])[1:-1] == [80.0, 160.0] and _values(frontier["y"])[1:-1] == [1.6, 1.5]


def test_budgets_grey_out_and_rename_best(make_app, fw_home):
    """A 1-pt quality budget greys out the pruned variant and makes int8-static the best; impossible budgets warn."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    at.slider(key=f"budget.drop.{run_id}").set_value(1.0).run()
    assert "int8-static" in _best_message(at)
    outside = next(t for t in _chart(at)["data"] if t["name"] == "outside budget")
    assert outside["text"] == ["pruned"]
    table = at.dataframe[0].value
    assert dict(zip(table["variant"], table["budget"]))["int8-static"] == "★ best"

    at.slider(key=f"budget.size.{run_id}").set_value(100.0).run()  # 100 kB: only 'pruned' is that small
    assert any("No variant fits" in w.value for w in at.warning)


def test_batch_size_and_objective_change_the_best(make_app, fw_home):
    """At batch 1 with 'smallest', pruned wins on size; 'most accurate' picks a zero-drop variant."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    at.selectbox(key=f"compare_bs.{run_id}").set_value(1).run()
    assert _chart(at)["layout"]["yaxis"]["title"]["text"] == "Latency p50 at batch 1 (ms)"
    at.segmented_control(key=f"objective.{run_id}").set_value("most accurate").run()
    assert "baseline" in _best_message(at)  # ties at zero drop go to the fastest


def test_results_table_has_ratios(make_app, fw_home):
    """The table shows size and speed ratios to the same-run baseline: the speed-up with its interval ("no
    measurable difference" when it holds 1), a bare p50 ratio for a run from before intervals."""
    results = synthetic_results()
    for v in results["variants"]:
        if v["name"] == "int8-static":
            v["speedup"] = {"1": {"ratio": 0.98, "low": 0.95, "high": 1.02, "rounds": 20},
                            "256": {"ratio": 2.1, "low": 2.0, "high": 2.2, "rounds": 20}}
    run_id = add_run(fw_home, results)
    at = _compare(make_app, run_id)
    table = at.dataframe[0].value.set_index("variant")
    assert table.loc["int8-static", "x_smaller"] == pytest.approx(600_000 / 160_000, rel=1e-3)
    assert table.loc["int8-static", "speedup_bs256"] == "2.10x (2.00–2.20)"
    assert table.loc["int8-static", "speedup_bs1"] == "no measurable difference (0.95–1.02x)"
    assert table.loc["pruned", "speedup_bs256"] == f"{4.0 / 0.9:.2f}x"  # no interval: an older run's p50 ratio
    assert table.loc["broken", "status"] == "failed" and "boom" in table.loc["broken", "notes"]


def test_variant_detail_nodes_sparsity_and_notes(make_app, fw_home):
    """Opening variants shows quantized nodes, per-layer sparsity and the fp16 'why no speedup?' note."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    at.selectbox(key=f"variant_pick.{run_id}").set_value("int8-static").run()
    assert any("Quantized nodes (2)" in m.value for m in at.markdown)
    at.selectbox(key=f"variant_pick.{run_id}").set_value("pruned").run()
    assert any(json.loads(c.proto.spec)["data"][0]["y"] == ["conv1", "fc"] for c in at.get("plotly_chart"))
    at.selectbox(key=f"variant_pick.{run_id}").set_value("fp16").run()
    assert any("fp16" in i.value and "Why no speed-up" in i.value for i in at.info)
    assert any("Predictions unavailable" in c.value for c in at.caption)  # synthetic run: no model files
    at.selectbox(key=f"variant_pick.{run_id}").set_value("broken").run()
    assert any("boom" in e.value for e in at.error)


def test_real_run_predictions_and_exports(make_app, fw_home):
    """On a measured run, the detail shows side-by-side predictions and every export is offered."""
    run_id = add_real_run(fw_home)
    at = _compare(make_app, run_id)
    at.selectbox(key=f"variant_pick.{run_id}").set_value("int8-dynamic").run()
    assert not errors_of(at)
    predictions = next(d.value for d in at.dataframe if "agree" in d.value.columns)
    assert len(predictions) == 8 and predictions["agree"].mean() >= 0.75
    downloads = [b.label for b in at.get("download_button")]
    assert downloads == ["Model · int8-dynamic.onnx", "Recipe · recipe.yaml", "Results · results.csv",
                         "Report · report.html"]


def test_click_selection_opens_variant():
    """A plotly click event's first point names the variant (the chart puts the name first in customdata)."""
    from ui.events import clicked_variant

    event = {"selection": {"points": [{"customdata": ["int8-static", "quantize static"], "x": 1, "y": 2}],
                           "point_indices": [0], "box": [], "lasso": []}}
    assert clicked_variant(event) == "int8-static"
    assert clicked_variant({"selection": {"points": []}}) is None
    assert clicked_variant(None) is None


def test_slider_and_page_switch_reuse_cached_results(make_app, fw_home, monkeypatch):
    """Moving a budget slider or switching pages reads the cached results: the table is built once per file."""
    import core.results.table

    calls = []
    original = core.results.table.results_frame
    monkeypatch.setattr(core.results.table, "results_frame", lambda results: calls.append(1) or original(results))
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    built = len(calls)
    at.slider(key=f"budget.drop.{run_id}").set_value(1.0).run()
    at.switch_page("pages/model.py").run()
    at.switch_page("pages/compare.py").run()
    assert built >= 1 and len(calls) == built


def test_device_filter_keeps_only_variants_that_fit(make_app, fw_home):
    """Choosing a device on a measured run narrows the Pareto chart to the variants that fit it."""
    from core.results.devices import DEFAULT_DEVICES, variants_fitting
    from core.jobs.store import RunStore

    run_id = add_real_run(fw_home)
    at = _compare(make_app, run_id)
    everything = len(at.get("plotly_chart"))
    assert everything >= 1
    results = RunStore(fw_home).results(run_id)
    tiny = min(DEFAULT_DEVICES, key=lambda d: d.memory_bytes)
    expected = variants_fitting(results, tiny)
    at.selectbox(key=f"compare_device.{run_id}").set_value(tiny.name).run()
    assert not errors_of(at)
    assert any(f"{len(expected)} variant(s) that fit on {tiny.name}" in c.value for c in at.caption)
    roomy = max(DEFAULT_DEVICES, key=lambda d: d.memory_bytes)
    assert set(variants_fitting(results, roomy)) == {v["name"] for v in results["variants"]}
