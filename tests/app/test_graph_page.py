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
    at.query_params["node"] = "/fc2/Gemm"
    at.switch_page("pages/graph.py").run()
    assert not errors_of(at)
    assert at.session_state["fw_run"] == run_id
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Variant nodes"]) > 0 and int(metrics["Quantized nodes"]) >= 2
    src = _iframe_src(at)
    assert src.startswith("component/ui.graph_explorer.model_explorer/index.html?fw_view=")
    query = parse_qs(urlsplit(src).query)
    folder = view_dir(query["fw_view"][0])
    assert folder is not None and (folder / "graph_1.json").is_file()
    data = json.loads(unquote(query["data"][0]))
    assert [m["url"] for m in data["models"]] == ["graphs://baseline/0", "graphs://int8-dynamic/1"]
    assert {p["selectedNodeId"] for p in data["uiState"]["paneStates"]} == {"/fc2/Gemm"}
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
