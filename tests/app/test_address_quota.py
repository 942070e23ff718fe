"""The per-session job quota also holds per client address: new cookies from one address get no new job slots."""

from __future__ import annotations

import pytest

from app_support import errors_of, sample_choice

pytestmark = pytest.mark.timeout(300)

# Nothing to measure for long: the first job holds the only worker while the others wait in the queue.
SLOW_RECIPE = """
benchmark: {batch_sizes: [1], threads: 1, warmup: 0, runs: 1000000, max_seconds: 120}
variants:
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
"""


def _run_from(make_app, monkeypatch, owner: str, address: str | None):
    """Owner `owner` (a fresh cookie) at client `address` presses Run on the Optimize page."""
    from core.spec.recipe import Recipe
    from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, DataChoice
    from ui import services

    monkeypatch.setattr(services, "client_address", lambda: address)
    at = make_app(owner=owner, **{MODEL_KEY: sample_choice("digits-mlp"),
                                  DATA_KEY: DataChoice("sample:digits", "sample:digits", None),
                                  RECIPE_KEY: Recipe.from_text(SLOW_RECIPE), RECIPE_VERSION_KEY: 1}).run()
    at.switch_page("pages/optimize.py").run()
    at.button(key="run_button").click().run()
    return at


def test_new_owners_from_one_address_share_its_quota(make_app, fw_home, monkeypatch):
    """With FEATHERWEIGHT_JOBS_PER_ADDRESS=2, two owners from 203.0.113.7 each queue a job; a third owner (new
    cookie) from there is refused with one line naming the address and the limit; another address, a loopback
    client (no address) and an insight job are counted the same way; a finished job frees its place."""
    import streamlit as st

    from core.errors import BadInputError
    from core.jobs.insight import submit_job
    from ui import services

    monkeypatch.setenv("FEATHERWEIGHT_JOBS_PER_ADDRESS", "2")
    monkeypatch.setenv("FEATHERWEIGHT_WORKERS", "1")
    first = _run_from(make_app, monkeypatch, "browser-one", "203.0.113.7")
    second = _run_from(make_app, monkeypatch, "browser-two", "203.0.113.7")
    assert not errors_of(first) and not errors_of(second)
    runs = {first.session_state["fw_run"], second.session_state["fw_run"]}
    runner = services.process_launcher().runner
    assert len(runs) == 2 and {runner.status(r).state for r in runs} <= {"queued", "running"}

    third = _run_from(make_app, monkeypatch, "browser-three", "203.0.113.7")
    refused = errors_of(third)
    assert refused == ["your address 203.0.113.7 already has 2 job(s) queued or running (at most 2 per address, "
                       "FEATHERWEIGHT_JOBS_PER_ADDRESS); wait for one to finish"], refused
    assert third.session_state["fw_run"] is None

    # An insight job from the same address takes the same places.
    monkeypatch.setattr(services, "client_address", lambda: "203.0.113.7")
    st.session_state["fw_owner"] = "browser-four"
    with pytest.raises(BadInputError, match="your address 203.0.113.7"):
        submit_job(services.launcher().runner, "browser-four", "sensitivity",
                   {"technique": "quantize", "mode": "dynamic"}, model_spec="sample:digits-mlp", data_spec=None)

    elsewhere = _run_from(make_app, monkeypatch, "browser-five", "198.51.100.9")
    local = _run_from(make_app, monkeypatch, "browser-six", None)
    assert not errors_of(elsewhere) and not errors_of(local)

    runner.cancel(first.session_state["fw_run"])
    runner.wait(first.session_state["fw_run"], timeout=60)
    again = _run_from(make_app, monkeypatch, "browser-three", "203.0.113.7")
    assert not errors_of(again) and again.session_state["fw_run"] not in runs
    st.session_state.pop("fw_owner", None)
