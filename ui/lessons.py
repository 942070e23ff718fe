"""The Learn page's lesson path and glossary (the lessons are data: `core.teach.lessons`): the path with what the
attendee passed, one lesson (goal, explainer link, exercise run, expected results beside the attendee's own,
"check my answer"), and the glossary the lessons link to."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from core.errors import FeatherweightError
from core.format import MISSING, format_ratio
from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, choose_sample_model
from core.teach.lessons import (GLOSSARY, LESSON_IDS, LESSONS, MEASURED_ON, Lesson, answer_choices, check_answer,
                                expected_rows, find_exercise_results, lesson)
from core.workshop import attendee_code
from ui import services
from ui.job_status import job_status_ui
from ui.sidebar import remember_session

LESSON_KEY = "learn_lesson"  # the lesson open (its id)
GLOSSARY_TERM_KEY = "learn_glossary_term"  # the term a lesson linked to
CHECK_RESULT_KEY = "learn_check"  # lesson id -> the last AnswerCheck shown
EXERCISE_RUN_KEY = "learn_exercise_run"  # lesson id -> the run "Run the exercise" started
NAME_KEY = "learn_attendee_name"


def _number(lesson_index: int) -> str:
    return f"{lesson_index + 1}"


def _path_label(lesson_id: str, passed: tuple) -> str:
    index = LESSON_IDS.index(lesson_id)
    mark = " ✓" if lesson_id in passed else ""
    return f"{_number(index)}. {lesson(lesson_id).title}{mark}"


def _show_term(term_id: str, section_key: str, glossary_section: str) -> Callable[[], None]:
    def go() -> None:
        st.session_state[GLOSSARY_TERM_KEY] = term_id
        st.session_state[section_key] = glossary_section
    return go


def _run_exercise(item: Lesson) -> None:
    """Make the exercise's sample the session's model and launch the exercise recipe as the session's job."""
    name = item.model.split(":", 1)[1]
    outcome = choose_sample_model(st.session_state, name, card=services.sample_card(name),
                                  data_summary=services.data_summary)
    if outcome.error:
        raise FeatherweightError(outcome.error)
    recipe = item.exercise_recipe()
    st.session_state[RECIPE_KEY] = recipe
    st.session_state[RECIPE_VERSION_KEY] = st.session_state.get(RECIPE_VERSION_KEY, 0) + 1
    launch = services.launcher().launch(services.owner_id(), recipe, st.session_state[MODEL_KEY],
                                        st.session_state.get(DATA_KEY))
    services.open_run(launch.run_id)
    st.session_state.setdefault(EXERCISE_RUN_KEY, {})[item.id] = launch.run_id
    remember_session()
    if launch.message:
        st.info(launch.message, icon=":material/info:")


def exercise_ui(item: Lesson) -> None:
    """The exercise: what to do, the recipe, Run, and its live progress while it runs."""
    st.markdown(item.exercise)
    with st.expander("The exercise's recipe"):
        st.code(item.exercise_recipe().to_yaml(), language="yaml")
        st.caption("**Run the exercise** launches exactly this. To change it, open it on the **Optimize** page "
                   "(it is your current recipe once you run it).")
    run_id = (st.session_state.get(EXERCISE_RUN_KEY) or {}).get(item.id)
    active = services.launcher().active_run_of()
    if st.button("Run the exercise", key=f"learn_run_exercise.{item.id}", type="primary",
                 icon=":material/play_arrow:", disabled=active is not None,
                 help="Runs in a worker: you can read on while it runs (the sidebar shows its progress)." if
                 active is None else "A run of yours is in progress: wait for it (or cancel it on Optimize)."):
        try:
            _run_exercise(item)
        except FeatherweightError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.rerun()
    if run_id and services.can_view(run_id):
        state = job_status_ui(run_id, "exercise")
        if state == "completed":
            st.success("Your exercise run completed: its numbers are below, and on **Compare**.",
                       icon=":material/check_circle:")
            st.page_link("pages/compare.py", label="Open it in Compare", icon=":material/scatter_plot:",
                         query_params={"run": run_id})


