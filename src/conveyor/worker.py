"""The worker runtime: reserve -> execute -> settle, with leases, timeouts and a graceful stop.

One asyncio task reserves jobs while slots are free, one task per job runs its handler, one
task settles finished jobs in batches (settle.py), one renews the leases of running jobs every
lease/2, and one prunes finished jobs past their queue's retention. No storage code here.

Prefetch: while a backlog of short jobs (under PREFETCH_BELOW on average lately) lasts, the
worker holds up to `prefetch` more jobs reserved than it runs, so a freed slot starts the next
at once, not a reserve's round trip later; long jobs are never held back so. Held jobs' leases
are renewed, a stop gives them back at once. None on amqp: it prefetches at the broker.

A job rescued from a worker that died (`rescued` > 0) runs alone: the worker finishes what it
runs, marks the rescued job `alone` in storage, runs it with nothing beside it, and reserves
again only after. A death is charged to a job as an attempt only while it is marked alone, so
a job that kills its worker fails once its attempts are used up, and the jobs that were
running or waiting beside it when it struck are charged nothing (see JobInfo).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.attempt import Runner, cancelled, error_info, given_back, retry_or_fail
from conveyor.drivers.base import Driver, WorkerCounts
from conveyor.errors import DriverError
from conveyor.hooks import started, tell
from conveyor.lease import Held, Leases
from conveyor.schedule import Scheduler
from conveyor.settle import STATS_EVERY, Settler
from conveyor.spec import WorkerSpec
from conveyor.startup import StartUp, stores
from conveyor.stop import Stopped, stop_reserving
from conveyor.upkeep import PRUNE_EVERY, beat, beat_loop, first_of, idle_waits, in_turn, prune_loop

if TYPE_CHECKING:
    from conveyor.core import RegistryCore


log = logging.getLogger("conveyor.worker")

__all__ = ["MAX_BACKOFF", "PRUNE_EVERY", "STATS_EVERY", "Stopped", "Worker"]

#: The longest wait between failed calls (doubling from poll_interval): how long a worker may
MAX_BACKOFF = 5.0  # take to see its backend is back (it was 30 s; an attempt a wait is cheap)
#: Prefetch only while jobs took less than this long on average (seconds), lately.
PREFETCH_BELOW = 0.05


class Worker(Leases):
    """Runs the jobs of every queue that names this worker, until stopped.

    `burst=True` stops by itself once those queues hold no pending, delayed or reserved job.
    With `schedules` (the default, not in burst) it also pushes the ticks of the schedules
    whose queues it serves (see conveyor.schedule).
    A backend that cannot be reached at start is tried again with back-off, for ever or, with
    `startup_timeout`, for that many seconds before `run()` raises BackendUnavailableError.
    `spec` and `queues` (registered queues) replace the registered worker's, e.g. from
    `conveyor work --concurrency/--queues`. Making a worker freezes the registry, as a push does.
    """

    def __init__(
        self,
        registry: RegistryCore,
        name: str,
        *,
        burst: bool = False,
        startup_timeout: float | None = None,
        schedules: bool = True,
        spec: WorkerSpec | None = None,
        queues: Sequence[str] | None = None,
    ) -> None:
        registry.freeze()  # the configuration file's and environment's workers and schedules
        self.registry = registry
        self.spec = registry.worker_spec(name) if spec is None else spec
        self.name = name
        self.burst = burst
        served = registry.queues_of(name) if queues is None else [*queues]
        for queue in served:
            registry.queue_spec(queue)  # UnknownQueueError for a queue never registered
        self.schedules = {
            key: schedule
            for key, schedule in registry.schedules.items()
            if schedules and not burst and registry.schedule_queue(schedule) in served
        }
        self._startup = StartUp(registry, name, asyncio.Event(), startup_timeout, served)
        self.identity = f"{name}:{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, Held] = {}
        #: Rescued jobs reserved and held, each to run alone, in order; and the one running.
        self._rescued: deque[Held] = deque()
        self._alone: Held | None = None
        #: Paused queues as last read, and when each driver's are read again (monotonic).
        self._paused: set[str] = set()
        self._paused_due: dict[int, float] = {}
        #: Jobs a stop cut short: given back (released) or left to their thread (left).
        self._released: list[str] = []
        self._left: list[str] = []
        self.settler = Settler(name, self._back_off_until_woken, registry.hooks, self.identity)
        self._groups: list[tuple[Driver, list[str]]] = []
        self._stopped = False
        self._turns = itertools.count()  # which backend a reserve asks first (in_turn)
        self.runner = Runner(registry, self.spec)
        self._backlog = False
        self._stopping = self._startup.stopping
        self._force = asyncio.Event()
        self._slot_freed = asyncio.Event()
        spec = self.spec
        self._prefetch = spec.concurrency if spec.prefetch is None else spec.prefetch
        #: Reserved jobs waiting for a slot, in order; how many run; what jobs took lately.
        self._waiting: deque[Held] = deque()
        self._active = 0
        self._job_time = PREFETCH_BELOW

    @property
    def counts(self) -> WorkerCounts:
        """What this worker object has done since it started."""
        return self.settler.counts

    @property
    def running(self) -> int:
        """How many jobs are running right now."""
        return self._active

    @property
    def state(self) -> str:
        """ "starting" (its backend not reached yet), "working", "stopping" or "stopped": what
        `conveyor work --health-port` reports."""
        if self._stopped:
            return "stopped"
        if self._stopping.is_set():
            return "stopping"
        return "working" if self._groups else "starting"

    @property
    def waiting(self) -> int:
        """How many reserved jobs wait for a free slot (prefetched: see the module docstring)."""
        return len(self._waiting)

    def stop(self, *, now: bool = False) -> None:
        """Stop reserving and let running jobs finish for up to stop_timeout; a second call,
        or `now=True`, stops them at once. Jobs stopped early are released to run again."""
        if now or self._stopping.is_set():
            self._force.set()
            self.settler.give_up()
        self._stopping.set()
        self._slot_freed.set()

    # -- the run loop ------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = False) -> Stopped:
        """Work until `stop()` (or SIGTERM/SIGINT with `handle_signals`), or until idle in burst.
        Returns how it ended: not `clean` when the stop cut running jobs short."""
        if handle_signals:
            self._install_signal_handlers()
        try:
            if await self._start_up():
                await self._work()
        finally:
            self._stopped = True
            if handle_signals:
                self._remove_signal_handlers()
        # A release the backend never took (the stop gave up writing it) released nothing.
        unsettled = tuple(dict.fromkeys(outcome.job.id for outcome in self.settler.unwritten()))
        released = tuple(job_id for job_id in self._released if job_id not in unsettled)
        return Stopped(released, tuple(self._left), unsettled, at_once=self._force.is_set())

    async def _work(self) -> None:
        settler = asyncio.create_task(self.settler.run(), name="conveyor-settle")
        helpers = [
            asyncio.create_task(self._renew_loop(), name="conveyor-renew"),
            asyncio.create_task(
                prune_loop(self.registry, self._queue_names), name="conveyor-prune"
            ),
            asyncio.create_task(
                beat_loop(self._drivers(), self.identity, self.name), name="conveyor-beat"
            ),
        ]
        if self.schedules:
            scheduler = Scheduler(self.registry, self.schedules, self._stopping)
            helpers.append(asyncio.create_task(scheduler.run(), name="conveyor-schedule"))
        log.info("worker %s started on queues %s", self.identity, stores(self._groups))
        await tell(self.registry.hooks, "worker_started", self.identity, self._queue_names())
        try:
            try:
                await self._reserve_loop()
                await self._drain()
            except BaseException:
                # A crash or a cancel: give running jobs back now rather than leave them
                # running unrenewed, their outcomes never settled.
                self.stop(now=True)
                await self._drain()
                raise
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.settler.finish(settler, give_up_after=max(self.spec.stop_timeout, 1.0))
            left = self.settler.time_left()  # within the settle's time, not a call's deadline
            await beat(self._drivers(), self.identity, self.name, stopping=True, within=left)
            self.runner.close()
            log.info("worker %s stopped: %s", self.identity, self.counts)
            await tell(self.registry.hooks, "worker_stopped", self.identity, self._queue_names())

    async def _start_up(self) -> bool:
        """Open the worker's drivers (see startup.py); False when a stop came first."""
        groups = await self._startup.open(self._back_off_until)
        if groups is None:
            log.info("worker %s stopped during start-up", self.identity)
            return False
        self._groups = groups
        if not all(driver.capabilities.timed_leases for driver, _ in groups):
            # amqp prefetches at the broker, and a broker's prefetch never comes down: held
            # here too, short jobs' deliveries would wait behind long jobs later.
            self._prefetch = 0
        return True

    def _drivers(self) -> list[Driver]:
        return [driver for driver, _ in self._groups]

    def _queue_names(self) -> list[str]:
        return [queue for _, queues in self._groups for queue in queues]

    async def _reserve_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._start_waiting()
            if not self._has_room() and not self._rescued:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                if self._rescued:
                    await self._run_rescued()
                    continue
                if await self._reserve():
                    failures = 0
                    await asyncio.sleep(0)  # the jobs started take their first step first
                    continue
                if self.burst and await self._settled():
                    return
                failures = 0
            except Exception as exc:  # a DriverError, or a fault that must not end the worker
                failures += 1
                if not isinstance(exc, DriverError):
                    log.exception("reserve failed unexpectedly")
                await self._back_off("reserve", exc, failures, wake=self._stopping)
                continue
            await self._idle()

    def _has_room(self) -> bool:
        """Free slots worth a round trip: any one when the queues ran dry last time, a quarter
        of the slots while there is a backlog, so a busy worker reserves in batches."""
        if self._alone is not None:
            return False  # nothing runs beside a job marked alone
        wanted = max(1, self.spec.concurrency // 4) if self._backlog else 1
        return self._room() >= wanted

    def _room(self) -> int:
        """How many jobs to reserve now: the free slots, and while a backlog of short jobs
        lasts, as many more as prefetch allows (see the module docstring)."""
        short = self._backlog and self._job_time < PREFETCH_BELOW
        return self.spec.concurrency + (self._prefetch if short else 0) - len(self._running)

    async def _reserve(self) -> int:
        """Reserve as many jobs as there are free slots, from each driver in turn; start them."""
        started = 0
        for driver, all_queues in in_turn(self._groups, next(self._turns)):
            free = self._room()
            if free <= 0:
                break
            queues = await self._unpaused(driver, all_queues)
            if not queues:
                continue
            jobs = await driver.reserve(queues, free, self.spec.lease, self.identity)
            for extra in jobs[free:]:  # more than asked (a reserve retried after its reply
                self.settler.add(given_back(extra, driver))  # was lost): the rest given back
            jobs = jobs[:free]
            self._backlog = len(jobs) == free
            for job in jobs:
                # Held (its lease renewed, its slot taken) until a slot is free, or for a
                # rescued job, until it can run alone.
                held = Held(job, driver)
                self._running[job.id] = held
                (self._rescued if job.rescued else self._waiting).append(held)
            started += len(jobs)
            self._start_waiting()
        return started

    async def _unpaused(self, driver: Driver, queues: list[str]) -> list[str]:
        """The queues not paused (`registry.pause`), as last read: read again once per
        poll interval, so a pause reaches every worker within one."""
        if not driver.capabilities.control:
            return queues
        now = time.monotonic()
        if now >= self._paused_due.get(id(driver), 0.0):
            self._paused.difference_update(queues)
            self._paused.update(await driver.paused(queues))
            self._paused_due[id(driver)] = now + self.spec.poll_interval
        return [queue for queue in queues if queue not in self._paused]

    async def _run_rescued(self) -> None:
        """Run held rescued jobs one at a time, each once nothing else runs: if the worker
        dies now, the job alone was running (see the module docstring)."""
        while self._rescued and not self._stopping.is_set():
            if any(running.task is not None for running in self._running.values()):
                self._slot_freed.clear()
                await first_of(self._slot_freed.wait(), self._stopping.wait())
                continue
            held = self._rescued[0]
            if self._running.get(held.job.id) is held and not await self._mark_alone(held):
                continue  # lost meanwhile: gone from `_running`
            self._rescued.popleft()
            if self._running.get(held.job.id) is not held:
                continue  # its lease was taken over while it waited
            log.warning(
                "job %s (%s) was taken back from a worker that stopped answering (%d times):"
                " running it alone", held.job.id, held.job.name, held.job.rescued,
            )  # fmt: skip
            self._alone = held
            self._launch(held)

    async def _idle(self) -> None:
        """Wait for a push (where the driver can tell) or the poll interval, or a stop."""
        # At most until the pauses are due to be read again: a push waking the worker then
        # finds them read (before, a push after that time waited for their read, a round trip).
        due = min(self._paused_due.values(), default=math.inf) - time.monotonic()
        waits = idle_waits(self._groups, self._paused, max(0.0, min(self.spec.poll_interval, due)))
        if self.burst and (self._running or self.settler.waiting):
            # Only the last jobs' settling stands between a burst worker and its exit: look
            # again as soon as they are written, not a whole poll interval later.
            self.settler.flushed.clear()
            waits.append(self.settler.flushed.wait())
        failed = await first_of(*waits, self._stopping.wait())
        if failed is not None:
            # A wait that fails at once (its backend is down) would make this loop spin: the
            # failure is logged and the poll interval waited out instead.
            log.warning("waiting for jobs failed (%s); polling instead", failed)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.spec.poll_interval):
                    await self._stopping.wait()

    async def _settled(self) -> bool:
        """True when nothing is running or waiting to settle and the queues hold no work."""
        if self._running or self.settler.waiting:
            return False
        await self.settler.flush()
        for driver, queues in self._groups:
            for queue, counts in (await driver.counts(queues)).items():
                if queue in self._paused:
                    continue  # its jobs wait for a resume, not for this worker
                if counts.pending or counts.delayed or counts.reserved:
                    return False
        return True

    async def _drain(self) -> None:
        """After a stop: give running jobs stop_timeout to finish, then cancel and release them.
        Jobs held and not started (rescued or prefetched) are released at once. The drivers
        hear first that the worker reserves no more: none holds back a job meanwhile."""
        await stop_reserving(self._groups, self.identity)
        for held in (*self._rescued, *self._waiting):
            if self._running.pop(held.job.id, None) is held:
                self.settler.add(given_back(held.job, held.driver))
        self._rescued.clear()
        self._waiting.clear()
        tasks = [running.task for running in self._running.values() if running.task]
        if tasks and not self._force.is_set():
            log.info(
                "waiting up to %ss for %d running jobs to finish",
                self.spec.stop_timeout,
                len(tasks),
            )
            await first_of(asyncio.wait(tasks, timeout=self.spec.stop_timeout), self._force.wait())
        for running in list(self._running.values()):
            running.cancel_reason = "stop"
            if running.task:
                running.task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _back_off(
        self, what: str, exc: Exception, failures: int, *, wake: asyncio.Event,
        until: float = math.inf,
    ) -> None:  # fmt: skip
        """Wait longer after each failure in a row (up to MAX_BACKOFF, and never past `until`
        or the moment a stopping worker gives up settling), or until `wake`."""
        delay = min(MAX_BACKOFF, self.spec.poll_interval * 2 ** min(failures - 1, 10))
        delay = min(delay, max(0.0, min(until, self.settler.give_up_at) - time.monotonic()))
        log.warning("%s failed (%s); trying again in %.1fs", what, exc, delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()

    async def _back_off_until_woken(
        self, what: str, exc: Exception, failures: int, wake: asyncio.Event
    ) -> None:
        await self._back_off(what, exc, failures, wake=wake)

    async def _back_off_until(self, what: str, exc: Exception, failures: int, until: float) -> None:
        await self._back_off(what, exc, failures, wake=self._stopping, until=until)

    # -- executing one job -------------------------------------------------------------------

    def _start_waiting(self) -> None:
        """Start reserved jobs while slots are free: none while a rescued job waits to run
        alone or runs, or once stopping."""
        while self._waiting and self._active < self.spec.concurrency:
            if self._rescued or self._alone is not None or self._stopping.is_set():
                return
            held = self._waiting.popleft()
            if self._running.get(held.job.id) is held:  # not lost or cancelled while it waited
                self._launch(held)

    def _launch(self, running: Held) -> None:
        self._active += 1
        running.started = time.monotonic()
        running.task = asyncio.create_task(self._execute(running))
        running.task.add_done_callback(functools.partial(self._finished, running.job.id, running))

    def _finished(self, job_id: str, running: Held, task: asyncio.Task[None]) -> None:
        self._active -= 1
        self._job_time += (time.monotonic() - running.started - self._job_time) / 16
        if task.cancelled() and running.cancel_reason != "lost":
            # Cancelled before its first step (a stop right after the reserve): _execute never
            # ran, so give the job back here, or it stays reserved until its lease runs out.
            self._released.append(running.job.id)
            self.settler.add(given_back(running.job, running.driver))
        if self._running.get(job_id) is running:
            del self._running[job_id]
        if self._alone is running:
            self._alone = None
        self._start_waiting()
        self._slot_freed.set()

    async def _execute(self, running: Held) -> None:
        job, driver = running.job, running.driver
        if (hooks := self.registry.hooks).active:
            await self.settler.told(job.id)  # "retried" before the next "started"
            await hooks.emit(started(job, self.identity))
        try:
            outcome = await self.runner.attempt(job, driver)
        except asyncio.CancelledError:
            if running.cancel_reason == "lost":  # another worker holds the job: theirs to settle
                await self.settler.tell_lost(job, running.started)
                return
            if running.cancel_reason == "cancel":
                self.settler.add(cancelled(job, driver, "while it ran"))
                return
            if self.runner.in_thread(job.id):
                # Released now, another worker would start it while our thread runs on:
                # left reserved and unrenewed, it runs again once its lease runs out.
                fields = {
                    "id": job.id,
                    "job": job.name,
                    "queue": job.queue,
                    "outcome": "left",
                    "attempt": job.attempt,
                    "duration": time.monotonic() - running.started,
                }
                log.warning(
                    "job %s (%s): its plain handler still runs in a thread, which Python "
                    "cannot stop: the job is left reserved, no longer renewed, and runs again "
                    "once its lease runs out (within %ss)", job.id, job.name, self.spec.lease,
                    extra=fields,
                )  # fmt: skip
                self._left.append(job.id)
                return
            self._released.append(job.id)
            outcome = given_back(job, driver, running.started)
        except Exception as exc:  # a fault of conveyor's own: never leave the job unsettled
            log.exception("job %s: internal error while running it", job.id)
            outcome = retry_or_fail(job, driver, error_info(exc))
        self.settler.add(outcome)

    # -- signals -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        at_once = self._stopping.is_set()
        log.info("%s received: %s", signal.Signals(signum).name, "stopping now" if at_once else
                 "stopping after running jobs (send again to stop at once)")  # fmt: skip
        self.stop(now=at_once)
