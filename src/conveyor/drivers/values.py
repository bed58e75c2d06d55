"""The values the driver protocol (conveyor.drivers.base) passes and returns: reservations,
releases and failures going in; counts, presence, totals, ticks and throughput coming out."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from conveyor.job import ErrorInfo

__all__ = [
    "ALIVE_WITHIN",
    "HEARTBEAT_EVERY",
    "Failure",
    "QueueCounts",
    "Release",
    "Reservation",
    "Throughput",
    "Tick",
    "WorkerCounts",
    "WorkerPresence",
]


@dataclass(frozen=True, slots=True)
class Tick:
    """The latest tick a schedule pushed: its time (seconds since the epoch) and job id."""

    schedule: str
    at: float
    job_id: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """One reservation of one job: the job id and the token `reserve` handed out. Given to
    `ack`, `result` is the handler's return value as JSON text, kept with the job."""

    id: str
    token: str
    result: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Put a reserved job back to run again `delay` seconds from now, by the backend's clock.

    `error` is recorded on the job. With `count_attempt=False` the attempt is given back, for
    a job that was stopped by a shutdown rather than by its own failure.
    """

    id: str
    token: str
    delay: float = 0.0
    error: ErrorInfo | None = None
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class Failure:
    """Move a reserved job to failed storage with the reason; with `cancelled`, to the
    cancelled state instead (its handler was stopped by a cancel: not retried)."""

    id: str
    token: str
    error: ErrorInfo
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """How many jobs of one queue are in each state, and how long the oldest pending job has
    waited since it became due, in seconds by the backend's clock (None: nothing pending). The
    age moves with the clock, so it takes no part in comparing or printing counts."""

    pending: int = 0
    delayed: int = 0
    reserved: int = 0
    succeeded: int = 0
    failed: int = 0
    oldest_pending_age: float | None = field(default=None, compare=False, repr=False)
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class Throughput:
    """Jobs of one queue that finished per minute, by the backend's clock: minute i covers
    [start + 60 i, start + 60 (i + 1)), the last one is the minute now running. Counted from
    the finished jobs still stored, so jobs pruned or purged meanwhile no longer count."""

    start: float
    succeeded: tuple[int, ...]
    failed: tuple[int, ...]

    @classmethod
    def of(cls, start: float, minutes: int, counted: Iterable[tuple[str, int, int]]) -> Throughput:
        """From (state, minute index, count) triples; other states and minutes are ignored."""
        tally = {"succeeded": [0] * minutes, "failed": [0] * minutes}
        for state, minute, count in counted:
            if state in tally and 0 <= minute < minutes:
                tally[state][minute] += count
        return cls(start, tuple(tally["succeeded"]), tuple(tally["failed"]))

    @classmethod
    def none(cls, minutes: int) -> Throughput:
        """No job finished in the last `minutes` whole minutes of this process's clock: what a
        store not made yet answers without a backend to read the clock of."""
        return cls.of(cls.start_at(time.time(), minutes), minutes, ())

    @staticmethod
    def start_at(now: float, minutes: int) -> float:
        """Where the first of `minutes` whole minutes ending with the current one starts."""
        return (math.floor(now / 60) - minutes + 1) * 60.0


#: How often a worker process says it is alive (`Driver.beat`), and how long after its last
#: beat it still counts as alive.
HEARTBEAT_EVERY = 5.0
ALIVE_WITHIN = 3 * HEARTBEAT_EVERY


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """A worker process that said it was alive: `identity` is "name:host:pid"; the times are
    when it started and when it was last heard from, by the backend's clock."""

    identity: str
    worker: str
    started_at: float
    seen_at: float


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """What the processes of one registered worker have done, added up across processes."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0

    def __add__(self, other: WorkerCounts) -> WorkerCounts:
        return WorkerCounts(
            self.processed + other.processed,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.retried + other.retried,
        )
