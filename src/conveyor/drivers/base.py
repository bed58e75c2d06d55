"""The driver protocol: the one seam between conveyor's core and a storage backend.

Core decides policy (when to retry, how long to wait, what a timeout is); a driver only stores
and moves jobs. Every method is a coroutine. "Atomic" below means a concurrent caller, in this
or another process, sees the whole change or none of it.

Fencing: `reserve` gives every job a fresh reservation token. `renew`, `ack`, `release` and
`fail` take `Reservation(id, token)` and change only jobs still reserved under that token, so a
worker whose lease ran out can never overwrite the work of the worker that took the job over.
They return the ids they changed; an id missing from the answer was refused.

One clock: every time a driver stores or compares (created, due, lease end, finished, the
retention horizon) is read off the backend's own clock, never the caller's: the core passes
delays and durations (`NewJob.delay`, `Release.delay`, `lease`, `prune(older_than=)`). So a
worker whose clock is minutes or days off can neither take over running jobs nor prune early.

Damaged records: a stored job whose fields cannot be decoded is still reserved, listed and
returned by `get`, with the damage named in `JobInfo.unreadable`; it never makes a method
raise and never holds back the rest of a batch.

The shared contract suite in tests/contract/ is the definition of correct; `memory` is the
reference implementation.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass

from conveyor.drivers.durability import IN_PROCESS, losses
from conveyor.drivers.location import safe_url
from conveyor.drivers.values import (
    ALIVE_WITHIN,
    HEARTBEAT_EVERY,
    Failure,
    QueueCounts,
    Release,
    Reservation,
    Throughput,
    Tick,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.errors import DriverError, Unsupported
from conveyor.job import JobInfo, JobState, NewJob, joined

__all__ = [
    "ALIVE_WITHIN",
    "HEARTBEAT_EVERY",
    "Capabilities",
    "Driver",
    "DriverError",
    "Failure",
    "QueueCounts",
    "Release",
    "Reservation",
    "Throughput",
    "Tick",
    "Unsupported",
    "WorkerCounts",
    "WorkerPresence",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do beyond the protocol's core; the core checks before it relies on one.

    - `notify`: `wait` returns soon after a push from any process, not only this one.
    - `inline`: the core runs each job inside `push` (the `sync` driver).
    - `durable`: jobs survive a restart of this process.
    - `shared`: several processes may work the same queues at once.
    - `transactional`: `push`/`push_many` accept `connection=`, the caller's own open
      connection (from the blocking facade, lent with its thread: drivers/lent.py), and
      store the jobs in the caller's transaction.
    - `control`: jobs can be cancelled (`cancel`, `cancelling`), queues paused (`pause`,
      `resume`, `paused`), and `ack` keeps a job's result.
    - `schedules`: the driver keeps the latest tick each schedule pushed (`mark_tick`,
      `ticks`), so a scheduler that starts knows what it missed.
    - `timed_leases`: a reservation is a stored lease with an end: `reserve` rescues a job
      whose lease ran out, `renew` moves its end, and any connection holding the token may
      renew or settle it. Without it a reservation lasts as long as the connection that
      took it, and only that connection settles it (amqp).
    - `lookup`: `get` finds a job by id, `list_jobs` lists every state and `throughput`
      counts the jobs finished per minute.
    - `exact_counts`: `counts` gives every state exactly (delayed and succeeded included).
    - `unique`: pushes with `unique=` are deduplicated; a job pushed again with an id that is
      stored already stores nothing.
    - `ordered`: `reserve` hands out jobs by priority, then earliest due.
    - `priorities`: `reserve` hands out waiting jobs highest priority first, across its
      queues too (what `ordered` promises among equal priorities aside).
    - `shared_records`: worker stats and presence (`record_stats`, `beat`) are seen by every
      process, not only the one that wrote them.
    - `error_history`: `get` returns each failed attempt's error (`JobInfo.errors`), not only
      the last one.
    - `thread_push`: `push_in_thread` stores one job from a plain thread, without the event
      loop (the blocking facade's push then skips the hop to the loop's thread and back).
    - `streamed_push`: `push_stream` writes each part as it comes, so `Registry.push_many`
      encodes a chunk's next part while the backend stores the parts before (PostgreSQL's
      COPY); without it the parts are gathered, then written as one `push_many`.
    - `backup`: `backup` copies the whole store to a file while it is in use, and `restore`
      puts such a copy back (conveyor/backups.py); without it both raise Unsupported naming
      the server's own tools.
    """

    notify: bool = False
    inline: bool = False
    durable: bool = False
    shared: bool = False
    transactional: bool = False
    control: bool = False
    schedules: bool = False
    timed_leases: bool = True
    lookup: bool = True
    exact_counts: bool = True
    unique: bool = True
    ordered: bool = True
    priorities: bool = True
    shared_records: bool = True
    error_history: bool = True
    thread_push: bool = False
    streamed_push: bool = False
    backup: bool = False


