"""The registry's core: registration (`conveyor.registration`), then pushing and inspecting.
It knows neither the worker, nor the blocking facade, nor the configuration: `Registry`
(`conveyor.registry`) joins it to those, and the worker and the facade are written against
this class, so that imports run one way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from conveyor import retry as retry_policy
from conveyor.chain import ChainInfo, chain_meta, find_chain, page_id
from conveyor.drivers.base import (
    ALIVE_WITHIN,
    Driver,
    QueueCounts,
    Throughput,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.duration import Duration, seconds
from conveyor.errors import (
    ConfigError,
    JobFailedError,
    RegistryError,
    UnknownJobError,
)
from conveyor.hooks import Hook, Middleware, pushed
from conveyor.job import JobBatch, JobInfo, JobState, NewJob, new_id, new_ids
from conveyor.options import NO_OPTIONS, Options, Resolved, check_unique, resolve
from conveyor.registration import Registration
from conveyor.retry import RetryDelay

T = TypeVar("T")

#: What a job id given to `push` may be: what every driver stores and compares exactly.
JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

#: Payloads `push_many` stores per call to the driver (one round trip, all or none), by default.
PUSH_CHUNK = 10_000

#: How often `result()` looks at a job it waits for: first after this, then twice as long
#: each time, up to RESULT_POLL_MAX.
RESULT_POLL_FIRST = 0.005
RESULT_POLL_MAX = 0.2


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` as lists of `size` (the last one shorter), read lazily: a generator is drawn
    from one list at a time."""
    iterator = iter(items)
    while part := list(itertools.islice(iterator, size)):
        yield part


