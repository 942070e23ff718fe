"""Workshop mode without Streamlit: each attendee's place on the lesson path (saved per owner in the run store), the
teacher's token (from the environment, compared in constant time), the teacher's view of the room (how many
attendees are at each lesson, the queue, the server's load; never an attendee's models or data) and resetting one
attendee's session."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError
from core.io.files import write_atomic
from core.jobs.store import ACTIVE, RunStore
from core.session import DATA_KEY, MODEL_KEY, PRESET_KEY, RECIPE_KEY, RUN_KEY, forget_saved_session
from core.teach.lessons import LESSON_IDS, LESSONS

WORKSHOP_TOKEN_VAR = "FEATHERWEIGHT_WORKSHOP_TOKEN"
# 16 characters: a token typed from a slide is short, but one a room can guess in a workshop's hour is shorter.
MIN_TOKEN_CHARS = 16
WORKSHOP_DIR = "workshop"  # under the run store's root: workshop/<owner>.json, one attendee each
NAME_MAX_CHARS = 40
RESET_SEEN_KEY = "fw_workshop_reset_seen"  # the last reset this session applied
_OWNER = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,79}$")


# --------------------------------------------------------------------------------------------------------------
# The teacher's token


def workshop_token() -> str | None:
    """The workshop token from FEATHERWEIGHT_WORKSHOP_TOKEN (None: workshop mode is off).

    Raises:
        BadInputError: the token is shorter than MIN_TOKEN_CHARS.
    """
    token = os.environ.get(WORKSHOP_TOKEN_VAR, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise BadInputError(f"{WORKSHOP_TOKEN_VAR} has {len(token)} characters; it needs at least "
                            f"{MIN_TOKEN_CHARS} (a passphrase of a few words will do)")
    return token


def token_matches(given: str | None) -> bool:
    """Whether `given` is the workshop token. Compared in constant time, on digests so that not even the length
    leaks; False when workshop mode is off."""
    try:
        expected = workshop_token()
    except BadInputError:
        return False
    if expected is None or not isinstance(given, str):
        return False
    return hmac.compare_digest(hashlib.sha256(given.strip().encode("utf-8")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


def require_teacher(given: str | None) -> None:
    """Raise BadInputError unless `given` is the workshop token."""
    if not token_matches(given):
        raise BadInputError("that is not the workshop token")


# --------------------------------------------------------------------------------------------------------------
# An attendee's progress


@dataclass(frozen=True)
class Progress:
    """Where one attendee is: the lesson open, the lessons whose answer was checked right, an optional name, and
    the teacher's last reset of their session (runs before it do not count)."""

    owner: str
    name: str = ""
    lesson: str | None = None
    passed: tuple[str, ...] = ()
    updated_at: float = 0.0
    reset_at: float = 0.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": list(self.passed)}


