"""The Compare page: the Pareto chart, budgets and the best variant, the results table, a variant's detail with
side-by-side predictions, and the exports."""

from __future__ import annotations


import pytest

from app_support import add_real_run, add_run, errors_of, synthetic_results, vega_charts

pytestmark = pytest.mark.timeout(180)


def _compare(make_app, run_id):
    at = make_app().run()
    at.switch_page("pages/compare.py").run()
    assert at.session_state["fw_run"] == run_id
    return at


def _chart(at, index: int = 0) -> dict:
    """The page's `index`-th Vega-Lite chart (the Pareto chart first), its datasets decoded."""
    return vega_charts(at)[index]


def _points(spec: dict) -> dict:
    """The Pareto chart's markers by variant name."""
    return {p["name"]: p for p in spec["datasets"]["points"]}


def _axis_titles(spec: dict) -> tuple[str, str]:
    markers = next(layer for layer in spec["layer"] if layer.get("name") == "markers")
    return markers["encoding"]["x"]["title"], markers["encoding"]["y"]["title"]


def _best_message(at) -> str:
    return next(s.value for s in at.success if "Best within budget" in s.value or "(no budget set)" in s.value)


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
    assert sorted(_points(spec)) == ["baseline", "fp16", "int8-static", "pruned"]
    labels = [layer for layer in spec["layer"] if layer.get("name", "").startswith("labels_")]
    assert labels and all(layer["encoding"]["text"] == {"field": "name"} for layer in labels)
    # pruned beats all: the frontier is one corner at it, run out to the plot's edges (the caption promises a line)
    frontier = spec["datasets"]["frontier"]
    assert frontier[1]["x"] == 80.0 and frontier[1]["y"] == 0.9 and len(frontier) == 3
    assert _axis_titles(spec) == ("Model file size (kB)", "Latency p50 at batch 256 (ms)")
    assert _points(spec)["pruned"]["shape"] != "circle" and _points(spec)["baseline"]["shape"] == "diamond"
    assert "pruned" in _best_message(at)
    assert any("broken" in c.value and "boom" in c.value for c in at.caption)


def test_pareto_frontier_drawn(make_app, fw_home):
    """When no variant beats all others, the frontier links the undominated ones in order of size."""
    results = synthetic_results()
    results["variants"][3]["latency_ms"]["256"]["p50"] = 1.6  # pruned: smallest, but slower than int8-static
    run_id = add_run(fw_home, results)
    at = _compare(make_app, run_id)
    frontier = _chart(at)["datasets"]["frontier"]
    assert [f["x"] for f in frontier][1:-1] == [80.0, 160.0] and [f["y"] for f in frontier][1:-1] == [1.6, 1.5]


