"""The one run picker every page uses: a select box over runs, labelled stably, its status fresh beneath it.

Two ways to remember the choice: the session's open run (Compare, Cost: shared between pages and kept in the
URL), or a page's own state key (Insight's scans and tuning jobs, Learn's estimate check).
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from core.jobs.store import ACTIVE
from core.results.table import measured_on
from core.session import RUN_KEY
from ui import services


def run_label(record) -> str:
    """What the run is and when it started. No status: a select box keeps the label it selected as its value, so
    a status in it would stay at "queued" after the job finished; the status is shown, fresh, under the picker."""
    when = dt.datetime.fromtimestamp(record.created_at).strftime("%d %b %H:%M")
    return f"{record.label or record.model} · {when} · {record.id[-6:]}"


def run_picker_ui(records: list, key: str, *, remember: str | None = None, label: str = "Run"):
    """Choose a run among `records` (newest first); returns the chosen record.

    Args:
        records: the runs to offer (at least one).
        key: the select box's widget key.
        remember: a session-state key holding this page's choice; None = the session's open run, which every
            page shares and the URL keeps (page links drop the query).
        label: the select box's label.
    """
    ids = [r.id for r in records]
    by_id = {r.id: r for r in records}
    if remember is None:
        current = st.session_state.get(RUN_KEY)
        if current not in ids:
            current = ids[0]
            services.open_run(current)
        if st.query_params.get(services.RUN_PARAM) != current:
            st.query_params[services.RUN_PARAM] = current
        on_change = lambda: services.open_run(st.session_state[key])  # noqa: E731
    else:
        current = st.session_state.get(remember)
        if current not in ids:
            current = ids[0]
        on_change = lambda: st.session_state.__setitem__(remember, st.session_state[key])  # noqa: E731
        st.session_state[remember] = current
    if st.session_state.get(key) != current:
        st.session_state[key] = current
    chosen = st.selectbox(label, ids, key=key, format_func=lambda i: run_label(by_id[i]), on_change=on_change)
    record = by_id[chosen]
    if services.is_reference_run(record.id):
        reference_banner_ui(services.run_results(record.id) or {})
    elif record.status not in ACTIVE:  # queued / running: the page's live progress says so
        st.caption(f"Status: {record.status}")
    return record


def reference_banner_ui(results: dict) -> None:
    """What a gallery run is: a reference result, the machine it was measured on, read-only."""
    st.info(f"**Reference result**, precomputed for every visitor (`make demo`) and measured on "
            f"{measured_on(results)}. Read-only: your own runs stay private to your browser.",
            icon=":material/verified:")
