"""The SQL driver: the Python side shared by every SQL dialect (SQLite now, others later).

A dialect brings three things and nothing else: its `queries.sql` and `migrations/` (found in
its package with importlib.resources) and a connection adapter (`SqlConnection`) that runs one
statement, or one transaction function, and translates its client's errors into DriverError.
An adapter that can also work inside a caller's own connection implements `SqlBorrowing`, and
its driver declares the `transactional` capability. This module therefore has no
`if dialect == ...`: every difference lives in the dialect's SQL and adapter.

Batches reach the database as one JSON text parameter, so each method is one statement, one
round trip, whatever the batch size. Times are never sent: every statement reads the
database's clock (`{now}` in queries.sql), and this side passes delays and durations.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from conveyor.drivers.base import Failure, Release, Reservation, Tick
from conveyor.drivers.local import LocalWakeup
from conveyor.drivers.sql.adapter import (
    REQUIRED_QUERIES,
    Params,
    Row,
    SqlBorrowing,
    SqlConnection,
    SqlTransaction,
)
from conveyor.drivers.sql.queries import load_migrations, load_queries
from conveyor.drivers.sql.reading import SqlReading
from conveyor.drivers.sql.rows import (
    addressable,
    any_unique,
    error_json,
    holder_items,
    ids_json,
    in_key_order,
    job_ids,
    job_info,
    job_queues,
    json_text,
    nameable,
    own_last,
    parts,
    push_item,
    shared_params,
    stored_state,
)
from conveyor.drivers.sql.schema import SqlSchema
from conveyor.drivers.sql.single import SinglePush
from conveyor.errors import DriverError
from conveyor.job import FINISHED_STATES, JobInfo, JobState, NewJob

__all__ = ["BULK_BATCH", "PRUNE_BATCH", "SqlDriver"]

T = TypeVar("T")

#: How many jobs one `prune` statement deletes at most; prune repeats it until a batch is short.
PRUNE_BATCH = 10_000

#: How many jobs one statement of `retry_failed` or `purge` of a whole queue moves or deletes.
BULK_BATCH = 10_000

#: Times retry_failed runs before a unique key race reaches the caller (see retry_failed).
RETRY_FAILED_ATTEMPTS = 3

#: Rounds of inserting a batch's unique jobs whose key was held at insert, by a job this
#: transaction cannot see (`_push_many`).
PUSH_ROUNDS = 5


class SqlDriver(SqlSchema, SqlReading, SinglePush):
    """The Driver protocol over SQL; a dialect subclass supplies the connection and the SQL.

    Opening is lazy: the first call opens the connection and applies migrations, so calling
    `open()` first is allowed but never required. With `migrate=False` opening applies none:
    it checks that the schema is up to date and raises ConfigError if not (for deployments
    that run `migrate()` themselves, before the new code starts). A schema migrated by a newer
    conveyor is used either way, with a warning naming both versions (see schema.py).
    """

    #: The most characters one push statement carries (None: no limit), payloads and the rest
    #: of each job's item counted (rows.parts), for a server that refuses a statement past a
    #: size; a batch over it is written a part at a time, in one transaction, so still all or
    #: none.
    push_budget: int | None = None

    #: Seconds `prune`, `retry_failed` and `purge` pause between two full batches, for a
    #: backend whose other writers wait on one lock and need a gap to take it (SQLite).
    batch_pause = 0.0

    def __init__(
        self, connection: SqlConnection, package: str, *, prefix: str, migrate: bool = True
    ) -> None:
        self._conn = connection
        self.prefix = prefix
        self.migrate_on_open = migrate
        self._queries = load_queries(package, prefix)
        missing = REQUIRED_QUERIES - self._queries.keys()
        if missing:
            raise ValueError(f"{package}/queries.sql lacks blocks: {', '.join(sorted(missing))}")
        self._migrations = load_migrations(package, prefix)
        self._opened = False
        self._opening = asyncio.Lock()
        self._opening_loop: asyncio.AbstractEventLoop | None = None
        # Set by pushes, releases and retries made through this instance; cleared by reserve.
        # Without cross-process notification it is the only early wake-up `wait` has.
        self._pushed = LocalWakeup()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply any migrations not yet recorded (with `migrate=False`, check that
        none is missing instead). Idempotent."""
        async with self._opening_lock():
            if self._opened:
                return
            await self._connect_then(
                self._apply_migrations if self.migrate_on_open else self._check_schema
            )

    async def migrate(self) -> None:
        """Apply every migration not yet recorded, whatever `migrate=` says, connecting first
        if need be. Safe from several processes at once: the dialect's migration lock
        serializes them and each migration is applied once."""
        async with self._opening_lock():
            if self._opened:
                await self._apply_migrations()
            else:
                await self._connect_then(self._apply_migrations)

    async def _connect_then(self, step: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Connect and run `step`, under the opening lock; if `step` fails, disconnect again."""
        await self._conn.open()
        try:
            result = await step()
        except BaseException:
            await self._conn.close()
            raise
        self._opened = True
        return result

    def _opening_lock(self) -> asyncio.Lock:
        """The lock that serializes opening and closing, made anew on a new event loop: an
        asyncio lock that was ever waited for belongs to its loop, and a driver closed on one
        loop may be opened on another (the blocking facade's, after a close)."""
        loop = asyncio.get_running_loop()
        if self._opening_loop is not loop:
            self._opening, self._opening_loop = asyncio.Lock(), loop
        return self._opening

    async def close(self) -> None:
        """Close the connection; jobs stay stored. The next call opens it again."""
        async with self._opening_lock():
            if self._opened:
                self._opened = False
                await self._conn.close()

    async def _ready(self) -> SqlConnection:
        if not self._opened:
            await self.open()
        return self._conn

    async def _fetch(self, name: str, params: Params) -> list[Row]:
        return await (await self._ready()).fetch(self._queries[name], params)

    async def _execute(self, name: str, params: Params) -> int:
        return await (await self._ready()).execute(self._queries[name], params)

    # -- push --------------------------------------------------------------------------------

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        self.check_connection(connection)
        if not jobs:
            return []
        conn, work = await self._ready(), functools.partial(self._push_many, jobs)
        if connection is None and not any_unique(jobs):
            cut = parts(jobs, self.push_budget)
            if len(cut) == 1:
                await self._push_plain(jobs)
            else:
                await conn.transaction(functools.partial(self._push_parts, cut))
            ids = job_ids(jobs)
        elif connection is not None:
            ids = await self._borrower().borrow(connection, work)
        else:
            ids = await conn.transaction(functools.partial(work, held_first=True))
        self._pushed.notify(job_queues(jobs))
        return ids

    async def _push_plain(self, jobs: Sequence[NewJob]) -> None:
        """Jobs without unique keys, on the driver's own connection, in one statement."""
        await self._push_statement(jobs, self._conn)

    async def _push_statement(self, jobs: Sequence[NewJob], on: SqlTransaction) -> None:
        """Jobs without unique keys in one statement: the dialect's push_many_shared, if it
        has one, for jobs alike but for id and payload."""
        shared = self._queries.get("push_many_shared")
        if shared is not None and (params := shared_params(jobs)) is not None:
            await on.execute(shared, params)
        else:
            items = json_text([push_item(job) for job in jobs])
            await on.fetch(self._queries["push_many"], {"items": items})

    async def _push_parts(self, cut: list[Sequence[NewJob]], tx: SqlTransaction) -> None:
        for part in cut:
            await self._push_statement(part, tx)

    async def _insert(self, jobs: Sequence[NewJob], tx: SqlTransaction) -> set[str]:
        """push_many's insert, a part at a time: the ids it returns (those inserted)."""
        inserted: set[str] = set()
        for part in parts(jobs, self.push_budget):
            items = json_text([push_item(job) for job in part])
            inserted |= {
                row["id"] for row in await tx.fetch(self._queries["push_many"], {"items": items})
            }
        return inserted

    def _borrower(self) -> SqlBorrowing:
        """The adapter, as one that works in callers' connections (`transactional` drivers)."""
        if not isinstance(self._conn, SqlBorrowing):
            raise self.unsupported("push inside the caller's transaction (connection=...)")
        return self._conn

    async def _push_many(
        self, jobs: Sequence[NewJob], tx: SqlTransaction, *, held_first: bool = False
    ) -> list[str]:
        """Insert, then swap in the holder's id for each unique job that was skipped. Both
        run in one transaction; under READ COMMITTED the holder may still finish between the
        two, and a job it had made skip is then inserted again.

        With `held_first` (the driver's own READ COMMITTED transactions) the jobs whose key a
        committed job holds are looked up and left out first: inserting them would lock the
        holder (MySQL's duplicate check) until commit, queueing the worker that settles it.
        Not in a caller's transaction, whose snapshot may be older than a holder's finish.
        There, a holder committed after the caller's snapshot (REPEATABLE READ) stays unseen:
        after PUSH_ROUNDS the push fails with the fix rather than loop."""
        ids = [job.id for job in jobs]
        batch = in_key_order(list(enumerate(jobs)))
        if held_first:
            batch = await self._leave_out_held(batch, ids, tx)
        for _ in range(PUSH_ROUNDS):
            if not batch:
                return ids
            inserted = await self._insert([job for _, job in batch], tx)
            batch = await self._swap_in_holders(batch, inserted, ids, tx)
        job = batch[0][1]
        raise DriverError(
            f"unique key {job.unique!r} of job {job.name!r} in queue {job.queue!r} is held by a"
            " job your transaction cannot see (committed after its snapshot was taken, under"
            " REPEATABLE READ): push in a READ COMMITTED transaction, or run yours again"
        )

    async def _leave_out_held(
        self, batch: list[tuple[int, NewJob]], ids: list[str], tx: SqlTransaction
    ) -> list[tuple[int, NewJob]]:
        """Write into `ids` the holder of each unique job of `batch` whose key is held; return
        the rest, still to insert."""
        keys = holder_items(batch)
        held = await tx.fetch(self._queries["push_many_holders"], {"items": keys})
        for row in own_last(held, batch):
            ids[batch[row["item"]][0]] = row["id"]
        taken = {row["item"] for row in held}
        return [item for n, item in enumerate(batch) if n not in taken]

    async def _swap_in_holders(
        self,
        batch: list[tuple[int, NewJob]],
        inserted: set[str],
        ids: list[str],
        tx: SqlTransaction,
    ) -> list[tuple[int, NewJob]]:
        """Write into `ids` the holder of each skipped unique job of `batch`; return those
        that found no holder and are not stored either: their key came free meanwhile."""
        skipped = [
            (i, job) for i, job in batch if job.unique is not None and job.id not in inserted
        ]
        if not skipped:
            return []
        keys = holder_items(skipped)
        holders = await tx.fetch(self._queries["push_many_holders"], {"items": keys})
        for row in own_last(holders, skipped):
            ids[skipped[row["item"]][0]] = row["id"]
        held = {row["item"] for row in holders}
        # Neither held nor stored, yet skipped: its holder finished after the insert.
        return [item for n, item in enumerate(skipped) if n not in held]

    # -- reserve and settle ------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        self._pushed.forget()  # a push from here on wakes the next `wait`
        if not queues or limit <= 0:
            return []
        params = {
            "queues": json_text(list(queues)),
            "limit": limit,
            "lease": lease,
            "worker": worker,
            "token": uuid.uuid4().hex,  # one token per call; fencing compares it on settle
        }
        jobs = [job_info(row) for row in await self._reserve_rows(params)]
        # The statement picks by (priority desc, available_at, id), but the order of its
        # RETURNING rows is the database's; give them back best first, as the worker starts
        # them in this order (a rescued job's due time, its old lease, is gone: it runs alone).
        jobs.sort(key=lambda job: (-job.priority, job.available_at, job.id))
        return [job for job in jobs if addressable(job)]

    async def _reserve_rows(self, params: Params) -> list[Row]:
        """Run the reserve statement; a dialect may note more in the same round trip."""
        return await self._fetch("reserve", params)

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        items = [[item.id, item.token] for item in reservations]
        return await self._fenced("renew", items, lease=lease, alone=1 if alone else 0)

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        items = [[item.id, item.token, item.result] for item in reservations]
        return await self._fenced("ack", items)

    async def ack_and_push(
        self, reservations: Sequence[Reservation], successors: Sequence[NewJob]
    ) -> set[str]:
        """One transaction. Not durable on its own: a commit lost to a power cut takes the
        acks with the pushes, and the jobs acked run again and push the same ids again."""
        if any(job.unique is not None for job in successors):
            return await super().ack_and_push(reservations, successors)
        pushes = {"items": json_text([push_item(job) for job in successors])}
        acks = {"items": json_text([[item.id, item.token, item.result] for item in reservations])}

        async def work(tx: SqlTransaction) -> set[str]:
            if successors:
                await tx.fetch(self._queries["push_many"], pushes)
            if not reservations:
                return set()
            return {row["id"] for row in await tx.fetch(self._queries["ack"], acks)}

        acked = await (await self._ready()).transaction(work, durable=False)
        if successors:
            self._pushed.notify(job_queues(successors))
        return acked

    async def release(self, releases: Sequence[Release]) -> set[str]:
        items = [
            [item.id, item.token, item.delay, error_json(item.error), int(not item.count_attempt)]
            for item in releases
        ]
        released = await self._fenced("release", items)
        if released:
            # Other processes are told only of jobs due now (of any queue: a release names
            # none); a delayed one they see fall due by their own looks.
            self._pushed.notify(None if any(item.delay <= 0 for item in releases) else ())
        return released

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        items = [
            [item.id, item.token, error_json(item.error), int(item.cancelled)] for item in failures
        ]
        return await self._fenced("fail", items)

    # -- job control -------------------------------------------------------------------------

    async def cancel(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return {row["id"] for row in await self._fetch("cancel", {"ids": json_text(list(ids))})}

    async def cancelling(self, reservations: Sequence[Reservation]) -> set[str]:
        if not reservations:
            return set()
        items = json_text([[item.id, item.token] for item in reservations])
        return {row["id"] for row in await self._fetch("cancelling", {"items": items})}

    async def pause(self, queue: str, paused: bool = True) -> None:
        await self._execute("pause", {"queue": queue, "paused": int(paused)})

    async def paused(self, queues: Sequence[str]) -> set[str]:
        if not queues:
            return set()
        rows = await self._fetch("paused", {"queues": json_text(list(queues))})
        return {row["name"] for row in rows}

    async def mark_tick(self, schedule: str, tick: float, job_id: str) -> None:
        await self._execute("mark_tick", {"schedule": schedule, "tick": tick, "job_id": job_id})

    async def ticks(self, schedules: Sequence[str]) -> dict[str, Tick]:
        if not schedules:
            return {}
        rows = await self._fetch("ticks", {"schedules": json_text(list(schedules))})
        return {row["name"]: Tick(row["name"], row["tick"], row["job_id"]) for row in rows}

    async def _fenced(self, name: str, items: list[list[Any]], **params: object) -> set[str]:
        """Run a settle statement; it changes only rows still reserved under the item's token
        and returns their ids, so an id missing from the answer was refused."""
        if not items:
            return set()
        rows = await self._fetch(name, {"items": json_text(items), **params})
        return {row["id"] for row in rows}

    # -- maintenance -------------------------------------------------------------------------

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """All of the queue's failed jobs go BULK_BATCH at a time, each batch its own statement
        (not atomic as a whole): in one, a backlog of 300,000 outran the driver's timeout."""
        if ids is None:
            return await self._in_batches(queue, JobState.FAILED, self.retry_failed)
        params = {"queue": queue, "ids": ids_json(ids)}
        # The statement skips jobs whose key an unfinished job holds, but it cannot see a push
        # or another retry_failed not yet committed: when that commits, the statement fails
        # whole on jobs_unique. Run again, it sees the new holder and leaves that job failed.
        for attempt in range(1, RETRY_FAILED_ATTEMPTS + 1):
            try:
                moved = await self._execute("retry_failed", params)
                break
            except DriverError as error:
                if not self.raced_on_unique(error) or attempt == RETRY_FAILED_ATTEMPTS:
                    raise
        if moved:
            self._pushed.notify((queue,))
        return moved

    def raced_on_unique(self, error: DriverError) -> bool:
        """Whether `error` is jobs_unique refusing a row because a concurrent statement's job,
        committed meanwhile, took its key (the dialect knows its client's error); never on
        SQLite, whose writers take turns."""
        return False

    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        self.check_purgeable(state)
        if ids is None:  # BULK_BATCH at a time, as retry_failed
            return await self._in_batches(queue, state, lambda q, part: self.purge(q, state, part))
        params = {
            "queue": queue,
            "state": state.value,
            "stored": stored_state(state),
            "ids": ids_json(ids),
        }
        return await self._execute(self._by_state("purge", state), params)

    async def _in_batches(
        self, queue: str, state: JobState, act: Callable[[str, list[str]], Awaitable[int]]
    ) -> int:
        """`act(queue, ids)` on the queue's jobs in `state`, BULK_BATCH ids at a time in id
        order; how many it acted on. A job `act` leaves as it is (a failed job whose unique
        key is held) is passed over, never read again; so is one whose id is not UTF-8 text,
        which no statement can name (its row is for a person to delete). Finished jobs' ids
        are read alone; pending, delayed and reserved jobs as a page of `list_jobs`."""
        params: dict[str, object] = {"queue": queue, "stored": state.value, "batch": BULK_BATCH}
        after, done = "", 0
        while True:
            if state in FINISHED_STATES:
                rows = await self._fetch("finished_ids", {**params, "after": after})
                found = [row["id"] for row in rows]
            else:
                page = await self.list_jobs(queue, state, BULK_BATCH, after=after)
                found = [job.id for job in page]
            named = [job_id for job_id in found if nameable(job_id)]
            if named:
                done += await act(queue, named)
            if len(found) < BULK_BATCH or not named:
                return done
            after = named[-1]
            await asyncio.sleep(self.batch_pause)

    async def prune(self, queue: str, older_than: float) -> int:
        """Delete in batches of PRUNE_BATCH, each its own statement and transaction, so a
        backlog of a million old jobs never becomes one huge delete. Not atomic as a whole."""
        params = {"queue": queue, "older_than": older_than, "batch": PRUNE_BATCH}
        pruned = 0
        while True:
            deleted = await self._execute("prune", params)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                return pruned
            await asyncio.sleep(self.batch_pause)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Wait up to `timeout`; only pushes, releases and retries made through this instance
        end it early. A dialect that can notify other processes overrides this."""
        await self._pushed.wait(timeout)