def test_budgets_grey_out_and_rename_best(make_app, fw_home):
    """A 1-pt quality budget greys out the pruned variant and makes int8-static the best; impossible budgets warn."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    at.slider(key=f"budget.drop.{run_id}").set_value(1.0).run()
    assert "int8-static" in _best_message(at)
    assert [n for n, p in _points(_chart(at)).items() if not p["inside"]] == ["pruned"]
    table = at.dataframe[0].value
    assert dict(zip(table["variant"], table["budget"]))["int8-static"] == "★ best"

    at.slider(key=f"budget.size.{run_id}").set_value(100.0).run()  # 100 kB: only 'pruned' is that small
    assert any("No variant fits" in w.value for w in at.warning)


def test_batch_size_and_objective_change_the_best(make_app, fw_home):
    """At batch 1 with 'smallest', pruned wins on size; 'most accurate' picks a zero-drop variant."""
    run_id = add_run(fw_home, synthetic_results())
    at = _compare(make_app, run_id)
    at.selectbox(key=f"compare_bs.{run_id}").set_value(1).run()
    assert _axis_titles(_chart(at))[1] == "Latency p50 at batch 1 (ms)"
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
    assert any("Quantize / dequantize nodes (2)" in m.value for m in at.markdown)  # a run before quantized layers
    at.selectbox(key=f"variant_pick.{run_id}").set_value("pruned").run()
    assert any([r["layer"] for r in c["datasets"].get("sparsity", [])] == ["conv1", "fc"] for c in vega_charts(at))
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
    thumbnails = at.get("image")  # the inputs, drawn as images beside the table, captioned with both top-1s
    assert thumbnails and len(thumbnails[0].captions) == 8 and all("→" in c for c in thumbnails[0].captions)
    # Compare draws no plotly chart: a new browser would compile plotly.js's 4.7 MB before the first chart
    # (~1.5 s of a 3.2-3.8 s first render, benchmarks/first_render.py); its charts are Vega-Lite.
    assert not at.get("plotly_chart") and len(vega_charts(at)) >= 4
    downloads = [b.label for b in at.get("download_button")]
    assert downloads == ["Model · int8-dynamic.onnx", "Recipe · recipe.yaml", "Results · results.csv",
                         "Report · report.html"]


def test_click_selection_opens_variant():
    """A Vega-Lite click event's selected point names the variant (the markers' point selection is on `name`)."""
    from core.views.vega import PICK
    from ui.events import clicked_variant

    assert clicked_variant({"selection": {PICK: [{"name": "int8-static"}]}}) == "int8-static"
    assert clicked_variant({"selection": {PICK: []}}) is None
    assert clicked_variant({"selection": {}}) is None
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
    everything = len(vega_charts(at))
    assert everything >= 1
    results = RunStore(fw_home).results(run_id)
    tiny = min(DEFAULT_DEVICES, key=lambda d: d.memory_bytes)
    expected = variants_fitting(results, tiny)
    at.selectbox(key=f"compare_device.{run_id}").set_value(tiny.name).run()
    assert not errors_of(at)
    assert any(f"{len(expected)} variant(s) that fit on {tiny.name}" in c.value for c in at.caption)
    roomy = max(DEFAULT_DEVICES, key=lambda d: d.memory_bytes)
    assert set(variants_fitting(results, roomy)) == {v["name"] for v in results["variants"]}


def test_quantized_layers_are_listed_and_their_qdq_nodes_counted(make_app, fw_home):
    """A variant that records its quantized layers lists those (Conv, Gemm) and counts the Q/DQ nodes around
    them, instead of listing 28 DequantizeLinear nodes as "quantized nodes"."""
    results = synthetic_results()
    info = next(v for v in results["variants"] if v["name"] == "int8-static")["info"]
    info["quantized_layers"] = ["/conv1/Conv", "/fc/Gemm"]
    info["quantized_nodes"] = info["quantized_layers"] + [f"dq{i}_DequantizeLinear" for i in range(26)]
    run_id = add_run(fw_home, results)
    at = _compare(make_app, run_id)
    at.selectbox(key=f"variant_pick.{run_id}").set_value("int8-static").run()
    assert any("Quantized layers (2)" in m.value for m in at.markdown)
    assert any("26 Quantize / Dequantize nodes" in c.value for c in at.caption)


def _bakeoff_results() -> dict:
    """synthetic_results timed on onnxruntime and OpenVINO: int8-static is fastest on OpenVINO (measurably), the
    pruned variant failed OpenVINO's fidelity check."""
    results = synthetic_results()
    results["recipe"]["benchmark"]["runtimes"] = ["onnxruntime", "openvino"]
    ov = {"baseline": (3.0, 1.0), "int8-static": (0.5, 8.0), "fp16": (3.2, 1.25)}
    for v in results["variants"]:
        if v["status"] != "ok":
            continue
        p256 = v["latency_ms"]["256"]["p50"]
        base256 = 4.0
        v["runtimes"] = {"onnxruntime": {"status": "ok", "latency_ms": v["latency_ms"], "speedup": {
            "256": {"ratio": base256 / p256, "low": base256 / p256 * 0.97, "high": base256 / p256 * 1.03}}}}
        if v["name"] in ov:
            p50, cross = ov[v["name"]]
            cross = base256 / p50
            v["runtimes"]["openvino"] = {
                "status": "ok", "latency_ms": {"256": {"p50": p50}}, "accuracy": v["accuracy"], "agreement": 1.0,
                "speedup": {"256": {"ratio": 3.0 / p50, "low": 3.0 / p50 * 0.97, "high": 3.0 / p50 * 1.03}},
                "vs_onnxruntime": {"256": {"ratio": cross, "low": cross * 0.97, "high": cross * 1.03}},
                "fidelity": {"rule": "same outputs (relative error 1.0e-07 <= 1e-03)"},
                "kernels": {"int8": 2, "float": 0} if v["name"] == "int8-static" else {"int8": 0, "float": 2}}
        else:
            v["runtimes"]["openvino"] = {"status": "failed", "error": "openvino does not compute the same 'pruned' "
                                                                      "as onnxruntime: top-1 agreement 10.0%"}
    return results


def test_bakeoff_puts_every_variant_x_runtime_on_one_pareto_and_names_the_runtime(make_app, fw_home):
    """A two-runtime run: both runtimes' points on the chart (circles and squares), the best names OpenVINO, the
    ship table and the variant's per-runtime detail show, the failed point says why; hiding OpenVINO drops its
    points."""
    run_id = add_run(fw_home, _bakeoff_results())
    at = _compare(make_app, run_id)
    assert not errors_of(at)
    spec = _chart(at)
    points = {n: p["shape"] for n, p in _points(spec).items()}
    assert points["int8-static · OpenVINO"] == "square" and points["int8-static · onnxruntime"] == "circle"
    assert "pruned · OpenVINO" not in points  # it failed: not a point, but said
    assert "Fastest (no budget set): int8-static on OpenVINO" in _best_message(at)
    assert any("pruned · OpenVINO" in c.value and "top-1 agreement 10.0%" in c.value for c in at.caption)
    ship = next(df.value for df in at.dataframe if "ship_on" in df.value.columns)
    assert ship.set_index("variant").loc["int8-static", "ship_on"] == "OpenVINO"
    assert any("On each runtime" in m.value for m in at.markdown)
    at.multiselect(key=f"compare_runtimes.{run_id}").set_value(["onnxruntime"]).run()
    assert not errors_of(at)
    names = list(_points(_chart(at)))
    assert names and all(n.endswith("· onnxruntime") for n in names)


def test_an_edge_program_is_downloadable_beside_the_onnx_file(make_app, fw_home):
    """A variant with an ExecuTorch program offers it for download next to its ONNX file, from the run's folder."""
    from core.jobs.store import RunStore

    results = _bakeoff_results()
    results["recipe"]["benchmark"]["runtimes"].append("executorch")
    v = next(v for v in results["variants"] if v["name"] == "int8-static")
    v["runtimes"]["executorch"] = {"status": "ok", "artifact": "variants/int8-static/model.pte", "size_bytes": 4,
                                   "export": {"precision": "int8", "delegated_share": 0.92},
                                   "latency_ms": {"256": {"p50": 1.0}}}
    run_id = add_run(fw_home, results)
    program = RunStore(fw_home).run_dir(run_id) / "variants" / "int8-static" / "model.pte"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_bytes(b"pte!")
    at = _compare(make_app, run_id)
    at.selectbox(key=f"variant_pick.{run_id}").set_value("int8-static").run()
    assert not errors_of(at)
    downloads = [b.label for b in at.get("download_button")]
    assert "Edge program · int8-static.pte (ExecuTorch, XNNPACK)" in downloads, downloads
