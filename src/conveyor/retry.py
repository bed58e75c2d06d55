"""Retry delay policies: how long a failed job waits before its next attempt; and what a
handler raises to decide for itself: `Retry` (again, after a delay it chooses) or `Fail` (no
more attempts).

A policy is stored on each job as JSON (drivers keep it as opaque text), so a job pushed with
its own policy keeps it however the registry changes later.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass

from conveyor.duration import MAX_SECONDS, Duration, seconds, span
from conveyor.errors import ConfigError, ConveyorError

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class Fixed:
    """Wait the same number of seconds before every retry."""

    seconds: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return self.seconds


class Retry(ConveyorError):
    """Raised by a handler: this attempt failed, run the job again `delay` seconds from now (a
    number or a timedelta; None: after the job's own retry delay), as Celery's
    `self.retry(countdown=...)` or arq's `Retry(defer=...)` do. The attempt counts: raised on
    the job's last attempt, the job is failed. Recorded on the job like any error. A subclass
    may set `delay` as a class attribute: the delay of its instances made without one.
    `Retry(30)` is `Retry(delay=30)`: a number (or timedelta) first is the delay, not a reason."""

    delay: float | None = None

    def __init__(self, reason: str | Duration = "", *, delay: Duration | None = None) -> None:
        if not isinstance(reason, str):  # Retry(30): read as the delay it plainly means
            if delay is not None:
                raise TypeError(f"Retry({reason!r}, delay={delay!r}): give the delay once")
            delay, reason = reason, ""
        chosen = type(self).delay if delay is None else delay
        what = "Retry(delay=)" if delay is not None else f"{type(self).__qualname__}.delay"
        self.delay = None if chosen is None else seconds(chosen, what, zero_ok=True)
        after = "its retry delay" if self.delay is None else f"{self.delay:g}s"
        super().__init__(reason or f"the handler asked to run it again after {after}")


def asked(raised: Retry) -> float | None:
    """The seconds `raised` asks to wait (None: the job's retry delay). A `delay` set on it
    after it was made that is no duration is logged and the job's retry delay used: it must
    never stop the job's outcome from being written."""
    try:
        return None if raised.delay is None else seconds(raised.delay, "Retry.delay", zero_ok=True)
    except ConfigError as exc:
        log.warning("%s: %s; the job waits its retry delay instead", type(raised).__name__, exc)
        return None


class Fail(ConveyorError):
    """Raised by a handler: fail the job now, whatever attempts it has left (a card declined,
    a record deleted: trying again cannot help). It goes to failed storage with this error,
    where `conveyor failed retry` can still run it again."""


#: The longest wait of an `Exponential` that does not say: an hour.
_DEFAULT_MAX = 3600.0


@dataclass(frozen=True, slots=True)
class Exponential:
    """Wait `base * factor ** (attempt - 1)` seconds, at most `max`, with equal jitter.

    With `jitter` the wait is drawn between half and all of that value, so jobs that failed
    together (a database outage) do not all come back at the same instant.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = _DEFAULT_MAX
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        try:
            grown = self.base * self.factor ** max(0, attempt - 1)
        except OverflowError:  # a very late attempt: past any max
            grown = math.inf
        value = min(self.max, grown)
        if self.jitter:
            return value / 2 + random.uniform(0, value / 2)
        return value


RetryDelay = Fixed | Exponential


def as_policy(value: float | RetryDelay) -> RetryDelay:
    """A number of seconds becomes `Fixed`; a policy is kept. Negative numbers are refused,
    and so is an `Exponential` whose waits would not grow (factor below 1, max below base)."""
    if isinstance(value, Fixed):
        waits: tuple[object, ...] = (value.seconds,)
    elif isinstance(value, Exponential):
        waits = (value.base, value.max)
    else:
        waits = (value,)
    # NaN or infinity would make the job due never: it would wait forever after a failure.
    factor = value.factor if isinstance(value, Exponential) else 1.0
    if not all(_seconds(wait) for wait in waits) or not _seconds(factor, math.inf):
        raise ConfigError(
            f"retry_delay must be {span(zero_ok=True)} (a number, Fixed(seconds) or"
            f" Exponential(base, factor, max) with base and max in that range and a finite"
            f" factor >= 1), not {value!r}"
        )
    if isinstance(value, Exponential):
        _check_growth(value)
    return value if isinstance(value, Fixed | Exponential) else Fixed(float(value))


def _check_growth(policy: Exponential) -> None:
    """An exponential backoff whose waits grow: each at least the one before, up to max."""
    if policy.factor < 1:
        problem = (
            f"factor must be 1 or more (each wait at least the one before; factor=1 or"
            f" Fixed(seconds) for equal waits), not {policy.factor!r}"
        )
    elif policy.max < policy.base:
        problem = (
            f"max must be at least base ({policy.base!r}), not {policy.max!r} (max is"
            f" {_DEFAULT_MAX:g} seconds unless given: give a max of at least the base)"
        )
    elif not isinstance(policy.jitter, bool):
        problem = f"jitter must be True or False, not {policy.jitter!r}"
    else:
        return
    raise ConfigError(f"retry_delay: Exponential {problem}")


def _seconds(number: object, most: float = MAX_SECONDS) -> bool:
    return (
        isinstance(number, int | float)
        and not isinstance(number, bool)
        and 0 <= number <= most
        and math.isfinite(number)
    )


def to_json(policy: RetryDelay) -> str:
    """The stored form of a policy."""
    if isinstance(policy, Fixed):
        return json.dumps({"fixed": policy.seconds})
    return json.dumps(
        {
            "exponential": {
                "base": policy.base,
                "factor": policy.factor,
                "max": policy.max,
                "jitter": policy.jitter,
            }
        }
    )


def from_json(text: str | None) -> RetryDelay:
    """Read a stored policy back; a missing or unreadable one retries after one second."""
    try:
        data = json.loads(text) if text else {}
        policy: RetryDelay
        if "fixed" in data:
            policy = Fixed(float(data["fixed"]))
        else:
            policy = Exponential(**data["exponential"])
        policy.delay(1)  # a policy damaged in storage fails here, not in the worker
        return policy
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        return Fixed(1.0)
