"""The sidebar every page shows: the current model and data, and the jobs queued or running on this server."""

from __future__ import annotations

import streamlit as st

from core.session import DATA_KEY, MODEL_KEY
from ui import services

JOB_POLL_S = 1.0
JOBS_WERE_ACTIVE_KEY = "fw_jobs_were_active"  # lets the sidebar rerun the page once when the last job ends


def sidebar_ui() -> None:
    """Draw the sidebar: model, data, jobs (the jobs part refreshes itself while any job is active)."""
    with st.sidebar:
        model = st.session_state.get(MODEL_KEY)
        data = st.session_state.get(DATA_KEY)
        st.markdown("##### Current model")
        if model is None:
            st.caption("None yet — pick a sample or upload one on the **Model** page.")
        else:
            from core.viz import format_bytes, format_count  # pandas + plotly: not on the first render's path

            card = model.card
            st.markdown(f"**{model.label}**  \n{format_count(card.get('params'))} params · "
                        f"{format_bytes(card.get('size_bytes'))} · {card.get('task', '')}")
        st.markdown("##### Data")
        if data is None:
            st.caption("—")
        else:
            st.markdown(data.label if data.spec else "synthetic inputs (fidelity only)")
        st.markdown("##### Jobs")
        active = _any_active()
        st.fragment(_jobs_ui, run_every=JOB_POLL_S if active else None)()


def _any_active() -> bool:
    from core.store import ACTIVE

    return any(r.status in ACTIVE for r in services.store().list(limit=20))


def _jobs_ui() -> None:
    from core.store import ACTIVE

    records = services.store().list(limit=20)
    active = [r for r in records if r.status in ACTIVE]
    me = services.owner_id()
    if not active:
        st.caption("No job running.")
        if st.session_state.get(JOBS_WERE_ACTIVE_KEY):
            st.session_state[JOBS_WERE_ACTIVE_KEY] = False
            st.rerun()  # a job just finished: let the page show its final state
        return
    st.session_state[JOBS_WERE_ACTIVE_KEY] = True
    for record in (r for r in active if r.owner == me):
        if record.status == "queued":
            st.markdown(f":material/schedule: **{record.label}** — queued")
            continue
        progress = services.store().progress(record.id) or {}
        fraction = float(progress.get("fraction") or 0.0)
        step = progress.get("variant") or "starting"
        st.progress(min(1.0, fraction), text=f"{record.label}: {step} · {progress.get('elapsed_s', 0):.0f} s")
    others = [r for r in active if r.owner != me]
    if others:
        running = sum(r.status == "running" for r in others)
        st.caption(f"Other users: {running} running, {len(others) - running} queued.")
