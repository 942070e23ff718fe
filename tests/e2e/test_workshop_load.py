"""Workshop load: ten browser sessions on one real server press Run at about the same moment.

All ten jobs finish, each session sees only its own run, the server keeps at most FEATHERWEIGHT_WORKERS workers
alive (memory stays bounded), and the sessions waiting their turn see the queue.
"""

from __future__ import annotations

import json
import re
import threading
import time

import psutil
import pytest

from tests.e2e.conftest import StudioServer
from tests.e2e.test_studio import E2E_RECIPE, button, nav, use_sample_with_recipe, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SESSIONS = 10
WORKERS = 2
RUN_IN_URL = re.compile(r"[?&]run=([\w-]+)")
QUEUED = re.compile(r"^Queued — \d+ job\(s\) ahead")


class TreeMemory(threading.Thread):
    """Samples the server's process tree: peak total RSS and the most worker processes alive at once."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_server_rss = 0
        self.peak_workers = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                children = self.root.children(recursive=True)
                server = self.root.memory_info().rss
                total = server
                for child in children:
                    try:
                        total += child.memory_info().rss
                    except psutil.Error:
                        pass
                workers = sum(1 for c in children if c.ppid() == self.root.pid)
                self.peak_rss = max(self.peak_rss, total)
                self.peak_server_rss = max(self.peak_server_rss, server)
                self.peak_workers = max(self.peak_workers, workers)
            except psutil.Error:
                pass
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@pytest.fixture(scope="module")
def workshop_server(tmp_path_factory):
    """A server configured as README's workshop mode: WORKERS workers, a queue, one active job per session."""
    studio = StudioServer(tmp_path_factory.mktemp("fw-workshop"), env={
        "FEATHERWEIGHT_WORKERS": str(WORKERS), "FEATHERWEIGHT_MAX_QUEUE": "16", "FEATHERWEIGHT_JOBS_PER_SESSION": "1"})
    try:
        studio.start()
        yield studio
    finally:
        studio.stop()


def test_ten_sessions_submit_at_once(workshop_server, browser):
    """Ten sessions press Run within seconds of each other; every job finishes, each session sees its own run and
    only that, the waiting sessions see their place in the queue, and the server never runs more than WORKERS
    workers."""
    from core.jobs.store import RunStore

    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(SESSIONS)]
    pages = [c.new_page() for c in contexts]
    monitor = TreeMemory(workshop_server.process.pid)
    server = psutil.Process(workshop_server.process.pid)
    monitor.start()
    try:
        started = time.perf_counter()
        for page in pages:  # each picks digits-cnn and a one-variant static-int8 recipe
            use_sample_with_recipe(page, workshop_server.url, "digits-cnn", E2E_RECIPE)
        prepared = time.perf_counter()
        cpu_before = sum(server.cpu_times()[:2])
        # As fast as people in a room pressing Run when told to. A DOM click event, as a user's click sends:
        # Playwright's actionability checks take ~5 s a click with ten pages rendering on two cores, and the jobs
        # would drain faster than they were submitted.
        for page in pages:
            button(page, "Run 1 variant").dispatch_event("click")
        submitted = time.perf_counter()
        # Watch until every job is final: the server's queue (the store) and what each page shows. A queued page
        # redraws its place every 2 s, so a sweep over the pages catches it however slowly the pages render.
        store = RunStore(workshop_server.home)
        queued_seen: dict[int, str] = {}  # page index -> the first "Queued — N job(s) ahead" it showed
        peak_queued = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            active = store.active()
            peak_queued = max(peak_queued, sum(r.status == "queued" for r in active))
            for index, page in enumerate(pages):
                if index not in queued_seen:
                    texts = page.get_by_text(QUEUED).all_text_contents()
                    if texts:
                        queued_seen[index] = texts[0]
            if not active:
                break
            page.wait_for_timeout(250)
        all_done = time.perf_counter()
        server_cpu = sum(server.cpu_times()[:2]) - cpu_before
        for page in pages:
            page.get_by_text("Run completed").wait_for(timeout=60_000)
    finally:
        monitor.stop()

    runs = store.list()
    run_of_page = [RUN_IN_URL.search(page.url).group(1) for page in pages]
    figures = {"sessions": SESSIONS, "workers": WORKERS, "prepare_s": round(prepared - started, 1),
               "submit_s": round(submitted - prepared, 1), "all_done_s": round(all_done - prepared, 1),
               "jobs_per_minute": round(SESSIONS / (all_done - prepared) * 60, 1), "peak_queued": peak_queued,
               "sessions_saw_queue": len(queued_seen), "queued_seen": sorted(set(queued_seen.values())),
               "server_cpu_s": round(server_cpu, 1), "peak_tree_rss_mb": round(monitor.peak_rss / 2**20),
               "peak_server_rss_mb": round(monitor.peak_server_rss / 2**20), "peak_workers": monitor.peak_workers}
    print("\nworkshop load:", json.dumps(figures))

    assert sorted(r.status for r in runs) == ["completed"] * SESSIONS
    assert len({r.owner for r in runs}) == SESSIONS, "two sessions shared an owner"
    assert sorted(run_of_page) == sorted(r.id for r in runs), "a session follows a run that is not its own"
    assert peak_queued >= SESSIONS - WORKERS - 2, "the sessions did not press Run at about the same time"
    assert queued_seen, "no session ever saw its place in the queue"
    assert monitor.peak_workers <= WORKERS
    assert monitor.peak_rss < 6 * 2**30, figures  # server + WORKERS workers; each worker is capped besides
    assert monitor.peak_server_rss < 1.5 * 2**30, figures

    # Each session lists exactly its own run, and another session's run id in the URL shows nothing of it.
    for i in (0, SESSIONS - 1):
        page = pages[i]
        nav(page, "History")
        page.get_by_role("combobox", name="Open a run").click()
        options = page.get_by_role("option").all_text_contents()
        assert len(options) == 1 and run_of_page[i] in options[0], options
        page.keyboard.press("Escape")
        other = run_of_page[(i + 1) % SESSIONS]
        page.goto(f"{workshop_server.url}/compare?run={other}")
        wait_idle(page)
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)  # its own run's chart, instead
        assert other not in page.url and run_of_page[i] in page.url, page.url
    for context in contexts:
        context.close()
