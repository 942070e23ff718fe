"""Benchmark: the first draw of a 200-node graph on the Graph page, in headless Chromium.

A 200-node ONNX chain (100 x Conv + Relu) and its fp16 variant go through the real pipeline and the graph worker's
view builder; the patched Model Explorer folder the dashboard serves is served here by a plain static file server on
loopback (the same bytes Streamlit's component route serves), and the time from navigation to both panes drawn is
measured. Usage: ``python -m benchmarks.graph_draw`` (or through ``make bench``).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

CHAIN_BLOCKS = 100  # Conv + Relu each: 200 nodes


def chain_model(path: Path, blocks: int = CHAIN_BLOCKS) -> int:
    """Write a Conv/Relu chain with 2 x `blocks` nodes; returns the node count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "input"
    for i in range(blocks):
        w = numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), f"block{i}.weight")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [current, w.name], [f"c{i}"], name=f"/block{i}/Conv", pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"/block{i}/Relu"))
        current = f"r{i}"
    nodes.append(helper.make_node("Flatten", [current], ["logits"], name="/head/Flatten"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    model.ir_version = 8
    onnx.save(model, str(path))
    return len(nodes)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D102 - no access log on the console
        pass


def _serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def measure_first_draw(out: Path, blocks: int = CHAIN_BLOCKS) -> dict:
    """Build the run and the view, then time the first draw in Chromium; writes out/graph_draw.json."""
    import model_explorer
    from playwright.sync_api import sync_playwright

    from core.jobs.graph import build_graph_view
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe
    from ui.graph_explorer import patch_app, patch_index

    out.mkdir(parents=True, exist_ok=True)
    nodes = chain_model(out / "chain.onnx", blocks)
    recipe = Recipe.from_dict({"model": str(out / "chain.onnx"), "benchmark": {
        "batch_sizes": [1], "threads": 1, "warmup": 1, "runs": 3, "max_seconds": 0.5},
        "variants": [{"name": "fp16", "steps": [{"technique": "quantize", "mode": "fp16"}]}]})
    result = run_recipe(recipe, out / "run")
    web = out / "web"
    shutil.rmtree(web, ignore_errors=True)
    shutil.copytree(Path(model_explorer.__file__).parent / "web_app", web)
    (web / "index.html").write_text(patch_index((web / "index.html").read_text(encoding="utf-8")), encoding="utf-8")
    for script in web.glob("main-*.js"):  # as the dashboard serves it: the info panel starts collapsed
        script.write_text(patch_app(script.read_text(encoding="utf-8")), encoding="utf-8")
    for sheet in web.glob("*.css"):
        sheet.write_text(sheet.read_text(encoding="utf-8").replace("url(/static_files/", "url(static_files/"),
                         encoding="utf-8")
    token = "benchmark-view-0123456789"
    build_graph_view(out / "run", "fp16", web / "views" / token, profile=False)
    data = json.loads((web / "views" / token / "view.json").read_text(encoding="utf-8"))
    server = _serve(web)
    url = (f"http://127.0.0.1:{server.server_address[1]}/index.html?fw_view={token}"
           f"&data={quote(json.dumps(data, separators=(',', ':')))}")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # Warm the browser's start-up (not the page): a blank page first.
            page.goto("about:blank")
            start = time.perf_counter()
            page.goto(url)
            page.get_by_text("fp16 | fp16").wait_for(timeout=60_000)
            titled_s = time.perf_counter() - start
            page.wait_for_function("() => document.querySelectorAll('canvas').length >= 2 && "
                                   "Array.from(document.querySelectorAll('canvas')).filter("
                                   "c => c.getBoundingClientRect().width > 50).length >= 2", timeout=60_000)
            canvas_s = time.perf_counter() - start
            # the overlays' list is in the (collapsed) info panel: attached once the node data is loaded
            page.get_by_text("Precision (32 fp32").first.wait_for(state="attached", timeout=60_000)
            drawn_s = time.perf_counter() - start
            browser.close()
    finally:
        server.shutdown()
    report = {"nodes": nodes, "first_draw_s": round(drawn_s, 3), "panes_titled_s": round(titled_s, 3),
              "canvases_s": round(canvas_s, 3)}
    (out / "graph_draw.json").write_text(json.dumps(report), encoding="utf-8")
    report["result"] = result
    return report


if __name__ == "__main__":
    measured = measure_first_draw(Path(".featherweight/bench/graph_draw"))
    print({k: v for k, v in measured.items() if k != "result"})