def expected_ui(item: Lesson, results: dict | None) -> None:
    """The results we measured beside the attendee's own."""
    rows = expected_rows(item, results) if results else ()
    yours = {row.label: row for row in rows}
    table = pd.DataFrame([{
        "result": e.label,
        "expected": _range_text(e.low, e.high, e.unit),
        "yours": _value_text(yours[e.label].yours, e.unit) if e.label in yours else "–",
        "": ("✓" if yours[e.label].in_range else "≠") if e.label in yours and yours[e.label].yours is not None
        else "",
        "note": e.note} for e in item.expected])
    st.dataframe(table, hide_index=True, width="stretch", placeholder=MISSING, key=f"learn_expected.{item.id}",
                 column_config={"result": "Result", "expected": "We measured", "yours": "Your run",
                                "": st.column_config.TextColumn("", width="small",
                                                                help="✓ within our range; ≠ outside it"),
                                "note": "Why it may differ"})
    st.caption(f"Measured on {MEASURED_ON}. Sizes and parameter counts are the same on any machine; speed-ups "
               "and int8 accuracy move with the CPU and with how busy the server is.")


def _range_text(low: float, high: float, unit: str) -> str:
    if unit == "×":
        return format_ratio(low) if low == high else f"{format_ratio(low)} – {format_ratio(high)}"
    text = f"{low:.3g}" if low == high else f"{low:.3g} – {high:.3g}"
    return f"{text} {unit}".strip()


def _value_text(value, unit: str) -> str:
    if value is None:
        return "–"
    return format_ratio(value) if unit == "×" else f"{value:.3g} {unit}".strip()


def question_ui(item: Lesson, results: dict | None) -> None:
    """The question, answered from the attendee's own run, and "Check my answer"."""
    q = item.question
    if q is None:
        return
    st.markdown(q.text)
    key = f"learn_answer.{item.id}"
    if q.kind == "variant":
        choices = answer_choices(results) if results else []
        answer = st.selectbox("Your answer", choices, index=None, key=key, placeholder="Pick a variant of your run",
                              disabled=not choices)
    else:
        answer = st.number_input(f"Your answer ({q.unit})" if q.unit else "Your answer", value=None, step=0.1,
                                 format="%.2f", key=key, placeholder="a number from your run")
    if st.button("Check my answer", key=f"learn_check.{item.id}", icon=":material/task_alt:"):
        verdict = check_answer(item, results, answer)
        st.session_state.setdefault(CHECK_RESULT_KEY, {})[item.id] = verdict
        if verdict.passed:
            services.lesson_passed(item.id)
            st.rerun()  # the path, drawn above, ticks the lesson
    verdict = (st.session_state.get(CHECK_RESULT_KEY) or {}).get(item.id)
    if verdict is None:
        return
    if verdict.passed:
        st.success(verdict.message, icon=":material/check_circle:")
        if item.takeaway:
            st.markdown(f"**Take-away.** {item.takeaway}")
        index = LESSON_IDS.index(item.id)
        if index + 1 < len(LESSON_IDS):
            st.button(f"Next: {LESSONS[index + 1].title}", key=f"learn_next.{item.id}", type="primary",
                      icon=":material/arrow_forward:", on_click=_go_to, args=(LESSON_IDS[index + 1],))
        else:
            st.balloons()
    else:
        st.error(verdict.message, icon=":material/cancel:")


def _go_to(lesson_id: str) -> None:
    st.session_state[LESSON_KEY] = lesson_id


