"""The shell: st.navigation over the pages, the sidebar on every page, and a reload restoring the open run."""

from __future__ import annotations

import os

import pytest

from app_support import OWNER, add_run, errors_of, sample_choice, synthetic_results

pytestmark = pytest.mark.timeout(120)

PAGES = ("pages/model.py", "pages/optimize.py", "pages/compare.py", "pages/history.py", "pages/insight.py",
         "pages/cost.py", "pages/learn.py", "pages/teacher.py")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_empty_without_error(make_app, page):
    """Each page renders its empty state on a fresh store without an error."""
    at = make_app().run()
    at.switch_page(page).run()
    assert not errors_of(at)
    assert at.title and at.title[0].value.split(" ")[0] in ("Model", "Optimize", "Compare", "History", "Insight",
                                                            "Cost", "Learn", "Teacher")


def test_sidebar_shows_model_data_and_running_jobs(make_app, fw_home):
    """The sidebar names the current model and data and shows a running job's progress on any page."""
    from core.session import DATA_KEY, MODEL_KEY, DataChoice
    from core.jobs.store import RunStore

    make_app().run()  # starts the server's JobRunner, which settles runs left over from before it started
    store = RunStore(fw_home)
    record = store.create(OWNER, "variants: []\n", label="digits-mlp · 2 variants", model="sample:digits-mlp")
    store.set_status(record.id, "running", pid=os.getpid())  # a live python pid: not recovered as interrupted
    store.write_progress(record.id, {"kind": "step", "variant": "int8-static", "variant_index": 1,
                                     "variant_count": 3, "message": "quantize: calibrating", "fraction": 0.5,
                                     "elapsed_s": 4.2, "result": None})
    at = make_app(**{MODEL_KEY: sample_choice("digits-mlp"),
                     DATA_KEY: DataChoice("sample:digits", "sample:digits", None)})
    at.run()
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "digits-mlp" in sidebar and "sample:digits" in sidebar
    progress = at.sidebar.get("progress")
    assert progress and "int8-static" in progress[0].proto.text and "digits-mlp · 2 variants" in progress[0].proto.text
    other = store.create("browser-someone-else", "variants: []\n", label="secret model", model="sample:digits-mlp")
    at = make_app().run()
    assert "Other users: 0 running, 1 queued." in [c.value for c in at.sidebar.caption]
    shown = [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption] \
        + [p.proto.text for p in at.sidebar.get("progress")]
    assert not any("secret model" in text for text in shown)
    store.set_status(other.id, "cancelled")
    store.set_status(record.id, "completed")


def test_reload_reopens_run_from_url(make_app, fw_home):
    """A new session (a reload) with ?run=ID in the URL opens that run; without it, the owner's latest run."""
    first = add_run(fw_home, synthetic_results(), label="first")
    second = add_run(fw_home, synthetic_results(), label="second")
    at = make_app()
    at.query_params["run"] = first
    at.run()
    assert at.session_state["fw_run"] == first
    at = make_app().run()
    assert at.session_state["fw_run"] == second
    at = make_app(owner="browser-someone-else")
    at.query_params["run"] = first
    at.run()
    assert at.session_state["fw_run"] is None, "another browser's run opened from its URL"


def test_owner_id_is_stable_across_reloads():
    """Tornado re-masks the XSRF cookie on every page load; the owner id derived from it does not change."""
    from core.session import owner_from_cookie

    a = owner_from_cookie("2|379bf4b4|4c409b704bf08cececc9e1e7f73e10f6|1795930228")
    b = owner_from_cookie("2|27959bd7|5c4ef4135bfee38ffcc78e84e7307f95|1795930228")
    other = owner_from_cookie("2|27959bd7|5c4ef4135bfee38ffcc78e84e7307f96|1795930228")
    assert a == b and a != other and a.startswith("browser-")
    assert owner_from_cookie(None) is None and owner_from_cookie("") is None
