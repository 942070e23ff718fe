"""Shared validators: every check of a recipe, a job config or a step option says the bad value and the allowed
ones, in one line (the spec layer's vocabulary; techniques and analyses reuse it)."""

from __future__ import annotations

import math
import reprlib
from typing import Any

from core.errors import BadInputError

# What an error message may echo of a value: a few items, a short string, at most ECHO_CHARS in all. A value
# can be as big as the recipe allows, and `repr` of it in full once took 5 s and 2 GB (issue 15).
ECHO_CHARS = 80
_ECHO = reprlib.Repr()
_ECHO.maxlevel = 3
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxset = _ECHO.maxfrozenset = _ECHO.maxdict = 4
_ECHO.maxstring = _ECHO.maxother = 60
_ECHO.maxlong = 40


def brief_repr(value: Any) -> str:
    """`repr(value)` cut to at most ECHO_CHARS characters, in time that does not grow with the value's size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # repr() of an int over 4,300 digits raises (Python's int-to-text limit): say its size instead
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits>"
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS - 3] + "..."


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise BadInputError(f"{name}={brief_repr(value)} is not supported; allowed: {allowed}")


def check_range(name: str, value: Any, low: float, high: float, *, low_open=False, high_open=False,
                 integer=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise BadInputError(f"{name}={brief_repr(value)} must be {kind}")
    # An int compares with the float bounds exactly; isfinite would convert it and overflow past ~1e308.
    if isinstance(value, float) and not math.isfinite(value):  # NaN compares false: it would pass the checks below
        raise BadInputError(f"{name}={brief_repr(value)} must be a finite number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise BadInputError(f"{name}={brief_repr(value)} is out of range; allowed: {lo}{low}, {high}{hi}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise BadInputError(f"{name}={brief_repr(value)} must be true or false")


def check_keys(section: str, data: dict, allowed) -> None:
    """Refuse keys of `data` that are not in `allowed`, naming them and the allowed ones (config dicts of jobs)."""
    allowed = list(allowed)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise BadInputError(f"unknown key(s) {', '.join(unknown)} in {section}; allowed: {', '.join(allowed)}")
