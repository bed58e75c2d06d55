"""The worker runtime: reserve -> execute -> settle, with leases, timeouts and a graceful stop.

One asyncio task reserves jobs while slots are free, one task per job runs its handler, one
task settles finished jobs in batches, one renews the leases of running jobs every lease/2,
and one prunes finished jobs past their queue's retention. No storage code lives here: every
change to a job goes through its queue's driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.attempt import Outcome, Runner, error_info
from conveyor.drivers import safe_url
from conveyor.drivers.base import Driver, Failure, Release, Reservation, WorkerCounts
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError
from conveyor.job import JobInfo

if TYPE_CHECKING:
    from conveyor.registry import Registry

log = logging.getLogger("conveyor.worker")

PRUNE_EVERY = 60.0
MAX_BACKOFF = 30.0
#: Worker stats cost a round trip of their own: written at most this often, and at stop.
STATS_EVERY = 1.0


@dataclass(slots=True)
class _Running:
    job: JobInfo
    driver: Driver
    task: asyncio.Task[None] | None = None
    #: Why we cancelled the task ourselves: "stop" (shutdown) or "lost" (lease taken over).
    cancel_reason: str | None = None


_Item = TypeVar("_Item", Outcome, _Running)


@dataclass(slots=True)
class _Tally:
    counts: WorkerCounts = field(default_factory=WorkerCounts)
    unsaved: dict[int, tuple[Driver, WorkerCounts]] = field(default_factory=dict)

    def add(self, driver: Driver, counts: WorkerCounts) -> None:
        self.counts += counts
        _, before = self.unsaved.get(id(driver), (driver, WorkerCounts()))
        self.unsaved[id(driver)] = (driver, before + counts)


class Worker:
    """Runs the jobs of every queue that names this worker, until stopped.

    `burst=True` stops by itself once those queues hold no pending, delayed or reserved job.
    A backend that cannot be reached at start is tried again with back-off, for ever or, with
    `startup_timeout`, for that many seconds before `run()` raises BackendUnavailableError.
    """

    def __init__(
        self,
        registry: Registry,
        name: str,
        *,
        burst: bool = False,
        startup_timeout: float | None = None,
    ) -> None:
        self.registry = registry
        self.spec = registry.worker_spec(name)
        self.name = name
        self.burst = burst
        self.startup_timeout = _startup_timeout(startup_timeout)
        self.identity = f"{name}:{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, _Running] = {}
        self._outcomes: list[Outcome] = []
        self._tally = _Tally()
        self._groups: list[tuple[Driver, list[str]]] = []
        self.runner = Runner(registry, self.spec)
        self._backlog = False
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._settle_wakeup = asyncio.Event()
        self._settled_all = False
        self._flushed = asyncio.Event()
        self._give_up_at = math.inf  # when a stopping worker stops retrying its settles
        self._settle_retry = asyncio.Event()
        self._stats_due = 0.0  # when unsaved worker stats may be written next (monotonic)
        self._opening = ""  # the queue whose driver is being opened, named in start-up logs

    @property
    def counts(self) -> WorkerCounts:
        """What this worker object has done since it started."""
        return self._tally.counts

    @property
    def running(self) -> int:
        """How many jobs are running right now."""
        return len(self._running)

    def stop(self, *, now: bool = False) -> None:
        """Stop reserving and let running jobs finish for up to stop_timeout; a second call,
        or `now=True`, stops them at once. Jobs stopped early are released to run again."""
        if now or self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        self._slot_freed.set()

    # -- the run loop ------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until `stop()` (or SIGTERM/SIGINT with `handle_signals`), or until idle in burst."""
        if handle_signals:
            self._install_signal_handlers()
        try:
            if await self._start_up():
                await self._work()
        finally:
            if handle_signals:
                self._remove_signal_handlers()

    async def _work(self) -> None:
        settler = asyncio.create_task(self._settle_loop(), name="conveyor-settle")
        helpers = [
            asyncio.create_task(self._renew_loop(), name="conveyor-renew"),
            asyncio.create_task(self._prune_loop(), name="conveyor-prune"),
        ]
        log.info("worker %s started on queues %s", self.identity, self._queue_names())
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
            # The settler is never cancelled mid-write (a batch in flight would be lost): it is
            # asked to finish, and the last outcomes are flushed here.
            self._settled_all = True
            self._settle_wakeup.set()
            self._give_up_at = time.monotonic() + max(self.spec.stop_timeout, 1.0)
            self._settle_retry.set()  # cut short a back-off begun before the stop
            await asyncio.gather(settler, return_exceptions=True)
            await self._flush()
            await self._save_stats()
            self.runner.close()
            log.info("worker %s stopped: %s", self.identity, self._tally.counts)

    async def _start_up(self) -> bool:
        """Open the drivers of the worker's queues; while a backend cannot be reached, try
        again with back-off (until startup_timeout, if set). False when stopped first: a stop
        ends the retries, and an attempt under way, at once."""
        limit = self.startup_timeout
        give_up = math.inf if limit is None else time.monotonic() + limit
        failures = 0
        while not self._stopping.is_set():
            try:
                groups = await self._open_unless_stopped()
            except BackendUnavailableError as exc:
                failures += 1
                if time.monotonic() >= give_up:
                    raise BackendUnavailableError(
                        f"worker {self.name!r} gave up after {limit:g}s of start-up: {exc}; "
                        "start the backend first, or allow more time with startup_timeout "
                        "(conveyor work --startup-timeout)"
                    ) from exc
                backend = safe_url(self.registry.queue_spec(self._opening).driver)
                what = f"start-up attempt {failures}: opening {backend} (queue {self._opening!r})"
                await self._back_off(what, exc, failures, wake=self._stopping, until=give_up)
                continue
            if groups is not None:
                self._groups = groups
                return True
        log.info("worker %s stopped during start-up", self.identity)
        return False

    async def _open_unless_stopped(self) -> list[tuple[Driver, list[str]]] | None:
        """The opened drivers, or None if a stop came first (the opening is cancelled)."""
        opening = asyncio.ensure_future(self._driver_groups())
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([opening, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (opening, stopped):
                task.cancel()
            await asyncio.gather(opening, stopped, return_exceptions=True)
        return None if opening.cancelled() else opening.result()

    async def _driver_groups(self) -> list[tuple[Driver, list[str]]]:
        groups: dict[int, tuple[Driver, list[str]]] = {}
        for queue in self.registry.queues_of(self.name):
            self._opening = queue
            driver = await self.registry.driver_of(queue)
            groups.setdefault(id(driver), (driver, []))[1].append(queue)
        return list(groups.values())

    def _queue_names(self) -> list[str]:
        return [queue for _, queues in self._groups for queue in queues]

    async def _reserve_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self._has_room():
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                if await self._reserve():
                    failures = 0
                    continue
                if self.burst and await self._settled():
                    return
                failures = 0
            except DriverError as exc:
                failures += 1
                await self._back_off("reserve", exc, failures, wake=self._stopping)
                continue
            await self._idle()

    def _has_room(self) -> bool:
        """Free slots worth a round trip: any one when the queues ran dry last time, a quarter
        of the slots while there is a backlog, so a busy worker reserves in batches."""
        free = self.spec.concurrency - len(self._running)
        wanted = max(1, self.spec.concurrency // 4) if self._backlog else 1
        return free >= wanted

    async def _reserve(self) -> int:
        """Reserve as many jobs as there are free slots, from each driver in turn; start them."""
        started = 0
        for driver, queues in self._groups:
            free = self.spec.concurrency - len(self._running)
            if free <= 0:
                break
            jobs = await driver.reserve(queues, free, self.spec.lease, self.identity)
            for extra in jobs[free:]:
                # More than asked (a driver that retried a reserve whose reply was lost): run
                # no more than the slots allow, and give the rest back at once.
                self._settle(Outcome("release", extra, driver, None, 0.0, False))
            jobs = jobs[:free]
            self._backlog = len(jobs) == free
            for job in jobs:
                self._start(job, driver)
            started += len(jobs)
        return started

    async def _idle(self) -> None:
        """Wait for a push (where the driver can tell) or the poll interval, or a stop."""
        waits: list[Awaitable[object]] = [
            driver.wait(queues, self.spec.poll_interval) for driver, queues in self._groups
        ]
        if self.burst and (self._running or self._outcomes):
            # Only the last jobs' settling stands between a burst worker and its exit: look
            # again as soon as they are written, not a whole poll interval later.
            self._flushed.clear()
            waits.append(self._flushed.wait())
        failed = await _first_of(*waits, self._stopping.wait())
        if failed is not None:
            # A wait that fails at once (its backend is down) would make this loop spin: the
            # failure is logged and the poll interval waited out instead.
            log.warning("waiting for jobs failed (%s); polling instead", failed)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.spec.poll_interval):
                    await self._stopping.wait()

    async def _settled(self) -> bool:
        """True when nothing is running or waiting to settle and the queues hold no work."""
        if self._running or self._outcomes:
            return False
        await self._flush()
        for driver, queues in self._groups:
            for counts in (await driver.counts(queues)).values():
                if counts.pending or counts.delayed or counts.reserved:
                    return False
        return True

    async def _drain(self) -> None:
        """After a stop: give running jobs stop_timeout to finish, then cancel and release them."""
        tasks = [running.task for running in self._running.values() if running.task]
        if tasks and not self._force.is_set():
            log.info(
                "waiting up to %ss for %d running jobs (signal again to stop at once)",
                self.spec.stop_timeout,
                len(tasks),
            )
            await _first_of(asyncio.wait(tasks, timeout=self.spec.stop_timeout), self._force.wait())
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
        or the moment a stopping worker gives up), or until `wake`."""
        delay = min(MAX_BACKOFF, self.spec.poll_interval * 2 ** min(failures - 1, 10))
        delay = min(delay, max(0.0, min(until, self._give_up_at) - time.monotonic()))
        log.warning("%s failed (%s); trying again in %.1fs", what, exc, delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()

    # -- executing one job -------------------------------------------------------------------

    def _start(self, job: JobInfo, driver: Driver) -> None:
        running = _Running(job, driver)
        self._running[job.id] = running
        running.task = asyncio.create_task(self._execute(running))
        running.task.add_done_callback(functools.partial(self._finished, job.id, running))

    def _finished(self, job_id: str, running: _Running, task: asyncio.Task[None]) -> None:
        if task.cancelled() and running.cancel_reason != "lost":
            # Cancelled before its first step (a stop right after the reserve): _execute never
            # ran, so give the job back here, or it stays reserved until its lease runs out.
            self._settle(Outcome("release", running.job, running.driver, count_attempt=False))
        if self._running.get(job_id) is running:
            del self._running[job_id]
        self._slot_freed.set()

    async def _execute(self, running: _Running) -> None:
        job, driver = running.job, running.driver
        try:
            outcome = await self.runner.attempt(job, driver)
        except asyncio.CancelledError:
            if running.cancel_reason == "lost":
                return  # another worker holds the job now; it is theirs to settle
            if self.runner.in_thread(job.id):
                # Released now, another worker would start it while our thread runs on:
                # left reserved and unrenewed, it runs again once its lease runs out.
                log.warning(
                    "job %s (%s): its plain handler still runs in a thread, which Python "
                    "cannot stop: the job is left reserved, no longer renewed, and runs again "
                    "once its lease runs out (within %ss)", job.id, job.name, self.spec.lease,
                )  # fmt: skip
                return
            outcome = Outcome("release", job, driver, count_attempt=False)
        except Exception as exc:  # a fault of conveyor's own: never leave the job unsettled
            log.exception("job %s: internal error while running it", job.id)
            outcome = Outcome("release", job, driver, error_info(exc), delay=1.0)
        self._settle(outcome)

    # -- settling ----------------------------------------------------------------------------

    def _settle(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._settle_wakeup.set()

    async def _settle_loop(self) -> None:
        while not self._settled_all:
            # Woken by outcomes to settle, or when unsaved stats fall due.
            due = self._stats_due - time.monotonic() if self._tally.unsaved else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._settle_wakeup.wait()
            self._settle_wakeup.clear()
            await self._flush()
            if time.monotonic() >= self._stats_due:
                await self._save_stats()
            self._flushed.set()

    async def _flush(self) -> None:
        """Settle everything finished so far, a batch per driver, retrying on backend errors.

        An unsettled job stays reserved and comes back after its lease at worst, so retrying
        is safe, and fencing refuses a settle that comes too late. Once stopping, it gives up
        after stop_timeout rather than hold the process on a dead backend."""
        failures = 0
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            unsettled: list[Outcome] = []
            # One write per driver and verb, so a failed release does not send acks that
            # were written already again (refused then, and their counts lost).
            for driver, outcomes in _by_driver(batch):
                for part in _by_kind(outcomes):
                    try:
                        await self.settle(driver, part)
                    except Exception as exc:  # a DriverError, or a fault of our own: keep them
                        error, unsettled = exc, unsettled + part
            if not unsettled:
                failures = 0
                continue
            self._outcomes[:0] = unsettled
            failures += 1
            if self._force.is_set() or time.monotonic() > self._give_up_at:
                log.warning(
                    "giving up settling %d finished jobs (%s): they run again after their lease",
                    len(self._outcomes), error,
                )  # fmt: skip
                return
            await self._back_off("settle", error, failures, wake=self._settle_retry)
            self._settle_retry.clear()

    async def settle(self, driver: Driver, outcomes: list[Outcome]) -> None:
        """Write one batch of outcomes to `driver` and count what was accepted."""
        acks = [Reservation(o.job.id, _token(o.job)) for o in outcomes if o.kind == "ack"]
        releases = [_release(o) for o in outcomes if o.kind == "release"]
        fails = [_failure(o) for o in outcomes if o.kind == "fail"]
        acked = await driver.ack(acks) if acks else set()
        released = await driver.release(releases) if releases else set()
        failed = await driver.fail(fails) if fails else set()
        settled = acked | released | failed
        for outcome in outcomes:
            if outcome.job.id not in settled:
                log.warning("job %s: lease lost before it was settled", outcome.job.id)
            elif outcome.kind == "fail":
                _log_failure(outcome)
            elif outcome.error is not None:
                _log_retry(outcome)
        retried = sum(1 for o in outcomes if o.kind == "release" and o.count_attempt)
        self._tally.add(
            driver,
            WorkerCounts(
                processed=len(acked) + len(failed) + sum(1 for r in releases if r.id in released),
                succeeded=len(acked),
                failed=len(failed),
                retried=min(retried, len(released)),
            ),
        )

    async def _save_stats(self) -> None:
        self._stats_due = time.monotonic() + STATS_EVERY
        unsaved, self._tally.unsaved = self._tally.unsaved, {}
        for driver, counts in unsaved.values():
            try:
                await driver.record_stats(self.name, counts)
            except Exception as exc:  # a DriverError, or a fault that must not end settling
                log.warning("could not record worker stats (%s)", exc)

    # -- leases and retention ----------------------------------------------------------------

    async def _renew_loop(self) -> None:
        # Every lease/2; after a failure, again soon (a tenth of the lease), so that one lost
        # round trip does not let the leases of running jobs run out.
        pause = self.spec.lease / 2
        while True:
            await asyncio.sleep(pause)
            try:
                renewed = await self.renew()
            except Exception:  # never let a fault end renewal: leases would lapse
                log.exception("renewing leases failed; will try again")
                renewed = False
            pause = self.spec.lease / 2 if renewed else self.spec.lease / 10

    async def renew(self) -> bool:
        """Extend the lease of every running job; cancel any whose lease was taken over.
        False when a backend could not be reached."""
        # A lost job whose thread still runs keeps its slot, but there is no lease to renew.
        held = [running for running in self._running.values() if running.cancel_reason is None]
        reached = True
        for driver, group in _by_driver(held):
            try:
                kept = await driver.renew(
                    [Reservation(r.job.id, _token(r.job)) for r in group], self.spec.lease
                )
            except DriverError as exc:
                log.warning("could not renew leases (%s); will try again", exc)
                reached = False
                continue
            for running in group:
                if running.job.id not in kept and self._running.get(running.job.id) is running:
                    self._lost(running)
        return reached

    def _lost(self, running: _Running) -> None:
        running.cancel_reason = "lost"
        if self.runner.in_thread(running.job.id):
            # Its thread cannot be stopped: it keeps its slot until it returns, so the worker
            # never runs more threads than its concurrency.
            log.warning(
                "job %s: lease lost while its plain handler runs in a thread; another worker "
                "may run it now; its slot stays taken until the thread returns", running.job.id,
            )  # fmt: skip
            return
        log.warning("job %s: lease lost while running; cancelling it", running.job.id)
        if running.task:
            running.task.cancel()

    async def _prune_loop(self) -> None:
        while True:
            for queue in self._queue_names():
                try:
                    await self.registry.prune(queue)
                except DriverError as exc:
                    log.warning("could not prune queue %s (%s)", queue, exc)
            await asyncio.sleep(PRUNE_EVERY)

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


async def run_inline(registry: Registry, queue: str) -> None:
    """Run `queue`'s jobs one by one until none is due: what the `sync` driver does on push."""
    worker = Worker(registry, registry.queue_spec(queue).workers[0])
    driver = await registry.driver_of(queue)
    try:
        while jobs := await driver.reserve([queue], 1, worker.spec.lease, worker.identity):
            await worker.settle(driver, [await worker.runner.attempt(jobs[0], driver)])
        await worker._save_stats()
    finally:
        worker.runner.close()


async def _first_of(*waits: Awaitable[Any]) -> Exception | None:
    """Wait until the first of `waits` is done, then cancel the others. Returns the error
    of a wait that failed, if the first to finish did."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [task.exception() for task in done if not task.cancelled()]
    return next((error for error in errors if isinstance(error, Exception)), None)


def _startup_timeout(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ConfigError(f"startup_timeout must be seconds >= 0 or None, not {seconds!r}")
    return float(seconds)


def _token(job: JobInfo) -> str:
    assert job.reservation is not None, "a reserved job always has a reservation token"
    return job.reservation


def _release(outcome: Outcome) -> Release:
    return Release(
        outcome.job.id,
        _token(outcome.job),
        outcome.delay,
        outcome.error,
        outcome.count_attempt,
    )


def _failure(outcome: Outcome) -> Failure:
    assert outcome.error is not None, "a failure always has an error"
    return Failure(outcome.job.id, _token(outcome.job), outcome.error)


def _by_driver(items: Iterable[_Item]) -> list[tuple[Driver, list[_Item]]]:
    groups: dict[int, tuple[Driver, list[_Item]]] = {}
    for item in items:
        groups.setdefault(id(item.driver), (item.driver, []))[1].append(item)
    return list(groups.values())


def _by_kind(outcomes: list[Outcome]) -> list[list[Outcome]]:
    kinds = ("ack", "release", "fail")
    return [part for kind in kinds if (part := [o for o in outcomes if o.kind == kind])]


def _log_retry(outcome: Outcome) -> None:
    error = outcome.error
    assert error is not None
    log.warning(
        "job %s (%s) attempt %d of %d failed, retrying in %.1fs: %s: %s",
        outcome.job.id, outcome.job.name, outcome.job.attempt, outcome.job.max_attempts,
        outcome.delay, error.type, error.message,
    )  # fmt: skip


def _log_failure(outcome: Outcome) -> None:
    error = outcome.error
    assert error is not None
    log.error(
        "job %s (%s) failed for good after attempt %d: %s: %s",
        outcome.job.id, outcome.job.name, outcome.job.attempt, error.type, error.message,
    )  # fmt: skip
