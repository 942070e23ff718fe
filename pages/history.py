"""History page: every run in the store (it survives reloads and restarts); reopen one, or compare several."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core.views import charts as viz
from core.results.compare import combine_runs
from core.errors import FeatherweightError
from core.jobs.insight import job_kind
from core.results.table import batch_sizes_of, speedup_text
from core.session import RUN_KEY
from core.jobs.store import ACTIVE
from core.format import MISSING
from ui import services
from ui.shell import ensure_app_shell
from ui.tables import results_table_ui

ensure_app_shell()

OPEN_PICK_KEY = "history_open_pick"
COMPARE_PICK_KEY = "history_compare_pick"
DELETE_PICK_KEY = "history_delete_pick"
RECENT = 100


def runs_frame(records, me: str) -> pd.DataFrame:
    """One row per run: when, what, status, how many variants finished, the best speed-up and size ratio."""
    rows = []
    for r in records:
        results = services.run_results(r.id) or {}
        # Counted without the baseline, as everywhere else ("digits-cnn · 3 variants").
        variants = [v for v in results.get("variants") or [] if v.get("name") != "baseline"]
        ok = [v for v in variants if v.get("status") == "ok"]
        frame = services.run_frame(r.id) if ok else None
        sizes = batch_sizes_of(results)
        best_speed = best_small = None
        if frame is not None and sizes:
            others = frame[(frame["name"] != "baseline") & (frame["status"] == "ok")]
            if not others.empty:
                ratios = others[f"speedup_bs{sizes[-1]}"]
                if ratios.notna().any():  # the largest speed-up, with its interval and the variant it belongs to
                    fastest = others.loc[ratios.idxmax()]
                    best_speed = f"{speedup_text(fastest, sizes[-1])} · {fastest['name']}"
                best_small = others["x_smaller"].max()
        rows.append({"created": dt.datetime.fromtimestamp(r.created_at), "run": r.label, "model": r.model,
                     "data": r.data or "synthetic", "status": r.status, "variants": f"{len(ok)}/{len(variants)}",
                     "best_x_smaller": best_small, "best_x_faster": best_speed,
                     "duration_s": results.get("duration_s"), "by": "you" if r.owner == me else "other",
                     "id": r.id})
    return pd.DataFrame(rows)


st.title("History")
st.caption("Every run is kept on disk: a browser refresh or a server restart loses nothing. "
           + ("Runs of everyone on this server are listed." if services.shared_history() else
              "You see the runs started from this browser."))
listed = services.visible_runs(RECENT)
# Insight jobs (sensitivity scans, tuning runs, profiles, scaling) are listed on the Insight page, as what they are.
records = [r for r in listed if job_kind(services.run_dir(r.id)) == "run"]
insight_jobs = len(listed) - len(records)
if insight_jobs:
    st.caption(f"{insight_jobs} Insight job{'s are' if insight_jobs != 1 else ' is'} not listed here: find "
               f"{'them' if insight_jobs != 1 else 'it'} on the **Insight** page.")
if not records:
    st.info("No runs yet. Runs you start on **Optimize** are listed here, newest first.", icon=":material/history:")
    st.page_link("pages/optimize.py", label="Go to Optimize", icon=":material/arrow_forward:")
    st.stop()

table = runs_frame(records, services.owner_id())
st.dataframe(table, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(table)),
             placeholder=MISSING, column_config={
    "created": st.column_config.DatetimeColumn("Started", format="D MMM, HH:mm"),
    "run": st.column_config.TextColumn("Run"), "model": st.column_config.TextColumn("Model"),
    "data": st.column_config.TextColumn("Data"), "status": st.column_config.TextColumn("Status", width="small"),
    "variants": st.column_config.TextColumn("OK / variants", width="small",
                                            help="Variants that finished, of those in the recipe (the baseline, "
                                                 "measured in every run, is not counted)"),
    "best_x_smaller": st.column_config.NumberColumn("Best × smaller", format="%.2f×"),
    "best_x_faster": st.column_config.TextColumn("Best × faster",
                                                 help="The largest speed-up at the run's largest batch size, with "
                                                      "its 95% interval, and the variant it belongs to"),
    "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.1f"),
    "by": st.column_config.TextColumn("By", width="small"), "id": st.column_config.TextColumn("Id")})

by_id = {r.id: r for r in records}


def label(run_id: str) -> str:
    r = by_id[run_id]
    # No status in a select box's label: it keeps the label it selected, so a status there goes stale (the table
    # above shows the status).
    return f"{r.label} · {dt.datetime.fromtimestamp(r.created_at).strftime('%d %b %H:%M')} · {run_id}"


c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
pick = c1.selectbox("Open a run", list(by_id), key=OPEN_PICK_KEY, format_func=label)
if c2.button("Open in Compare", icon=":material/scatter_plot:", type="primary", width="stretch"):
    services.open_run(pick)
    st.switch_page("pages/compare.py")

st.subheader("Compare runs")
chosen = st.multiselect("Runs to compare", [r.id for r in records if services.run_results(r.id)],
                        key=COMPARE_PICK_KEY, format_func=label, max_selections=6,
                        help="Pick two or more runs: their variants on one chart. Ratios stay same-run ratios.")
if len(chosen) < 2:
    st.caption("Pick at least two runs to put their variants side by side.")
else:
    runs = {run_id: services.run_results(run_id) for run_id in chosen}
    common = sorted(set.intersection(*[set(batch_sizes_of(r)) for r in runs.values()]))
    if not common:
        st.warning("These runs timed no batch size in common.", icon=":material/warning:")
    else:
        batch_size = st.selectbox("Batch size", common, index=len(common) - 1, key="history_bs")
        combined = combine_runs(runs)
        st.plotly_chart(viz.history_figure(combined, batch_size), theme=None, key="history_chart")
        for run_id in chosen:
            st.markdown(f"**{label(run_id)}**")
            frame = services.run_frame(run_id)
            results_table_ui(frame, batch_sizes_of(runs[run_id]), key=f"history_table.{run_id}")

with st.expander("Delete a run"):
    me = services.owner_id()
    finished = [r.id for r in records if r.status not in ACTIVE and r.owner == me]
    if not finished:
        st.caption("Only your own finished runs can be deleted.")
    else:
        target = st.selectbox("Run to delete", finished, key=DELETE_PICK_KEY, format_func=label)
        confirm = st.checkbox("Yes, delete its results and model files", key="history_delete_confirm")
        if st.button("Delete run", icon=":material/delete:", disabled=not confirm):
            try:
                services.store().delete(target, me)
            except FeatherweightError as exc:
                st.error(str(exc))
            else:
                if st.session_state.get(RUN_KEY) == target:
                    services.open_run(None)
                st.rerun()
