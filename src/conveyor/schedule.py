"""Schedules: periodic pushes, each tick pushed exactly once however many processes run them.

    registry.schedule("nightly", cron="0 2 * * *", tz="Europe/Berlin", job="export.start",
                      payload={"shard": 0})
    registry.schedule("heartbeat", every="30s", job="ping")

Every worker process may run the scheduler (`conveyor work` does unless `--no-schedules`).
Each pushes a tick at its time with an id made of the schedule's name and the tick's time
(`job.stable_id`): the first push stores the job, every other push of that id stores nothing,
whatever state the job is in, for as long as it is kept (the queue's retention). The driver
then records the tick (`Driver.mark_tick`), so a scheduler that starts knows the latest tick
pushed and what it missed, and none pushes a tick at or before it (its job may be pruned).

Cron expressions are read by croniter, in the schedule's time zone (zoneinfo): a wall-clock
time the clocks skip in spring runs at the first time after it, a time they repeat in autumn
runs once. `every` ticks fall on whole multiples of the interval since the epoch, so every
process agrees on them. Times are this machine's clock: keep the hosts' clocks in sync (NTP).

A scheduler that starts and finds ticks missed while none ran pushes the latest of them once
(`catch_up=True`, the default) or none (`catch_up=False`); a schedule with no tick recorded
yet (its first start) catches up nothing. A running scheduler that finds it passed ticks (a
slow push, a busy machine) pushes each of them, up to BACKFILL in a row; more (a suspended
machine) and it pushes the latest only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor import duration
from conveyor.drivers.base import Tick
from conveyor.errors import ConfigError, ConveyorError
from conveyor.job import stable_id

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

__all__ = ["BACKFILL", "Schedule", "Scheduler", "chained", "owed"]

log = logging.getLogger("conveyor.schedule")

#: The longest a scheduler sleeps before looking at the clock again (a suspended machine, a
#: clock set forward).
LOOK_EVERY = 30.0
#: After a tick's push failed (the backend away), how long until it is tried again.
RETRY_PUSH = 1.0
#: Ticks missed in a row that a running scheduler still pushes each of (its last push was
#: slow, the machine busy); past this many (a suspended machine) only the latest is pushed.
BACKFILL = 10
#: The shortest `every`: tick ids tell ticks apart to the millisecond.
MIN_EVERY = 0.001
#: How far back a cron schedule looks for a missed tick.
LOOK_BACK = 366 * 86400.0


@dataclass(frozen=True)
class Schedule:
    """One registered schedule: push `job` (with `payload`) to `queue` at every tick of
    `cron` (in `tz`) or `every` seconds."""

    name: str
    job: str
    queue: str | None
    payload: Any
    cron: str | None
    every: float | None
    tz: str
    catch_up: bool

    @classmethod
    def make(
        cls,
        name: str,
        job: str,
        *,
        queue: str | None = None,
        payload: Any = None,
        cron: str | None = None,
        every: float | timedelta | str | None = None,
        tz: str = "UTC",
        catch_up: bool = True,
    ) -> Schedule:
        """A checked schedule; ConfigError naming what is wrong."""
        what = f"schedule {name!r}"
        if (cron is None) == (every is None):
            said = "not both" if cron is not None else "it has neither"
            raise ConfigError(f"{what}: give either cron='0 2 * * *' or every='30s', {said}")
        interval = None if every is None else _interval(every, f"{what} every")
        if interval is not None and interval < MIN_EVERY:
            # A tick's id holds its time to the millisecond: shorter, ticks would share ids,
            # and the push of an id stored already stores nothing (a tick lost).
            raise ConfigError(
                f"{what}: every {interval:g}s is shorter than 1ms, the finest a tick's id tells"
                " apart: give every='1ms' or more"
            )
        if cron is not None:
            _check_cron(cron, what)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{what}: tz {tz!r} is not a time zone: use an IANA name such as"
                " 'Europe/Berlin' or 'UTC'"
            ) from None
        return cls(name, job, queue, {} if payload is None else payload, cron, interval, tz,
                   catch_up)  # fmt: skip

    @property
    def rule(self) -> str:
        """The schedule's timing as written: `cron 0 2 * * * Europe/Berlin` or `every 30s`."""
        if self.every is not None:
            return f"every {duration.show(self.every)}"
        return f"cron {self.cron} {self.tz}"

    def next_after(self, moment: float) -> float:
        """The first tick strictly after `moment` (seconds since the epoch)."""
        if self.every is not None:
            return (self._multiple(moment) + 1) * self.every
        from croniter import croniter  # with dateutil, ~20 ms: imported by cron schedules only

        zone = ZoneInfo(self.tz)
        ticks = croniter(self._cron, datetime.fromtimestamp(moment, zone))
        while True:
            tick: datetime = ticks.get_next(datetime)
            # A wall-clock time the clocks repeat in autumn comes twice: its second coming
            # (fold=1) is skipped, so it runs once, at its first.
            if tick.fold == 0 or not _repeated(tick):
                found = tick.timestamp()
                if found > moment:
                    return found

    def last_at_or_before(self, moment: float) -> float | None:
        """The latest tick at or before `moment`; for cron, within LOOK_BACK, else None."""
        if self.every is not None:
            return self._multiple(moment) * self.every
        from croniter import croniter  # with dateutil, ~20 ms: imported by cron schedules only

        zone = ZoneInfo(self.tz)
        # From just after `moment`, so that a tick at `moment` itself is found; one in that
        # millisecond after it is not the latest at or before it.
        ticks = croniter(self._cron, datetime.fromtimestamp(moment + 0.001, zone))
        while True:
            tick: datetime = ticks.get_prev(datetime)
            if moment - tick.timestamp() > LOOK_BACK:
                return None
            if tick.timestamp() <= moment and (tick.fold == 0 or not _repeated(tick)):
                return tick.timestamp()

    def next_ticks(self, count: int, after: float | None = None) -> list[datetime]:
        """The next `count` ticks after `after` (default: now), in the schedule's time zone."""
        moment = time.time() if after is None else after
        found = []
        for _ in range(count):
            moment = self.next_after(moment)
            found.append(datetime.fromtimestamp(moment, ZoneInfo(self.tz)))
        return found

    def _multiple(self, moment: float) -> int:
        """The number of the latest `every` tick at or before `moment` (tick n is at
        n * every). The division alone can round to the number before: 0.42 * n / 0.42 is
        just under n for some n, so a tick would be found after itself."""
        assert self.every is not None, "an every schedule"
        n = math.floor(moment / self.every)
        while (n + 1) * self.every <= moment:
            n += 1
        while n * self.every > moment:
            n -= 1
        return n

    def tick_id(self, tick: float) -> str:
        """The id of the job this schedule pushes at `tick`: the same in every process."""
        return stable_id(tick, "schedule", self.name, f"{tick:.3f}")

    @property
    def _cron(self) -> str:
        assert self.cron is not None, "a cron schedule"
        return self.cron


