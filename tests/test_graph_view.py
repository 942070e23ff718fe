"""The Graph page's data: Model Explorer overlays from a real run (mapping, profile, precision) and the patched
web app that serves them from the dashboard's own port."""

import json

import pytest

from core.errors import BadInputError
from core.jobs.graph import build_graph_view
from core.views.graph import PRECISION_COLOR, explorer_data, node_data, rename_nodes

FC1 = "/classifier/classifier.1/Gemm"
RECIPE = f"""
model: sample:digits-cnn
data: sample:digits
seed: 0
benchmark: {{batch_sizes: [1], threads: 1, warmup: 1, runs: 3, max_seconds: 0.5}}
variants:
  - name: int8-static
    steps: [{{technique: quantize, mode: static, exclude: ["{FC1}"]}}]
  - name: int4
    steps: [{{technique: quantize, mode: int4}}]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe

    out = tmp_path_factory.mktemp("graph-run")
    run_recipe(Recipe.from_text(RECIPE), out)
    return out


@pytest.fixture(scope="module")
def static_view(run_dir, tmp_path_factory):
    scan = tmp_path_factory.mktemp("scan")
    layers = [{"name": "features.2", "node": "/features/features.2/Conv", "drop": 1.5},
              {"name": "classifier.3", "node": "/classifier/classifier.3/Gemm", "drop": 0.25}]
    (scan / "sensitivity.json").write_text(json.dumps({"technique": "quantize", "layers": layers}))
    out = tmp_path_factory.mktemp("view")
    return build_graph_view(run_dir, "int8-static", out, sensitivity_dir=str(scan), runs=3), out


def _overlay(out, kind: str, pane: int) -> dict:
    """The node data of one overlay kind aimed at pane 0 (baseline) or 1 (variant)."""
    data = json.loads((out / "view.json").read_text())
    index = [int(src.rsplit("/", 1)[1]) for src, target in zip(data["nodeData"], data["nodeDataTargets"])
             if src.split("//", 1)[1].split("/")[0] == kind and target == data["models"][pane]["url"].split("/")[2]]
    assert len(index) == 1, (kind, data["nodeData"])
    return json.loads((out / f"node_data_{index[0]}.json").read_text())


def test_precision_overlay_colours_quantized_nodes_int8_and_the_excluded_gemm_fp32(static_view):
    """The variant pane's precision overlay: Convs and the last Gemm int8 (green), the excluded Gemm fp32 (grey)."""
    summary, out = static_view
    precision = _overlay(out, "precision", 1)["results"]
    for conv in ("/features/features.0/Conv", "/features/features.2/Conv", "/features/features.5/Conv",
                 "/classifier/classifier.3/Gemm"):
        assert precision[conv] == {"value": 8, "bgColor": PRECISION_COLOR["int8"]}
    assert precision[FC1] == {"value": 32, "bgColor": PRECISION_COLOR["fp32"]}
    assert summary["flagged"] == {}  # the one float Gemm is excluded on purpose
    # Relus 1 and 3 fold into their int8 Convs; Relu 6 stays a node, because the float Gemm reads a float copy of
    # the path through it (exclusion means float activations too, issue 27)
    assert summary["counts"]["precision"]["int8"] >= 4 and summary["counts"]["fused"] == 2


def test_latency_overlays_come_from_the_profiler_on_both_panes(static_view):
    """Per-node kernel time before (baseline pane) and after (variant pane), and their ratio on mapped nodes."""
    summary, out = static_view
    before = _overlay(out, "latency_ms", 0)["results"]
    after = _overlay(out, "latency_ms", 1)["results"]
    ratio = _overlay(out, "latency_ratio", 1)["results"]
    conv = "/features/features.2/Conv"
    assert before[conv]["value"] > 0 and after[conv]["value"] > 0
    row = next(r for r in summary["rows"] if r["node"] == conv)
    assert row["before_ms"] == pytest.approx(before[conv]["value"], rel=1e-3)
    assert ratio[conv]["value"] == pytest.approx(row["ratio"], rel=1e-2)
    # profiled at the run's largest timed batch (Compare's first), both graphs interleaved in rounds
    profile = summary["profile"]
    assert profile["before_total_ms"] > 0 and profile["batch_size"] == 1 and profile["rounds"] >= 3
    kernel = profile["kernel_speedup"]
    assert kernel["low"] <= kernel["ratio"] <= kernel["high"] and kernel["rounds"] >= 2


