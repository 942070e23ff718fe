"""The run picker the Compare and Cost pages share: the session's open run first, kept in the URL."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from core.session import RUN_KEY
from ui import services


def run_label(record) -> str:
    when = dt.datetime.fromtimestamp(record.created_at).strftime("%d %b %H:%M")
    return f"{record.label} · {record.status} · {when}"


def run_picker_ui(records, key: str) -> str:
    """Choose a run among `records` (the session's open run first, shared between pages); returns its id.

    Picking a run opens it for every page, and the open run stays in the URL (page links drop the query).
    """
    ids = [r.id for r in records]
    current = st.session_state.get(RUN_KEY)
    if current not in ids:
        current = ids[0]
        services.open_run(current)
    if st.session_state.get(key) != current:
        st.session_state[key] = current
    if st.query_params.get(services.RUN_PARAM) != current:
        st.query_params[services.RUN_PARAM] = current
    by_id = {r.id: r for r in records}
    return st.selectbox("Run", ids, key=key, format_func=lambda i: run_label(by_id[i]),
                        on_change=lambda: services.open_run(st.session_state[key]))
