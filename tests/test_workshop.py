"""Workshop mode without a browser: the teacher's token, attendees' progress, the room view (counts, never anyone's
models or data) and resetting one attendee's session."""

from __future__ import annotations

import json
import time

import pytest

from core.errors import BadInputError
from core.jobs.store import RunStore
from core.session import DATA_KEY, MODEL_KEY, RECIPE_KEY, SESSIONS_DIR
from core.workshop import (RESET_SEEN_KEY, WORKSHOP_TOKEN_VAR, apply_reset, attendee_code, load_progress, mark_passed,
                           open_lesson, require_teacher, reset_attendee, room_overview, runs_since_reset, set_name,
                           token_matches, workshop_token)

TOKEN = "correct horse battery staple"


def test_token_from_the_environment_is_required_long_and_matched_exactly(monkeypatch):
    """Off when unset; a short token is refused in one line; only the exact token matches."""
    monkeypatch.delenv(WORKSHOP_TOKEN_VAR, raising=False)
    assert workshop_token() is None and not token_matches(TOKEN)
    monkeypatch.setenv(WORKSHOP_TOKEN_VAR, "short")
    with pytest.raises(BadInputError, match="has 5 characters; it needs at least 16"):
        workshop_token()
    assert not token_matches("short")
    monkeypatch.setenv(WORKSHOP_TOKEN_VAR, TOKEN)
    assert token_matches(TOKEN) and token_matches(f" {TOKEN} ")
    for wrong in (None, "", TOKEN[:-1], TOKEN + "!", TOKEN.upper()):
        assert not token_matches(wrong)
    with pytest.raises(BadInputError, match="not the workshop token"):
        require_teacher("guess")


def test_progress_is_saved_per_attendee_and_ignores_junk(tmp_path):
    """Opening a lesson, passing one and naming oneself are saved; unknown lessons and bad owner ids are refused."""
    open_lesson(tmp_path, "browser-a", "calibration")
    mark_passed(tmp_path, "browser-a", "numbers")
    set_name(tmp_path, "browser-a", "Ada\x00 Lovelace" + "x" * 60)
    progress = load_progress(tmp_path, "browser-a")
    assert progress.lesson == "calibration" and progress.passed == ("numbers",)
    assert progress.name.startswith("Ada Lovelace") and len(progress.name) == 40
    assert load_progress(tmp_path, "browser-b").lesson is None
    with pytest.raises(BadInputError, match="lesson 'x' does not exist"):
        open_lesson(tmp_path, "browser-a", "x")
    with pytest.raises(BadInputError, match="invalid owner id"):
        open_lesson(tmp_path, "../etc", "numbers")
    (tmp_path / "workshop" / "browser-c.json").write_text("{not json")
    assert load_progress(tmp_path, "browser-c").passed == ()


def test_room_counts_attendees_per_lesson_and_shows_no_models_or_runs(tmp_path):
    """The teacher sees per-lesson counts, codes, names and job states, never a run's label, model or id."""
    store = RunStore(tmp_path)
    open_lesson(tmp_path, "browser-a", "numbers")
    open_lesson(tmp_path, "browser-b", "calibration")
    mark_passed(tmp_path, "browser-b", "numbers")
    secret = store.create("browser-b", "variants: []\n", label="secret-upload.onnx · 1 variant",
                          model="inputs/secret-upload.onnx")
    room = room_overview(store, queue_length=1, running=0, workers=2)
    by_id = {row["id"]: row for row in room["lessons"]}
    assert room["attendees"] == 2 and by_id["numbers"]["here"] == 1 and by_id["calibration"]["here"] == 1
    assert by_id["numbers"]["passed"] == 1 and room["queued"] == 1 and room["workers"] == 2
    job = {row["code"]: row["job"] for row in room["rows"]}
    assert job[attendee_code("browser-b")] == "queued" and job[attendee_code("browser-a")] == ""
    text = json.dumps(room)
    for private in ("secret-upload", secret.id, "browser-a", "browser-b"):
        assert private not in text
    assert room["load"]["cores"] >= 1


def test_reset_cancels_the_job_forgets_the_session_and_the_live_page_drops_it(tmp_path):
    """A reset cancels the attendee's active job, deletes their saved session and progress, makes their old runs
    no longer count, and their open session drops its model, data and recipe on its next rerun."""
    store = RunStore(tmp_path)
    owner = "browser-a"
    open_lesson(tmp_path, owner, "pruning")
    mark_passed(tmp_path, owner, "numbers")
    set_name(tmp_path, owner, "Ada")
    saved = tmp_path / SESSIONS_DIR / owner
    saved.mkdir(parents=True)
    (saved / "state.json").write_text("{}")
    old = store.create(owner, "variants: []\n", model="sample:digits-mlp")
    other = store.create("browser-b", "variants: []\n", model="sample:digits-mlp")
    live = {MODEL_KEY: "model", DATA_KEY: "data", RECIPE_KEY: "recipe"}
    assert not apply_reset(live, tmp_path, owner) and live[MODEL_KEY] == "model"  # first look: nothing to drop
    cancelled = []
    time.sleep(0.01)
    assert reset_attendee(store, attendee_code(owner).lower(), cancel=cancelled.append) == attendee_code(owner)
    assert cancelled == [old.id]  # never browser-b's job
    progress = load_progress(tmp_path, owner)
    assert progress.passed == () and progress.lesson is None and progress.name == "Ada"
    assert not saved.exists()
    assert runs_since_reset(store.list(owner), progress) == []
    assert apply_reset(live, tmp_path, owner) and MODEL_KEY not in live and RECIPE_KEY not in live
    assert live[RESET_SEEN_KEY] == progress.reset_at and not apply_reset(live, tmp_path, owner)
    assert store.get(other.id).status == "queued"
    with pytest.raises(BadInputError, match="no attendee with code"):
        reset_attendee(store, "ZZZZZZ", cancel=cancelled.append)
