"""The sidebar every page shows: the current model and data, and the jobs queued or running on this server."""

from __future__ import annotations

import streamlit as st

from core.errors import FeatherweightError
from core.session import DATA_KEY, MODEL_KEY, live_elapsed_s, restore_saved_session, save_session
from ui import services
from ui.forms import escape_markdown

# A workshop puts dozens of sessions on one server: a session polls only while one of its own jobs is active, and
# other people's jobs starting or ending never rerun it.
JOB_POLL_S = 2.0
JOBS_WERE_ACTIVE_KEY = "fw_jobs_were_active"  # lets the sidebar rerun the page once when this session's job ends


def remember_session() -> None:
    """Save this session's model, data and recipe for its owner (a no-op when nothing changed), so that a reload
    or a server restart brings them back. Pages that change them call it last; the sidebar calls it too."""
    try:
        save_session(st.session_state, services.store().root, services.owner_id())
    except (OSError, FeatherweightError):
        pass  # a read-only or full disk loses persistence, never the page


def sidebar_ui() -> None:
    """Draw the sidebar: model, data, jobs (the jobs part refreshes itself while this session has a job).

    On a session's first run it first brings back the owner's saved model, data and recipe."""
    if services.apply_workshop_reset():
        st.toast("The workshop's teacher reset your session: start again from the lesson path.",
                 icon=":material/restart_alt:")
    try:
        restore_saved_session(st.session_state, services.store().root, services.owner_id())
    except (OSError, FeatherweightError):
        pass
    remember_session()
    with st.sidebar:
        model = st.session_state.get(MODEL_KEY)
        data = st.session_state.get(DATA_KEY)
        st.markdown("##### Current model")
        if model is None:
            st.caption("None yet — pick a sample or upload one on the **Model** page.")
        else:
            from core.format import format_bytes, format_count

            card = model.card
            st.markdown(f"**{escape_markdown(model.label)}**  \n{format_count(card.get('params'))} params · "
                        f"{format_bytes(card.get('size_bytes'))} · {card.get('task', '')}")
        st.markdown("##### Data")
        if data is None:
            st.caption("—")
        else:
            st.markdown(escape_markdown(data.label) if data.spec else "synthetic inputs (fidelity only)")
        st.markdown("##### Jobs")
        mine_active = services.launcher().active_run_of(services.owner_id()) is not None
        st.fragment(_jobs_ui, run_every=JOB_POLL_S if mine_active else None)()


def _jobs_ui() -> None:
    active = services.store().active()
    me = services.owner_id()
    mine = [r for r in active if r.owner == me]
    if not mine and st.session_state.get(JOBS_WERE_ACTIVE_KEY):
        st.session_state[JOBS_WERE_ACTIVE_KEY] = False
        st.rerun()  # this session's job just finished: let the page show its final state
    st.session_state[JOBS_WERE_ACTIVE_KEY] = bool(mine)
    if not active:
        st.caption("No job running.")
        return
    for record in mine:
        if record.status == "queued":
            st.markdown(f":material/schedule: **{record.label}** — queued")
            continue
        progress = services.store().progress(record.id) or {}
        fraction = float(progress.get("fraction") or 0.0)
        step = progress.get("variant") or "starting"
        st.progress(min(1.0, fraction), text=f"{record.label}: {step} · {live_elapsed_s(progress):.0f} s")
    others = [r for r in active if r.owner != me]
    if others:
        running = sum(r.status == "running" for r in others)
        st.caption(f"Other users: {running} running, {len(others) - running} queued.")