def test_sensitivity_overlay_reads_the_scan(static_view):
    """A scan's drops land on their nodes in both panes."""
    _, out = static_view
    assert _overlay(out, "sensitivity", 0)["results"]["/features/features.2/Conv"]["value"] == 1.5
    assert _overlay(out, "sensitivity", 1)["results"]["/classifier/classifier.3/Gemm"]["value"] == 0.25


def test_int4_view_shares_ids_across_panes(run_dir, tmp_path):
    """MatMulNBits stands for its Gemm under the Gemm's id, so Model Explorer's node-id sync highlights both."""
    summary = build_graph_view(run_dir, "int4", tmp_path, profile=False)
    graph = json.loads((tmp_path / "graph_1.json").read_text())["graphs"][0]
    ids = {node["id"]: node for node in graph["nodes"]}
    assert ids[FC1]["label"].endswith("MatMulNBits")
    assert {"key": "onnx node", "value": FC1 + "_Q4"} in ids[FC1]["attrs"]
    add = ids[FC1 + "_bias"]
    assert any(edge["sourceNodeId"] == FC1 for edge in add["incomingEdges"])
    assert _overlay(tmp_path, "precision", 1)["results"][FC1]["value"] == 4
    assert summary["counts"]["precision"]["int4"] == 2
    data = json.loads((tmp_path / "view.json").read_text())
    assert data["sync"] == {"mode": "match_node_id"} and len(data["uiState"]["paneStates"]) == 2


def test_unknown_variant_and_escaping_artifact_are_refused(run_dir, tmp_path):
    """A variant not in the run names the allowed ones; an artifact path outside the run is refused."""
    with pytest.raises(BadInputError, match="allowed: baseline, int8-static, int4"):
        build_graph_view(run_dir, "nope", tmp_path, profile=False)
    results = json.loads((run_dir / "results.json").read_text())
    bad = tmp_path / "bad-run"
    bad.mkdir()
    results["variants"][1]["artifact"] = "../../etc/passwd"
    (bad / "results.json").write_text(json.dumps(results))
    with pytest.raises(BadInputError, match="outside its run"):
        build_graph_view(bad, "int8-static", tmp_path / "v", profile=False)


def test_node_data_legends_and_skips():
    """Precision has a four-colour legend, ratios are coloured by the noise band, empty overlays are dropped."""
    precision = node_data("P", "precision", {"a": "int8", "b": "fp32", "c": None})
    assert [t["value"] for t in precision["thresholds"]] == [4, 8, 16, 32] and "c" not in precision["results"]
    ratio = node_data("R", "latency_ratio", {"fast": 0.5, "same": 1.0, "slow": 2.0})["results"]
    assert ratio["fast"]["bgColor"] != ratio["same"]["bgColor"] != ratio["slow"]["bgColor"]
    assert node_data("S", "sensitivity", {"a": None}) is None
    assert "gradient" in node_data("L", "latency_ms", {"a": 0.1, "b": 0.2})


def test_rename_nodes_rewrites_edges():
    """A renamed node keeps its old id as an attribute, and edges that named it follow."""
    graphs = {"graphs": [{"id": "g", "nodes": [{"id": "x_Q4", "attrs": []},
                                               {"id": "y", "incomingEdges": [{"sourceNodeId": "x_Q4"}]}]}]}
    rename_nodes(graphs, {"x_Q4": "x"})
    nodes = graphs["graphs"][0]["nodes"]
    assert nodes[0]["id"] == "x" and nodes[1]["incomingEdges"][0]["sourceNodeId"] == "x"


def test_explorer_data_targets_each_pane():
    """Each overlay is aimed at its own pane's model."""
    data = explorer_data([{"name": "baseline", "graph_index": 0, "node_data": [(0, "precision")]},
                          {"name": "int8", "graph_index": 1, "node_data": [(1, "precision"), (2, "mapping")]}])
    assert data["models"] == [{"url": "graphs://baseline/0"}, {"url": "graphs://int8/1"}]
    assert data["nodeDataTargets"] == ["baseline", "int8", "int8"]


