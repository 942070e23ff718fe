"""Teacher page (workshop mode): behind the workshop token, how many attendees are at each lesson, the queue, the
server's load, and resetting one attendee's session. Never an attendee's models or data."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.errors import FeatherweightError
from core.format import MISSING
from core.workshop import MIN_TOKEN_CHARS, WORKSHOP_TOKEN_VAR, token_matches, workshop_token
from ui import services
from ui.shell import ensure_app_shell

ensure_app_shell()

TOKEN_KEY = "teacher_token"  # the token this session entered (kept only while it matches)
TOKEN_INPUT_KEY = "teacher_token_input"
RESET_PICK_KEY = "teacher_reset_pick"
RESET_OUTCOME_KEY = "teacher_reset_outcome"  # (kind, message) of the last reset, shown until the next action
REFRESH_S = 5.0  # the room view refreshes itself: a teacher watches it during the exercises
WRONG_TOKEN_DELAY_S = 1.0  # each wrong guess costs the guesser a second


def login_ui() -> None:
    """The token form: a right token is kept in this session; a wrong one waits a second and says so."""
    with st.form("teacher_login"):
        given = st.text_input("Workshop token", type="password", key=TOKEN_INPUT_KEY,
                              help=f"The value of {WORKSHOP_TOKEN_VAR} on the server.")
        if st.form_submit_button("Open the room", type="primary"):
            if token_matches(given):
                st.session_state[TOKEN_KEY] = given
                st.rerun()
            time.sleep(WRONG_TOKEN_DELAY_S)
            st.error("That is not the workshop token.", icon=":material/lock:")


@st.fragment(run_every=REFRESH_S)
def room_ui(token: str) -> None:
    """The room: attendees per lesson, every attendee's code, lesson and job, the queue and the load."""
    try:
        room = services.workshop_room(token)
    except FeatherweightError as exc:
        st.error(str(exc), icon=":material/lock:")
        return
    load = room["load"]
    c = st.columns(4)
    c[0].metric("Attendees", room["attendees"])
    c[1].metric("Jobs running", f"{room['running']} of {room['workers']} workers")
    c[2].metric("Jobs queued", room["queued"])
    memory = (f"{load['memory_available_mb'] / 1024:.1f} of {load['memory_total_mb'] / 1024:.0f} GiB free"
              if load.get("memory_total_mb") else None)
    c[3].metric("Load (1 min)", "–" if load.get("load_1min") is None else f"{load['load_1min']:.1f}",
                f"{load.get('cores') or '?'} cores" + (f" · {memory}" if memory else ""), delta_color="off",
                delta_arrow="off", help="Runnable processes averaged over a minute; above the core count, jobs "
                                        "and pages wait for a CPU.")
    lessons = pd.DataFrame(room["lessons"]).drop(columns=["id"])
    st.markdown("##### Where the room is")
    st.dataframe(lessons, hide_index=True, width="stretch", placeholder=MISSING, key="teacher_lessons",
                 column_config={"lesson": "Lesson", "here": st.column_config.NumberColumn("At it now"),
                                "passed": st.column_config.NumberColumn("Answer checked")})
    st.markdown("##### Attendees")
    if not room["rows"]:
        st.caption("Nobody has opened a lesson yet. Attendees appear here when they open Learn.")
        return
    rows = pd.DataFrame(room["rows"])
    st.dataframe(rows, hide_index=True, width="stretch", placeholder=MISSING, key="teacher_attendees",
                 column_config={"code": "Code", "name": "Name", "lesson": "Lesson open",
                                "passed": st.column_config.NumberColumn("Lessons passed"),
                                "seen_s_ago": st.column_config.NumberColumn("Last active (s ago)"),
                                "job": "Job"})
    st.caption("Each attendee sees their code under *For the teacher* on the Learn page. Names are what "
               "attendees typed; models, data and runs stay theirs.")


def _reset(token: str) -> None:
    """The reset button's callback: it runs before the script, once per click, and leaves its outcome in the
    session, so the message stays until the teacher acts again (a rerun cannot lose it)."""
    code = st.session_state.get(RESET_PICK_KEY)
    try:
        services.reset_attendee(token, code)
    except FeatherweightError as exc:
        st.session_state[RESET_OUTCOME_KEY] = ("error", str(exc))
    else:
        st.session_state[RESET_OUTCOME_KEY] = ("success", f"Attendee {code} was reset.")


def reset_ui(token: str) -> None:
    """Reset one attendee's session: their job is cancelled, their model, data, recipe and progress forgotten."""
    try:
        codes = [row["code"] for row in services.workshop_room(token)["rows"]]
    except FeatherweightError:
        return
    outcome = st.session_state.get(RESET_OUTCOME_KEY)
    with st.expander("Reset an attendee's session", expanded=outcome is not None):
        if outcome is not None:
            kind, text = outcome
            if kind == "error":
                st.error(text, icon=":material/error:")
            else:
                st.success(text, icon=":material/check_circle:")
        if not codes:
            st.caption("No attendee yet.")
            return
        st.selectbox("Attendee code", codes, key=RESET_PICK_KEY,
                     on_change=lambda: st.session_state.pop(RESET_OUTCOME_KEY, None))
        st.caption("Cancels their queued or running job, forgets their model, data and recipe and their lesson "
                   "progress; their open page starts over. Their finished runs stay in their History.")
        st.button("Reset this attendee", key="teacher_reset", icon=":material/restart_alt:", on_click=_reset,
                  args=(token,))


st.title("Teacher")
try:
    configured = workshop_token()
except FeatherweightError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()
if configured is None:
    st.info(f"Workshop mode is off. Start the server with {WORKSHOP_TOKEN_VAR} set to a passphrase of at least "
            f"{MIN_TOKEN_CHARS} characters (README, \"Workshop mode\"), then enter it here.", icon=":material/lock:")
    st.stop()
token = st.session_state.get(TOKEN_KEY)
if not token_matches(token):
    st.session_state.pop(TOKEN_KEY, None)
    st.caption("The room's progress, queue and load, for the person running the workshop.")
    login_ui()
    st.stop()
room_ui(token)
reset_ui(token)
