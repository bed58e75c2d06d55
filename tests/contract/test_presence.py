"""Worker presence: a worker process says it is alive (`beat`), `alive` lists those heard from
lately, by the backend's clock; a clean stop forgets the process."""

from __future__ import annotations

import asyncio
import time

from conveyor.drivers.base import Driver
from tests.backends import needs

from .helpers import assert_time


async def test_a_beating_process_is_alive(driver: Driver) -> None:
    await driver.beat("w:host:1", "w")

    [presence] = await driver.alive(60.0)

    assert (presence.identity, presence.worker) == ("w:host:1", "w")
    assert presence.started_at <= presence.seen_at


async def test_later_beats_keep_the_start_and_move_the_last_seen(driver: Driver) -> None:
    await driver.beat("w:host:1", "w")
    [first] = await driver.alive(60.0)
    await asyncio.sleep(0.05)

    await driver.beat("w:host:1", "w")

    [later] = await driver.alive(60.0)
    assert_time(later.started_at, first.started_at)
    assert later.seen_at > first.seen_at


async def test_a_process_not_heard_from_lately_is_not_alive(driver: Driver) -> None:
    await driver.beat("w:host:1", "w")
    await asyncio.sleep(0.5)
    second = time.monotonic()
    await driver.beat("v:host:2", "v")
    # Heard from since `second`, however long that beat took on a busy machine, with 0.4 s
    # left for the call below to reach the server; w beat at least 0.5 s before `second`.
    within = time.monotonic() - second + 0.4

    assert [presence.identity for presence in await driver.alive(within)] == ["v:host:2"]


async def test_a_clean_stop_forgets_the_process(driver: Driver) -> None:
    await driver.beat("w:host:1", "w")
    await driver.beat("w:host:2", "w")

    await driver.beat("w:host:1", "w", stopping=True)

    assert [presence.identity for presence in await driver.alive(60.0)] == ["w:host:2"]


@needs("shared_records")
async def test_alive_lists_processes_oldest_first_across_connections(
    driver_pair: tuple[Driver, Driver],
) -> None:
    first, second = driver_pair
    await first.beat("w:host:1", "w")
    await asyncio.sleep(0.01)
    await second.beat("v:host:2", "v")

    assert [presence.worker for presence in await first.alive(60.0)] == ["w", "v"]