def test_patched_web_app_loads_nothing_from_other_hosts():
    """The served index.html has no external font, its update check and API calls are answered locally."""
    from pathlib import Path

    import model_explorer

    from ui.graph_explorer import SHIM, patch_index

    html = patch_index((Path(model_explorer.__file__).parent / "web_app" / "index.html").read_text())
    assert "https://" not in html.replace(SHIM, "")
    assert "/api/v1/check_new_version" in html and '<base href="/">' not in html
    assert 'url(/static_files/' not in html


def test_view_json_carries_no_weight_values(static_view, run_dir):
    """A view URL is shareable (a capability link): its graph JSON names tensors and shapes but holds no weights.

    Model Explorer's ONNX adapter writes up to 1024 values of every initializer into a ``__value`` attribute by
    default; the first weights of digits-cnn's first Conv must appear nowhere in the files a view serves."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    _, out = static_view
    model = onnx.load(str(run_dir / "variants" / "baseline" / "model.onnx"))
    weight = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("0.weight"))
    served = "".join(p.read_text() for p in out.glob("*.json"))
    assert "__value" not in served
    for value in weight.flatten()[:8]:
        assert json.dumps(float(np.float32(value))) not in served


def test_the_info_panel_starts_collapsed_in_the_served_app():
    """Model Explorer's own script is patched so each pane's 370 px info panel starts collapsed (it covered three
    quarters of a pane), opening to its default width; a script of another version is left as it is."""
    from pathlib import Path

    import model_explorer

    from ui.graph_explorer import patch_app

    script = next((Path(model_explorer.__file__).parent / "web_app").glob("main-*.js")).read_text(encoding="utf-8")
    patched = patch_app(script)
    assert patched != script and "resizing=!1;hide=!0;" in patched
    assert "curSearchResults=void 0;width=0;minWidth=0;" in patched
    assert patch_app("console.log('another version')") == "console.log('another version')"


def test_a_large_graph_opens_one_readable_level_deep():
    """A graph too large to open whole opens with the layers expanded down to the first depth showing at least 8
    boxes (shapes-mobile read "Input -> main_graph -> Output"); initializer nodes, hidden, do not count."""
    from core.views.graph import layers_to_expand

    nodes = [{"id": "in", "label": "Input", "namespace": ""}, {"id": "out", "label": "Output", "namespace": ""}]
    nodes += [{"id": f"w{i}", "label": "Initializer", "namespace": ""} for i in range(20)]
    nodes += [{"id": f"conv{i}", "label": "Conv", "namespace": f"main_graph/features/features.{i}"} for i in range(9)]
    nodes += [{"id": "fc", "label": "Gemm", "namespace": "main_graph/classifier"}]
    expand = layers_to_expand({"graphs": [{"nodes": nodes}]})
    assert expand == ["main_graph/classifier___group___", "main_graph/features___group___"]
    data = explorer_data([{"name": "a", "graph_index": 0, "node_data": [], "expand": expand}], expand_all=False)
    assert data["uiState"]["paneStates"][0]["deepestExpandedGroupNodeIds"] == expand
    assert layers_to_expand({"graphs": [{"nodes": nodes[:3]}]}) == ["___all___"]  # nothing deeper: all open


def test_helper_nodes_are_drawn_inside_the_layer_they_serve():
    """A weight's DequantizeLinear the ONNX adapter puts in the top layer moves into its consumer's layer (84 of
    them in main_graph made shapes-mobile's int8 pane one long row); one feeding two layers stays where it is."""
    from core.views.graph import nest_helpers

    nodes = [{"id": "w_dq", "label": "DequantizeLinear", "namespace": "main_graph"},
             {"id": "shared_dq", "label": "DequantizeLinear", "namespace": "main_graph"},
             {"id": "conv", "label": "Conv", "namespace": "main_graph/features/features.0",
              "incomingEdges": [{"sourceNodeId": "w_dq"}, {"sourceNodeId": "shared_dq"}]},
             {"id": "gemm", "label": "Gemm", "namespace": "main_graph/classifier",
              "incomingEdges": [{"sourceNodeId": "shared_dq"}]}]
    graphs = nest_helpers({"graphs": [{"nodes": nodes}]})
    spaces = {n["id"]: n["namespace"] for n in graphs["graphs"][0]["nodes"]}
    assert spaces["w_dq"] == "main_graph/features/features.0" and spaces["shared_dq"] == "main_graph"