def _interval(value: float | timedelta | str, what: str) -> float:
    if isinstance(value, str):
        try:
            value = duration.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{what} {value!r}: {exc}") from None
    return duration.seconds(value, what)


def _check_cron(cron: str, what: str) -> None:
    """ConfigError unless `cron` has five fields (croniter reads a sixth as seconds) and
    names a time that comes (not the 30th of February, which croniter finds only at a
    tick, where the error would stop the scheduler)."""
    from croniter import CroniterBadDateError, croniter  # ~20 ms: by cron schedules only

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ConfigError(
            f"{what}: cron {cron!r} is not a cron expression: write five fields,"
            " minute hour day month weekday, as '0 2 * * *'"
        )
    try:
        croniter(cron, datetime.now(UTC)).get_next(float)
    except CroniterBadDateError:
        raise ConfigError(
            f"{what}: cron {cron!r} names a date that never comes: check its day and month"
        ) from None


def chained(schedule: Schedule) -> str:
    """What freeze says of a schedule whose job is a chain's page (`chain=True`): its tick
    would be pushed as a lone page, not started as a chain, so its cursor would be dropped
    and the chain never go on."""
    return (
        f"schedule {schedule.name!r} pushes job {schedule.job!r}, a chain's page, which a tick"
        " would run alone (the cursor it returns dropped): schedule a job that starts the chain"
        f" with registry.start_chain({schedule.job!r}, ..., chain_id=...) (docs/schedules.md)"
    )


def _repeated(tick: datetime) -> bool:
    """Whether the wall-clock time of `tick` comes twice that day (the autumn change)."""
    other = tick.replace(fold=1 - tick.fold)
    return other.utcoffset() != tick.utcoffset()


