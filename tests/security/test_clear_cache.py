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


CLEARS_HOSTILE = 10


def _server_workers(server_pid: int) -> set[int]:
    """Pids of the server's live worker processes (its children with the worker marker)."""
    import os

    from core.io.sandbox import WORKER_MARKER

    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z" or int(fields[1]) != server_pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if WORKER_MARKER.encode() in fh.read():
                    found.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _load_page(url: str, page: str, server_pid: int, timeout_s: float = 150.0,
               query: str = "") -> tuple[float, set, int]:
    """A fresh cookie-less session (a browser's reload) runs `page` to its end: (seconds, worker pids the server
    started meanwhile, elements drawn). Fails on an exception element or a script that does not finish."""
    import threading

    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    seen, stop = set(), threading.Event()

    def sample():
        while not stop.is_set():
            seen.update(_server_workers(server_pid))
            time.sleep(0.02)

    async def main():
        ws_url = url.replace("http://localhost", "ws://127.0.0.1") + "/_stcore/stream"
        async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:
            started = time.monotonic()
            await ws.send(BackMsg(rerun_script=ClientState(page_name=page, query_string=query)).SerializeToString())
            elements, deadline = 0, started + timeout_s
            while time.monotonic() < deadline:
                msg = ForwardMsg()
                msg.ParseFromString(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
                kind = msg.WhichOneof("type")
                if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                    element = msg.delta.new_element
                    assert element.WhichOneof("type") != "exception", element.exception.message
                    elements += 1
                if kind == "script_finished":
                    assert msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY, msg.script_finished
                    return time.monotonic() - started, elements
            raise TimeoutError(f"{page} did not finish within {timeout_s} s")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        took, elements = asyncio.run(main())
    finally:
        stop.set()
        sampler.join(5)
    return took, seen, elements


def _clear_caches(url: str, times: int) -> None:
    """Another cookie-less client sends clear_cache + rerun `times` times."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async def main():
        ws_url = url.replace("http://localhost", "ws://127.0.0.1") + "/_stcore/stream"
        async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:
            await _script_run(ws, BackMsg, ForwardMsg, clear_cache=False)
            for _ in range(times):
                await _script_run(ws, BackMsg, ForwardMsg, clear_cache=True)

    asyncio.run(main())


EXPLAINER = "section=Quantization"  # Learn opens on the lesson path, which loads no model: open an explainer


def test_clear_cache_from_a_stranger_costs_another_visitors_learn_page_nothing(tmp_path):
    """Visitor A loads the Learn page (its views computed in workers) and reloads it; a cookie-less client sends 10
    clear_cache messages; A's next reload starts no worker and takes at most 1.5x the reload before (the probe:
    3.5 s -> 27.6 s, every view recomputed)."""
    home = tmp_path / "home"
    home.mkdir()
    server = e2e_server.StudioServer(home, env={"FEATHERWEIGHT_WORKERS": "1"})
    try:
        server.start()
        pid = server.process.pid
        cold, cold_workers, _ = _load_page(server.url, "learn", pid, query=EXPLAINER)
        warm, warm_workers, elements = _load_page(server.url, "learn", pid, query=EXPLAINER)
        _clear_caches(server.url, CLEARS_HOSTILE)
        after, after_workers, elements_after = _load_page(server.url, "learn", pid, query=EXPLAINER)
    finally:
        server.stop()
    print(f"Learn: first load {cold:.1f} s ({len(cold_workers)} workers), reload {warm:.2f} s "
          f"({len(warm_workers)} workers), after {CLEARS_HOSTILE} clear_cache {after:.2f} s "
          f"({len(after_workers)} workers)")
    assert cold_workers, "the first load computes the views in workers"
    assert elements_after == elements
    assert not after_workers, f"the reload after clear_cache started {len(after_workers)} workers"
    # 1.5x (the bound) plus 0.5 s: a warm reload is ~1 s of script and websocket time on a loaded box
    assert after <= 1.5 * warm + 0.5, (warm, after)
