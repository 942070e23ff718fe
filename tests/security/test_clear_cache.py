"""A raw websocket client with no cookie sends Streamlit's `clear_cache` to a real server: the server keeps one job
runner, and every queued and running run keeps its status."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("e2e_server", ROOT / "tests" / "e2e" / "conftest.py")
e2e_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e_server)  # StudioServer: the same real `streamlit run app.py` the browser tests use

CLEARS = 3


async def _script_run(ws, back_msg_cls, forward_msg_cls, clear_cache: bool, timeout_s: float = 90.0) -> None:
    """Optionally send clear_cache, then rerun the app (as the browser does after "Clear caches") and wait for the
    script run to finish."""
    from streamlit.proto.ClientState_pb2 import ClientState

    if clear_cache:
        await ws.send(back_msg_cls(clear_cache=True).SerializeToString())
    await ws.send(back_msg_cls(rerun_script=ClientState()).SerializeToString())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
        msg = forward_msg_cls()
        msg.ParseFromString(raw)
        if msg.WhichOneof("type") == "script_finished":
            return
    raise TimeoutError("the script run did not finish")


def _session(url: str, store, seed_jobs) -> tuple[dict, dict, float]:
    """One cookie-less websocket: a first script run (it starts the server's runner), seed_jobs(), then CLEARS x
    (clear_cache + rerun). Returns the statuses before and after, and the time the clears took."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async def main():
        ws_url = url.replace("http://localhost", "ws://127.0.0.1") + "/_stcore/stream"
        async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:
            await _script_run(ws, BackMsg, ForwardMsg, clear_cache=False)
            ids = seed_jobs()
            before = {run_id: store.get(run_id).status for run_id in ids}
            started = time.monotonic()
            for _ in range(CLEARS):
                await _script_run(ws, BackMsg, ForwardMsg, clear_cache=True)
            took = time.monotonic() - started
            return before, {run_id: store.get(run_id).status for run_id in ids}, took

    return asyncio.run(main())


def _server_file(home: Path) -> dict | None:
    try:
        return json.loads((home / "server.json").read_text(encoding="utf-8"))
    except OSError:
        return None


def test_clear_cache_from_a_raw_websocket_keeps_the_runner_and_every_run(tmp_path):
    """Three clear_cache messages leave one runner (server.json: same id, one start) and a queued and a running
    run exactly as they were: nothing is marked interrupted."""
    from core.io.sandbox import WORKER_MARKER
    from core.jobs.store import RunStore

    home = tmp_path / "home"
    home.mkdir()
    server = e2e_server.StudioServer(home, env={"FEATHERWEIGHT_WORKERS": "1"})
    # A stand-in worker: alive, a child of a Python process, with the worker marker on its command line.
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", WORKER_MARKER])
    store = RunStore(home)

    seen = {}

    def seed_jobs():
        seen["first"] = _server_file(home)  # the first script run started the server's runner
        running = store.create("browser-someone", "variants: []\n", label="someone's running run")
        store.set_status(running.id, "running", pid=worker.pid)
        queued = store.create("browser-someone-else", "variants: []\n", label="someone else's queued run")
        return [running.id, queued.id]

    try:
        server.start()
        before, after, took = _session(server.url, store, seed_jobs)
        last = _server_file(home)
    finally:
        server.stop()
        worker.kill()
        worker.wait()
    print(f"{CLEARS} clear_cache + rerun in {took:.2f} s; statuses before {before}, after {after}")
    assert list(before.values()) == ["running", "queued"]
    assert after == before, f"clear_cache changed other users' runs: {before} -> {after}"
    first = seen["first"]
    assert first and last["runner_id"] == first["runner_id"] and last["pid"] == first["pid"]
    assert last["runners_started"] == 1, last