class Scheduler:
    """Pushes the ticks of `schedules` at their times until `stopping` is set."""

    def __init__(
        self,
        registry: RegistryCore,
        schedules: Mapping[str, Schedule],
        stopping: asyncio.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.schedules = list(schedules.values())
        self.stopping = stopping
        self.clock = clock

    async def run(self) -> None:
        """The scheduler's loop: a catch-up push of each schedule's latest missed tick, then
        every tick as it comes. Returns when `stopping` is set. A fault that ends it is logged:
        the worker goes on running jobs, and would otherwise not say its schedules stopped."""
        try:
            await self._run()
        except Exception:
            log.exception("the scheduler stopped: no schedule of this worker pushes a tick"
                          " until it is restarted")  # fmt: skip
            raise

    async def _run(self) -> None:
        self.schedules = [s for s in self.schedules if await self._keeps_ticks(s)]
        now = self.clock()
        due = {schedule.name: schedule.next_after(now) for schedule in self.schedules}
        # The latest tick each schedule is done with: pushed, or before this scheduler began
        # (the catch-up's business).
        done = {schedule.name: schedule.last_at_or_before(now) for schedule in self.schedules}
        began, behind = now, set()  # behind: whose catch-up could not reach the backend
        for schedule in self.schedules:
            if not await self.catch_up(schedule, now):
                behind.add(schedule.name)
                due[schedule.name] = now + RETRY_PUSH
        while not self.stopping.is_set():
            now = self.clock()
            for schedule in self.schedules:
                if schedule.name in behind and due[schedule.name] <= now:
                    # The catch-up again, not the tick before the start: a schedule that never
                    # ran, or ran that tick already, has nothing to catch up.
                    if not await self.catch_up(schedule, began):
                        due[schedule.name] = now + RETRY_PUSH
                        continue
                    behind.discard(schedule.name)
                    due[schedule.name] = schedule.next_after(began)
                if due[schedule.name] <= now:
                    latest = schedule.last_at_or_before(now) or due[schedule.name]
                    for tick in owed(schedule, done[schedule.name], latest):
                        if not await self.push(schedule, tick):
                            due[schedule.name] = now + RETRY_PUSH
                            break
                        done[schedule.name] = tick
                    else:
                        due[schedule.name] = schedule.next_after(now)
            wait = min(due.values(), default=now + LOOK_EVERY) - self.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(wait, LOOK_EVERY))):
                    await self.stopping.wait()

    async def _keeps_ticks(self, schedule: Schedule) -> bool:
        """Whether the backend of the schedule's queue records ticks; a schedule on one that
        cannot (amqp) is logged and never run: each push would store its job, then fail to
        record the tick, and be pushed again every RETRY_PUSH."""
        queue = self.registry.schedule_queue(schedule)
        try:
            driver = await self.registry.driver_of(queue)
        except ConveyorError:
            return True  # the backend is away: the pushes will say so, and be tried again
        if driver.capabilities.schedules:
            return True
        log.error("schedule %s: not run: queue %r is on the %s driver, which keeps no record of"
                  " ticks: put the queue on sqlite, postgres, mysql or redis",
                  schedule.name, queue, driver.kind)  # fmt: skip
        return False

    async def catch_up(self, schedule: Schedule, now: float) -> bool:
        """Push the latest tick missed before `now`, if the schedule catches up and has a
        tick recorded before it; False when the backend could not be asked or written."""
        if not schedule.catch_up:
            return True
        missed = schedule.last_at_or_before(now)
        try:
            known = await self.last_tick(schedule)
        except ConveyorError as exc:
            log.warning("schedule %s: could not read its latest tick (%s)", schedule.name, exc)
            return False
        if missed is None or known is None or known.at >= missed:
            return True
        log.info("schedule %s: catching up the tick of %s", schedule.name, _shown(missed))
        return await self.push(schedule, missed)

    async def last_tick(self, schedule: Schedule) -> Tick | None:
        """The latest tick recorded for `schedule`."""
        driver = await self.registry.driver_of(self.registry.schedule_queue(schedule))
        return (await driver.ticks([schedule.name])).get(schedule.name)

    async def push(self, schedule: Schedule, tick: float) -> bool:
        """Push one tick and record it; False (logged) when the backend refused or was
        away, to be tried again. A tick at or before the latest one recorded was pushed
        already: its job's id holds it once only until the job is pruned, so a scheduler
        running late (a pause, a clock behind) pushed a tick that had run and been pruned
        again (with a short retention, a tick ran twice)."""
        queue = self.registry.schedule_queue(schedule)
        job_id = schedule.tick_id(tick)
        try:
            known = await self.last_tick(schedule)
            if known is not None and known.at >= tick:
                return True
            await self.registry.push(
                queue,
                schedule.job,
                schedule.payload,
                job_id=job_id,
                meta={"schedule": schedule.name, "tick": tick},
            )
            driver = await self.registry.driver_of(queue)
            await driver.mark_tick(schedule.name, tick, job_id)
        except ConveyorError as exc:
            log.warning("schedule %s: could not push the tick of %s (%s); trying again",
                        schedule.name, _shown(tick), exc)  # fmt: skip
            return False
        log.debug("schedule %s: pushed the tick of %s as %s", schedule.name, _shown(tick), job_id)
        return True


def owed(schedule: Schedule, done: float | None, latest: float) -> list[float]:
    """The ticks after `done` up to `latest`, in order, for a running scheduler to push: each
    of them when they are BACKFILL or fewer (a slow push, a busy machine: none is lost), else
    only the latest (a suspended machine)."""
    if done is None:
        return [latest]
    ticks: list[float] = []
    tick = schedule.next_after(done)
    while tick <= latest:
        if len(ticks) == BACKFILL:
            return [latest]
        ticks.append(tick)
        tick = schedule.next_after(tick)
    return ticks or [latest]


def _shown(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")
