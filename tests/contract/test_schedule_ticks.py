"""Schedule ticks (the `schedules` capability): the latest tick each schedule pushed."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.drivers.base import Driver, Tick


@pytest.fixture(autouse=True)
def schedules_or_skip(driver: Driver) -> None:
    if not driver.capabilities.schedules:
        pytest.skip(f"{driver.kind} declares no schedules capability")


async def test_ticks_are_empty_before_any_mark(driver: Driver) -> None:
    assert await driver.ticks(["nightly"]) == {}
    assert await driver.ticks([]) == {}


async def test_a_later_tick_replaces_an_earlier_one_and_never_the_reverse(driver: Driver) -> None:
    await driver.mark_tick("nightly", 1_700_000_000.0, "a" * 32)
    await driver.mark_tick("nightly", 1_700_086_400.5, "b" * 32)
    await driver.mark_tick("nightly", 1_700_000_000.0, "c" * 32)  # a slow scheduler, late
    await driver.mark_tick("hourly", 1_700_003_600.0, "d" * 32)

    assert await driver.ticks(["nightly", "hourly", "never"]) == {
        "nightly": Tick("nightly", 1_700_086_400.5, "b" * 32),
        "hourly": Tick("hourly", 1_700_003_600.0, "d" * 32),
    }


async def test_concurrent_marks_keep_the_latest(driver: Driver) -> None:
    marks = [driver.mark_tick("every", 1_000.0 + n, f"{n:032x}") for n in range(20)]

    await asyncio.gather(*reversed(marks))

    assert await driver.ticks(["every"]) == {"every": Tick("every", 1_019.0, f"{19:032x}")}


async def test_hostile_schedule_names_are_stored_as_given(driver: Driver) -> None:
    name = "it's {a}:b\n'; DROP TABLE x; --"
    await driver.mark_tick(name, 5.0, "e" * 32)

    assert await driver.ticks([name]) == {name: Tick(name, 5.0, "e" * 32)}
