"""Settling: writing what became of finished jobs (ack, release, fail) to their drivers.

The worker hands every outcome to a `Settler`, which writes them in batches, one write per
driver and verb, from a task of its own: everything that finished while the last write was in
flight goes in the next. It counts what each driver accepted (a settle that comes too late is
refused by fencing and not counted) and saves those worker counts at most once a second.

A write that fails is tried again, after a back-off (one made though its reply was lost, then
refused, counts as written: the job shows it). One the backend refuses (an error other
than BackendUnavailableError: it was reached) may be refusing one outcome in it, which would
otherwise hold back every outcome batched with it, for ever: its outcomes are then written one
by one, and one refused alone ALONE_ATTEMPTS times is written as a failure of its job instead,
naming the refusal, so that the job lands in failed storage where a person can see it.

Once a stopping worker gives up (`give_up_at`), a write still waiting on the backend is cut
short there, whatever the call's own deadline, and nothing more is tried: its jobs come back
after their lease, and the stop ends in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from conveyor.attempt import Outcome, printable
from conveyor.drivers.base import Driver, Failure, Release, Reservation, WorkerCounts
from conveyor.errors import BackendUnavailableError
from conveyor.hooks import EventKind, Hooks, pushed
from conveyor.hooks import settled as settled_event
from conveyor.job import ErrorInfo, JobInfo, JobState

log = logging.getLogger("conveyor.worker")

#: Worker stats cost a round trip of their own: written at most this often, and at stop.
STATS_EVERY = 1.0

#: Times an outcome written alone may be refused before its job is written as failed instead
#: (a failure refused that often too is given up: its job comes back after its lease).
ALONE_ATTEMPTS = 3

#: Waits after a failed write: (what failed, the error, failures in a row, what ends it early).
BackOff = Callable[[str, Exception, int, asyncio.Event], Awaitable[None]]


class _HasDriver(Protocol):
    @property
    def driver(self) -> Driver: ...


_Item = TypeVar("_Item", bound=_HasDriver)


@dataclass(slots=True)
class _Tally:
    counts: WorkerCounts = field(default_factory=WorkerCounts)
    unsaved: dict[int, tuple[Driver, WorkerCounts]] = field(default_factory=dict)

    def add(self, driver: Driver, counts: WorkerCounts, *, again: bool = False) -> None:
        self.counts += WorkerCounts() if again else counts  # again: a failed save's, counted
        _, before = self.unsaved.get(id(driver), (driver, WorkerCounts()))
        self.unsaved[id(driver)] = (driver, before + counts)


class Settler:
    """Settles the outcomes of one worker's jobs; see the module docstring.

    `run()` is the settling task; `finish()` ends it once the last outcomes are written, or
    once giving up: a stopping worker stops retrying after `give_up_at` (monotonic), or at
    once after `give_up()`, since an unsettled job only comes back after its lease."""

    def __init__(
        self, worker: str, back_off: BackOff, hooks: Hooks | None = None, identity: str = ""
    ) -> None:
        self.worker = worker
        #: The worker process's identity, which the outcome events name (as `started` does).
        self.identity = identity or worker
        self.hooks = hooks
        self._back_off = back_off
        self._outcomes: list[Outcome] = []
        self._batch: list[Outcome] = []  # the outcomes `flush` is writing
        self._tally = _Tally()
        self._wakeup = asyncio.Event()
        self._retry = asyncio.Event()
        self._finishing = False
        self._gave_up = False
        self.give_up_at = math.inf
        self._stats_due = 0.0
        # Jobs whose outcome is being written and not yet told to the hooks, each with the
        # event its batch sets once told (see `told`).
        self._telling: dict[str, asyncio.Event] = {}
        #: Jobs whose outcome is written alone, with how often the backend refused it so.
        self._alone: dict[str, int] = {}
        #: Jobs whose outcome was replaced by a failure naming the backend's refusal.
        self._replaced: set[str] = set()
        #: Jobs whose outcome's write failed unanswered: the backend may have made it, and
        #: refuse it when written again (see `_made_before`).
        self._unanswered: set[str] = set()
        # The deadline of the hooks being told an outcome: none until a stop, then the stop's
        # (a hook that hangs would otherwise keep the worker from ever stopping).
        self._hooks_cut: asyncio.Timeout | None = None
        # The deadline of the write in flight: none until a stop, then `give_up_at`.
        self._write_cut: asyncio.Timeout | None = None
        self._gave_up_logged = False
        #: Set after each round of writes: a burst worker waits on it to look again.
        self.flushed = asyncio.Event()

    @property
    def counts(self) -> WorkerCounts:
        """What the worker's settled outcomes add up to so far."""
        return self._tally.counts

    @property
    def waiting(self) -> bool:
        """True while outcomes wait to be written."""
        return bool(self._outcomes)

    def unwritten(self) -> list[Outcome]:
        """The outcomes not known to be written: their jobs are still reserved to this worker,
        so their leases are renewed until they are (a slow hook or write holds them up)."""
        return [*self._batch, *self._outcomes]

    def add(self, outcome: Outcome) -> None:
        """Settle this outcome with the next batch."""
        self._outcomes.append(outcome)
        self._wakeup.set()

    async def told(self, job_id: str) -> None:
        """Return once no outcome of `job_id` is being written and not yet told to the hooks:
        a released job can be reserved again (through another connection) before the write
        that released it has returned; its next "started" waits here so the hooks see
        "retried" first."""
        told = self._telling.get(job_id)
        if told is not None:
            await told.wait()

    async def tell_lost(self, job: JobInfo, started: float) -> None:
        """Tell the hooks that a renewal found `job`'s lease taken over while it ran since
        `started` (monotonic): nothing of it is written, another worker holds it now."""
        if self.hooks is None or not self.hooks.active:
            return
        event = settled_event("lease_lost", job, None, time.monotonic() - started, self.identity)
        with contextlib.suppress(asyncio.CancelledError):  # a stop: still not ours to give back
            await self.hooks.emit(event)

    def give_up(self) -> None:
        """Stop retrying failed writes (a forced stop)."""
        self._gave_up = True
        self._retry.set()
        self._cut_hooks(0.0)

    async def run(self) -> None:
        """Write outcomes as they come, and the worker counts when due, until `finish()`."""
        while not self._finishing:
            # Woken by outcomes to settle, or when unsaved stats fall due.
            due = self._stats_due - time.monotonic() if self._tally.unsaved else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            if time.monotonic() >= self._stats_due:
                await self.save_stats()
            self.flushed.set()

    async def finish(self, task: asyncio.Task[None], give_up_after: float) -> None:
        """End `task` (the one running `run()`) without cutting a write short: a batch in
        flight would be lost. Then write what is left, and the counts."""
        self._finishing = True
        self._wakeup.set()
        self.give_up_at = time.monotonic() + give_up_after
        self._retry.set()  # cut short a back-off begun before the stop
        self._cut_hooks(give_up_after)
        if self._write_cut is not None:  # a write in flight waits no longer than the stop
            self._write_cut.reschedule(asyncio.get_running_loop().time() + give_up_after)
        await asyncio.gather(task, return_exceptions=True)
        await self.flush()
        for outcome in self.unwritten():  # given up: each job's line says so, as it would
            log_outcome(outcome, settled=False, written=False)
        await self.save_stats()

    def time_left(self) -> float:
        """Seconds until a stopping worker gives up settling (inf before the stop)."""
        return max(0.0, self.give_up_at - time.monotonic())

    def _out_of_time(self) -> bool:
        return self._finishing and time.monotonic() >= self.give_up_at

    def _until_give_up(self) -> asyncio.Timeout:
        """A deadline at `give_up_at` once stopping (none before): see `finish`."""
        left = self.give_up_at - time.monotonic() if self._finishing else None
        return asyncio.timeout(None if left is None else max(left, 0.0))

    async def flush(self) -> None:
        """Settle everything finished so far, a batch per driver, retrying on backend errors.

        An unsettled job stays reserved and comes back after its lease at worst, so retrying
        is safe, and fencing refuses a settle that comes too late."""
        failures = 0
        while self._outcomes:
            if self._out_of_time():
                self._give_up("the stop's time to settle ran out")
                return
            batch, self._outcomes = self._outcomes, []
            self._batch = batch
            unsettled: list[Outcome] = []
            # One write per driver and verb, so a failed release does not send acks that
            # were written already again (refused then, and their counts lost).
            for driver, outcomes in by_driver(batch):
                for part in _by_kind(outcomes):
                    for chunk in self._chunks(part):
                        try:
                            await self.settle(driver, chunk)
                        except Exception as exc:  # a DriverError, or a fault of our own
                            error, again = exc, self._refused(chunk, exc)
                            unsettled += again
                            self._unanswered.update(o.job.id for o in again)
                        else:
                            for outcome in chunk:
                                self._alone.pop(outcome.job.id, None)
                                self._replaced.discard(outcome.job.id)
            self._batch = []
            if not unsettled:
                failures = 0
                continue
            self._outcomes[:0] = unsettled
            failures += 1
            if self._gave_up or self._out_of_time():
                self._give_up(error)
                return
            await self._back_off("settle", error, failures, self._retry)
            self._retry.clear()

    def _give_up(self, why: object) -> None:
        """Leave the outcomes unwritten, saying so (once, when stopping)."""
        if self._finishing and self._gave_up_logged:
            return
        self._gave_up_logged = self._finishing
        log.warning(
            "giving up settling %d finished jobs (%s): they run again after their lease",
            len(self._outcomes), why,
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def _writing(self, driver: Driver) -> AsyncIterator[None]:
        """Around writes to `driver`: cut short at `give_up_at` once stopping (see `finish`)."""
        try:
            async with self._until_give_up() as cut:
                self._write_cut = cut
                yield
        except TimeoutError as exc:
            if not cut.expired():
                raise
            raise BackendUnavailableError(
                f"no answer from {driver.kind} before the stopping worker gave up settling"
            ) from exc
        finally:
            self._write_cut = None

    def _chunks(self, part: list[Outcome]) -> list[list[Outcome]]:
        """`part` as its writes: together, but for outcomes to be written alone."""
        together = [o for o in part if o.job.id not in self._alone]
        alone = [[o] for o in part if o.job.id in self._alone]
        return [together, *alone] if together else alone

    def _refused(self, chunk: list[Outcome], exc: Exception) -> list[Outcome]:
        """What to write again of a `chunk` whose write failed with `exc` (see the module
        docstring): all of it while the backend cannot be reached."""
        if isinstance(exc, BackendUnavailableError):
            return chunk
        if len(chunk) > 1:
            for outcome in chunk:
                self._alone.setdefault(outcome.job.id, 0)
            return chunk
        [outcome] = chunk
        job_id = outcome.job.id
        self._alone[job_id] = refusals = self._alone.get(job_id, 0) + 1
        if refusals < ALONE_ATTEMPTS:
            return chunk
        del self._alone[job_id]
        reason = printable(f"{type(exc).__name__}: {exc}")[:1000]
        if job_id in self._replaced:
            self._replaced.discard(job_id)
            self._unanswered.discard(job_id)  # never written again: nothing to look up
            log.error("giving up writing job %s's failure (%s): it comes back after its"
                      " lease", job_id, reason)  # fmt: skip
            return []
        log.error("the backend refused job %s's %s %d times (%s): writing it as failed",
                  job_id, outcome.kind, refusals, reason)  # fmt: skip
        self._replaced.add(job_id)
        error = ErrorInfo(
            "conveyor.errors.DriverError",
            f"conveyor could not write this attempt's outcome ({outcome.kind}): {reason}",
        )
        return [Outcome("fail", outcome.job, outcome.driver, error, duration=outcome.duration)]

    async def settle(self, driver: Driver, outcomes: list[Outcome]) -> None:
        """Write one batch of outcomes to `driver` and count what was accepted."""
        acks = [Reservation(o.job.id, token(o.job), o.result) for o in outcomes if o.kind == "ack"]
        # A chain's next pages with the acks of the pages that made them (see ack_and_push).
        successors = [o.successor for o in outcomes if o.kind == "ack" and o.successor]
        releases = [_release(o) for o in outcomes if o.kind == "release"]
        fails = [_failure(o) for o in outcomes if o.kind == "fail"]
        told = asyncio.Event() if self.hooks is not None and self.hooks.active else None
        if told is not None:
            self._telling.update((o.job.id, told) for o in outcomes)
        try:
            async with self._writing(driver):
                if successors:
                    acked = await driver.ack_and_push(acks, successors)
                else:
                    acked = await driver.ack(acks) if acks else set()
                released = await driver.release(releases) if releases else set()
                failed = await driver.fail(fails) if fails else set()
                made = await self._made_before(driver, outcomes, acked | released | failed)
            acked |= {o.job.id for o in made if o.kind == "ack"}
            released |= {o.job.id for o in made if o.kind == "release"}
            failed |= {o.job.id for o in made if o.kind == "fail"}
            settled = acked | released | failed
            for outcome in outcomes:
                log_outcome(outcome, outcome.job.id in settled)
            if told is not None:
                await self._tell_hooks(outcomes, settled)
        finally:
            if told is not None:
                for outcome in outcomes:
                    self._telling.pop(outcome.job.id, None)
                told.set()
        # Retried: released after a failed attempt. A job given back (by a stop, or a reserve
        # that returned too many) came to no outcome: it runs again, and is processed there.
        after_errors = [o.job.id for o in outcomes if o.kind == "release" and o.error is not None]
        retried = sum(1 for job_id in after_errors if job_id in released)
        self._tally.add(
            driver,
            WorkerCounts(
                processed=len(acked) + len(failed) + retried,
                succeeded=len(acked),
                failed=len(failed - {o.job.id for o in outcomes if o.cancelled}),
                retried=retried,
            ),
        )

    async def _made_before(
        self, driver: Driver, outcomes: list[Outcome], accepted: set[str]
    ) -> list[Outcome]:
        """The outcomes refused now whose earlier write went unanswered yet was made (its reply
        lost: the job is as it left it, this reservation's): written, not a lease lost."""
        if not self._unanswered:  # the usual case, every settle: nothing made, nothing read
            return []
        unsure = [o for o in outcomes if o.job.id in self._unanswered and o.job.id not in accepted]
        self._unanswered.difference_update(o.job.id for o in outcomes)
        made = []
        for outcome in unsure if driver.capabilities.lookup else []:
            job = await driver.get(outcome.job.id)
            if job and job.reservation == outcome.job.reservation and job.state in _left(outcome):
                made.append(outcome)
        return made

    def _cut_hooks(self, after: float) -> None:
        """Cut the hooks being told an outcome `after` seconds from now, and later ones too."""
        when = asyncio.get_running_loop().time() + after
        if self._hooks_cut is not None and (self._hooks_cut.when() or math.inf) > when:
            self._hooks_cut.reschedule(when)

    async def _tell_hooks(self, outcomes: list[Outcome], accepted: set[str]) -> None:
        """`_emit`, cut short once a stop has waited its stop_timeout (at once when forced)."""
        left = self.give_up_at - time.monotonic() if self._finishing else None
        when = None if left is None else asyncio.get_running_loop().time() + max(left, 0.0)
        try:
            async with asyncio.timeout_at(0.0 if self._gave_up else when) as cut:
                self._hooks_cut = cut
                await self._emit(outcomes, accepted)
        except TimeoutError:
            log.error(
                "a lifecycle hook still ran as the worker stopped: cut short (the outcomes of"
                " %s are written; hooks must be quick, see docs/observability.md)",
                ", ".join(o.job.id for o in outcomes),
            )
        finally:
            self._hooks_cut = None

    async def _emit(self, outcomes: list[Outcome], accepted: set[str]) -> None:
        """Tell the lifecycle hooks what became of each job (a stop's give-back is none)."""
        assert self.hooks is not None
        for o in outcomes:
            if o.job.id not in accepted:
                kind: EventKind = "lease_lost"
            elif o.cancelled:
                kind = "cancelled"
            elif o.kind == "fail":
                kind = "failed"
            elif o.kind == "ack":
                if o.successor is not None:  # a chain's next page, stored with this ack
                    await self.hooks.emit(pushed(o.successor))
                kind = "succeeded"
            elif o.error is not None:
                kind = "retried"
            else:
                continue
            await self.hooks.emit(settled_event(kind, o.job, o.error, o.duration, self.identity))

    async def save_stats(self) -> None:
        """Add the unsaved counts (a failed save's too) to the worker's totals in each backend."""
        self._stats_due = time.monotonic() + STATS_EVERY
        unsaved, self._tally.unsaved = self._tally.unsaved, {}
        for driver, counts in unsaved.values():
            try:
                async with self._writing(driver):
                    await driver.record_stats(self.worker, counts)
            except Exception as exc:  # a DriverError, or a fault that must not end settling
                log.warning("could not record worker stats (%s)", exc)
                self._tally.add(driver, counts, again=True)


def _left(outcome: Outcome) -> set[JobState]:
    """The states the write of `outcome` leaves its job in."""
    if outcome.kind == "release":
        return {JobState.PENDING, JobState.DELAYED}
    if outcome.kind == "fail":
        return {JobState.CANCELLED if outcome.cancelled else JobState.FAILED}
    return {JobState.SUCCEEDED}


def by_driver(items: Iterable[_Item]) -> list[tuple[Driver, list[_Item]]]:
    """Items (outcomes, running jobs) grouped by their driver, in order."""
    groups: dict[int, tuple[Driver, list[_Item]]] = {}
    for item in items:
        groups.setdefault(id(item.driver), (item.driver, []))[1].append(item)
    return list(groups.values())


def token(job: JobInfo) -> str:
    """The reservation token of a job `reserve` handed out."""
    assert job.reservation is not None, "a reserved job always has a reservation token"
    return job.reservation


def _release(outcome: Outcome) -> Release:
    job = outcome.job
    return Release(job.id, token(job), outcome.delay, outcome.error, outcome.count_attempt)


def _failure(outcome: Outcome) -> Failure:
    assert outcome.error is not None, "a failure always has an error"
    return Failure(outcome.job.id, token(outcome.job), outcome.error, outcome.cancelled)


def _by_kind(outcomes: list[Outcome]) -> list[list[Outcome]]:
    kinds = ("ack", "release", "fail")
    return [part for kind in kinds if (part := [o for o in outcomes if o.kind == kind])]


def log_outcome(outcome: Outcome, settled: bool, *, written: bool = True) -> None:
    """One line per finished attempt, at the level its outcome deserves, ending with its queue,
    attempt and duration; the record carries id, job, queue, attempt, duration and outcome as
    attributes too (`conveyor work --log-format json` prints them as fields). Not `written`:
    a stopping worker gave up writing it (its job stays reserved until its lease runs out)."""
    job, error = outcome.job, outcome.error
    # A job failed as the likely cause of its worker's deaths was counted an attempt by the
    # reserve that never ran: its last attempt is its last allowed one.
    attempt = min(job.attempt, job.max_attempts)
    if not written:
        level, kind = logging.WARNING, "unsettled"
        said = (
            f"was not settled: its {outcome.kind} was not written before the worker stopped,"
            " so it stays reserved and runs again once its lease ends"
        )
    elif not settled:
        level, kind, said = logging.WARNING, "lost", "lease lost before it was settled"
    elif outcome.cancelled:
        level, kind, said = logging.INFO, "cancelled", "cancelled"
    elif outcome.kind == "ack":
        level, kind, said = logging.INFO, "succeeded", "succeeded"
    elif error is None:
        level, kind, said = logging.INFO, "released", "given back to run again (not failed)"
    elif outcome.kind == "fail":
        level, kind = logging.ERROR, "failed"
        said = f"failed for good after attempt {attempt}: {error.type}: {error.message}"
    else:
        level, kind = logging.WARNING, "retrying"
        wait = "at once" if outcome.driver.retries_at_once else f"in {outcome.delay:.1f}s"
        said = (
            f"attempt {job.attempt} of {job.max_attempts} failed, retrying {wait}: "
            f"{error.type}: {error.message}"
        )
    if not log.isEnabledFor(level):
        return
    job_id, name, queue, said = map(printable, (job.id, job.name, job.queue, said))
    fields = {"id": job_id, "job": name, "queue": queue, "attempt": attempt,
              "duration": round(outcome.duration, 6), "outcome": kind}  # fmt: skip
    log.log(
        level, "job %s (%s) %s [queue %s, attempt %d, %.3fs]",
        job_id, name, said, queue, attempt, outcome.duration, extra=fields,
    )  # fmt: skip
