"""Benchmark: how long a new browser waits for a page on an idle server: Learn's first render, and a reference
(gallery) run's Compare, Summary and Graph.

A one-sample gallery (digits-cnn, "Quick quantization") is built as `make demo` builds it, a real `streamlit run
app.py` serves it on loopback, and headless Chromium opens each page in a new browser context (no cookies, no
cache) and times navigation (or the click) to the page drawn with its script finished. Before the timed visits one
other browser opens the home page, as on any server that has served someone since it started (the imports are
done); that first visit is reported too. Usage: ``python -m benchmarks.first_render`` (or through ``make bench``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
VISITS = 3  # new browsers per page; the median is the figure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "FEATHERWEIGHT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = open(home / "server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                "--server.port", str(port), "--server.fileWatcherType", "none",
                                "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError("the dashboard did not start within 90 s")


def _visit(browser, url: str, ready_text: str, click: str | None = None, first_text: str | None = None,
           marks: list | None = None) -> float:
    """Seconds from navigation (or from clicking the radio `click` once the page is ready) to `ready_text` shown
    and the script finished, in a new browser context; with `first_text`, the seconds to it are appended to
    `marks` (Compare's first words, before its first chart: a new browser then compiles the chart library's
    script; Compare draws with Vega-Lite, 0.8 MB, where plotly.js, 4.7 MB, cost ~1.5 s more)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url)
        if click:
            page.get_by_role("radio", name=click, exact=True).first.wait_for(timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            start = time.perf_counter()
            page.get_by_role("radio", name=click, exact=True).first.click()
        if first_text:
            page.get_by_text(first_text).first.wait_for(timeout=60_000)
            marks.append(time.perf_counter() - start)
        page.get_by_text(ready_text).first.wait_for(timeout=60_000)
        page.wait_for_timeout(100)  # the rerun a click starts marks the app running within a frame or two
        page.wait_for_selector(IDLE, timeout=60_000)
        return time.perf_counter() - start
    finally:
        context.close()


def measure_first_renders(out: Path) -> dict:
    """Build the gallery, serve it, time each page for new browsers; writes out/first_render.json."""
    from playwright.sync_api import sync_playwright

    from core.jobs.gallery import build_gallery
    from core.jobs.store import RunStore
    from core.pipeline.build import RunResult

    home = out / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    entries = build_gallery(RunStore(home), samples=["digits-cnn"], presets=["Quick quantization"])
    run_id = entries[0].run_id
    duration = (RunStore(home).results(run_id) or {}).get("duration_s")
    process, url = _start_server(home)
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    report: dict = {"run_id": run_id, "own_run_s": duration}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
            report["first_visit_after_start_s"] = round(_visit(browser, f"{url}/learn", "Lesson 1:"), 3)
            pages = {"history_s": (f"{url}/history", "No runs yet", None),  # the floor: a page with nothing on it
                     "learn_s": (f"{url}/learn", "Lesson 1:", None),
                     "compare_s": (f"{url}/compare?run={run_id}", "Variant detail", None),
                     "summary_s": (f"{url}/compare?run={run_id}", "Against the baseline measured", "Summary"),
                     "graph_s": (f"{url}/graph?run={run_id}", "Precision colours", None)}
            for key, (target, text, click) in pages.items():
                times = [_visit(browser, target, text, click) for _ in range(VISITS)]
                report[key] = round(statistics.median(times), 3)
                report[key.replace("_s", "_all_s")] = [round(t, 3) for t in times]
            firsts: list = []
            for _ in range(VISITS):
                _visit(browser, f"{url}/compare?run={run_id}", "Variant detail", first_text="(no budget set)",
                       marks=firsts)
            report["compare_first_words_s"] = round(statistics.median(firsts), 3)
            # The plain alternative, same server: what a new browser waited before, Learn opening on the
            # Quantization explainer (its views computed in workers; the first visit fills the process's cache).
            report["learn_explainer_first_s"] = round(_visit(browser, f"{url}/learn", "Activations need a range",
                                                             "Quantization"), 3)
            browser.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    (out / "first_render.json").write_text(json.dumps(report), encoding="utf-8")
    report["result"] = RunResult.from_dict(RunStore(home).results(run_id) or {})  # the harness tabulates it
    return report


if __name__ == "__main__":
    measured = measure_first_renders(Path(".featherweight/bench/first_render"))
    print({k: v for k, v in measured.items() if k != "result"})
