"""The History page: runs persist in the store, can be reopened in Compare, compared and deleted."""

from __future__ import annotations

import pytest

from app_support import add_run, errors_of, synthetic_results

pytestmark = pytest.mark.timeout(120)


def _history(make_app, **kwargs):
    at = make_app(**kwargs).run()
    at.switch_page("pages/history.py").run()
    return at


def test_lists_runs_from_the_store(make_app, fw_home):
    """A new session (as after a reload or a restart) lists the runs on disk with their best ratios."""
    add_run(fw_home, synthetic_results(), label="older")
    add_run(fw_home, synthetic_results(), label="newer")
    at = _history(make_app)
    assert not errors_of(at)
    table = at.dataframe[0].value
    assert list(table["run"]) == ["newer", "older"]
    assert table["variants"].iloc[0] == "3/4"  # the baseline is not counted, as in the run labels
    assert table["best_x_smaller"].iloc[0] == pytest.approx(7.5)
    assert table["best_x_faster"].iloc[0] == "4.44x · pruned"  # a run from before intervals: the p50 ratio


def test_best_speed_up_reads_with_its_interval_and_variant(make_app, fw_home):
    """The History table's best speed-up is the run's own interleaved figure with its 95% interval, and names the
    variant it belongs to (issue 26: a bare maximum over noisy ratios read as a sure number)."""
    results = synthetic_results()
    for variant in results["variants"]:
        if variant["name"] == "pruned":
            variant["speedup"] = {"256": {"ratio": 4.4, "low": 4.2, "high": 4.6, "rounds": 30, "converged": True}}
        elif variant["name"] in ("int8-static", "fp16"):
            variant["speedup"] = {"256": {"ratio": 1.01, "low": 0.97, "high": 1.04, "rounds": 30, "converged": True}}
    add_run(fw_home, results, label="with intervals")
    at = _history(make_app)
    assert not errors_of(at)
    assert at.dataframe[0].value["best_x_faster"].iloc[0] == "4.40x (4.20–4.60) · pruned"


def test_only_own_runs_unless_shared(make_app, fw_home, monkeypatch):
    """Another browser's runs are hidden, unless the server shares its history."""
    add_run(fw_home, synthetic_results(), label="someone else's", owner="browser-other")
    at = _history(make_app)
    assert any("No runs yet" in i.value for i in at.info)
    monkeypatch.setenv("FEATHERWEIGHT_SHARED_HISTORY", "1")
    at = _history(make_app)
    assert list(at.dataframe[0].value["by"]) == ["other"]


def test_open_in_compare(make_app, fw_home):
    """Choosing a run and pressing 'Open in Compare' opens it there."""
    old = add_run(fw_home, synthetic_results(), label="old one")
    add_run(fw_home, synthetic_results(), label="new one")
    at = _history(make_app)
    at.selectbox(key="history_open_pick").set_value(old)
    [b for b in at.button if b.label == "Open in Compare"][0].click().run()
    assert at.session_state["fw_run"] == old
    assert at.title[0].value == "Compare"


def test_compare_two_runs(make_app, fw_home):
    """Two runs side by side: one chart with a trace per run, and each run's table."""
    import json

    a = add_run(fw_home, synthetic_results(), label="run A")
    b = add_run(fw_home, synthetic_results(), label="run B")
    at = _history(make_app)
    at.multiselect(key="history_compare_pick").set_value([a, b]).run()
    assert not errors_of(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"].split(" ")[0] for t in spec["data"]] == [a, b]
    assert len(at.dataframe) == 3


def test_delete_own_run(make_app, fw_home):
    """Deleting needs a confirmation and removes the run from the store."""
    from core.jobs.store import RunStore

    run_id = add_run(fw_home, synthetic_results())
    at = _history(make_app)
    delete = [b for b in at.button if b.label == "Delete run"][0]
    assert delete.disabled
    at.checkbox(key="history_delete_confirm").check().run()
    [b for b in at.button if b.label == "Delete run"][0].click().run()
    assert RunStore(fw_home).list() == []
    assert not (fw_home / "runs" / run_id).exists()
