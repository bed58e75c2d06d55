"""Schedules: tick times (cron in a time zone, DST, every), registration mistakes, and the
scheduler on the memory driver: one push per tick however many run, catch-up after a gap."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conveyor import (
    BackendUnavailableError,
    ConfigError,
    Job,
    JobState,
    Registry,
    RegistryError,
    Worker,
)
from conveyor.drivers.base import Driver, Tick
from conveyor.schedule import BACKFILL, Schedule, Scheduler, owed

BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def shown(ticks: list[datetime]) -> list[str]:
    return [tick.isoformat() for tick in ticks]


def test_cron_ticks_are_read_in_the_schedules_time_zone() -> None:
    nightly = Schedule.make("nightly", "j", cron="0 2 * * *", tz="Europe/Berlin")

    assert shown(nightly.next_ticks(2, after=at(2026, 1, 10, 12, 0))) == [
        "2026-01-11T02:00:00+01:00",
        "2026-01-12T02:00:00+01:00",
    ]


def test_a_time_skipped_in_spring_runs_at_the_first_time_after_it() -> None:
    nightly = Schedule.make("nightly", "j", cron="30 2 * * *", tz="Europe/Berlin")

    assert shown(nightly.next_ticks(2, after=at(2026, 3, 28, 12, 0))) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_time_repeated_in_autumn_runs_once() -> None:
    nightly = Schedule.make("nightly", "j", cron="30 2 * * *", tz="Europe/Berlin")
    half_hourly = Schedule.make("half", "j", cron="*/30 * * * *", tz="Europe/Berlin")

    assert shown(nightly.next_ticks(2, after=at(2026, 10, 24, 12, 0))) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert shown(half_hourly.next_ticks(3, after=at(2026, 10, 25, 2, 10))) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def test_every_ticks_fall_on_whole_multiples_of_the_interval() -> None:
    every = Schedule.make("e", "j", every="30s")

    assert every.next_after(1_000_010.0) == 1_000_020.0
    assert every.next_after(1_000_020.0) == 1_000_050.0
    assert every.last_at_or_before(1_000_049.9) == 1_000_020.0
    assert every.rule == "every 30s"


def test_an_every_tick_is_never_found_after_itself() -> None:
    # 0.42 * n / 0.42 falls just under n for some n: next_after(tick) was the tick itself and
    # last_at_or_before(tick) the tick before, so the next ticks listed repeated one, and a
    # scheduler three ticks behind owed the latest only (two ticks lost).
    every = Schedule.make("e", "j", every=0.42)
    start = math.floor(1_796_541_729.0 / 0.42)
    for n in range(start, start + 200):
        tick, following = n * 0.42, [(n + k) * 0.42 for k in (1, 2, 3)]
        assert every.next_after(tick) == following[0], tick
        assert every.last_at_or_before(tick) == tick, tick
        listed = [round(t.timestamp(), 3) for t in every.next_ticks(3, after=tick)]
        assert listed == [round(f, 3) for f in following], tick
        assert owed(every, tick, following[-1]) == following, tick


def test_a_cron_tick_a_moment_later_is_not_the_latest_at_or_before_it() -> None:
    minutely = Schedule.make("m", "j", cron="* * * * *")
    tick = at(2026, 12, 6, 2, 1)
    assert minutely.last_at_or_before(tick - 0.0005) == tick - 60
    assert minutely.last_at_or_before(tick) == tick


def test_the_latest_tick_at_or_before_a_moment() -> None:
    nightly = Schedule.make("nightly", "j", cron="0 2 * * *", tz="Europe/Berlin")

    assert nightly.last_at_or_before(at(2026, 5, 3, 1, 0)) == at(2026, 5, 2, 2, 0)
    assert nightly.last_at_or_before(at(2026, 5, 3, 2, 0)) == at(2026, 5, 3, 2, 0)
    assert nightly.rule == "cron 0 2 * * * Europe/Berlin"


def test_tick_ids_are_the_same_everywhere_and_differ_per_tick() -> None:
    one = Schedule.make("a", "j", every=1)

    assert one.tick_id(100.0) == Schedule.make("a", "other", every=5).tick_id(100.0)
    assert one.tick_id(100.0) != one.tick_id(101.0)
    assert one.tick_id(100.0) != Schedule.make("b", "j", every=1).tick_id(100.0)
    assert len(one.tick_id(100.0)) == 32


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({}, "give either cron="),
        ({"cron": "* * * * *", "every": 5}, "give either cron="),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"cron": "0 0 2 * * *"}, "write five fields"),
        ({"cron": "0 2 30 2 *"}, "names a date that never comes"),
        ({"every": "soon"}, "every 'soon'"),
        ({"every": 0}, "must be more than 0 seconds"),
        # Tick ids tell ticks apart to the millisecond: 0.1 ms ticks shared ids, and a push of
        # an id stored already stores nothing, so four ticks in five were lost.
        ({"every": 0.0001}, "every 0.0001s is shorter than 1ms"),
        ({"every": "0.5ms"}, "every 0.0005s is shorter than 1ms"),
        ({"every": 5, "tz": "Mars/Olympus"}, "is not a time zone"),
    ],
)
def test_a_wrong_schedule_is_refused_naming_it(options: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError, match="schedule 'bad'") as raised:
        Schedule.make("bad", "j", **options)  # type: ignore[arg-type]
    assert said in str(raised.value)


def test_an_interval_of_one_millisecond_gives_each_tick_an_id_of_its_own() -> None:
    schedule = Schedule.make("fast", "j", every="1ms")
    ticks = schedule.next_ticks(2000, after=1_764_810_000.0)
    assert len({schedule.tick_id(tick.timestamp()) for tick in ticks}) == 2000


def test_freeze_refuses_a_schedule_of_a_chained_job() -> None:
    # Its ticks ran one page each, the cursor the page returned dropped: no chain went on.
    registry = _registry()

    @registry.job("export.page", queue="q", chain=True)
    async def page(job: Job[dict[str, int]]) -> int | None:
        return 1

    registry.schedule("nightly", job="export.page", every="1h")
    with pytest.raises(RegistryError, match=r"schedule 'nightly' pushes job 'export.page', a ch"):
        registry.freeze()


def _registry(driver: Driver | None = None) -> Registry:
    registry = Registry(default_driver=driver or "memory")
    registry.queue("q", workers=["w"])
    registry.worker("w")
    return registry


def test_freeze_reports_a_schedule_of_an_unknown_job_or_queue_or_bad_payload() -> None:
    registry = _registry()

    @registry.job("known", queue="q")
    async def known(job: Job[dict[str, int]]) -> None: ...

    registry.schedule("ghost", job="nobody", every=5)
    registry.schedule("elsewhere", job="known", queue="nowhere", every=5)
    registry.schedule("bad-payload", job="known", every=5, payload={"n": float("nan")})

    with pytest.raises(RegistryError) as raised:
        registry.freeze()
    said = str(raised.value)
    assert "schedule 'ghost' pushes job 'nobody', which is not registered" in said
    assert "schedule 'elsewhere' pushes to queue 'nowhere', which is not registered" in said
    assert "schedule 'bad-payload'" in said


def test_a_schedule_name_is_checked_and_registered_once() -> None:
    registry = _registry()
    registry.schedule("s", job="j", every=5)

    with pytest.raises(RegistryError, match="registered twice"):
        registry.schedule("s", job="j", every=5)
    with pytest.raises(RegistryError, match="schedule name"):
        registry.schedule("no spaces", job="j", every=5)


async def _tick_jobs(registry: Registry) -> list[float]:
    jobs = await registry.list_jobs("q", JobState.PENDING, limit=1000)
    return sorted(float(job.meta["tick"]) for job in jobs)


async def test_three_schedulers_push_each_tick_once() -> None:
    registry = _registry()

    @registry.job("tick", queue="q")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    registry.schedule("fast", job="tick", every=0.1)
    registry.freeze()
    stopping = asyncio.Event()
    schedulers = [Scheduler(registry, registry.schedules, stopping) for _ in range(3)]
    started = time.time()
    running = [asyncio.create_task(scheduler.run()) for scheduler in schedulers]
    await asyncio.sleep(1.05)
    stopping.set()
    await asyncio.gather(*running)

    ticks = await _tick_jobs(registry)
    assert len(ticks) == len(set(ticks)) >= 9
    assert all(round(b - a, 3) == 0.1 for a, b in itertools.pairwise(ticks))
    assert (
        started - 0.1 < ticks[0] <= started + 0.3
    )  # the first due tick; a loaded machine starts late
    driver = await registry.driver_of("q")
    assert (await driver.ticks(["fast"]))["fast"].at == ticks[-1]
    await registry.close()


async def test_a_scheduler_whose_push_was_slow_pushes_each_tick_it_passed() -> None:
    # A push that took 0.35 s (a locked database, a busy machine) passed three ticks of 0.1 s:
    # the scheduler pushes each of them after it, and none is lost.
    registry = _registry()
    registry.job("tick", queue="q")(_noop)
    registry.schedule("fast", job="tick", every=0.1)
    registry.freeze()
    stopping = asyncio.Event()
    scheduler = Scheduler(registry, registry.schedules, stopping)
    pushes: list[float] = []
    push = scheduler.push

    async def slow_once(schedule: Schedule, tick: float) -> bool:
        pushes.append(tick)
        if len(pushes) == 2:
            await asyncio.sleep(0.35)
        return await push(schedule, tick)

    scheduler.push = slow_once  # type: ignore[method-assign]
    running = asyncio.create_task(scheduler.run())
    await asyncio.sleep(1.0)
    stopping.set()
    await running

    ticks = await _tick_jobs(registry)
    assert len(ticks) >= 8 and ticks == pushes
    assert all(round(b - a, 3) == 0.1 for a, b in itertools.pairwise(ticks))
    await registry.close()


def test_a_running_scheduler_owes_each_passed_tick_up_to_backfill_then_the_latest() -> None:
    every = Schedule.make("s", job="tick", every=10)
    assert owed(every, 100.0, 100.0 + 10 * 3) == [110.0, 120.0, 130.0]
    assert owed(every, 100.0, 100.0 + 10 * BACKFILL) == [100.0 + 10 * n for n in range(1, 11)]
    assert owed(every, 100.0, 100.0 + 10 * (BACKFILL + 1)) == [100.0 + 10 * (BACKFILL + 1)]
    assert owed(every, None, 500.0) == [500.0]
    nightly = Schedule.make("n", job="tick", cron="0 2 * * *", tz="Europe/Berlin")
    passed = [at(2026, 3, day, 2) for day in (2, 3)]
    assert owed(nightly, at(2026, 3, 1, 2), passed[-1]) == passed


async def test_a_scheduler_catches_up_the_latest_missed_tick_once() -> None:
    registry = _registry()
    registry.job("tick", queue="q")(_noop)
    every = registry.schedule("every", job="tick", every=60)
    never = registry.schedule("never", job="tick", every=60, catch_up=False)
    new = registry.schedule("new", job="tick", every=60)
    registry.freeze()
    driver = await registry.driver_of("q")
    now = time.time()
    latest = every.last_at_or_before(now)
    for schedule in (every, never):  # both last ran 3 ticks before the latest
        await driver.mark_tick(schedule.name, latest - 180, schedule.tick_id(latest - 180))

    stopping = asyncio.Event()
    for _ in range(2):  # a second start catches up nothing more
        await Scheduler(registry, registry.schedules, stopping).catch_up(every, now)
        for schedule in (never, new):
            await Scheduler(registry, registry.schedules, stopping).catch_up(schedule, now)

    jobs = await registry.list_jobs("q", JobState.PENDING, limit=10)
    assert [(job.id, job.meta) for job in jobs] == [
        (every.tick_id(latest), {"schedule": "every", "tick": latest})
    ]
    await registry.close()


async def test_a_catch_up_that_could_not_reach_the_backend_is_tried_again_as_a_catch_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backend was away when the scheduler began: once it answers, a schedule that never
    # ran catches up nothing (it pushed the tick before the start), one behind catches up once.
    monkeypatch.setattr("conveyor.schedule.RETRY_PUSH", 0.05)
    registry = _registry()
    registry.job("tick", queue="q")(_noop)
    registry.schedule("new", job="tick", every=3600)
    behind = registry.schedule("behind", job="tick", every=3600)
    registry.freeze()
    driver = await registry.driver_of("q")
    latest = behind.last_at_or_before(time.time())
    await driver.mark_tick("behind", latest - 7200, behind.tick_id(latest - 7200))
    stopping = asyncio.Event()
    scheduler = Scheduler(registry, registry.schedules, stopping)
    last_tick, failed = scheduler.last_tick, set()

    async def away_at_first(schedule: Schedule) -> Tick | None:
        if schedule.name not in failed:
            failed.add(schedule.name)
            raise BackendUnavailableError("the backend is away")
        return await last_tick(schedule)

    scheduler.last_tick = away_at_first  # type: ignore[method-assign]
    running = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.4)
    stopping.set()
    await running

    jobs = await registry.list_jobs("q", JobState.PENDING, limit=10)
    assert failed == {"new", "behind"}
    assert [job.id for job in jobs] == [behind.tick_id(latest)]
    await registry.close()


async def test_a_fault_that_ends_the_scheduler_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The worker gathers its helper tasks quietly: without the log, its schedules would stop
    # with nothing said.
    registry = _registry()
    registry.job("tick", queue="q")(_noop)
    registry.schedule("fast", job="tick", every=0.1)
    registry.freeze()
    scheduler = Scheduler(registry, registry.schedules, asyncio.Event())

    async def broken(schedule: Schedule, tick: float) -> bool:
        raise RuntimeError("a fault of conveyor's own")

    scheduler.push = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(scheduler.run(), 5)
    assert "the scheduler stopped" in caplog.text and "a fault of conveyor's own" in caplog.text
    await registry.close()


async def _noop(job: Job[dict[str, int]]) -> None: ...


def test_a_worker_runs_the_schedules_of_its_queues_unless_told_not_to() -> None:
    from conveyor.worker import Worker

    registry = _registry()
    registry.queue("other", workers=["x"])
    registry.worker("x")
    registry.job("tick", queue="q")(_noop)
    registry.schedule("mine", job="tick", every=5)
    registry.schedule("theirs", job="tick", queue="other", every=5)
    registry.freeze()

    assert list(Worker(registry, "w").schedules) == ["mine"]
    assert list(Worker(registry, "x").schedules) == ["theirs"]
    assert list(Worker(registry, "w", schedules=False).schedules) == []
    assert list(Worker(registry, "w", burst=True).schedules) == []


async def test_a_tick_that_ran_and_was_pruned_is_not_pushed_again_by_a_late_scheduler(
    tmp_path: Path,
) -> None:
    """Before, a scheduler running late (a pause, a clock behind) pushed again a tick whose job
    had run and been pruned: with a short retention, a tick ran twice. The backend's record
    of the latest tick pushed now says it was."""
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
    registry.queue("q", workers=["w"], retention=0.05)
    registry.worker("w")
    registry.job("tick", queue="q")(_noop)
    every = registry.schedule("every", job="tick", every=60)
    registry.freeze()
    tick = every.last_at_or_before(time.time())
    assert tick is not None
    stopping = asyncio.Event()
    assert await Scheduler(registry, registry.schedules, stopping).push(every, tick)
    await Worker(registry, "w", burst=True).run()
    await asyncio.sleep(0.1)  # past the retention
    assert await registry.prune("q") == 1

    assert await Scheduler(registry, registry.schedules, stopping).push(every, tick)

    assert await registry.job_info(every.tick_id(tick)) is None
    counts = (await registry.queue_info())["q"]
    assert (counts.pending, counts.succeeded) == (0, 0)
    await registry.close()
