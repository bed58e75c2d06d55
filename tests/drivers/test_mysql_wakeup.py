"""How an idle MySQL worker hears of jobs from other processes: the probe, the wait on the
server (MariaDB), the client polling MySQL falls back to, and what the probe costs.

Timing bounds are far below a poll interval yet wide enough for a loaded machine; the figures
themselves are `make bench`'s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncmy
import pytest

from conveyor.drivers.base import Reservation
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.mysql import wakeup as wakeup_module
from conveyor.drivers.sql.queries import Query
from tests.backends import Drivers, require_service
from tests.backends.mysql import START, URL, drop_tables, fresh_prefix
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)

#: A wait's timeout: long enough that "returned soon" cannot be its end.
LONG = 20.0

#: How soon a wait must end after what should end it: a twentieth of LONG, yet far more than
#: the few milliseconds it takes on an idle machine.
SOON = 1.0


@pytest.fixture(autouse=True)
def server() -> None:
    require_service("mysql", 3306, START)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    fresh = fresh_prefix()
    yield fresh
    await drop_tables(fresh)


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[Drivers[MysqlDriver]]:
    made = Drivers(MysqlDriver, URL, prefix)
    yield made
    await made.close_all()


async def idle(driver: MysqlDriver, queues: list[str] | None = None) -> asyncio.Task[None]:
    """What an idle worker does: a reserve that finds nothing, then a long wait (started)."""
    assert await driver.reserve(queues or ["q"], 1, 30.0, "w") == []
    waiting = asyncio.create_task(driver.wait(queues or ["q"], LONG))
    await asyncio.sleep(0.05)  # well into the wait
    assert not waiting.done()
    return waiting


async def ends_soon(waiting: asyncio.Task[None], since: float) -> float:
    await asyncio.wait_for(waiting, LONG)
    took = time.monotonic() - since
    assert took < SOON
    return took


async def committed_reads() -> asyncmy.Connection:
    """A connection of the test's own, locking rows as the driver's reserve would (READ
    COMMITTED: no gap locks, so pushes meanwhile are not held up)."""
    return await asyncmy.connect(
        host="127.0.0.1",
        port=3306,
        user="root",
        db="test",
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )


PUSH_FROM_ANOTHER_PROCESS = """
import asyncio, sys, time
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.job import NewJob, new_id

async def main():
    driver = MysqlDriver(sys.argv[1], prefix=sys.argv[2])
    now = time.time()
    await driver.push(NewJob(new_id(), "q", "j", "{}"))
    await driver.close()

asyncio.run(main())
"""


async def test_push_from_another_process_ends_an_idle_wait_soon(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open()
    waiting = await idle(driver)

    pusher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSH_FROM_ANOTHER_PROCESS, URL, prefix
    )
    assert await pusher.wait() == 0
    await ends_soon(waiting, time.monotonic())

    assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1


@pytest.mark.parametrize("looks", ["server", "client"])
async def test_push_from_another_process_here_rings_the_doorbell(
    drivers: Drivers[MysqlDriver], prefix: str, looks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looks slowed to one every 3 s (on the server, MariaDB, or from the client, MySQL): only
    the doorbell can end the wait within SOON."""
    for name in ("TICK_BUSY", "TICK_IDLE", "PROBE_BUSY", "PROBE_IDLE"):
        monkeypatch.setattr(wakeup_module, name, 3.0)
    driver = await drivers.open()
    driver._wakeup.on_server = looks == "server"
    waiting = await idle(driver)

    pusher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSH_FROM_ANOTHER_PROCESS, URL, prefix
    )
    assert await pusher.wait() == 0
    await ends_soon(waiting, time.monotonic())