class Driver(abc.ABC):
    """The storage protocol every backend implements. See the module docstring for fencing."""

    #: The driver's kind, used in messages: "memory", "sqlite", "postgres", ...
    kind: str = "driver"
    capabilities: Capabilities = Capabilities()
    #: The longest one job may run before the backend itself takes it back, in seconds (the
    #: amqp broker's consumer_timeout); None: no limit. `freeze()` refuses a queue whose job
    #: timeout is longer.
    max_job_time: float | None = None
    #: True for a driver that makes every released job due at once whatever its retry delay
    #: (sync, and conveyor.testing's): the log says "retrying at once", not the wait it skips.
    retries_at_once: bool = False

    def __repr__(self) -> str:
        """The driver's class, kind, where it keeps jobs (any password masked) and prefix."""
        where = self.where()
        prefix = getattr(self, "prefix", None)
        return (
            f"<{type(self).__name__} kind={self.kind!r}"
            + (f" at {where!r}" if where else "")
            + (f" prefix={prefix!r}" if isinstance(prefix, str) else "")
            + ">"
        )

    def where(self) -> str:
        """Where this driver keeps its jobs, fit to show: its URL with any password masked, or
        its file's absolute path; "" for a driver that keeps them in this process."""
        return safe_url(self._location())

    def _location(self) -> str:
        """Where this driver keeps its jobs, as given (a URL, a path); "" for none. Shown
        only through `safe_url`, which masks its passwords."""
        return ""

    def unmade(self) -> str | None:
        """Why no job can be stored here yet, known without opening the driver (its SQLite file
        does not exist), else None. Commands that only read (`conveyor list`, `conveyor job`)
        read nothing from such a store rather than open it, which would create it."""
        return None

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
        job already holding the same (queue, name, unique) key, storing nothing. A job whose id
        is stored already (in any state, until pruned) stores nothing and returns that id, even
        if another job holds its key now: a push of a stable id (a tick, a page) may repeat.

        `connection` is the caller's own open connection (a `transactional` driver only): the
        job is written inside the caller's transaction and exists if and only if it commits."""
        return (await self.push_many([job], connection=connection))[0]

    def push_in_thread(self, job: NewJob) -> str | None:
        """`push` (`thread_push` only), called from a thread with no running event loop, which
        it blocks until the job is stored; thread-safe. None when it cannot store this job
        without the event loop: the caller then awaits `push` on the loop instead."""
        raise self.unsupported("push from a plain thread", "use the blocking facade's push")

    @abc.abstractmethod
    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        """Store a batch, in one round trip where the backend allows; atomic as a whole.
        Returns one id per job in order, following `push`'s rule for unique keys and
        `connection`. `Registry.push_many` passes a `JobBatch` (jobs alike but for id and
        payload): a driver may read its `template`, `ids` and `payloads` instead of a job
        object per job."""

    async def push_stream(self, parts: AsyncIterable[Sequence[NewJob]]) -> list[str]:
        """`push_many` of the jobs of every part `parts` yields, in order, as one batch:
        atomic as a whole, one id per job. A fault raised by `parts` stores none of them.
        This default gathers the parts first; a `streamed_push` driver writes each as it
        comes."""
        return await self.push_many(joined([part async for part in parts]))

    @abc.abstractmethod
    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """Take up to `limit` due jobs from `queues`: pending jobs whose time has come and
        reserved jobs whose lease ran out, highest priority first, then earliest available.
        Each gets state reserved, a fresh token, `reserved_at` now and a lease of `lease`
        seconds (`lease_expires_at`); its `available_at` stays when it became due. Two
        concurrent callers never receive the same job while its lease is valid.

        Atomic for each queue's share: a driver may take the shares of several queues in
        steps of their own (redis runs one script per queue), never less than one queue in a
        step. Fewer than `limit` may come back while due jobs remain (rows another caller has
        locked are passed over; one call bounds its own work): a short answer is no sign that
        the queues are empty, which `counts` tells.

        A pending job's attempt goes up by one. A job whose lease ran out is rescued: its
        `rescued` count goes up by one, and its attempt only if it was marked `alone` (a death
        among other jobs may be another job's doing; see `JobInfo`). The mark is cleared."""

    async def stop_reserving(self, queues: Sequence[str], worker: str) -> None:  # noqa: B027
        """The worker `worker` (as named to `reserve`) reserves none of `queues` until
        it calls `reserve` again: a worker says so as its stop begins, before its
        running jobs end. A queue no other worker of this driver reserves is then held
        here no more than by a closed driver: its jobs pushed, released or retried from
        now on go to other workers (other processes), never wait here. Jobs `reserve`
        handed out stay held and settle as before. Nothing to do (the default) for a
        driver that holds nothing beyond what `reserve` hands out; amqp cancels its
        consumers of those queues and gives back what they were sent and it had not
        handed out, neither an attempt nor a rescue."""

    @abc.abstractmethod
    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        """Extend the leases of jobs still held under these tokens: `lease_expires_at` becomes
        now + `lease`. With
        `alone`, also mark them as running alone: should their worker die before they are
        settled, the next reserve charges the death to them as an attempt. Never unmarks."""

    @abc.abstractmethod
    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        """Mark jobs held under these tokens succeeded; their unique keys become free."""

    @abc.abstractmethod
    async def release(self, releases: Sequence[Release]) -> set[str]:
        """Put jobs held under these tokens back to pending, due after their `delay`; their
        lease is over (`lease_expires_at` None)."""

    @abc.abstractmethod
    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        """Move jobs held under these tokens to failed storage with their error (to cancelled
        with `Failure.cancelled`); their unique keys become free."""

    @abc.abstractmethod
    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Jobs per state for each queue named (zeros for an empty queue). Not a snapshot
        across queues: each queue's numbers may be read at a slightly different moment."""

    @abc.abstractmethod
    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        limit: int = 100,
        offset: int = 0,
        *,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        """Jobs of one queue in one state, oldest first by id. `delayed` and `pending` are
        told apart by whether the job's time has come. With `name`, only the jobs of that
        name: the filter comes before `limit` and `offset`, across the whole state. With
        `after` (a job id), only the jobs whose id sorts after it, before `offset`: a cursor
        that pages on correctly while the jobs listed before are retried or purged."""

    async def named_ids(
        self, queue: str, state: JobState, name: str, size: int
    ) -> AsyncIterator[list[str]]:
        """The ids of the queue's jobs of job name `name` in `state`, `size` at a time in id
        order, each page listed (`list_jobs(name=, after=)`) once the caller is done with the
        one before: a job in `state` throughout is in one page, and in no other."""
        after = None
        while page := await self.list_jobs(queue, state, size, name=name, after=after):
            yield [job.id for job in page]
            after = page[-1].id

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput:
        """How many of the queue's jobs succeeded and failed in each of the last `minutes`
        whole minutes of the backend's clock, the current one included; read from an index
        on the finish time (never every job), written by nothing on the hot path."""
        raise self.unsupported("counting finished jobs per minute (throughput)")

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobInfo | None:
        """One job by id, or None if there is none (never pushed, purged or pruned)."""

    @abc.abstractmethod
    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs (all of the queue's, or only `ids`) back to pending, due now, with
        attempt 0 and rescued 0. A job whose unique key an unfinished job now holds stays
        failed. Returns how many moved."""

    @abc.abstractmethod
    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete the queue's jobs in `state` (all, or only `ids`). Reserved jobs cannot be
        purged: they belong to a running worker. Returns how many were deleted."""

    @abc.abstractmethod
    async def prune(self, queue: str, older_than: float) -> int:
        """Delete the queue's finished jobs (succeeded, failed, cancelled) that finished more
        than `older_than` seconds ago by the backend's clock. Returns how many were deleted."""

    # -- job control (the `control` capability) -------------------------------------------

    async def cancel(self, ids: Sequence[str]) -> set[str]:
        """Cancel jobs: a pending or delayed one becomes cancelled at once (finished, its
        unique key free); a reserved one is marked `cancel_requested`, for the worker holding
        it to stop it (see `cancelling`). Returns the ids of the unfinished jobs it found."""
        raise self.unsupported("cancelling jobs")

    async def cancelling(self, reservations: Sequence[Reservation]) -> set[str]:
        """Which of the jobs held under these tokens have a cancel requested."""
        raise self.unsupported("cancelling jobs")

    async def pause(self, queue: str, paused: bool = True) -> None:
        """Pause a queue (or resume it with paused=False): `paused` names it, and workers
        reserve nothing from it. Pushes still store jobs."""
        raise self.unsupported("pausing queues")

    async def paused(self, queues: Sequence[str]) -> set[str]:
        """Which of `queues` are paused."""
        raise self.unsupported("pausing queues")

    async def ack_and_push(
        self, reservations: Sequence[Reservation], successors: Sequence[NewJob]
    ) -> set[str]:
        """Push `successors` (as `push_many`: an id stored already stores nothing) and `ack`
        the reservations, returning what `ack` accepted. The pushes are made whether or not
        an ack is refused. Drivers that can do both in one atomic step (one transaction) do,
        so a crash leaves both done or neither; by default the pushes come first, then the
        acks, so a crash between the two leaves the jobs to run again, never a push missing."""
        if successors:
            await self.push_many(successors)
        return await self.ack(reservations) if reservations else set()

    async def mark_tick(self, schedule: str, tick: float, job_id: str) -> None:
        """Record that `schedule` pushed its tick at `tick` (seconds since the epoch) as job
        `job_id`, unless a later tick is recorded already; atomic, so the latest tick wins
        whatever order concurrent schedulers arrive in."""
        raise self.unsupported("schedules (mark_tick)")

    async def ticks(self, schedules: Sequence[str]) -> dict[str, Tick]:
        """The latest tick recorded for each of `schedules` that has one."""
        raise self.unsupported("schedules (ticks)")

    async def backup(self, path: str) -> None:
        """Copy the whole store, as it is at one moment, to the new file `path`, while workers
        and pushers go on: every push that returned before the call began is in the copy."""
        raise self.unsupported(
            "backup", "back up its server with the server's own tools (docs/deploying.md#backups)"
        )

    async def restore(self, path: str) -> None:
        """Replace every job, queue pause, schedule tick and worker record of this store with
        those of the backup at `path` that `backup` made, all at once. Call it only while no
        worker uses the store: one would go on with jobs the backup puts back."""
        raise self.unsupported(
            "restore", "restore its server with the server's own tools (docs/deploying.md#backups)"
        )

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return after at most `timeout` seconds, sooner if a job of one of `queues` may have
        become due: a push, or a release or retry that makes a job due now. Without the
        `notify` capability only those made by this process wake it."""
        await asyncio.sleep(timeout)

    async def durability(self) -> str:
        """The setting that decides what of a returned push survives a crash, named as in the
        table of `conveyor.drivers.durability` and docs/reliability.md; read from the server
        where the server decides. Memory by default."""
        return IN_PROCESS

    async def hazards(self) -> list[str]:
        """What in the server's settings can lose a job whose push returned, each said with
        what it loses and the setting that keeps it: a worker logs them at start. From
        `durability()` and its table; a driver adds what else its server may drop."""
        return losses(self.kind, await self.durability())

    @abc.abstractmethod
    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        """Add `counts` to the running totals of the named worker; atomic."""

    @abc.abstractmethod
    async def worker_stats(self) -> dict[str, WorkerCounts]:
        """The running totals of every worker that recorded any."""

    @abc.abstractmethod
    async def beat(self, identity: str, worker: str, *, stopping: bool = False) -> None:
        """Note that the worker process `identity` (of the registered worker `worker`) is
        alive now; with `stopping`, forget it (it stopped cleanly). Atomic."""

    @abc.abstractmethod
    async def alive(self, within: float) -> list[WorkerPresence]:
        """The worker processes heard from in the last `within` seconds, by the backend's
        clock, oldest first. Entries older than a day may be deleted meanwhile."""

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
