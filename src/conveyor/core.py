"""The registry's core: registration (`conveyor.registration`), pushing (`conveyor.push`),
then inspecting. It knows neither the worker, nor the blocking facade, nor the configuration:
`Registry` (`conveyor.registry`) joins it to those; the worker and the facade are written
against this class, so that imports run one way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, overload

from conveyor import forked
from conveyor.chain import ChainInfo, chain_meta, find_chain, other_start, page_id
from conveyor.drivers.base import (
    ALIVE_WITHIN,
    Driver,
    QueueCounts,
    Throughput,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.errors import (
    BackendUnavailableError,
    ChainExistsError,
    JobFailedError,
    RegistryError,
    UnknownJobError,
)
from conveyor.hooks import Hook, Middleware
from conveyor.job import JobInfo, JobState, job_state, new_id
from conveyor.overview import Overview as Overview  # re-exported: blocking.py's type
from conveyor.push import Pushing, check_job_id, check_page, stored_ids
from conveyor.retry import RetryDelay

#: How often `result()` looks at a job it waits for: first after this, then twice as long
#: each time, up to RESULT_POLL_MAX.
RESULT_POLL_FIRST = 0.005
RESULT_POLL_MAX = 0.2

#: How many jobs `retry_failed` and `purge` by job name list, then move or delete, at a time:
#: a listing reads whole jobs (payload and errors), so fewer than a bulk statement's ids.
NAMED_BATCH = 200

#: What to do where a queue's backend cannot cancel or pause (amqp): said by its Unsupported.
CONTROL_HINT = (
    "put the queue on a driver with job control (sqlite, postgres, mysql, redis; see"
    " docs/drivers.md, Capabilities per driver)"
)


class RegistryCore(Pushing):
    """A registry without the parts above it: push, push_many, inspection, failed storage."""

    def __init__(self, **settings: Any) -> None:
        """`settings` as `Registration` takes them."""
        super().__init__(**settings)
        self._loop_end.close = self._close_ended
        forked.watch(self)

    # -- hooks (conveyor.hooks) --------------------------------------------------------------

    @overload
    def hook(self, hook: Hook, /) -> Hook: ...

    @overload
    def hook(self, *kinds: str) -> Callable[[Hook], Hook]: ...

    def hook(self, *kinds: str | Hook) -> Hook | Callable[[Hook], Hook]:
        """Decorator registering a lifecycle hook for the events `kinds` (every event when
        none is named), before or after freeze: `@registry.hook("failed")`; `@registry.hook`
        alone is `@registry.hook()`."""
        if len(kinds) == 1 and callable(kinds[0]):
            self.hooks.add(kinds[0])
            return kinds[0]

        def register(hook: Hook) -> Hook:
            self.hooks.add(hook, kinds)
            return hook

        return register

    def middleware(self, middleware: Middleware) -> Middleware:
        """Decorator wrapping every handler call in `middleware(job, call_next)`."""
        self.hooks.add_middleware(middleware)
        return middleware

    # -- inspection and failed storage ---------------------------------------------------------

    async def queue_info(self) -> dict[str, QueueCounts]:
        """Jobs per state for every registered queue."""
        result: dict[str, QueueCounts] = {}
        for queues in self._by_backend():  # one read a backend
            if self.driver_for(queues[0]).unmade() is not None:
                result.update(dict.fromkeys(queues, QueueCounts()))
            else:
                result.update(await (await self.driver_of(queues[0])).counts(queues))
        return {queue: result[queue] for queue in self._queues}

    async def overview(
        self, within: float = ALIVE_WITHIN, deadline: float | None = None
    ) -> Overview:
        """Queues, paused queues, worker totals and live worker processes, each backend read
        in turn (one `counts` for all its queues): a backend that cannot be reached, or
        whose reads take longer than `deadline` seconds together, is asked nothing more,
        and its queues are named in `down` with the reason, so that `conveyor list`, the
        dashboard and the metrics still show the rest."""
        self.freeze()
        seen = Overview(workers={name: WorkerCounts() for name in self._workers})
        alive: dict[str, WorkerPresence] = {}
        for queues in self._by_backend():
            made = self.driver_for(queues[0])
            if (why := made.unmade()) is not None:  # nothing to read, nor to create
                seen.counts.update(dict.fromkeys(queues, QueueCounts()))
                seen.unmade.update(dict.fromkeys(queues, why))
                seen.controlled.update(queues if made.capabilities.control else ())
                continue
            try:
                async with asyncio.timeout(deadline):
                    driver = await self.driver_of(queues[0])
                    control = driver.capabilities.control
                    counts = await driver.counts(queues)
                    paused = await driver.paused(queues) if control else set()
                    stats = await driver.worker_stats()
                    present = await driver.alive(within)
            except (BackendUnavailableError, TimeoutError) as exc:
                late = f"no answer within {deadline:g}s" if deadline is not None else "timed out"
                why = str(exc) or late  # asyncio.timeout's TimeoutError says nothing
                seen.down.update(dict.fromkeys(queues, why))
                continue
            seen.counts.update(counts)
            seen.paused |= paused
            seen.controlled.update(queues if control else ())
            seen.uncounted.update(() if driver.capabilities.exact_counts else queues)
            seen.unshared.update(() if driver.capabilities.shared_records else queues)
            for name, worker in stats.items():
                seen.workers[name] = seen.workers.get(name, WorkerCounts()) + worker
            alive.update((p.identity, p) for p in present)
        seen.counts = {queue: seen.counts[queue] for queue in self._queues if queue in seen.counts}
        seen.alive = sorted(alive.values(), key=lambda p: (p.started_at, p.identity))
        return seen

    async def worker_info(self) -> dict[str, WorkerCounts]:
        """Processed, succeeded, failed and retried totals for every registered worker,
        added up over all processes and backends; a store not made yet is not created."""
        drivers = [await self.driver_of(queues[0]) for queues in self._by_backend(made=True)]
        totals = {name: WorkerCounts() for name in self._workers}
        for driver in drivers:
            for name, counts in (await driver.worker_stats()).items():
                totals[name] = totals.get(name, WorkerCounts()) + counts
        return totals

    async def workers_alive(self, within: float = ALIVE_WITHIN) -> list[WorkerPresence]:
        """The worker processes heard from in the last `within` seconds (a worker says it is
        alive every HEARTBEAT_EVERY seconds), from every backend, oldest first."""
        drivers = [await self.driver_of(queues[0]) for queues in self._by_backend(made=True)]
        found = {p.identity: p for d in drivers for p in await d.alive(within)}
        return sorted(found.values(), key=lambda presence: (presence.started_at, presence.identity))

    async def job_info(self, job_id: str) -> JobInfo | None:
        """The job with this id from whichever backend holds it, or None. A backend that
        cannot be reached is passed over; if no other holds the job, its error is raised
        (the job may be there)."""
        if not stored_ids([job_id]):
            return None
        unreachable: BackendUnavailableError | None = None
        for queues in self._by_backend(made=True):  # no job is in a store not made
            try:
                driver = await self.driver_of(queues[0])
                if not driver.capabilities.lookup:
                    continue  # it cannot find a job by id (amqp)
                found = await driver.get(job_id)
            except BackendUnavailableError as exc:
                unreachable = unreachable or exc
                continue
            if found is not None:
                return found
        if unreachable is not None:
            raise unreachable
        return None

    def driver_for(self, queue: str) -> Driver:
        """The driver that stores `queue`, not opened (`driver_of` opens it): its kind,
        capabilities, where() and unmade(), which reads check so as to create nothing."""
        self.freeze()
        return self._resolve_driver(self.queue_spec(queue).driver)

    def _by_backend(self, *, made: bool = False) -> list[list[str]]:
        """The registered queues grouped by the driver that stores them (none opened); with
        `made`, only the groups whose store exists (Driver.unmade), for reads that create none."""
        self.freeze()  # the implicit default queue exists only once frozen
        grouped: dict[int, list[str]] = {}
        for queue in self._queues:
            driver = self._resolve_driver(self.queue_spec(queue).driver)
            grouped.setdefault(id(driver), []).append(queue)
        return [q for q in grouped.values() if not made or self.driver_for(q[0]).unmade() is None]

    async def start_chain(
        self,
        job_name: str,
        payload: Any,
        *,
        queue: str | None = None,
        cursor: Any = None,
        chain_id: str | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> str:
        """Push the first page of a cursor-chained job (registered with `chain=True`; see
        conveyor.chain), handed `cursor`, and return the chain's id. Every page runs with
        `payload` and these options. With `chain_id` (1 to 64 of A-Z a-z 0-9 _ . : -, not .
        or ..) a start repeated (a retried schedule tick) starts nothing new: the chain exists
        already; a start with its id but another job, queue, payload or cursor raises
        ChainExistsError (and stores nothing). Unsupported on a queue whose driver keeps no
        job ids (amqp)."""
        spec = self.jobs.get(job_name)
        if spec is None:
            raise UnknownJobError(job_name)
        if not spec.chain:
            raise RegistryError(
                f"job {job_name!r} is not a chained job: register it with "
                f"@registry.job({job_name!r}, chain=True) and return the next cursor"
            )
        given, chain_id = chain_id, new_id() if chain_id is None else check_job_id(chain_id)
        queue = queue or spec.queue or self.default_queue
        driver = await self.driver_of(queue)
        if not driver.capabilities.unique:
            raise driver.unsupported(
                "chained jobs (start_chain)",
                "it keeps no job ids, so a page run twice would push its next page twice and the"
                " chain would go on twice: put the chained job's queue on sqlite, postgres,"
                " mysql or redis",
            )
        await self.push(
            queue,
            job_name,
            payload,
            retry=retry,
            retry_delay=retry_delay,
            timeout=timeout,
            priority=priority,
            meta=chain_meta(chain_id, 0, cursor, meta or {}),
            job_id=page_id(chain_id, 0),
        )
        if given is not None:
            await self._same_start(chain_id, job_name, queue, spec.codec.encode(payload), cursor)
        return chain_id

    async def _same_start(
        self, chain_id: str, job_name: str, queue: str, payload: str, cursor: Any
    ) -> None:
        """ChainExistsError unless the chain stored under `chain_id` (its first page, found
        after the push, which stores nothing when the id is taken) is this start's."""
        driver = await self.driver_of(queue)
        first = await driver.get(page_id(chain_id, 0)) if driver.capabilities.lookup else None
        if first is None or not (differs := other_start(first, job_name, queue, payload, cursor)):
            return
        raise ChainExistsError(
            chain_id,
            f"chain {chain_id!r} exists already, started with another {differs} (its first page"
            f" is {first.state.value}): this start stored nothing; give it another chain_id",
        )

    async def chain_info(self, chain_id: str) -> ChainInfo | None:
        """How far a chain got (see conveyor.chain.ChainInfo), or None when its first page is
        not kept (never pushed, or pruned by its queue's retention, or its store not made)."""
        if not stored_ids([chain_id]):
            return None
        for queues in self._by_backend(made=True):
            driver = await self.driver_of(queues[0])
            if not driver.capabilities.lookup:
                continue
            found = await find_chain(driver.get, chain_id)
            if found is not None:
                return found
        return None

    async def list_jobs(
        self,
        queue: str,
        state: JobState | str,
        *,
        limit: int = 100,
        offset: int = 0,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        """Jobs of `queue` in `state`, oldest first (by id); with `name`, only the jobs of that
        name (filtered across the whole state, then paged). With `after`, a job id (the last
        of the page before), only the jobs listed after it, then `offset`: a script that
        retries or purges a page and lists the next skips nothing, as it would by offset."""
        state = job_state(state)
        check_page(limit, offset, after)
        if self.driver_for(queue).unmade() or (name is not None and not stored_ids([name])):
            return []  # none stored there yet; or none has a name with a NUL or lone surrogate
        driver = await self.driver_of(queue)
        return await driver.list_jobs(queue, state, limit, offset, name=name, after=after)

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput | None:
        """The queue's jobs succeeded and failed per minute over the last `minutes`, from
        its backend's finished jobs; None for a backend that cannot look jobs up (amqp).
        `minutes` is 1 to 10,080 (a week): the answer holds a count per minute."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 < minutes <= 10080:
            raise RegistryError(f"minutes must be a whole number from 1 to 10080, not {minutes!r}")
        made = self.driver_for(queue)
        if not made.capabilities.lookup:
            return None
        if made.unmade() is not None:  # no job finished there, and none is made by reading
            return Throughput.none(minutes)
        return await (await self.driver_of(queue)).throughput(queue, minutes)

    async def retry_failed(
        self, queue: str, ids: Sequence[str] | None = None, *, name: str | None = None
    ) -> int:
        """Move failed jobs of `queue` (all, only `ids`, or only those of job name `name`)
        back to pending; returns how many. By name, NAMED_BATCH at a time (see `_named`)."""
        driver = await self.driver_of(queue)
        if name is not None:
            return await self._named(queue, JobState.FAILED, name, ids, driver.retry_failed)
        if ids is not None and not (ids := stored_ids(ids)):
            return 0
        return await driver.retry_failed(queue, ids)

    async def purge(
        self,
        queue: str,
        state: JobState | str = JobState.FAILED,
        ids: Sequence[str] | None = None,
        *,
        name: str | None = None,
    ) -> int:
        """Delete jobs of `queue` in `state` (failed by default; all, only `ids`, or only those
        of job name `name`); returns how many. By name, NAMED_BATCH at a time (see `_named`)."""
        state = job_state(state)
        driver = await self.driver_of(queue)
        driver.check_purgeable(state)
        if name is not None:

            async def delete(queue: str, part: Sequence[str]) -> int:
                return await driver.purge(queue, state, part)

            return await self._named(queue, state, name, ids, delete)
        if ids is not None and not (ids := stored_ids(ids)):
            return 0
        return await driver.purge(queue, state, ids)

    async def _named(
        self,
        queue: str,
        state: JobState,
        name: str,
        ids: Sequence[str] | None,
        act: Callable[[str, Sequence[str]], Awaitable[int]],
    ) -> int:
        """`act(queue, ids)` on the queue's jobs of job name `name` in `state`, NAMED_BATCH
        at a time in id order (the driver's `named_ids`), each page after the last id of the
        one before: a job acted on (gone from `state`) or left as it was (a failed job whose
        unique key is held) moves no later page, so every job in `state` throughout is
        reached once, and none twice. Not atomic as a whole: each page is `act`'s own call,
        which acts only on the jobs still in `state` then. How many `act` acted on."""
        if ids is not None:
            raise RegistryError(
                f"name={name!r} and ids together: pass ids (those jobs) or name (every job of"
                " that name), not both"
            )
        if not stored_ids([name]):
            return 0  # no stored job has a name holding a NUL or a lone surrogate
        done = 0
        async for page in (await self.driver_of(queue)).named_ids(queue, state, name, NAMED_BATCH):
            # An id a statement cannot name (bytes that are not UTF-8, on SQL) is passed over:
            # it is for a person to delete, as a whole-queue retry or purge leaves it.
            if named := stored_ids(page):
                done += await act(queue, named)
            if not stored_ids([page[-1]]):
                break  # no cursor can start after it (SQLite: see `nameable`)
        return done

    async def prune(self, queue: str) -> int:
        """Delete the queue's finished jobs older than its retention, by the backend's clock;
        returns how many."""
        spec = self.queue_spec(queue)
        if spec.retention is None:
            return 0
        return await (await self.driver_of(queue)).prune(queue, spec.retention)

    # -- job control -------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: pending or delayed, it is cancelled at once; running, its worker
        stops it at its next lease renewal (an async handler at its next await; a plain one
        may look at `job.cancelled`). Either way it ends `cancelled`, never retried. False
        when no unfinished job has this id. Backends that cannot cancel (amqp) are passed
        over; Unsupported when no backend can."""
        drivers = await self._all_drivers()
        able = [driver for driver in drivers if driver.capabilities.control]
        if not able:
            raise drivers[0].unsupported("cancelling jobs", CONTROL_HINT)
        if not stored_ids([job_id]):
            return False
        found = False
        for driver in able:
            found = bool(await driver.cancel([job_id])) or found
        return found

    async def pause(self, queue: str) -> None:
        """Stop every worker reserving from `queue` (within one poll interval); pushes still
        store jobs. `resume` undoes it."""
        driver = await self.driver_of(queue)
        self._check_control(driver, "pausing queues")
        await driver.pause(queue)

    async def resume(self, queue: str) -> None:
        """Let workers reserve from a paused `queue` again."""
        driver = await self.driver_of(queue)
        self._check_control(driver, "pausing queues")
        await driver.pause(queue, paused=False)

    async def paused_queues(self) -> set[str]:
        """The registered queues that are paused."""
        found: set[str] = set()
        for queues in self._by_backend(made=True):  # one read a backend
            driver = await self.driver_of(queues[0])
            if driver.capabilities.control:
                found |= await driver.paused(queues)
        return found

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for a job that keeps its result (`@registry.job(..., keep_result=True)`) to
        finish, and return what its handler returned (decoded JSON). JobFailedError if it
        failed for good or was cancelled; TimeoutError after `timeout` seconds; LookupError
        when no job has this id; Unsupported when no backend can look a job up (amqp)."""
        drivers = await self._all_drivers()
        if not any(driver.capabilities.lookup for driver in drivers):
            raise drivers[0].unsupported(
                "results (result)",
                "it cannot find a job by id: keep results on sqlite, postgres, mysql or redis",
            )
        async with asyncio.timeout(timeout):
            pause = RESULT_POLL_FIRST
            while True:
                info = await self.job_info(job_id)
                if info is None:
                    raise LookupError(
                        f"no job has the id {job_id!r} (never pushed, or purged or pruned since)"
                    )
                if info.state is JobState.SUCCEEDED:
                    return None if info.result is None else json.loads(info.result)
                if info.state in (JobState.FAILED, JobState.CANCELLED):
                    reason = f": {info.error.type}: {info.error.message}" if info.error else ""
                    raise JobFailedError(f"job {job_id} ({info.name}) {info.state.value}{reason}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESULT_POLL_MAX)

    def _check_control(self, driver: Driver, operation: str) -> None:
        if not driver.capabilities.control:
            raise driver.unsupported(operation, CONTROL_HINT)

    async def migrate(self) -> list[str]:
        """Apply schema migrations on every driver a queue uses; returns the drivers' kinds."""
        self.freeze()
        done: list[str] = []
        for name in dict.fromkeys(spec.driver for spec in self._queues.values()):
            driver = self._resolve_driver(name)
            await driver.migrate()
            self._opened.add(id(driver))
            self._loop = await self._loop_end.bind()
            done.append(driver.kind)
        return done

    async def close(self) -> None:
        """Close every opened driver."""
        for driver in self._drivers.values():
            if id(driver) in self._opened:
                await driver.close()
                self._opened.discard(id(driver))
        if not self._opened:
            self._loop = None  # closed drivers may be opened again, on any loop
            self._loop_end.unbind()

    async def _close_ended(self) -> None:
        """Close drivers of an ended loop as far as it lets them; forgotten either way."""
        try:
            await self.close()
        finally:
            self._opened, self._loop = set(), None
            self._loop_end.unbind()

    def after_fork(self) -> None:
        """In a child forked from this process: the parent's opened drivers and their loop are
        not this process's; drivers made from a URL are made anew (conveyor.forked)."""
        self._drivers = forked.remake(self._drivers, self._opened, self._substitute)
        self._opened, self._loop = set(), None
        self._loop_end.unbind()
