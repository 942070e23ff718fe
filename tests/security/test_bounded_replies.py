"""Bounded replies (issue 25, finding 4): what a worker sends the server about an upload is small whatever the
upload holds: a model card's tables are capped (the rest summarised, the totals kept), a session's saved state
stays under 1 MB, and the server's memory barely moves for a 300k-tensor checkpoint."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest

from conftest import many_tensor_safetensors, tiny_lm_files, zip_files

pytestmark = pytest.mark.timeout(240)

MB = 10**6


def _vm_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _upload_and_save(tmp_path, filename: str, data: bytes) -> tuple[dict, float, float, int]:
    """The dashboard's steps for an upload, in this (the server's) process: check it (in a worker), keep it in the
    session, save the session. Returns (state, Python heap peak MB, RSS growth MB, state.json bytes)."""
    from core import session

    session.apply_model_upload({}, "warm-up.zip", b"not a zip")  # the server has its modules loaded already
    state = {}
    gc.collect()
    rss_before = _vm_rss_mb()
    tracemalloc.start()
    try:
        outcome = session.apply_model_upload(state, filename, data)
        if outcome.error is None:
            session.save_session(state, tmp_path / "home", "browser-visitor")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gc.collect()
    saved = tmp_path / "home" / "sessions" / "browser-visitor" / "state.json"
    size = saved.stat().st_size if saved.exists() else 0
    return {"outcome": outcome, **state}, peak / MB, _vm_rss_mb() - rss_before, size


def test_a_300k_tensor_checkpoint_costs_the_server_at_most_50_mb(tmp_path, monkeypatch):
    """A 2.5 MB zip (a valid Llama config, a 300,000-tensor header): the probe measured a 47 MB card parsed in the
    server, a 63 MB state.json and ~380 MB of server memory. Now it is refused in one line in the worker and the
    server's heap peaks under 50 MB."""
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(tmp_path / "cache"))
    good = tiny_lm_files()
    data = zip_files({"config.json": good["config.json"], "tokenizer.json": good["tokenizer.json"],
                      "model.safetensors": many_tensor_safetensors(300_000)})
    assert len(data) < 3 * MB
    state, heap_mb, rss_mb, saved = _upload_and_save(tmp_path, "big.zip", data)
    print(f"300k-tensor zip: server heap peak {heap_mb:.1f} MB, RSS growth {rss_mb:.1f} MB, state.json {saved:,} B; "
          f"{state['outcome'].error}")
    assert heap_mb <= 50 and rss_mb <= 50
    assert saved < MB


def test_a_card_of_60000_layers_is_summarised_and_the_session_file_stays_under_1_mb(tmp_path, monkeypatch):
    """A checkpoint of 60,000 tensors (under the tensor cap) is accepted; its card lists the largest layers and one
    summary row, with every parameter still counted; the saved session is under 1 MB and the server's heap peak
    under 50 MB (before: a ~9 MB card kept in the session and saved whole)."""
    from core.session import MODEL_KEY

    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(tmp_path / "cache"))
    good = tiny_lm_files()
    data = zip_files({"config.json": good["config.json"], "tokenizer.json": good["tokenizer.json"],
                      "model.safetensors": many_tensor_safetensors(60_000, name_width=40)})
    state, heap_mb, rss_mb, saved = _upload_and_save(tmp_path, "many.zip", data)
    assert state["outcome"].error is None, state["outcome"].error
    card = state[MODEL_KEY].card
    print(f"60k-tensor zip: card {len(json.dumps(card)):,} B, {len(card['layers'])} rows; server heap peak "
          f"{heap_mb:.1f} MB, RSS growth {rss_mb:.1f} MB, state.json {saved:,} B")
    assert card["layers_total"] == 60_000 and len(card["layers"]) <= 201
    summary = card["layers"][-1]
    assert summary["summary"] and "59,800 more" in summary["name"]
    assert sum(row["params"] for row in card["layers"]) == card["params"] == 60_000
    assert abs(sum(row["share"] for row in card["layers"]) - 1.0) < 1e-9
    assert len(json.dumps(card)) < 256 * 1024
    assert saved < MB and heap_mb <= 50


def test_an_onnx_card_caps_layers_inputs_and_op_types(tmp_path):
    """An ONNX graph of 3,000 weighted nodes, 300 inputs and 300 custom op types: the card keeps 200 layers plus a
    summary, 64 inputs with their total, 64 op types plus "other", and stays under 256 KiB."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from core.io.graph import Model
    from core.measure.card import model_card

    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1]) for i in range(300)]
    nodes, inits, last = [], [], "x0"
    for i in range(3000):
        inits.append(numpy_helper.from_array(np.full([1], i, np.float32), f"w{i}"))
        nodes.append(helper.make_node("Add", [last, f"w{i}"], [f"a{i}"], name=f"add{i}"))
        last = f"a{i}"
    for i in range(300):
        nodes.append(helper.make_node(f"Custom{i}", [f"x{i}"], [f"c{i}"], domain="custom", name=f"custom{i}"))
    graph = helper.make_graph(nodes, "many", inputs, [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    card = model_card(Model("many.onnx", model))
    assert len(card["layers"]) == 201 and card["layers_total"] == 3000 and card["layers"][-1]["summary"]
    assert sum(row["params"] for row in card["layers"]) == 3000
    assert len(card["inputs"]) == 64 and card["inputs_total"] == 300
    assert len(card["op_types"]) == 65 and card["op_types"]["other"] == 300 - 64 + 1
    assert len(json.dumps(card)) < 256 * 1024


def test_an_oversized_session_state_is_neither_written_whole_nor_read_back(tmp_path):
    """A card or summary that would make state.json pass 1 MiB is saved without its tables; an old 3 MB
    state.json is not parsed at the next reload."""
    from core.session import MAX_STATE_BYTES, MODEL_KEY, ModelChoice, restore_saved_session, save_session

    card = {"task": "classification", "params": 5, "layers": [{"name": "x" * 100, "params": 1}] * 20_000}
    state = {MODEL_KEY: ModelChoice("sample:digits-mlp", "digits-mlp", card)}
    assert save_session(state, tmp_path, "browser-big")
    saved = tmp_path / "sessions" / "browser-big" / "state.json"
    assert saved.stat().st_size < MAX_STATE_BYTES
    assert json.loads(saved.read_text())["model"]["card"] == {"task": "classification", "params": 5}
    saved.write_text(json.dumps({"version": 1, "model": {"spec": "sample:digits-mlp", "label": "x",
                                                         "card": {"pad": "y" * 3_000_000}}}))
    assert not restore_saved_session({}, tmp_path, "browser-big")
