"""The live status of one job (a scan, a tuning run, a diagnosis): progress polled in a fragment, a Stop button,
and the final state once it ends."""

from __future__ import annotations

import streamlit as st

from core.errors import FeatherweightError
from core.jobs.store import ACTIVE
from ui import services

POLL_S = 0.5


def job_status_ui(run_id: str, what: str) -> str | None:
    """A queued / running job's progress (polled) with a Stop button; the final state once it ends. Returns the
    job's state, or None when the run is gone."""
    runner = services.launcher().runner
    try:
        status = runner.status(run_id)
    except FeatherweightError:
        st.info(f"That {what} is no longer in the store.")
        return None
    if status.state not in ACTIVE:
        if status.state == "failed":
            st.error(f"The {what} failed: {status.error}", icon=":material/error:")
        elif status.state in ("cancelled", "interrupted"):
            st.warning(f"The {what} was {status.state}: {status.error or 'stopped'}. What it finished is kept.",
                       icon=":material/stop_circle:")
        return status.state

    @st.fragment(run_every=POLL_S)
    def live() -> None:
        now = runner.status(run_id)
        if now.state not in ACTIVE:
            st.rerun()
        progress = now.progress or {}
        if now.state == "queued":
            st.info(f"The {what} is queued…", icon=":material/schedule:")
        else:
            text = (f"{progress.get('message')} · {progress.get('elapsed_s', 0.0):.0f} s" if progress
                    else "Starting the worker (loading the model and data)…")
            st.progress(min(1.0, float(progress.get("fraction") or 0.0)), text=text)
        if st.button("Stop", key=f"stop.{run_id}", icon=":material/stop_circle:",
                     help="Stops at the next check; what is finished (the tuner's best so far) is kept."):
            runner.cancel(run_id)

    live()
    return status.state
