"""The MySQL driver on a MariaDB whose disk is full: a private server (tests.backends.private)
with its data folder on a 64 MiB tmpfs, mounted for the test as root, which a file fills (the
shared server's disk is never filled); deleting the file frees the space.

Before, MariaDB's answer, error 1114 "The table 'conveyor_jobs' is full" (InnoDB cannot extend
the table's file), was a plain DriverError: a refusal of the statement, which a worker's
settler writes off one job at a time (after three refusals, a job to be retried written as
failed), where it is the server out of room, as a server out of reach is: the settler waits
and writes it again once there is room, as on PostgreSQL and SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor import Job, Registry, Worker
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.errors import BackendUnavailableError
from tests.backends.private import PrivateMariadb, private_mariadb
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateMariadb]:
    with private_mariadb(disk="64m") as server:
        server.sql("CREATE DATABASE jobs; CREATE USER app@'%'; GRANT ALL ON jobs.* TO app@'%';")
        yield server


@pytest.fixture
async def driver(server: PrivateMariadb) -> AsyncIterator[MysqlDriver]:
    """A driver on the server's tables, made by the first test: once InnoDB found the disk
    full, MariaDB 10.11 refused to create a table again ("No more room in record file") with
    half the disk free."""
    made = MysqlDriver(f"mysql://app@127.0.0.1:{server.port}/jobs", timeout=5)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


@contextlib.contextmanager
def full_disk(server: PrivateMariadb) -> Iterator[Path]:
    """The server's disk filled to the last byte by a file, which goes at the end (or when the
    test deletes it, `filler.unlink()`)."""
    filler = server.data / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):  # until nothing more fits
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    try:
        yield filler
    finally:
        filler.unlink(missing_ok=True)


async def test_a_push_to_a_full_disk_is_the_backend_out_of_room(
    server: PrivateMariadb, driver: MysqlDriver
) -> None:
    with full_disk(server), pytest.raises(BackendUnavailableError) as raised:
        await driver.push_many([make_job("a", payload=f'"{"x" * 2000}"') for _ in range(300)])
    said = str(raised.value)
    assert "is full" in said and "out of room" in said and "free space" in said, said
    await driver.push(make_job("a"))  # room again


async def test_a_worker_on_a_full_disk_keeps_its_jobs_and_carries_on_once_there_is_room(
    server: PrivateMariadb, driver: MysqlDriver, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=8, poll_interval=0.05, lease=60)
    done: list[tuple[int, int]] = []

    @registry.job("long_error", retry=1, retry_delay=0)
    async def long_error(job: Job[int]) -> None:
        if job.attempt == 1:  # its retry records this error: the row grows, into new pages
            raise RuntimeError(f"{job.payload} " + "x" * 9000)
        done.append((job.payload, job.attempt))

    await registry.push_many("q", "long_error", list(range(40)))
    worker = Worker(registry, "w")
    with full_disk(server) as filler:
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 30
            while "out of room" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.05)
            filler.unlink()
            while len(done) < 40 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 20)
    assert sorted(done) == [(n, 2) for n in range(40)]
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.reserved, counts.failed) == (0, 0, 0)
