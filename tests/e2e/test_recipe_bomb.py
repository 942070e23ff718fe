"""A billion-laughs recipe typed into the Optimize page's YAML editor is refused at once, and the server keeps
answering everyone while it is (issue 15)."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_studio import button, nav, wait_idle
from tests.test_recipe import billion_laughs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


class HealthProbe(threading.Thread):
    """Polls /_stcore/health every 50 ms and records each answer's latency (a timeout counts as 5 s)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = f"{url}/_stcore/health"
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                    ok = response.status == 200
            except OSError:
                ok = False
            self.latencies.append(time.perf_counter() - started if ok else 5.0)
            self.stop.wait(0.05)


def test_alias_bomb_in_the_editor_is_refused_and_health_stays_fast(server, page):
    """The 293-byte bomb gets one short 'Recipe not applied' error; /_stcore/health answers within 1 s throughout
    and the server's memory does not grow."""
    page.goto(server.url)
    wait_idle(page)
    button(page, "Use digits-mlp").click()
    page.get_by_text("Model card · digits-mlp").wait_for(timeout=60_000)
    wait_idle(page)
    nav(page, "Optimize")
    page.get_by_role("tab", name="YAML").click()
    editor = page.get_by_role("textbox", name="Recipe (YAML)")
    editor.fill(billion_laughs(8))
    editor.press("Tab")
    wait_idle(page)
    rss_before = _rss_mb(server.process.pid)
    probe = HealthProbe(server.url)
    probe.start()
    time.sleep(0.3)
    clicked = time.perf_counter()
    button(page, "Apply YAML").click()
    page.get_by_text("Recipe not applied").wait_for(timeout=60_000)
    refused_s = time.perf_counter() - clicked
    wait_idle(page)
    time.sleep(0.5)
    probe.stop.set()
    probe.join(10)
    rss_after = _rss_mb(server.process.pid)
    errors = page.get_by_test_id("stAlertContentError").all_inner_texts()
    print(f"\nbomb refused {refused_s:.2f} s after Apply; health max {max(probe.latencies) * 1000:.0f} ms over "
          f"{len(probe.latencies)} probes; server RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert len(errors) == 1 and "alias" in errors[0] and len(errors[0]) < 200, errors
    assert len(probe.latencies) >= 5 and max(probe.latencies) < 1.0, probe.latencies
    assert rss_after - rss_before < 100, (rss_before, rss_after)