def attendee_code(owner: str) -> str:
    """A short code for an attendee, the same on their page and the teacher's (a digest: it reveals nothing)."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:6].upper()


def _path(root: str | Path, owner: str) -> Path:
    if not isinstance(owner, str) or not _OWNER.match(owner):
        raise BadInputError(f"invalid owner id {owner!r}")
    return Path(root) / WORKSHOP_DIR / f"{owner}.json"


def load_progress(root: str | Path, owner: str) -> Progress:
    """The attendee's saved progress (a fresh one when there is none or the file is unreadable)."""
    try:
        data = json.loads(_path(root, owner).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Progress(owner)
    if not isinstance(data, dict):
        return Progress(owner)
    lesson = data.get("lesson") if data.get("lesson") in LESSON_IDS else None
    passed = tuple(p for p in data.get("passed") or [] if p in LESSON_IDS)
    return Progress(owner, _clean_name(data.get("name")), lesson, passed, _number(data.get("updated_at")),
                    _number(data.get("reset_at")))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _clean_name(name) -> str:
    if not isinstance(name, str):
        return ""
    return "".join(c for c in name if c.isprintable()).strip()[:NAME_MAX_CHARS]


def save_progress(root: str | Path, progress: Progress) -> Progress:
    """Write the attendee's progress atomically (stamped now) and return it."""
    progress = dataclasses.replace(progress, updated_at=time.time())
    write_atomic(_path(root, progress.owner), json.dumps(progress.to_dict()))
    return progress


def open_lesson(root: str | Path, owner: str, lesson_id: str) -> Progress:
    """Record that the attendee has lesson `lesson_id` open (what the teacher counts per lesson)."""
    if lesson_id not in LESSON_IDS:
        raise BadInputError(f"lesson {lesson_id!r} does not exist; lessons: {', '.join(LESSON_IDS)}")
    progress = load_progress(root, owner)
    if progress.lesson == lesson_id:
        return progress
    return save_progress(root, dataclasses.replace(progress, lesson=lesson_id))


def mark_passed(root: str | Path, owner: str, lesson_id: str) -> Progress:
    """Record that the attendee's answer to lesson `lesson_id` was checked right."""
    if lesson_id not in LESSON_IDS:
        raise BadInputError(f"lesson {lesson_id!r} does not exist; lessons: {', '.join(LESSON_IDS)}")
    progress = load_progress(root, owner)
    passed = tuple(i for i in LESSON_IDS if i in progress.passed or i == lesson_id)
    return save_progress(root, dataclasses.replace(progress, passed=passed, lesson=progress.lesson or lesson_id))


def set_name(root: str | Path, owner: str, name: str) -> Progress:
    """The name the attendee gives the teacher (printable, at most NAME_MAX_CHARS; optional)."""
    return save_progress(root, dataclasses.replace(load_progress(root, owner), name=_clean_name(name)))


def runs_since_reset(runs: list, progress: Progress) -> list:
    """The runs (records, newest first) the attendee started after the teacher's last reset of their session."""
    return [r for r in runs if float(getattr(r, "created_at", 0.0)) > progress.reset_at]


def apply_reset(state: MutableMapping, root: str | Path, owner: str) -> bool:
    """In the attendee's live session: when the teacher reset it since this session last looked, drop the
    session's model, data, recipe and open run (the saved copies are already gone). Returns whether it did.

    A session's first look only notes the latest reset: a new session starts empty anyway."""
    reset_at = load_progress(root, owner).reset_at
    seen = state.get(RESET_SEEN_KEY)
    state[RESET_SEEN_KEY] = reset_at
    if seen is None or reset_at <= float(seen):
        return False
    for key in (MODEL_KEY, DATA_KEY, RECIPE_KEY, PRESET_KEY, RUN_KEY):
        state.pop(key, None)
    return True


# --------------------------------------------------------------------------------------------------------------
# The teacher's view


def attendees(root: str | Path) -> list[Progress]:
    """Every attendee with saved progress, most recently active first."""
    folder = Path(root) / WORKSHOP_DIR
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if _OWNER.match(path.stem):
            found.append(load_progress(root, path.stem))
    return sorted(found, key=lambda p: p.updated_at, reverse=True)


def server_load() -> dict:
    """The machine's load: 1-minute load average, cores, memory available and total (MB; None off Linux)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    memory = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    memory[key] = int(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"load_1min": load, "cores": os.cpu_count(), "memory_available_mb": memory.get("MemAvailable"),
            "memory_total_mb": memory.get("MemTotal")}


def room_overview(store: RunStore, *, queue_length: int, running: int, workers: int) -> dict:
    """The teacher's view of the room: per lesson how many attendees have it open and how many passed it, one row
    per attendee (code, name, lesson, passed count, seconds since last seen, job state), the queue and the load.

    No model, data, run id or label of anyone's is in it: only counts, codes, the names attendees gave, and
    whether each has a job queued or running.
    """
    people = attendees(store.root)
    active = store.active()
    jobs: dict[str, str] = {}
    for record in active:
        if jobs.get(record.owner) != "running":
            jobs[record.owner] = record.status
    now = time.time()
    titles = {lesson.id: lesson.title for lesson in LESSONS}
    lessons = [{"lesson": f"{i + 1}. {lesson.title}", "id": lesson.id,
                "here": sum(p.lesson == lesson.id for p in people),
                "passed": sum(lesson.id in p.passed for p in people)} for i, lesson in enumerate(LESSONS)]
    rows = [{"code": attendee_code(p.owner), "name": p.name, "lesson": titles.get(p.lesson, "–"),
             "passed": len(p.passed), "seen_s_ago": round(max(0.0, now - p.updated_at)),
             "job": jobs.get(p.owner, "")} for p in people]
    return {"attendees": len(people), "lessons": lessons, "rows": rows,
            "queued": sum(r.status == "queued" for r in active), "running": sum(r.status == "running" for r in active),
            "queue_length": queue_length, "workers_busy": running, "workers": workers, "load": server_load()}


def reset_attendee(store: RunStore, code: str, *, cancel: Callable[[str], None]) -> str:
    """Reset the attendee with this code: cancel their queued or running jobs (`cancel(run_id)`), forget their
    saved model, data and recipe, and clear their lesson progress. Their finished runs stay theirs, but no longer
    count for a lesson; their open pages drop what they held on their next rerun. Returns the attendee's code.

    Raises:
        BadInputError: no attendee has this code.
    """
    wanted = str(code or "").strip().upper()
    match = next((p for p in attendees(store.root) if attendee_code(p.owner) == wanted), None)
    if match is None:
        raise BadInputError(f"no attendee with code {code!r}")
    for record in store.active():
        if record.owner == match.owner:
            cancel(record.id)
    forget_saved_session(store.root, match.owner)
    save_progress(store.root, Progress(match.owner, name=match.name, reset_at=time.time()))
    return wanted


__all__ = ["MIN_TOKEN_CHARS", "NAME_MAX_CHARS", "Progress", "RESET_SEEN_KEY", "WORKSHOP_DIR", "WORKSHOP_TOKEN_VAR",
           "apply_reset", "attendee_code", "attendees", "load_progress", "mark_passed", "open_lesson",
           "require_teacher", "reset_attendee", "room_overview", "runs_since_reset", "save_progress", "server_load",
           "set_name", "token_matches", "workshop_token"]