async def test_push_to_another_queue_does_not_end_the_wait(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver, pushing = await drivers.open(), await drivers.open()
    waiting = await idle(driver)

    await pushing.push(make_job("elsewhere"))
    await asyncio.sleep(0.5)

    assert not waiting.done()
    waiting.cancel()


async def test_push_below_the_top_priority_ends_the_wait(drivers: Drivers[MysqlDriver]) -> None:
    # The head of the ready index is a high-priority job that is not due; the newest pending
    # job is what shows the push.
    driver, pushing = await drivers.open(), await drivers.open()
    await pushing.push(make_job(priority=9, delay=3600))
    waiting = await idle(driver)

    await pushing.push(make_job(priority=0))

    await ends_soon(waiting, time.monotonic())


async def test_delayed_job_falling_due_ends_the_wait(drivers: Drivers[MysqlDriver]) -> None:
    driver, pushing = await drivers.open(), await drivers.open()
    due = time.time() + 0.5  # the server's clock is this host's
    await pushing.push(make_job(delay=0.5))
    waiting = await idle(driver)

    await asyncio.wait_for(waiting, LONG)

    assert due - 0.05 <= time.time() < due + SOON
    assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1


async def test_lease_running_out_ends_the_wait(drivers: Drivers[MysqlDriver]) -> None:
    driver, crashed = await drivers.open(), await drivers.open()
    await crashed.push(make_job())
    [job] = await crashed.reserve(["q"], 1, 0.5, "dead")  # and never renewed
    waiting = await idle(driver)

    await asyncio.wait_for(waiting, LONG)

    assert job.lease_expires_at is not None and time.time() < job.lease_expires_at + SOON
    [again] = await driver.reserve(["q"], 1, 30.0, "w")
    assert (again.id, again.rescued) == (job.id, 1)


async def test_sighting_that_found_nothing_wakes_no_more_until_something_changes(
    drivers: Drivers[MysqlDriver],
) -> None:
    # Another transaction holds the due job's row: the probe sees a job due that the reserve
    # passes over (SKIP LOCKED). The wait wakes once for it, then not again until a change.
    driver, pushing = await drivers.open(), await drivers.open()
    job = make_job()
    await pushing.push(job)
    holder = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
    try:
        await holder.begin()
        async with holder.cursor() as cursor:
            locking = f"SELECT id FROM {drivers.prefix}jobs WHERE id = %s FOR UPDATE"
            await cursor.execute(locking, job.id)

        await asyncio.wait_for(driver.wait(["q"], LONG), SOON)
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        begin = time.monotonic()
        await driver.wait(["q"], 0.6)
        assert time.monotonic() - begin >= 0.55

        waiting = await idle(driver)
        await pushing.push(make_job())  # a change wakes it
        await ends_soon(waiting, time.monotonic())
    finally:
        await holder.rollback()
        holder.close()


async def test_sighting_no_reserve_followed_wakes_no_more_until_something_changes(
    drivers: Drivers[MysqlDriver],
) -> None:
    # A worker whose queue is paused waits without reserving from it: each wait ended at once
    # on the same due job, a loop of round trips (a third of a core) while the pause lasted.
    driver, pushing = await drivers.open(), await drivers.open()
    await pushing.push(make_job())

    await asyncio.wait_for(driver.wait(["q"], LONG), SOON)
    begin = time.monotonic()
    await driver.wait(["q"], 0.6)
    assert time.monotonic() - begin >= 0.55

    waiting = asyncio.create_task(driver.wait(["q"], LONG))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await pushing.push(make_job())  # a change wakes it
    await ends_soon(waiting, time.monotonic())


async def test_idle_wait_makes_a_few_round_trips_a_second(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On MariaDB the looking happens on the server: the worker's process wakes once a slice.
    driver = await drivers.open()
    calls: list[str] = []
    fetch = driver._fetch

    async def counted(name: str, params: Any) -> Any:
        calls.append(name)
        return await fetch(name, params)

    monkeypatch.setattr(driver._wakeup, "_fetch", counted)
    await driver.reserve(["q"], 1, 30.0, "w")

    await driver.wait(["q"], 1.0)

    assert driver._wakeup.on_server
    assert set(calls) == {"wait"} and len(calls) <= 1.0 / wakeup_module.SLICE + 2


async def test_server_refusing_compound_statements_is_polled_from_the_client(
    drivers: Drivers[MysqlDriver],
) -> None:
    # MySQL answers BEGIN NOT ATOMIC with a syntax error (1064); a broken block plays it here.
    driver, pushing = await drivers.open(), await drivers.open()
    refused = Query("wait", "what MySQL would refuse", "BEGIN NOT ATOMIC SELEC 1; END")
    driver._queries["wait"] = refused
    waiting = await idle(driver)

    await pushing.push(make_job())

    await ends_soon(waiting, time.monotonic())
    assert not driver._wakeup.on_server
    assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1
    waiting = await idle(driver)
    await pushing.push(make_job())
    await ends_soon(waiting, time.monotonic())


async def test_wait_with_the_server_away_lasts_its_timeout(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = drivers.make("mysql://root@127.0.0.1:1/test")  # nothing listens there
    begin = time.monotonic()

    await driver.wait(["q"], 0.3)

    assert 0.25 <= time.monotonic() - begin < SOON


async def test_reserve_that_finds_jobs_tightens_the_looks(drivers: Drivers[MysqlDriver]) -> None:
    driver = await drivers.open()
    looks = driver._wakeup
    assert looks._interval(1.0, 40.0) == 40.0  # nothing found yet: idle

    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    assert looks._interval(1.0, 40.0) == 1.0
    await driver.ack([Reservation(job.id, job.reservation or "")])


# -- the probe's cost ----------------------------------------------------------------------------


async def handler_reads(prefix: str, name: str, params: dict[str, Any]) -> dict[str, int]:
    """Run one block on a fresh session and return its Handler_read counters."""
    driver = MysqlDriver(URL, prefix=prefix)
    query = driver._queries[name]
    connection = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("FLUSH STATUS")
            await cursor.execute(query.sql, params)
            await cursor.fetchall()
            while await cursor.nextset():
                pass
            await cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
            return {key: int(value) for key, value in await cursor.fetchall()}
    finally:
        connection.close()


async def test_probe_reads_a_few_index_entries_however_many_jobs_wait(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    pushing = await drivers.open()
    for priority in (0, 5):
        await pushing.push_many([make_job(priority=priority, delay=3600) for _ in range(500)])
    params = {"queues": json.dumps(["q", "empty"]), "now": time.time()}

    probe = await handler_reads(prefix, "wait_probe", params)
    looks = await handler_reads(
        prefix, "wait", {**params, "ticks": 5, "every": 0.001, "futile": ""}
    )

    assert probe["Handler_read_next"] + probe["Handler_read_prev"] == 0, probe
    assert probe["Handler_read_key"] <= 8, probe  # two dives per queue, two queues
    assert looks["Handler_read_next"] + looks["Handler_read_prev"] == 0, looks
    assert looks["Handler_read_key"] <= 8, looks  # probed once: no push meanwhile
    assert looks["Handler_read_last"] <= 6, looks  # one primary key end per look


async def test_probe_takes_no_lock(drivers: Drivers[MysqlDriver], prefix: str) -> None:
    driver, pushing = await drivers.open(), await drivers.open()
    await pushing.push(make_job())
    holder = await committed_reads()
    try:
        await holder.begin()
        async with holder.cursor() as cursor:
            await cursor.execute(f"UPDATE {prefix}jobs SET priority = 1")  # row locks held

        params = {"queues": json.dumps(["q"]), "now": time.time()}
        [row] = await asyncio.wait_for(driver._fetch("wait_probe", params), SOON)

        assert row["sighting"].startswith("q ")  # the committed version, due
    finally:
        await holder.rollback()
        holder.close()
