"""Registration: queues, workers, jobs and drivers registered once, then checked and frozen.

Until `freeze()` the queues and workers are what the code registered. `freeze()` settles what
is in force (`_effective()`: the code's values; `Registry` puts the configuration on top),
reports every mistake it finds, naming the item and the fix, and allows no more changes. A
registry declaring no queue has one implicitly: the default queue, served by its own worker.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor import forked
from conveyor.drivers import DATABASE, SCHEMES, driver_from_url, safe_url
from conveyor.drivers.base import Driver
from conveyor.duration import Duration
from conveyor.errors import (
    ConfigError,
    PayloadError,
    RegistryError,
    UnknownQueueError,
    UnknownWorkerError,
)
from conveyor.hooks import Hooks
from conveyor.loop import LoopEnd, refuse_other_loop
from conveyor.options import Options
from conveyor.payload import DEFAULT_MAX_BYTES, check_max_bytes, payload_type_of
from conveyor.retry import RetryDelay
from conveyor.schedule import Schedule, chained
from conveyor.spec import (
    DEFAULT_DRIVER,
    DEFAULT_QUEUE,
    DEFAULT_RETENTION,
    JobSpec,
    QueueSpec,
    Setting,
    WorkerSpec,
    check_name,
    over_run_limit,
    queue_spec,
    run_times,
    worker_spec,
)


@dataclass(frozen=True, slots=True)
class Declaration:
    """What the code registered, as the arguments it passed (only those it passed), with the
    queues and the worker that exist implicitly when it declared no queue."""

    queues: Mapping[str, Mapping[str, Any]]
    workers: Mapping[str, Mapping[str, Any]]
    #: ("queue" or "worker", name) of what exists only because no queue was declared.
    implicit: frozenset[tuple[str, str]]
    #: Drivers registered by name: the URL the code gave, or None for an instance.
    drivers: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class Effective:
    """What is in force once frozen."""

    default_driver: str
    default_queue: str
    queues: dict[str, QueueSpec]
    workers: dict[str, WorkerSpec]
    #: Drivers made by the configuration, by name; they replace any of the same name.
    drivers: dict[str, Driver] = field(default_factory=dict)
    #: Every value in force and where it came from, when the configuration said.
    settings: tuple[Setting, ...] = ()
    #: Schedules the configuration declared; they replace any of the same name.
    schedules: dict[str, Schedule] = field(default_factory=dict)


class Registration:
    """Registration, freeze() and its checks, lookups, and opening drivers."""

    def __init__(
        self,
        *,
        default_driver: str | None = None,
        default_queue: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if default_queue is not None:
            check_name("queue", default_queue)
        #: The conveyor-wide values the code gave, the "code" layer under the configuration.
        self.code_defaults = {
            key: value
            for key, value in (("driver", default_driver), ("default_queue", default_queue))
            if value is not None
        }
        self.default_driver = default_driver or DEFAULT_DRIVER
        self.default_queue = default_queue or DEFAULT_QUEUE
        self.max_payload_bytes = check_max_bytes(max_payload_bytes)
        self._queues: dict[str, QueueSpec] = {}
        self._workers: dict[str, WorkerSpec] = {}
        self._queue_args: dict[str, dict[str, Any]] = {}
        self._worker_args: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, JobSpec] = {}
        self._schedules: dict[str, Schedule] = {}
        self._drivers: dict[str, Driver] = {}
        self._driver_urls: dict[str, str | None] = {}
        self._settings: tuple[Setting, ...] = ()
        self._opened: set[int] = set()
        #: The event loop the opened drivers belong to; the blocking facade runs its calls there.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_end = LoopEnd()  # closes the drivers as that loop ends (asyncio.run's end)
        self._frozen = False
        #: Lifecycle hooks and handler middleware (conveyor.hooks), added at any time.
        self.hooks = Hooks()
        self._substitute: Driver | None = None

    # -- registration ------------------------------------------------------------------------

    def driver(self, name: str, driver: Driver | str) -> None:
        """Register a driver instance, or a URL such as `sqlite:///jobs.db`, under `name`."""
        self._check_open("driver", name)
        if name in self._drivers:
            raise RegistryError(f"driver {name!r} is registered twice: give each a unique name")
        if isinstance(driver, Driver):
            self._drivers[name], self._driver_urls[name] = driver, None
        else:  # kept as given too: the configuration may replace it before freeze()
            self._drivers[name], self._driver_urls[name] = driver_from_url(driver), driver

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
        """Register a queue. `driver` is a registered driver name, a URL, `"database"` or an
        instance (default: the registry's default driver). `retention` is how long finished
        jobs are kept (None keeps them forever)."""
        self._check_open("queue", name)
        if name in self._queue_args:
            raise RegistryError(f"queue {name!r} is registered twice: give each a unique name")
        given: dict[str, Any] = {
            "driver": self._driver_name(driver),
            "workers": workers,
            "retry": retry,
            "retry_delay": retry_delay,
            "timeout": timeout,
            "priority": priority,
            "meta": meta,
        }
        args = {key: value for key, value in given.items() if value not in (None, ())}
        if retention != DEFAULT_RETENTION:
            args["retention"] = retention
        self._queues[name] = queue_spec(name, **{"driver": self.default_driver, **args})
        self._queue_args[name] = args

    def worker(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        poll_interval: Duration | None = None,
        lease: Duration | None = None,
        stop_timeout: Duration | None = None,
        prefetch: int | None = None,
    ) -> None:
        """Register a worker: `concurrency` jobs at once (default 1), polling every
        `poll_interval` seconds (1) when the backend cannot notify, holding each job for
        `lease` seconds (30; renewed every lease/2 while it runs), and waiting `stop_timeout`
        (30) for running jobs when stopped. While its jobs are short it holds up to
        `prefetch` more reserved, ready for the next free slot (default: its concurrency;
        0 turns it off)."""
        self._check_open("worker", name)
        if name in self._worker_args:
            raise RegistryError(f"worker {name!r} is registered twice: give each a unique name")
        given: dict[str, Any] = {
            "concurrency": concurrency,
            "poll_interval": poll_interval,
            "lease": lease,
            "stop_timeout": stop_timeout,
            "prefetch": prefetch,
        }
        args = {key: value for key, value in given.items() if value is not None}
        self._workers[name] = worker_spec(name, **args)
        self._worker_args[name] = args

    def register_job(
        self,
        name: str,
        *,
        queue: str | None,
        options: Options,
        payload: Any,
        keep_result: bool = False,
        chain: bool = False,
    ) -> Callable[[Callable[..., Any]], JobSpec]:
        """Check `name` now, and return what registers its handler: the decorator's core.
        The payload type comes from the handler's `Job[T]` annotation, or `payload`."""
        self._check_open("job", name)
        if name in self._jobs:
            raise RegistryError(f"job {name!r} is registered twice: give each a unique name")
        if queue is not None:
            check_name("queue", queue)

        def register(handler: Callable[..., Any]) -> JobSpec:
            from conveyor.codec import Codec  # pydantic's tens of ms: the first job pays them

            spec = JobSpec(
                name=name,
                handler=handler,
                codec=Codec(name, payload_type_of(handler, given=payload), self.max_payload_bytes),
                options=options,
                is_async=inspect.iscoroutinefunction(handler),
                queue=queue,
                keep_result=keep_result,
                chain=chain,
            )
            self._jobs[name] = spec
            return spec

        return register

    def declaration(self, default_queue: str) -> Declaration:
        """What the code registered. When it declared no queue, a queue named `default_queue`
        exists implicitly, and one for each job's own `queue=`, all served by a worker named
        `default_queue` (the code may register that worker to set it up)."""
        queues: dict[str, Mapping[str, Any]] = dict(self._queue_args)
        workers: dict[str, Mapping[str, Any]] = dict(self._worker_args)
        implicit: set[tuple[str, str]] = set()
        if not queues:
            named = (spec.queue for spec in self._jobs.values() if spec.queue is not None)
            for queue in dict.fromkeys([default_queue, *named]):
                queues[queue] = {"workers": [default_queue]}
                implicit.add(("queue", queue))
            if default_queue not in workers:
                workers[default_queue] = {}
                implicit.add(("worker", default_queue))
        return Declaration(queues, workers, frozenset(implicit), dict(self._driver_urls))

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Every value in force and where it came from, once frozen (see conveyor.config)."""
        return self._settings

    @property
    def implicit(self) -> bool:
        """True when the code declared no queue, so that the default queue is implicit."""
        return not self._queue_args

    def freeze(self) -> None:
        """Settle what is in force, check it, and allow no more changes. Safe to call twice."""
        if self._frozen:
            return
        effective = self._effective()
        effective.schedules.update(
            {k: v for k, v in self._schedules.items() if k not in effective.schedules}
        )
        problems = [
            *_queue_problems(effective),
            *_worker_problems(effective),
            *self._job_problems(effective),
            *self._schedule_problems(effective),
        ]
        if problems:
            raise RegistryError("the registry has mistakes:\n- " + "\n- ".join(problems))
        self._drivers.update(effective.drivers)
        for what, driver, timeout in run_times(effective.queues, self._jobs.values()):
            too_long = self.run_time_problem(driver, timeout)
            if too_long:
                raise RegistryError(f"{what} {too_long}")
        self.default_driver = effective.default_driver
        self.default_queue = effective.default_queue
        self._queues, self._workers = effective.queues, effective.workers
        self._settings = effective.settings
        self._schedules = effective.schedules
        self._frozen = True

    def run_time_problem(self, driver: str, timeout: float | None) -> str:
        """'' when the driver named `driver` lets a job run `timeout` seconds; else the end
        of a sentence saying why not and what to do (amqp: the broker's consumer_timeout)."""
        return over_run_limit(timeout, self._resolve_driver(driver).max_job_time)

    def _effective(self) -> Effective:
        """What is in force: here the code's own values; `Registry` adds its configuration."""
        declared = self.declaration(self.default_queue)
        return Effective(
            default_driver=self.default_driver,
            default_queue=self.default_queue,
            queues={
                name: queue_spec(name, **{"driver": self.default_driver, **args})
                for name, args in declared.queues.items()
            },
            workers={name: worker_spec(name, **args) for name, args in declared.workers.items()},
        )

    def _job_problems(self, effective: Effective) -> list[str]:
        return [
            f"job {job.name!r} pushes to queue {job.queue!r} (its queue=), which is not "
            f"registered, so no worker would ever run it: add registry.queue({job.queue!r}, "
            "workers=[...]) or change queue="
            for job in self._jobs.values()
            if job.queue is not None and job.queue not in effective.queues
        ]

    def schedule(
        self,
        name: str,
        *,
        job: str,
        cron: str | None = None,
        every: Duration | str | None = None,
        tz: str = "UTC",
        queue: str | None = None,
        payload: Any = None,
        catch_up: bool = True,
    ) -> Schedule:
        """Push `job` with `payload` at every tick of `cron` (five fields, read in `tz`) or
        of `every` (seconds, a timedelta or "30s"), once per tick however many workers run
        the scheduler (see conveyor.schedule). `queue` defaults to the job's own, else the
        default queue. `catch_up=False` skips a tick missed while no scheduler ran."""
        self._check_open("schedule", name)
        if name in self._schedules:
            raise RegistryError(f"schedule {name!r} is registered twice: give each a unique name")
        self._schedules[name] = Schedule.make(
            name, job, queue=queue, payload=payload, cron=cron, every=every, tz=tz,
            catch_up=catch_up,
        )  # fmt: skip
        return self._schedules[name]

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """Registered schedules by name."""
        return self._schedules

    def schedule_queue(self, schedule: Schedule, default_queue: str | None = None) -> str:
        """Where `schedule`'s ticks go: its queue, its job's, else `default_queue` or ours."""
        job = self._jobs.get(schedule.job)
        return schedule.queue or (job and job.queue) or default_queue or self.default_queue

    def _schedule_problems(self, effective: Effective) -> list[str]:
        problems = []
        for schedule in effective.schedules.values():
            spec = self._jobs.get(schedule.job)
            queue = self.schedule_queue(schedule, effective.default_queue)
            if spec is None:
                problems.append(
                    f"schedule {schedule.name!r} pushes job {schedule.job!r}, which is not "
                    f"registered: decorate its handler with @registry.job({schedule.job!r})"
                )
            elif queue not in effective.queues:
                problems.append(
                    f"schedule {schedule.name!r} pushes to queue {queue!r}, which is not "
                    f"registered: add registry.queue({queue!r}, workers=[...])"
                )
            elif spec.chain:
                problems.append(chained(schedule))
            else:
                try:
                    spec.codec.encode(schedule.payload)
                except PayloadError as exc:
                    problems.append(f"schedule {schedule.name!r}: {exc}")
        return problems

    def _check_open(self, kind: str, name: str) -> None:
        if self._frozen:
            raise RegistryError(f"cannot register {kind} {name!r}: the registry is frozen:"
                                " register before the first push, worker or freeze()")  # fmt: skip
        check_name(kind, name)

    def _driver_name(self, driver: str | Driver | None) -> str | None:
        if isinstance(driver, Driver):
            name = f"{driver.kind}-{id(driver):x}"
            self._drivers.setdefault(name, driver)
            self._driver_urls.setdefault(name, None)
            return name
        return driver

    def substitute_driver(self, driver: Driver | None) -> Driver | None:
        """Store every queue's jobs in `driver` (whatever their own), until called with None;
        returns the driver it replaces. For conveyor.testing, not for production code."""
        previous, self._substitute = self._substitute, driver
        if previous is not None and id(previous) in self._opened:
            self._opened.discard(id(previous))
            if not self._opened:
                self._loop = None  # as close() does: no opened driver binds a loop now
        return previous

    def _resolve_driver(self, name: str) -> Driver:
        if self._substitute is not None:
            return self._substitute
        if name not in self._drivers:
            try:
                self._drivers[name] = driver_from_url(name)
            except ConfigError as exc:
                if name == DATABASE or name.partition("://")[0] in SCHEMES:
                    # A known driver refused its URL, or is not installed: it says why.
                    raise RegistryError(str(exc)) from exc
                shown = safe_url(name)  # the name may be a URL with a password in it
                raise RegistryError(
                    f"unknown driver {shown!r}: register it with registry.driver({shown!r}, ...) "
                    f"or use a URL such as sqlite:///jobs.db ({exc})"
                ) from exc
        return self._drivers[name]

    # -- lookups -----------------------------------------------------------------------------

    @property
    def queues(self) -> Mapping[str, QueueSpec]:
        """Queues by name: those registered, and once frozen those in force."""
        return self._queues

    @property
    def workers(self) -> Mapping[str, WorkerSpec]:
        """Workers by name: those registered, and once frozen those in force."""
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
            raise UnknownQueueError(name, registered=self._queues) from None

    def worker_spec(self, name: str) -> WorkerSpec:
        """The worker registered as `name`, or UnknownWorkerError."""
        try:
            return self._workers[name]
        except KeyError:
            raise UnknownWorkerError(name, registered=self._workers) from None

    def queues_of(self, worker: str) -> list[str]:
        """Names of the queues `worker` serves, in registration order."""
        self.worker_spec(worker)
        return [queue.name for queue in self._queues.values() if worker in queue.workers]

    def default_worker(self) -> str:
        """The worker to run when none is named: the implicit one when the code declared no
        queue, else the only worker registered; RegistryError naming the choices otherwise."""
        self.freeze()
        if self.implicit:
            return self.default_queue
        if len(self._workers) == 1:
            return next(iter(self._workers))
        workers = ", ".join(self._workers)
        raise RegistryError(f"name the worker to run: the registered workers are {workers}")

    async def driver_of(self, queue: str) -> Driver:
        """The opened driver that stores `queue`."""
        self.freeze()
        refuse_other_loop(self._loop)
        driver = self._resolve_driver(self.queue_spec(queue).driver)
        if id(driver) not in self._opened:  # first use in this process (or since a fork)
            forked.refuse_parents(driver, queue)
            await driver.open()
            self._opened.add(id(driver))
            self._loop = await self._loop_end.bind()
        return driver

    async def _all_drivers(self) -> list[Driver]:
        self.freeze()  # the implicit default queue exists only once frozen
        unique: dict[int, Driver] = {}
        for queue in self._queues:
            driver = await self.driver_of(queue)
            unique.setdefault(id(driver), driver)
        return list(unique.values())


def _queue_problems(effective: Effective) -> list[str]:
    problems: list[str] = []
    for queue in effective.queues.values():
        if not queue.workers:
            problems.append(f"queue {queue.name!r} has no worker: add workers=[...]")
        problems += [
            f"queue {queue.name!r} names worker {worker!r}, which is not registered: "
            f"add registry.worker({worker!r})"
            for worker in queue.workers
            if worker not in effective.workers
        ]
    return problems


def _worker_problems(effective: Effective) -> list[str]:
    served = {worker for queue in effective.queues.values() for worker in queue.workers}
    return [
        f"worker {name!r} serves no queue: name it in registry.queue(..., workers=[{name!r}])"
        for name in effective.workers
        if name not in served
    ]
