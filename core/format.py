"""Text for people: one-line error messages and number / size / unit formats, each written once."""

from __future__ import annotations

import math
import re
from typing import Any, Mapping


MISSING = "–"  # what every table, card and message shows for a number that is not there


def is_missing(value) -> bool:
    """None, NaN (float or numpy) or pandas' NA: a number that is not there, shown as '–'."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA refuses to be a bool
        return True


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, without terminal escapes, cut to `limit`."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), exc.__class__.__name__)
    return line[:limit]


# Results are rounded to 4 significant figures: the measurements are not more precise than that.
SIGNIFICANT_DIGITS = 4


def round_significant(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """`value` to `digits` significant figures (None and non-finite values pass through as None)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def one_line(text: Any, limit: int = 1000) -> str:
    """`text` as one line (whitespace runs collapsed), cut to `limit`: what a worker's error may say."""
    text = " ".join(str(text or "the worker failed without saying why").split())
    return text[:limit]


# An absolute path of two or more parts (not a ratio like 1/2, a unit like km/h or a URL: the slash must not follow
# a letter, digit, dot, colon or slash).
_PATH = re.compile(r"(?<![\w.~:/])(?:~)?/(?:[^\s/:'\"(),;]+/)+([^\s/:'\"(),;]*)")


def hide_paths(text: str) -> str:
    """`text` with every absolute path cut to its last part ("/srv/fw/runs/x/model.onnx" -> "model.onnx"): what a
    visitor sees of an error never names the server's folders."""
    return _PATH.sub(lambda match: match.group(1) or "…", text)


def size_unit(max_bytes: float) -> tuple[str, float]:
    """The decimal unit that keeps sizes readable: ('kB', 1e3), ('MB', 1e6) or ('GB', 1e9)."""
    if max_bytes >= 1e9:
        return "GB", 1e9
    if max_bytes >= 1e6:
        return "MB", 1e6
    return "kB", 1e3


def format_bytes(value) -> str:
    """Bytes in decimal units, three significant digits: 1234567 -> '1.23 MB', 1100000 -> '1.1 MB', 512 -> '512 B';
    None or NaN -> '–'. The one size format of the dashboard, the report and every message."""
    if is_missing(value):
        return "–"
    value = float(value)
    if value < 1e3:
        return f"{value:,.0f} B"
    unit, scale = size_unit(value)
    scaled = value / scale
    return f"{scaled:.3g} {unit}" if scaled < 1000 else f"{scaled:,.0f} {unit}"


def format_count(value) -> str:
    """159626 -> '160k'; 1234567 -> '1.23M'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:,.{0 if scaled >= 100 else 1 if scaled >= 10 else 2}f}{suffix}"
    return f"{value:,.0f}"


def format_ms(value) -> str:
    """Latency with digits that matter: 0.0213 -> '0.021 ms', 3.51 -> '3.51 ms', 123.4 -> '123 ms'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3f} ms"


def format_ratio(value) -> str:
    """3.4167 -> '3.4×'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{1 if value >= 1 else 2}f}×"


def format_money(value) -> str:
    """A signed dollar amount (a month's cost or saving): '$1,234.57', '−$0.0012', or '–' when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    sign = "−" if value < 0 else ""
    value = abs(float(value))
    return f"{sign}${value:,.2f}" if value >= 0.01 or value == 0 else f"{sign}${value:.2g}"


def format_pct(value, digits: int = 1) -> str:
    """0.98333 -> '98.3%'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value) * 100:.{digits}f}%"


def format_pt(value) -> str:
    """An accuracy change in percentage points, signed: 0.19 -> '−0.19 pt' (a drop), -0.2 -> '+0.20 pt'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    if abs(value) < 0.005:
        return "±0 pt"
    return f"{'−' if value > 0 else '+'}{abs(value):.2f} pt"


def format_usd(value) -> str:
    """Dollars for a cost per million inferences: '$0.0123', or '–' when unknown."""
    if is_missing(value):
        return "–"
    value = float(value)
    if 0 < abs(value) < 0.01:  # decimals, never "$7.872e-05": three significant digits after the zeros
        return f"${value:.{2 - math.floor(math.log10(abs(value)))}f}"
    return f"${value:,.4g}" if value < 1000 else f"${value:,.0f}"


def speedup_interval(entry: Mapping | None) -> tuple[float, float] | None:
    """(low, high) of a speedup entry, or None when it has no interval (a run from before intervals, a bare ratio)."""
    if not entry:
        return None
    low, high = entry.get("low"), entry.get("high")
    if is_missing(low) or is_missing(high):
        return None
    return float(low), float(high)


def speedup_verdict(entry: Mapping | None) -> str | None:
    """'faster', 'slower' or 'no measurable difference' for a results.json speedup entry (None when there is none,
    or it has no interval: a bare ratio cannot say). An interval that contains 1 never reads 'slower'."""
    interval = speedup_interval(entry)
    if interval is None:
        return None
    low, high = interval
    if low > 1.0:
        return "faster"
    if high < 1.0:
        return "slower"
    return "no measurable difference"


def format_speedup(entry: Mapping | None) -> str:
    """A speed-up as people read it: '2.1x (2.0–2.2)'; an interval containing 1 reads
    'no measurable difference (0.97–1.04x)'; a ratio without an interval (an older run) is just '2.10x'; '–' when
    there is none."""
    if not entry or is_missing(entry.get("ratio")):
        return "–"
    ratio, interval = float(entry["ratio"]), speedup_interval(entry)
    if interval is None:
        return f"{_short(ratio)}x"
    low, high = interval
    if speedup_verdict(entry) == "no measurable difference":
        return f"no measurable difference ({_short(low)}–{_short(high)}x)"
    return f"{_short(ratio)}x ({_short(low)}–{_short(high)})"


def _short(value: float) -> str:
    return f"{value:.{2 if value < 10 else 1}f}" if value < 100 else f"{value:.0f}"


def as_number(value) -> float | None:
    """A number from a table cell or a JSON value: None for None, booleans, text and NaN."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
