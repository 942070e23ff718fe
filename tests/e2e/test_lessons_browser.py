"""A workshop in two real browsers (issue 29): an attendee walks the first two lessons, runs each exercise, reads
their own result and passes "check my answer"; the teacher, with the workshop token, sees that progress and resets
the attendee, whose open page then starts over."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import StudioServer
from tests.e2e.test_studio import wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TOKEN = "workshop test passphrase 29"


@pytest.fixture(scope="module")
def workshop(tmp_path_factory):
    """A server in workshop mode: the teacher's token set, two workers."""
    server = StudioServer(tmp_path_factory.mktemp("fw-workshop"),
                          env={"FEATHERWEIGHT_WORKSHOP_TOKEN": TOKEN, "FEATHERWEIGHT_WORKERS": "2"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _context(browser):
    return browser.new_context(viewport={"width": 1400, "height": 1000})


def table_rows(page, has_text: str, timeout_s: float = 30.0) -> list[list[str]]:
    """The rows of the first st.dataframe holding `has_text`, read from the grid's accessible table (the grid itself
    is drawn on a canvas)."""
    rows_js = """(text) => { for (const grid of document.querySelectorAll('[data-testid="stDataFrame"]')) {
        const rows = Array.from(grid.querySelectorAll('tr')).map(r => Array.from(r.querySelectorAll('td'))
            .map(c => c.innerText.trim())).filter(r => r.length);
        if (rows.some(r => r.some(c => c.includes(text)))) return rows; } return []; }"""
    for _ in range(int(timeout_s * 2)):
        rows = page.evaluate(rows_js, has_text)
        if rows:
            return rows
        page.get_by_test_id("stDataFrame").last.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
    raise AssertionError(f"no table with {has_text!r}")


def _your_run_value(page, result: str) -> float:
    """The attendee's own number for one expected result, read from the lesson's table as a person would."""
    for _ in range(60):
        row = next((r for r in table_rows(page, result) if r[0] == result), None)
        match = re.match(r"([0-9.]+)×", row[2]) if row else None
        if match:
            return float(match.group(1))
        page.wait_for_timeout(500)
    raise AssertionError(f"no value of yours for {result!r} in the lesson's table")


def _do_exercise(page, answer_row: str, title: str) -> None:
    """Run the open lesson's exercise, wait for it, answer from the table and check."""
    page.get_by_role("button", name="Run the exercise").click()
    page.get_by_text("Your exercise run completed").wait_for(timeout=180_000)
    wait_idle(page)
    value = _your_run_value(page, answer_row)
    answer = page.get_by_role("spinbutton", name=re.compile("Your answer"))
    answer.fill(f"{value:.1f}")
    answer.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Check my answer").click()
    page.get_by_text(re.compile(r"^Right: your run measured")).wait_for(timeout=30_000)
    assert page.get_by_text(f"{title} ✓").count() >= 1  # the path ticks the lesson


def test_attendee_walks_two_lessons_and_the_teacher_sees_and_resets(workshop, browser):
    """Lessons 1 and 2 end with "check my answer" passing on the attendee's own runs; the teacher's page (token
    checked) counts them, and its reset empties the attendee's path in their open page."""
    attendee = _context(browser).new_page()
    attendee.goto(f"{workshop.url}/learn")
    attendee.get_by_text("Lesson 1: What a number is").wait_for(timeout=60_000)
    wait_idle(attendee)

    # A wrong answer before any run is not accepted, and says what to do.
    attendee.get_by_role("button", name="Check my answer").click()
    attendee.get_by_text("No finished run of this exercise yet").wait_for(timeout=30_000)

    _do_exercise(attendee, "int8: × smaller", "1. What a number is")
    attendee.get_by_role("button", name="Next: int8 and calibration").click()
    attendee.get_by_text("Lesson 2: int8 and calibration").wait_for(timeout=30_000)
    wait_idle(attendee)
    _do_exercise(attendee, "minmax: × faster at batch 32", "2. int8 and calibration")
    attendee.get_by_text("For the teacher").click()
    code = re.search(r"Your attendee code: ([0-9A-F]{6})",
                     attendee.get_by_text("Your attendee code").inner_text()).group(1)

    teacher = _context(browser).new_page()
    teacher.goto(f"{workshop.url}/teacher")
    teacher.get_by_label("Workshop token", exact=True).fill("not the token at all")
    teacher.get_by_role("button", name="Open the room").click()
    teacher.get_by_text("That is not the workshop token.").wait_for(timeout=30_000)
    teacher.get_by_label("Workshop token", exact=True).fill(TOKEN)
    teacher.get_by_role("button", name="Open the room").click()
    teacher.get_by_text("Where the room is").wait_for(timeout=30_000)
    wait_idle(teacher)
    room = {r[0]: r[1:] for r in table_rows(teacher, "1. What a number is")}
    assert room["1. What a number is"] == ["0", "1"] and room["2. int8 and calibration"] == ["1", "1"], room
    attendees = table_rows(teacher, code)
    assert [r for r in attendees if r[0] == code][0][2:4] == ["int8 and calibration", "2"], attendees
    assert "digits" not in teacher.locator("section.main, [data-testid='stMain']").first.inner_text()  # no models

    teacher.get_by_text("Reset an attendee's session").click()
    teacher.get_by_role("button", name="Reset this attendee").click()
    teacher.get_by_text(f"Attendee {code} was reset.").wait_for(timeout=30_000)

    attendee.get_by_text("3. Per-channel scales").click()  # any rerun of the open page
    attendee.get_by_text("0 of 7 checked").wait_for(timeout=30_000)
    assert attendee.get_by_text("1. What a number is ✓").count() == 0
    teacher.reload()
    teacher.get_by_label("Workshop token", exact=True).fill(TOKEN)
    teacher.get_by_role("button", name="Open the room").click()
    teacher.get_by_text("Where the room is").wait_for(timeout=30_000)
    wait_idle(teacher)
    room = {r[0]: r[1:] for r in table_rows(teacher, "1. What a number is")}
    assert room["1. What a number is"][1] == "0" and room["2. int8 and calibration"][1] == "0", room
