"""Retry delay policies: how long a failed job waits before its next attempt.

A policy is stored on each job as JSON (drivers keep it as opaque text), so a job pushed with
its own policy keeps it however the registry changes later.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

from conveyor.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Fixed:
    """Wait the same number of seconds before every retry."""

    seconds: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return self.seconds


@dataclass(frozen=True, slots=True)
class Exponential:
    """Wait `base * factor ** (attempt - 1)` seconds, at most `max`, with equal jitter.

    With `jitter` the wait is drawn between half and all of that value, so jobs that failed
    together (a database outage) do not all come back at the same instant.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 3600.0
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
    """A number of seconds becomes `Fixed`; a policy is kept. Negative numbers are refused."""
    if isinstance(value, Fixed):
        numbers: tuple[object, ...] = (value.seconds,)
    elif isinstance(value, Exponential):
        numbers = (value.base, value.factor, value.max)
    else:
        numbers = (value,)
    # NaN or infinity would make the job due never: it would wait forever after a failure.
    if not all(_finite_seconds(number) for number in numbers):
        raise ConfigError(
            f"retry_delay must be seconds >= 0, Fixed(...) or Exponential(...) of finite "
            f"numbers >= 0, not {value!r}"
        )
    return value if isinstance(value, Fixed | Exponential) else Fixed(float(value))


def _finite_seconds(number: object) -> bool:
    return (
        isinstance(number, int | float)
        and not isinstance(number, bool)
        and math.isfinite(number)
        and number >= 0
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
