"""The registry: queues, workers, typed jobs and drivers, registered once and then frozen.

    registry = Registry()
    registry.queue("mail", workers=["main"], retry=5)
    registry.worker("main", concurrency=20)

    @registry.job("mail.send")
    async def send(job: Job[Email]) -> None: ...

    await registry.push("mail", "mail.send", Email(to="a@example.com"))

Pushing (or starting a worker) freezes the registry; `freeze()` does it explicitly and reports
every mistake it finds, naming the item and the fix.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor import retry as retry_policy
from conveyor.drivers import driver_from_url, safe_url
from conveyor.drivers.base import (
    ALIVE_WITHIN,
    Driver,
    QueueCounts,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.errors import (
    ConfigError,
    RegistryError,
    UnknownJobError,
    UnknownQueueError,
    UnknownWorkerError,
)
from conveyor.job import JobInfo, JobState, NewJob, new_id
from conveyor.options import Options, check_unique, resolve
from conveyor.payload import DEFAULT_MAX_BYTES, Codec, payload_type_of
from conveyor.retry import RetryDelay

if TYPE_CHECKING:
    from conveyor.blocking import BlockingRegistry

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
DEFAULT_DRIVER = "sqlite"
DRIVER_ENV = "CONVEYOR_DRIVER"
DEFAULT_RETENTION = 7 * 24 * 3600.0

Duration = float | timedelta
Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A registered queue: where its jobs are stored, who works it, and its defaults."""

    name: str
    driver: str
    workers: tuple[str, ...]
    options: Options
    retention: float | None

    def __repr__(self) -> str:
        # `driver` may be a URL with a password in it: shown masked, as in every message.
        return (
            f"QueueSpec(name={self.name!r}, driver={safe_url(self.driver)!r},"
            f" workers={self.workers!r}, options={self.options!r}, retention={self.retention!r})"
        )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """A registered worker: how many jobs it runs at once and how it holds them."""

    name: str
    concurrency: int
    poll_interval: float
    lease: float
    stop_timeout: float


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job: its handler, payload codec and defaults."""

    name: str
    handler: Callable[..., Any]
    codec: Codec
    options: Options
    is_async: bool


class Registry:
    """Holds what an application registers, and pushes and inspects jobs once frozen."""

    def __init__(
        self, *, default_driver: str | None = None, max_payload_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """`default_driver` is the driver of queues that name none: a URL or a registered name.
        Unless given, it is the CONVEYOR_DRIVER environment variable, else the SQLite file
        conveyor.db."""
        self.default_driver = default_driver or os.environ.get(DRIVER_ENV) or DEFAULT_DRIVER
        self.max_payload_bytes = max_payload_bytes
        self._queues: dict[str, QueueSpec] = {}
        self._workers: dict[str, WorkerSpec] = {}
        self._jobs: dict[str, JobSpec] = {}
        self._drivers: dict[str, Driver] = {}
        self._opened: set[int] = set()
        #: The event loop the opened drivers belong to; the blocking facade runs its calls there.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frozen = False
        self._blocking: BlockingRegistry | None = None

    # -- registration ------------------------------------------------------------------------

    def driver(self, name: str, driver: Driver | str) -> None:
        """Register a driver instance, or a URL such as `sqlite:///jobs.db`, under `name`."""
        self._check_open("driver", name)
        if name in self._drivers:
            raise RegistryError(f"driver {name!r} is registered twice: give each a unique name")
        self._drivers[name] = driver if isinstance(driver, Driver) else driver_from_url(driver)

    def queue(
        self,
        name: str,
        *,
        driver: str | Driver | None = None,
        workers: Sequence[str] = (),
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        retention: Duration | None = DEFAULT_RETENTION,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Register a queue. `driver` is a registered driver name, a URL or an instance
        (default: the embedded SQLite file conveyor.db). `retention` is how long finished
        jobs are kept (None keeps them forever)."""
        self._check_open("queue", name)
        if name in self._queues:
            raise RegistryError(f"queue {name!r} is registered twice: give each a unique name")
        if isinstance(workers, str):
            raise RegistryError(f"queue {name!r}: workers must be a list, as workers=[{workers!r}]")
        self._queues[name] = QueueSpec(
            name=name,
            driver=self._driver_name(driver),
            workers=tuple(workers),
            options=Options.given(
                retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
            ),
            retention=None
            if retention is None
            else _seconds(retention, f"queue {name!r} retention"),
        )

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 1,
        poll_interval: Duration = 1.0,
        lease: Duration = 30.0,
        stop_timeout: Duration = 30.0,
    ) -> None:
        """Register a worker: `concurrency` jobs at once, polling every `poll_interval` seconds
        when the backend cannot notify, holding each job for `lease` seconds (renewed every
        lease/2 while it runs), and waiting `stop_timeout` for running jobs when stopped."""
        self._check_open("worker", name)
        if name in self._workers:
            raise RegistryError(f"worker {name!r} is registered twice: give each a unique name")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise RegistryError(f"worker {name!r}: concurrency must be a whole number >= 1")
        self._workers[name] = WorkerSpec(
            name=name,
            concurrency=concurrency,
            poll_interval=_seconds(poll_interval, f"worker {name!r} poll_interval"),
            lease=_seconds(lease, f"worker {name!r} lease"),
            stop_timeout=_seconds(stop_timeout, f"worker {name!r} stop_timeout", zero_ok=True),
        )

    def job(
        self,
        name: str,
        *,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        meta: dict[str, Any] | None = None,
        payload: Any = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator registering a handler, `async def` or plain, taking one `Job[T]`.

        The payload type T comes from the annotation (dataclass, pydantic model, TypedDict or
        dict), or from `payload=` when given. The handler is returned unchanged."""
        self._check_open("job", name)
        if name in self._jobs:
            raise RegistryError(f"job {name!r} is registered twice: give each a unique name")
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )

        def register(handler: Handler) -> Handler:
            payload_type = payload if payload is not None else payload_type_of(handler)
            self._jobs[name] = JobSpec(
                name=name,
                handler=handler,
                codec=Codec(name, payload_type, self.max_payload_bytes),
                options=options,
                is_async=inspect.iscoroutinefunction(handler),
            )
            return handler

        return register

    def freeze(self) -> None:
        """Check everything registered and allow no more changes. Safe to call twice."""
        if self._frozen:
            return
        problems = [*self._queue_problems(), *self._worker_problems()]
        if problems:
            raise RegistryError("the registry has mistakes:\n- " + "\n- ".join(problems))
        for spec in self._queues.values():
            self._resolve_driver(spec.driver)
        self._frozen = True

    def _queue_problems(self) -> list[str]:
        problems: list[str] = []
        for queue in self._queues.values():
            if not queue.workers:
                problems.append(f"queue {queue.name!r} has no worker: add workers=[...]")
            problems += [
                f"queue {queue.name!r} names worker {worker!r}, which is not registered: "
                f"add registry.worker({worker!r})"
                for worker in queue.workers
                if worker not in self._workers
            ]
        return problems

    def _worker_problems(self) -> list[str]:
        served = {worker for queue in self._queues.values() for worker in queue.workers}
        return [
            f"worker {name!r} serves no queue: name it in registry.queue(..., workers=[{name!r}])"
            for name in self._workers
            if name not in served
        ]

    def _check_open(self, kind: str, name: str) -> None:
        if self._frozen:
            raise RegistryError(f"cannot register {kind} {name!r}: the registry is frozen")
        check_name(kind, name)

    def _driver_name(self, driver: str | Driver | None) -> str:
        if driver is None:
            return self.default_driver
        if isinstance(driver, Driver):
            name = f"{driver.kind}-{id(driver):x}"
            self._drivers.setdefault(name, driver)
            return name
        return driver

    def _resolve_driver(self, name: str) -> Driver:
        if name not in self._drivers:
            try:
                self._drivers[name] = driver_from_url(name)
            except ConfigError as exc:
                shown = safe_url(name)  # the name may be a URL with a password in it
                raise RegistryError(
                    f"unknown driver {shown!r}: register it with registry.driver({shown!r}, ...) "
                    f"or use a URL such as sqlite:///jobs.db ({exc})"
                ) from exc
        return self._drivers[name]

    # -- lookups -----------------------------------------------------------------------------

    @property
    def queues(self) -> Mapping[str, QueueSpec]:
        """Registered queues by name."""
        return self._queues

    @property
    def workers(self) -> Mapping[str, WorkerSpec]:
        """Registered workers by name."""
        return self._workers

    @property
    def jobs(self) -> Mapping[str, JobSpec]:
        """Registered jobs by name."""
        return self._jobs

    def queue_spec(self, name: str) -> QueueSpec:
        """The queue registered as `name`, or UnknownQueueError."""
        try:
            return self._queues[name]
        except KeyError:
            raise UnknownQueueError(name) from None

    def worker_spec(self, name: str) -> WorkerSpec:
        """The worker registered as `name`, or UnknownWorkerError."""
        try:
            return self._workers[name]
        except KeyError:
            raise UnknownWorkerError(name) from None

    def queues_of(self, worker: str) -> list[str]:
        """Names of the queues `worker` serves, in registration order."""
        self.worker_spec(worker)
        return [queue.name for queue in self._queues.values() if worker in queue.workers]

    async def driver_of(self, queue: str) -> Driver:
        """The opened driver that stores `queue`."""
        self.freeze()
        driver = self._resolve_driver(self.queue_spec(queue).driver)
        if id(driver) not in self._opened:
            await driver.open()
            self._opened.add(id(driver))
            self._loop = asyncio.get_running_loop()
        return driver

    async def _all_drivers(self) -> list[Driver]:
        unique: dict[int, Driver] = {}
        for queue in self._queues:
            driver = await self.driver_of(queue)
            unique.setdefault(id(driver), driver)
        return list(unique.values())

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
    ) -> str:
        """Push one job and return its id.

        With `unique`, a push while an unfinished job of the same queue, job name and key
        exists stores nothing and returns that job's id. Options given here win over the
        job's defaults, which win over the queue's. With `connection` (your own open database
        connection, on a driver that supports it) the job is written in your transaction and
        exists only if it commits."""
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        new = self._job_maker(queue, job_name, options, delay, unique)(payload)
        driver = await self.driver_of(queue)
        job_id = await driver.push(new, connection=connection)
        await self._run_inline(driver, queue)
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
    ) -> list[str]:
        """Push one job per payload, in one round trip where the backend allows; all or none
        are stored. Returns the ids in order. `connection` as for `push`."""
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        make = self._job_maker(queue, job_name, options, delay, None)
        batch = [make(item) for item in payloads]
        driver = await self.driver_of(queue)
        ids = await driver.push_many(batch, connection=connection) if batch else []
        await self._run_inline(driver, queue)
        return ids

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
        queue_spec = self.queue_spec(queue)
        try:
            job_spec = self._jobs[job_name]
        except KeyError:
            raise UnknownJobError(job_name) from None
        check_unique(unique)
        resolved = resolve(options, job_spec.options, queue_spec.options)
        wait = 0.0 if delay is None else _seconds(delay, "delay", zero_ok=True)
        retry_delay = retry_policy.to_json(resolved.retry_delay)
        encode = job_spec.codec.encode

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
                meta=resolved.meta,
            )

        return make

    async def _run_inline(self, driver: Driver, queue: str) -> None:
        if driver.capabilities.inline:
            from conveyor.worker import run_inline  # the worker imports this module

            await run_inline(self, queue)

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
            found = await driver.get(job_id)
            if found is not None:
                return found
        return None

    async def list_jobs(
        self, queue: str, state: JobState, *, limit: int = 100, offset: int = 0
    ) -> list[JobInfo]:
        """Jobs of `queue` in `state`, oldest first."""
        return await (await self.driver_of(queue)).list_jobs(queue, state, limit, offset)

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

    @property
    def blocking(self) -> BlockingRegistry:
        """The same API for code without an event loop: `registry.blocking.push(...)`."""
        if self._blocking is None:
            from conveyor.blocking import BlockingRegistry

            self._blocking = BlockingRegistry(self)
        return self._blocking


def check_name(kind: str, name: str) -> None:
    """Refuse names outside [A-Za-z0-9_.:-]{1,128}, naming the item."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"{kind} name {name!r} is not valid: use 1 to 128 of the characters A-Z a-z 0-9 _ . : -"
        )


def _seconds(value: Duration, what: str, *, zero_ok: bool = False) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigError(f"{what} must be seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds):  # NaN is never reached: a job due then would never run
        raise ConfigError(f"{what} must be a finite number of seconds, not {value!r}")
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise ConfigError(f"{what} must be more than 0 seconds, not {value!r}")
    return float(seconds)
