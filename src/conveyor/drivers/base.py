"""The driver protocol: the one seam between conveyor's core and a storage backend.

Core decides policy (when to retry, how long to wait, what a timeout is); a driver only stores
and moves jobs. Every method is a coroutine. "Atomic" below means a concurrent caller, in this
or another process, sees the whole change or none of it.

Fencing: `reserve` gives every job a fresh reservation token. `renew`, `ack`, `release` and
`fail` take `Reservation(id, token)` and change only jobs still reserved under that token, so a
worker whose lease ran out can never overwrite the work of the worker that took the job over.
They return the ids they changed; an id missing from the answer was refused.

The shared contract suite in tests/contract/ is the definition of correct; `memory` is the
reference implementation.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.drivers.durability import IN_PROCESS
from conveyor.errors import DriverError, Unsupported
from conveyor.job import ErrorInfo, JobInfo, JobState, NewJob

__all__ = [
    "Capabilities",
    "Driver",
    "DriverError",
    "Failure",
    "LocalWakeup",
    "QueueCounts",
    "Release",
    "Reservation",
    "Unsupported",
    "WorkerCounts",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do beyond the protocol's core; the core checks before it relies on one.

    - `notify`: `wait` returns soon after a push from any process, not only this one.
    - `inline`: the core runs each job inside `push` (the `sync` driver).
    - `durable`: jobs survive a restart of this process.
    - `shared`: several processes may work the same queues at once.
    - `transactional`: `push`/`push_many` accept `connection=`, the caller's own open
      connection, and store the jobs in the caller's transaction.
    """

    notify: bool = False
    inline: bool = False
    durable: bool = False
    shared: bool = False
    transactional: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """One reservation of one job: the job id and the token `reserve` handed out."""

    id: str
    token: str


@dataclass(frozen=True, slots=True)
class Release:
    """Put a reserved job back to run again at `available_at`.

    `error` is recorded on the job. With `count_attempt=False` the attempt is given back, for
    a job that was stopped by a shutdown rather than by its own failure.
    """

    id: str
    token: str
    available_at: float
    error: ErrorInfo | None = None
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class Failure:
    """Move a reserved job to failed storage with the reason."""

    id: str
    token: str
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """How many jobs of one queue are in each state."""

    pending: int = 0
    delayed: int = 0
    reserved: int = 0
    succeeded: int = 0
    failed: int = 0


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


class LocalWakeup:
    """Ends `wait` early on pushes made through this driver instance: the wake-up a driver
    without cross-process notification can still give a worker in the pushing process."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """A job was pushed, released or retried: wake the waiters."""
        self._event.set()

    def forget(self) -> None:
        """Called as reserve starts: a push from here on wakes the next `wait`."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Return True on a notification, False after `timeout` seconds without one."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that lands just as the push does, and a stopping worker then hangs here.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await self._event.wait()
        return False


class Driver(abc.ABC):
    """The storage protocol every backend implements. See the module docstring for fencing."""

    #: The driver's kind, used in messages: "memory", "sqlite", "postgres", ...
    kind: str = "driver"
    capabilities: Capabilities = Capabilities()

    async def open(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Connect and apply schema migrations. Idempotent; called before any other method."""

    async def migrate(self) -> None:
        """Bring the backend's schema up to date, even where `open` is told not to; a driver
        with no schema has nothing to do. Safe to run from several processes at once."""
        await self.open()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Jobs are untouched; a closed driver may be opened again."""

    async def push(self, job: NewJob, *, connection: object | None = None) -> str:
        """Store one job; atomic. Returns its id, or with `unique` set, the id of the unfinished
        job already holding the same (queue, name, unique) key, storing nothing.

        `connection` is the caller's own open connection (a `transactional` driver only): the
        job is written inside the caller's transaction and exists if and only if it commits."""
        return (await self.push_many([job], connection=connection))[0]

    @abc.abstractmethod
    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        """Store a batch, in one round trip where the backend allows; atomic as a whole.
        Returns one id per job in order, following `push`'s rule for unique keys and
        `connection`."""

    @abc.abstractmethod
    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """Atomically take up to `limit` due jobs from `queues`: pending jobs whose time has
        come and reserved jobs whose lease ran out, highest priority first, then earliest
        available. Each gets state reserved, attempt + 1, a fresh token and a lease of `lease`
        seconds. Two concurrent callers never receive the same job while its lease is valid."""

    @abc.abstractmethod
    async def renew(self, reservations: Sequence[Reservation], lease: float) -> set[str]:
        """Extend the leases of jobs still held under these tokens to now + `lease`."""

    @abc.abstractmethod
    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        """Mark jobs held under these tokens succeeded; their unique keys become free."""

    @abc.abstractmethod
    async def release(self, releases: Sequence[Release]) -> set[str]:
        """Put jobs held under these tokens back to pending at their `available_at`."""

    @abc.abstractmethod
    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        """Move jobs held under these tokens to failed storage with their error; their unique
        keys become free."""

    @abc.abstractmethod
    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Jobs per state for each queue named (zeros for an empty queue). Not a snapshot
        across queues: each queue's numbers may be read at a slightly different moment."""

    @abc.abstractmethod
    async def list_jobs(
        self, queue: str, state: JobState, limit: int = 100, offset: int = 0
    ) -> list[JobInfo]:
        """Jobs of one queue in one state, oldest first by id. `delayed` and `pending` are
        told apart by whether the job's time has come."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobInfo | None:
        """One job by id, or None if there is none (never pushed, purged or pruned)."""

    @abc.abstractmethod
    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs (all of the queue's, or only `ids`) back to pending with attempt 0.
        A job whose unique key an unfinished job now holds stays failed. Returns how many moved."""

    @abc.abstractmethod
    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete the queue's jobs in `state` (all, or only `ids`). Reserved jobs cannot be
        purged: they belong to a running worker. Returns how many were deleted."""

    @abc.abstractmethod
    async def prune(self, queue: str, before: float) -> int:
        """Delete the queue's finished jobs (succeeded, failed, cancelled) that finished before
        `before`. Returns how many were deleted."""

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return after at most `timeout` seconds, sooner if a job may have been pushed to one
        of `queues`. Without the `notify` capability only pushes from this process wake it."""
        await asyncio.sleep(timeout)

    async def durability(self) -> str:
        """The setting that decides what of a returned push survives a crash, named as in the
        table of `conveyor.drivers.durability` and docs/reliability.md; read from the server
        where the server decides. Memory by default."""
        return IN_PROCESS

    @abc.abstractmethod
    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        """Add `counts` to the running totals of the named worker; atomic."""

    @abc.abstractmethod
    async def worker_stats(self) -> dict[str, WorkerCounts]:
        """The running totals of every worker that recorded any."""

    def check_connection(self, connection: object | None) -> None:
        """Raise Unsupported when a caller's connection is given to a driver that cannot use it."""
        if connection is not None and not self.capabilities.transactional:
            raise self.unsupported(
                "push inside the caller's transaction (connection=...)",
                "use the postgres or mysql driver, or push after your transaction commits",
            )

    @staticmethod
    def check_purgeable(state: JobState) -> None:
        """Refuse to purge reserved jobs: they belong to a running worker."""
        if state is JobState.RESERVED:
            raise ValueError("reserved jobs cannot be purged: they belong to a running worker")

    def unsupported(self, operation: str, hint: str = "") -> Unsupported:
        """The error to raise for an operation this backend cannot do."""
        return Unsupported(self.kind, operation, hint)
