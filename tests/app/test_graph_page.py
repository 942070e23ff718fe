"""The Graph page: a run's variant beside its baseline in Model Explorer, reached from Compare and Insight."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from app_support import add_real_run, errors_of

pytestmark = pytest.mark.timeout(240)


def _iframe_src(at) -> str:
    frames = at.get("iframe")
    assert frames, "no iframe on the page"
    return frames[0].proto.src


def test_no_runs_empty_state(make_app):
    """Without a run that has a variant, the page says where to start."""
    at = make_app().run()
    at.switch_page("pages/graph.py").run()
    assert not errors_of(at)
    assert any("No run with a variant yet" in i.value for i in at.info)


def test_draws_a_variant_on_the_dashboards_port(make_app, fw_home):
    """A real run's variant: the summary, and an iframe served by Streamlit itself with both panes and overlays."""
    from ui.graph_explorer import view_dir

    run_id = add_real_run(fw_home)
    at = make_app().run()
    at.query_params["variant"] = "int8-dynamic"
    at.query_params["node"] = "/net/net.3/Gemm"
    at.switch_page("pages/graph.py").run()
    assert not errors_of(at)
    assert at.session_state["fw_run"] == run_id
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Variant nodes"]) > 0 and int(metrics["Quantized nodes"]) >= 2
    src = _iframe_src(at)
    assert src.startswith("/component/ui.graph_explorer.model_explorer/index.html?fw_view=")
    query = parse_qs(urlsplit(src).query)
    folder = view_dir(query["fw_view"][0])
    assert folder is not None and (folder / "graph_1.json").is_file()
    data = json.loads(unquote(query["data"][0]))
    assert [m["url"] for m in data["models"]] == ["graphs://baseline/0", "graphs://int8-dynamic/1"]
    assert {p["selectedNodeId"] for p in data["uiState"]["paneStates"]} == {"/net/net.3/Gemm"}
    assert any(src.startswith("node_data://precision/") for src in data["nodeData"])


def test_compare_links_each_variant_to_its_graph(make_app, fw_home):
    """Compare's variant detail has "Open in graph" with the run and the variant in the link."""
    run_id = add_real_run(fw_home)
    at = make_app().run()
    at.switch_page("pages/compare.py").run()
    assert not errors_of(at)
    at.selectbox(key=f"variant_pick.{run_id}").select("int8-dynamic").run()
    links = [link for link in at.get("page_link") if link.proto.label == "Open in graph"]
    assert links, "no Open in graph link"
    assert links[0].proto.page == "graph"
    assert parse_qs(links[0].proto.query_string) == {"run": [run_id], "variant": ["int8-dynamic"]}


def test_insight_scan_layer_links_to_its_node_and_the_graph_overlays_the_scan(make_app, fw_home):
    """Insight's sensitivity table links a layer to its node; the Graph page opens with that node selected in
    both panes and the scan's drops as an overlay."""
    from core.jobs import insight
    from core.jobs.store import RunStore
    from core.io.files import write_atomic

    from app_support import OWNER

    run_id = add_real_run(fw_home)
    store = RunStore(fw_home)
    record = store.create(OWNER, "variants: []\n", label="sensitivity · digits-mlp", model="sample:digits-mlp",
                          data="sample:digits")
    directory = store.run_dir(record.id)
    write_atomic(directory / "inputs" / insight.SPEC_FILE, json.dumps({"kind": "sensitivity", "config": {}}))
    layers = [{"name": node, "type": "Gemm", "node": node, "drop": drop, "sqnr_db": 20.0, "agreement": 0.99,
               "params": 100} for node, drop in (("/net/net.3/Gemm", 2.5), ("/net/net.1/Gemm", 0.5))]
    write_atomic(directory / "sensitivity.json", json.dumps({
        "technique": "quantize", "model": "sample:digits-mlp", "data": "sample:digits", "config": {},
        "metric": "accuracy drop (pt)", "baseline": {"accuracy": 0.97, "samples": 180}, "status": "completed",
        "layers": layers}))
    store.set_status(record.id, "completed")

    at = make_app().run()
    at.switch_page("pages/insight.py").run()
    assert not errors_of(at)
    at.selectbox(key=f"scan_graph_node.{record.id}").select("/net/net.3/Gemm").run()
    at.button(key=f"scan_graph_open.{record.id}").click().run()
    assert not errors_of(at)
    assert at.session_state["fw_run"] == run_id and at.session_state["graph_scan"] == record.id
    data = json.loads(unquote(parse_qs(urlsplit(_iframe_src(at)).query)["data"][0]))
    assert any(src.startswith("node_data://sensitivity/") for src in data["nodeData"])
    assert {p["selectedNodeId"] for p in data["uiState"]["paneStates"]} == {"/net/net.3/Gemm"}
