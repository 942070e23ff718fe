"""Browser-test fixtures: a real `streamlit run app.py` server on a free port with its own store, and headless
Chromium (the system's `chromium`, launched through playwright)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # Pages in the background keep their timers: every session's progress view polls from its page.
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} was not healthy within {timeout} s")


class StudioServer:
    """`streamlit run app.py` on a free port with its own store (and `env` on top of this process's environment);
    can be restarted on the same store."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home = home
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self) -> None:
        port = _free_port()
        env = {**os.environ, **self.extra_env, "FEATHERWEIGHT_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.setdefault("FEATHERWEIGHT_CACHE", str(ROOT / ".featherweight" / "cache"))
        self._log = open(self.home / "server.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://localhost:{port}"
        _wait_healthy(self.url, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
        self.process = self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def leaves_loopback(url: str) -> bool:
    """Whether a browser request for `url` would leave this machine (data:, blob: and about: never do)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome", "chrome-extension", "file"):
        return False
    return (parts.hostname or "") not in LOOPBACK_HOSTS


@pytest.fixture(autouse=True)
def no_request_leaves_loopback(monkeypatch):
    """Every browser context of every e2e test routes its requests through a guard: a request to anything but
    loopback (a favicon from fonts.gstatic.com, a CDN script) is blocked and fails the test at its end."""
    from playwright.sync_api import Browser

    offenders: list[str] = []
    original = Browser.new_context

    def guard(route):
        if leaves_loopback(route.request.url):
            offenders.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def new_context(self, *args, **kwargs):
        context = original(self, *args, **kwargs)
        context.route("**/*", guard)
        # Requests a route does not see (a favicon fetched by the browser itself) are still reported here.
        context.on("request", lambda request: offenders.append(request.url) if leaves_loopback(request.url)
                   else None)
        return context

    monkeypatch.setattr(Browser, "new_context", new_context)
    yield offenders
    assert not offenders, f"requests left the machine: {sorted(set(offenders))[:10]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Streamlit server for this module's tests, stopped at the end."""
    studio = StudioServer(tmp_path_factory.mktemp("fw-home"))
    try:
        studio.start()
        yield studio
    finally:
        studio.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system package (playwright cannot download browsers here)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        message = "chromium is not installed (make chromium, or apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser must not pass as skipped tests
        pytest.skip(message)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    yield tab
    context.close()
