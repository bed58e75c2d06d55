"""Durations: seconds (a number or a `timedelta`) in code, and text such as `"500ms"`, `"30s"`,
`"5m"`, `"24h"` or `"7d"` (parts may be joined: `"1h30m"`) in configuration files and the
environment, where a bare number (`"30"`) is seconds too.

`seconds` is the one check every duration goes through, however it was given; `parse` only
turns text into a number for it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from conveyor.errors import ConfigError

Duration = float | timedelta

#: Seconds per unit, in the order `show` tries them.
UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
#: What a duration written as text looks like, said by every error about one.
FORMS = 'seconds, or text such as "500ms", "30s", "5m", "24h", "7d"'


#: The longest duration, 100 years: a job due, or a lease held, past the year 9999 has a time
#: no date (nor a backend's timestamp column) can show, and NaN or infinity is never reached.
MAX_SECONDS = 100 * 365 * 86400.0


def seconds(value: Duration, what: str, *, zero_ok: bool = False) -> float:
    """`value` (seconds or a timedelta) as float seconds; ConfigError naming `what` and the
    range unless it is more than 0 (or 0 itself, with `zero_ok`) and at most MAX_SECONDS."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ConfigError(f"{what} must be seconds or a timedelta, not {value!r}")
    if not (0 <= number <= MAX_SECONDS) or (number == 0 and not zero_ok):  # NaN too
        raise ConfigError(f"{what} must be {span(zero_ok)}, not {value!r}")
    return float(number)


def span(zero_ok: bool) -> str:
    """The range `seconds` allows, as its errors say it."""
    most = f"100 years ({MAX_SECONDS:.0f}s)"
    return f"from 0 seconds to {most}" if zero_ok else f"more than 0 seconds and at most {most}"


def parse(text: str) -> float:
    """Seconds from `"1.5"`, `"500ms"`, `"30s"`, `"1h30m"`; ValueError if it is none of them.
    Only the form is checked here: whether the number fits is `seconds`' to say."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"expected {FORMS}")
    return sum(float(number) * UNITS[unit] for number, unit in parts)


def show(value: float) -> str:
    """A number of seconds as the shortest text `parse` reads back: 30.0 -> "30s"."""
    for unit, size in UNITS.items():
        count = value / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{value:g}s"