def check_job_id(job_id: str) -> str:
    """`job_id` if it can be a job's id, else ConfigError naming the rule."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ConfigError(
            f"job_id {job_id!r} is not valid: use 1 to 64 of the characters A-Z a-z 0-9 _ . : -"
        )
    return job_id


class RegistryCore(Registration):
    """A registry without the parts above it: push, push_many, inspection, failed storage."""

    def __init__(self, **settings: Any) -> None:
        """`settings` as `Registration` takes them."""
        super().__init__(**settings)
        #: `_settled` per (queue, job name), for pushes that give no options of their own.
        self._settled_pushes: dict[tuple[str, str], tuple[Resolved, str, Callable[[Any], str]]]
        self._settled_pushes = {}

    # -- hooks (conveyor.hooks) --------------------------------------------------------------

    def hook(self, *kinds: str) -> Callable[[Hook], Hook]:
        """Decorator registering a lifecycle hook for the events `kinds` (every event when
        none is named), before or after freeze: `@registry.hook("failed")`."""

        def register(hook: Hook) -> Hook:
            self.hooks.add(hook, kinds)
            return hook

        return register

    def middleware(self, middleware: Middleware) -> Middleware:
        """Decorator wrapping every handler call in `middleware(job, call_next)`."""
        self.hooks.add_middleware(middleware)
        return middleware

    # -- push --------------------------------------------------------------------------------

    async def push(
        self,
        queue: str,
        job_name: str,
        payload: Any,
        *,
        delay: Duration | None = None,
        unique: str | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
        connection: object | None = None,
        job_id: str | None = None,
    ) -> str:
        """Push one job and return its id.

        With `unique`, a push while an unfinished job of the same queue, job name and key
        exists stores nothing and returns that job's id. Options given here win over the
        job's defaults, which win over the queue's. With `connection` (your own open database
        connection, on a driver that supports it) the job is written in your transaction and
        exists only if it commits. With `job_id` (1 to 64 of A-Z a-z 0-9 _ . : -) the job
        gets that id, and a push of an id stored already stores nothing and returns it: a
        push you may repeat (a schedule's tick, a retried request) runs once."""
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        new = self._job_maker(queue, job_name, options, delay, unique)(payload)
        if job_id is not None:
            new = replace(new, id=check_job_id(job_id))
        driver = await self.driver_of(queue)
        job_id = await driver.push(new, connection=connection)
        if self.hooks.active:
            await self.hooks.emit(pushed(replace(new, id=job_id)))
        if driver.capabilities.inline:
            await self._run_inline(queue)
        return job_id

    async def push_many(
        self,
        queue: str,
        job_name: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
        connection: object | None = None,
        chunk: int = PUSH_CHUNK,
    ) -> list[str]:
        """Push one job per payload, `chunk` payloads (10,000) per round trip where the backend
        allows. Returns the ids in order. `connection` as for `push`.

        `payloads` may be any iterable, a generator included: it is read `chunk` items at a
        time, so a million jobs never sit in memory at once (only their ids, returned). Each
        chunk is all or none; with more than one, a fault in a later chunk (a payload that does
        not validate, a lost server) leaves the earlier ones stored, unless `connection` puts
        them all in your own transaction."""
        if chunk < 1:
            raise ConfigError(f"chunk {chunk!r} is not allowed: push at least 1 job per call")
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        make = self._batch_maker(queue, job_name, options, delay)
        driver = await self.driver_of(queue)
        ids: list[str] = []
        for part in chunked(payloads, chunk):
            batch = make(part)
            ids += await driver.push_many(batch, connection=connection)
            if self.hooks.active:
                for new, stored_id in zip(batch, ids[-len(batch) :], strict=True):
                    await self.hooks.emit(pushed(replace(new, id=stored_id)))
        if driver.capabilities.inline and ids:
            await self._run_inline(queue)
        return ids

    def _batch_maker(
        self, queue: str, job_name: str, options: Options, delay: Duration | None
    ) -> Callable[[list[Any]], Sequence[NewJob]]:
        """`_job_maker` for a chunk of payloads: the same checks and options, the payloads
        encoded and validated as one batch and the ids drawn at once (see `new_ids`)."""
        one = self._job_maker(queue, job_name, options, delay, None)
        codec = self._jobs[job_name].codec
        hooks = self.hooks

        def make(payloads: list[Any]) -> Sequence[NewJob]:
            if hooks.stamps:  # each job's meta is stamped on its own
                return [one(payload) for payload in payloads]
            encoded = codec.encode_many(payloads)
            ids = new_ids(len(payloads))
            return JobBatch(replace(one(payloads[0]), id=ids[0], payload=encoded[0]), ids, encoded)

        return make

    def _job_maker(
        self,
        queue: str,
        job_name: str,
        options: Options,
        delay: Duration | None,
        unique: str | None,
    ) -> Callable[[Any], NewJob]:
        """Check and resolve everything a batch shares once; the maker then only encodes
        each payload and stamps it with an id and the time."""
        self.freeze()
        check_unique(unique)
        resolved, retry_delay, encode = self._settled(queue, job_name, options)
        wait = 0.0 if delay is None else seconds(delay, "delay", zero_ok=True)

        def make(payload: Any) -> NewJob:
            return NewJob(
                id=new_id(),
                queue=queue,
                name=job_name,
                payload=encode(payload),
                delay=wait,
                max_attempts=resolved.max_attempts,
                priority=resolved.priority,
                timeout=resolved.timeout,
                retry_delay=retry_delay,
                unique=unique,
                # Each job its own dict: a handler may change its job's meta.
                meta=hooks.stamp(queue, job_name, resolved.meta)
                if hooks.stamps
                else dict(resolved.meta),
            )

        hooks = self.hooks
        return make

    def _settled(
        self, queue: str, job_name: str, options: Options
    ) -> tuple[Resolved, str, Callable[[Any], str]]:
        """The options in force for a push of `job_name` to `queue` (once frozen), the stored
        form of its retry policy and its payload encoder. Kept per queue and job for pushes
        that give no options of their own (most do): the registry no longer changes."""
        key = (queue, job_name)
        if options is NO_OPTIONS and key in self._settled_pushes:
            return self._settled_pushes[key]
        queue_spec = self.queue_spec(queue)
        try:
            job_spec = self._jobs[job_name]
        except KeyError:
            raise UnknownJobError(job_name) from None
        resolved = resolve(options, job_spec.options, queue_spec.options)
        settled = (resolved, retry_policy.to_json(resolved.retry_delay), job_spec.codec.encode)
        if options is NO_OPTIONS:
            self._settled_pushes[key] = settled
        return settled

    async def _run_inline(self, queue: str) -> None:
        """Run `queue`'s due jobs now, as a driver with the `inline` capability (sync) asks
        after each push. The core has no worker to run them with; `Registry` has."""
        raise RegistryError(
            f"queue {queue!r} is on the sync driver, which runs each job inside push: "
            "use conveyor.Registry, whose push can run it"
        )

    # -- inspection and failed storage ---------------------------------------------------------

    async def queue_info(self) -> dict[str, QueueCounts]:
        """Jobs per state for every registered queue."""
        self.freeze()
        result: dict[str, QueueCounts] = {}
        for queue in self._queues:
            driver = await self.driver_of(queue)
            result.update(await driver.counts([queue]))
        return result

    async def worker_info(self) -> dict[str, WorkerCounts]:
        """Processed, succeeded, failed and retried totals for every registered worker,
        added up over all processes and backends."""
        self.freeze()
        totals = {name: WorkerCounts() for name in self._workers}
        for driver in await self._all_drivers():
            for name, counts in (await driver.worker_stats()).items():
                totals[name] = totals.get(name, WorkerCounts()) + counts
        return totals

    async def workers_alive(self, within: float = ALIVE_WITHIN) -> list[WorkerPresence]:
        """The worker processes heard from in the last `within` seconds (a worker says it is
        alive every HEARTBEAT_EVERY seconds), from every backend, oldest first."""
        self.freeze()
        found = {p.identity: p for d in await self._all_drivers() for p in await d.alive(within)}
        return sorted(found.values(), key=lambda presence: (presence.started_at, presence.identity))

    async def job_info(self, job_id: str) -> JobInfo | None:
        """The job with this id from whichever backend holds it, or None."""
        for driver in await self._all_drivers():
            if not driver.capabilities.lookup:
                continue  # it cannot find a job by id (amqp)
            found = await driver.get(job_id)
            if found is not None:
                return found
        return None

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
        `payload` and these options. With `chain_id` (1 to 64 of A-Z a-z 0-9 _ . : -) a start
        repeated (a retried schedule tick) starts nothing new: the chain exists already."""
        spec = self.jobs.get(job_name)
        if spec is None:
            raise UnknownJobError(job_name)
        if not spec.chain:
            raise RegistryError(
                f"job {job_name!r} is not a chained job: register it with "
                f"@registry.job({job_name!r}, chain=True) and return the next cursor"
            )
        chain_id = new_id() if chain_id is None else check_job_id(chain_id)
        await self.push(
            queue or spec.queue or self.default_queue,
            job_name,
            payload,
            retry=retry,
            retry_delay=retry_delay,
            timeout=timeout,
            priority=priority,
            meta=chain_meta(chain_id, 0, cursor, meta or {}),
            job_id=page_id(chain_id, 0),
        )
        return chain_id

    async def chain_info(self, chain_id: str) -> ChainInfo | None:
        """How far a chain got (see conveyor.chain.ChainInfo), or None when its first page is
        not kept (never pushed, or pruned by its queue's retention)."""
        for driver in await self._all_drivers():
            if not driver.capabilities.lookup:
                continue
            found = await find_chain(driver.get, chain_id)
            if found is not None:
                return found
        return None

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        *,
        limit: int = 100,
        offset: int = 0,
        name: str | None = None,
    ) -> list[JobInfo]:
        """Jobs of `queue` in `state`, oldest first; with `name`, only the jobs of that name
        (filtered across the whole state, then paged)."""
        driver = await self.driver_of(queue)
        return await driver.list_jobs(queue, state, limit, offset, name=name)

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput | None:
        """The queue's jobs succeeded and failed per minute over the last `minutes`, from
        its backend's finished jobs; None for a backend that cannot look jobs up (amqp)."""
        driver = await self.driver_of(queue)
        if not driver.capabilities.lookup:
            return None
        return await driver.throughput(queue, minutes)

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs of `queue` (all, or only `ids`) back to pending; returns how many."""
        return await (await self.driver_of(queue)).retry_failed(queue, ids)

    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete jobs of `queue` in `state` (failed by default); returns how many."""
        return await (await self.driver_of(queue)).purge(queue, state, ids)

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
        when no unfinished job has this id."""
        found = False
        for driver in await self._all_drivers():
            self._check_control(driver, "cancelling jobs")
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
        self.freeze()
        found: set[str] = set()
        for queue in self._queues:
            driver = await self.driver_of(queue)
            if driver.capabilities.control:
                found |= await driver.paused([queue])
        return found

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for a job that keeps its result (`@registry.job(..., keep_result=True)`) to
        finish, and return what its handler returned (decoded JSON). JobFailedError if it
        failed for good or was cancelled; TimeoutError after `timeout` seconds; LookupError
        when no job has this id."""
        async with asyncio.timeout(timeout):
            pause = RESULT_POLL_FIRST
            while True:
                info = await self.job_info(job_id)
                if info is None:
                    raise LookupError(f"no job has the id {job_id!r} (never pushed, or pruned)")
                if info.state is JobState.SUCCEEDED:
                    return None if info.result is None else json.loads(info.result)
                if info.state in (JobState.FAILED, JobState.CANCELLED):
                    reason = f": {info.error.type}: {info.error.message}" if info.error else ""
                    raise JobFailedError(f"job {job_id} ({info.name}) {info.state.value}{reason}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESULT_POLL_MAX)

    def _check_control(self, driver: Driver, operation: str) -> None:
        if not driver.capabilities.control:
            raise driver.unsupported(operation)

    async def migrate(self) -> list[str]:
        """Apply schema migrations on every driver a queue uses; returns the drivers' kinds."""
        self.freeze()
        done: list[str] = []
        for name in dict.fromkeys(spec.driver for spec in self._queues.values()):
            driver = self._resolve_driver(name)
            await driver.migrate()
            self._opened.add(id(driver))
            self._loop = asyncio.get_running_loop()
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
