"""Plain job types shared by the core and every driver.

`JobInfo` is the stored record a driver returns; `Job[T]` is what a handler receives, with its
payload decoded to the registered type. Times are seconds since the epoch (floats) everywhere
below the public API, so every backend stores them the same way, and they are read off the
backend's own clock: a new job and a release carry delays, never times, so a worker whose
clock is wrong cannot move a lease, a due time or a retention horizon.
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

from conveyor.errors import RegistryError

T = TypeVar("T")


class JobState(enum.StrEnum):
    """Where a job is in its life. `delayed` is a pending job whose time has not come yet."""

    PENDING = "pending"
    DELAYED = "delayed"
    RESERVED = "reserved"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def job_state(state: JobState | str) -> JobState:
    """`state`, or the state of that name ("failed"); RegistryError naming the states else."""
    try:
        return JobState(state)
    except ValueError:
        states = ", ".join(JobState)
        raise RegistryError(f"{state!r} is not a job state: use one of {states}") from None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an attempt failed: the exception's type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, str]:
        """The JSON-ready form drivers store."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        """Rebuild from the stored form; missing keys become empty strings."""
        return cls(
            str(data.get("type", "")), str(data.get("message", "")), str(data.get("traceback", ""))
        )


#: How many attempts' errors a job keeps (`JobInfo.errors`): the latest, oldest dropped first.
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """The error of one failed attempt: its number (1 for the first), when it was recorded by
    the backend's clock, and the error."""

    attempt: int
    at: float
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job about to be pushed, with every option already resolved (push > job > queue).

    The backend stamps `created_at` with its own clock and makes the job due `delay` seconds
    after that (a negative delay makes it due as if pushed that long ago). `retry_delay` is
    the JSON form of a retry policy (see `conveyor.retry`); drivers store it as text and
    never interpret it.
    """

    id: str
    queue: str
    name: str
    payload: str
    delay: float = 0.0
    max_attempts: int = 1
    priority: int = 0
    timeout: float | None = None
    retry_delay: str | None = None
    unique: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class JobBatch(Sequence[NewJob]):
    """Jobs alike but for id and payload, as `Registry.push_many` makes each chunk: `template`
    holds what they share (its own id and payload are the first job's), `ids` and `payloads`
    each job's own, in order. A Sequence[NewJob] like any batch, each item made as it is read;
    a driver that knows the type reads the two lists instead and makes no object per job
    (about a microsecond each, and as much again in garbage collection)."""

    __slots__ = ("ids", "payloads", "template")

    def __init__(self, template: NewJob, ids: Sequence[str], payloads: Sequence[str]) -> None:
        if len(ids) != len(payloads) or template.unique is not None:
            raise ValueError("a JobBatch needs one payload per id and no unique key")
        self.template = template
        self.ids = ids
        self.payloads = payloads

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> NewJob: ...

    @overload
    def __getitem__(self, index: slice) -> JobBatch: ...

    def __getitem__(self, index: int | slice) -> NewJob | JobBatch:
        if isinstance(index, slice):
            return JobBatch(self.template, self.ids[index], self.payloads[index])
        return self._job(self.ids[index], self.payloads[index])

    def __iter__(self) -> Iterator[NewJob]:
        return map(self._job, self.ids, self.payloads)

    def alike(self, other: JobBatch) -> bool:
        """Whether `other`'s jobs are alike this batch's but for id and payload."""
        mine, theirs = self.template, other.template
        return replace(mine, id=theirs.id, payload=theirs.payload) == theirs

    def _job(self, job_id: str, payload: str) -> NewJob:
        t = self.template
        return NewJob(job_id, t.queue, t.name, payload, t.delay, t.max_attempts, t.priority,
                      t.timeout, t.retry_delay, None, t.meta)  # fmt: skip


def joined(parts: Sequence[Sequence[NewJob]]) -> Sequence[NewJob]:
    """The jobs of `parts`, in order, as one batch: a JobBatch when every part is one of
    jobs alike (as `Registry.push_many` makes its parts), so that a driver still reads two
    lists rather than a job object per job."""
    if len(parts) == 1:
        return parts[0]
    batches = [part for part in parts if isinstance(part, JobBatch)]
    if parts and len(batches) == len(parts) and all(map(batches[0].alike, batches)):
        ids = [job_id for batch in batches for job_id in batch.ids]
        payloads = [payload for batch in batches for payload in batch.payloads]
        return JobBatch(batches[0].template, ids, payloads)
    return [job for part in parts for job in part]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as stored: what `reserve`, `get` and `list_jobs` return.

    `attempt` counts the attempts charged to the job: it is 1 while the first attempt runs.
    A failed or cancelled job shows at most `max_attempts` (see `__post_init__`).
    A reservation taken back from a worker that stopped renewing its lease (crashed, killed)
    counts in `rescued`; the attempt it died in is charged only when the job was running
    `alone` (marked by `renew(..., alone=True)`): a worker runs a rescued job alone, so that
    a death with it alone is its own doing, while a death among other jobs is charged to none.
    `reservation` is the token of the current (or last) reservation; every settle call must
    present it (fencing). `available_at` is when the job became (or becomes) due, also while
    it is reserved; `reserved_at` is when its current or last reservation was made and
    `lease_expires_at` when that lease runs out (None once released), by the backend's clock.

    `result` is the handler's return value as JSON text, when its job keeps results;
    `cancel_requested` says a cancel asked the worker running the job to stop it.

    `errors` holds the error of each failed attempt, oldest first, up to the last MAX_ERRORS
    (`error` is the latest one); a release or fail adds one, a success never. `get` reads it;
    `reserve` and `list_jobs` may leave it empty, so a worker never carries it around. A
    succeeded job has no `error` (None, whatever the driver stored): like Sidekiq and Celery,
    a job that failed an attempt and then succeeded did not fail; `errors` keeps the history.

    `unreadable` names the fields of a stored record that could not be decoded (damaged by
    hand, by another program, on disk), each with what was wrong and the raw value; those
    fields hold placeholders. A worker fails such a job at once with `CorruptJobError`; the
    raw record stays in storage for inspection.
    """

    id: str
    queue: str
    name: str
    payload: str
    state: JobState
    attempt: int
    max_attempts: int
    priority: int
    created_at: float
    available_at: float
    timeout: float | None = None
    retry_delay: str | None = None
    unique: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reservation: str | None = None
    worker: str | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    rescued: int = 0
    alone: bool = False
    reserved_at: float | None = None
    lease_expires_at: float | None = None
    result: str | None = None
    cancel_requested: bool = False
    unreadable: dict[str, str] = field(default_factory=dict)
    errors: tuple[FailedAttempt, ...] = ()

    def __post_init__(self) -> None:
        # Drivers keep the last error on the record; a success does not clear it there.
        if self.state is JobState.SUCCEEDED and self.error is not None:
            object.__setattr__(self, "error", None)
        # A worker that died with the job alone in its last attempt is charged by the next
        # reserve, which counts an attempt past the last; the worker fails the job without
        # running it (LeaseExpiredError). The attempt that ran, and died, is the last one.
        last = self.max_attempts
        if self.attempt > last > 0 and self.state in _FINISHED_FAILING:
            object.__setattr__(self, "attempt", last)
            object.__setattr__(self, "errors", tuple(_within(e, last) for e in self.errors))


_FINISHED_FAILING = frozenset({JobState.FAILED, JobState.CANCELLED})


def _within(item: FailedAttempt, last: int) -> FailedAttempt:
    return item if item.attempt <= last else FailedAttempt(last, item.at, item.error)


@dataclass(frozen=True, slots=True)
class Job(Generic[T]):
    """What a handler receives: the job's identity and its payload decoded to its type.

    `rescued` counts the times the job was taken back from a worker that died (or froze) while
    running it: a handler that must not redo work twice can look for it. `cancelled` turns
    true once the job is cancelled while it runs: a plain handler, which cannot be stopped,
    can look at it between steps and return early.
    """

    id: str
    queue: str
    name: str
    payload: T
    attempt: int
    max_attempts: int
    meta: dict[str, Any]
    created: float
    rescued: int = 0
    #: Holds True once the job is cancelled while it runs; a list, so that the frozen job can
    #: be told, and cheaper to make per job than a threading.Event (a thread only reads it).
    _cancel: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled while it runs (see `registry.cancel`)."""
        return bool(self._cancel)

    @property
    def cursor(self) -> Any:
        """For a page of a cursor-chained job: where this page starts, as the page before
        returned it (the first page gets `start_chain`'s cursor); None for other jobs."""
        return self.meta.get("cursor")

    @property
    def page(self) -> int | None:
        """For a page of a cursor-chained job: its number, 0 first; None for other jobs."""
        page = self.meta.get("page")
        return page if isinstance(page, int) else None

    @property
    def created_at(self) -> datetime:
        """When the job was pushed, in UTC."""
        return datetime.fromtimestamp(self.created, tz=UTC)

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now moves the job to failed storage instead of retrying it."""
        return self.attempt >= self.max_attempts


def stable_id(at: float, *parts: str) -> str:
    """The id of a job that has one before it is pushed (a schedule's tick, a chain's page):
    `new_id`'s layout, its time `at` (seconds) and the rest a digest of `parts`, so that every
    process computes the same id, and a push of it a second time stores nothing."""
    millis = int(at * 1000) & ((1 << 48) - 1)
    digest = int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:10], "big")
    value = (millis << 80) | (0x7 << 76) | (digest & ((1 << 76) - 1))
    return f"{value:032x}"


def new_id() -> str:
    """A 32-hex-digit job id that sorts by creation time (a UUIDv7 layout without dashes)."""
    return f"{_after_last(1):032x}"


def new_ids(count: int) -> list[str]:
    """`count` ids of `new_id`'s layout for one batch, in increasing order: one clock read and
    one random draw for all, the batch's ids then counting up from it, so the jobs of a batch
    sort (and run, priority and due time being equal) in the order they were given."""
    start = _after_last(count)
    return [f"{value:032x}" for value in range(start, start + count)]


#: The last id this process drew, as a number, and the lock that draws the next one.
_last_id = 0
_id_lock = threading.Lock()


def _forked() -> None:
    """In a forked child: a new lock (one another thread of the parent held at the fork stays
    held), and ids of its own from now on, not counting up from the parent's last, as the
    parent goes on doing: the first ids of both would be one id."""
    global _id_lock, _last_id
    _id_lock = threading.Lock()
    _last_id = 0


os.register_at_fork(after_in_child=_forked)


def _after_last(count: int) -> int:
    """The first of `count` ids in a row, each above every id this process drew before: the
    time in milliseconds, then random bits; in the same millisecond as the id before (or a
    clock set back), that id plus one. So jobs pushed one after another sort, and with equal
    priority and due time run, in the order they were pushed, even on a backend whose clock
    gives both the same due time (sqlite's counts milliseconds)."""
    global _last_id
    millis = time.time_ns() // 1_000_000
    # 75 random bits, one under the field's 76: counting up from it never carries into the
    # version digit, for any batch smaller than 2**75.
    drawn = (millis << 80) | (0x7 << 76) | int.from_bytes(os.urandom(10), "big") >> 5
    with _id_lock:
        start = max(drawn, _last_id + 1)
        _last_id = start + count - 1
    return start