def lesson_ui(item: Lesson, open_explainer: Callable[[str], None], section_key: str, explainers: list[str],
              glossary_section: str) -> None:
    """One lesson: goal, text, words, explainer link, exercise, expected results and the question."""
    index = LESSON_IDS.index(item.id)
    st.subheader(f"Lesson {_number(index)}: {item.title}")
    st.caption(f"About {item.minutes} minutes · **Goal:** {item.goal}")
    st.markdown(item.text)
    st.pills("Words in this lesson (open the glossary)", list(item.terms), key=f"learn_terms.{item.id}",
             format_func=lambda t: GLOSSARY[t].name, selection_mode="single", default=None,
             on_change=_term_clicked, args=(f"learn_terms.{item.id}", section_key, glossary_section))

    st.markdown("##### 1 · Explore")
    section = next((s for s in item.explainers if s in explainers), None)
    st.markdown(item.explainer_hint)
    if section is not None:
        st.button(f"Open the {section} explainer", key=f"learn_open_explainer.{item.id}",
                  icon=":material/open_in_new:", on_click=open_explainer, args=(section,))
    st.markdown("##### 2 · Run the exercise")
    exercise_ui(item)
    results = find_exercise_results(item, services.lesson_runs())
    st.markdown("##### 3 · What we measured, and your run")
    expected_ui(item, results)
    st.markdown("##### 4 · Check your answer")
    question_ui(item, results)


def _term_clicked(widget_key: str, section_key: str, glossary_section: str) -> None:
    term_id = st.session_state.get(widget_key)
    st.session_state[widget_key] = None
    if term_id:
        _show_term(term_id, section_key, glossary_section)()


def lessons_ui(open_explainer: Callable[[str], None], *, section_key: str, explainers: list[str],
               glossary_section: str) -> None:
    """The lesson path (left) and the open lesson (right). Light: no model is loaded until the attendee asks.

    Args:
        open_explainer: switches the Learn page to an explainer section (a widget callback).
        section_key: the Learn page's section widget key (the glossary links set it).
        explainers: the explainer sections the page has (a lesson links to the first of its own that exists).
        glossary_section: the glossary's section name.
    """
    try:
        progress = services.lesson_progress()
    except (OSError, FeatherweightError):
        progress = None
    passed = progress.passed if progress else ()
    if st.session_state.get(LESSON_KEY) not in LESSON_IDS:
        st.session_state[LESSON_KEY] = (progress.lesson if progress and progress.lesson else LESSON_IDS[0])
    path, body = st.columns([1, 3], gap="large")
    with path:
        st.markdown("##### The path")
        chosen = st.radio("Lesson", LESSON_IDS, key=LESSON_KEY, label_visibility="collapsed",
                          format_func=lambda i: _path_label(i, passed))
        st.caption(f"{len(passed)} of {len(LESSON_IDS)} checked · about "
                   f"{sum(item.minutes for item in LESSONS)} minutes in all")
        with st.expander("For the teacher"):
            st.caption(f"Your attendee code: **{attendee_code(services.owner_id())}**")
            name = st.text_input("Your name (optional)", value=progress.name if progress else "", key=NAME_KEY,
                                 max_chars=40, help="Shown only on the teacher's page, beside your progress.")
            if progress is not None and name != progress.name:
                services.set_attendee_name(name)
    try:
        if progress is None or progress.lesson != chosen:
            services.open_lesson(chosen)
    except (OSError, FeatherweightError):
        pass  # progress is for the teacher's view: a read-only store still teaches
    with body:
        lesson_ui(lesson(chosen), open_explainer, section_key, explainers, glossary_section)


def glossary_ui(back: Callable[[], None]) -> None:
    """Every term, the one a lesson linked to first."""
    chosen = st.session_state.get(GLOSSARY_TERM_KEY)
    if chosen in GLOSSARY:
        term = GLOSSARY[chosen]
        with st.container(border=True):
            st.markdown(f"#### {term.name}")
            st.markdown(term.definition)
            st.button("Back to the lesson", key="learn_glossary_back", icon=":material/arrow_back:", on_click=back)
    st.subheader("Glossary")
    for term in sorted(GLOSSARY.values(), key=lambda t: t.name.lower()):
        related = ", ".join(GLOSSARY[s].name for s in term.see_also if s in GLOSSARY)
        st.markdown(f"**{term.name}** — {term.definition}" + (f" *See also: {related}.*" if related else ""))


__all__ = ["CHECK_RESULT_KEY", "EXERCISE_RUN_KEY", "GLOSSARY_TERM_KEY", "LESSON_KEY", "glossary_ui", "lessons_ui"]
