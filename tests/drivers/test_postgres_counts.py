"""PostgreSQL's count of finished jobs: settles append a row of finished_counts per statement
(migration 0004), and the rows must be folded often, not only when `counts` reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.drivers.base import Reservation, WorkerCounts
from conveyor.drivers.sql.postgres import PostgresDriver
from tests.backends import Drivers, require_service
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.contract.helpers import make_job

from .test_postgres import sql


@pytest.fixture
async def drivers() -> AsyncIterator[Drivers[PostgresDriver]]:
    require_service("postgres", 5432, START)
    prefix = fresh_prefix()
    made = Drivers(PostgresDriver, URL, prefix)
    yield made
    await made.close_all()
    await drop_tables(prefix)


async def test_a_worker_saving_its_stats_folds_the_rows_its_settles_appended(
    drivers: Drivers[PostgresDriver],
) -> None:
    """A worker saves its stats each second it settled jobs: the rows it appended are folded
    there. Before, only `counts` folded them: a day of settles with no one reading (no
    dashboard, no metrics) left millions, and the next `conveyor list` ran past its timeout
    (2.2 s for a million rows here)."""
    driver = await drivers.open()
    for _ in range(5):  # one ack statement each, as a worker settling one job at a time
        await driver.push(make_job())
        [job] = await driver.reserve(["q"], 1, 30.0, "w")
        assert job.reservation is not None
        assert await driver.ack([Reservation(job.id, job.reservation)]) == {job.id}
    appended = f"SELECT queue, state, n FROM {drivers.prefix}finished_counts"
    assert len(await sql(appended)) == 5

    await driver.record_stats("w", WorkerCounts(processed=5, succeeded=5))

    assert await sql(appended) == [{"queue": "q", "state": "succeeded", "n": 5}]
    assert (await driver.counts(["q"]))["q"].succeeded == 5
