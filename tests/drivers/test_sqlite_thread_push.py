"""The blocking facade's push on SQLite, stored from the calling thread (`push_in_thread`) on a
connection of that thread's own: the same row as the async push, every option kept, several
threads at once, durable (synchronous=FULL), a worker of the same driver woken, a unique key
still handled on the event loop, and a driver closed and opened again never reusing a
connection from before."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conveyor import Registry
from conveyor.drivers.sql.sqlite import SqliteConnection, SqliteDriver
from tests.contract.helpers import (
    Mail,
    mail_registry,
    make_job,
    push_from_threads,
    queue_driver,
    stored_alike,
)

pytestmark = pytest.mark.timeout(60)


def make_registry(path: Path) -> Registry:
    return mail_registry(SqliteDriver(path))


def driver_of(registry: Registry) -> SqliteDriver:
    return queue_driver(registry, SqliteDriver)


def in_threads(driver: SqliteDriver) -> list[sqlite3.Connection]:
    """The connections `push_in_thread` opened, one per calling thread."""
    connection = driver._conn
    assert isinstance(connection, SqliteConnection)
    return [db for db, _ in connection._in_threads]


def thread_connections(registry: Registry) -> list[sqlite3.Connection]:
    return in_threads(driver_of(registry))


def this_threads_connection(registry: Registry) -> sqlite3.Connection:
    connection = driver_of(registry)._conn
    assert isinstance(connection, SqliteConnection)
    db: sqlite3.Connection = connection._local.db[1]
    return db


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = make_registry(tmp_path / "jobs.db")
    yield registry
    registry.blocking.close()


def test_a_blocking_push_is_stored_from_the_calling_thread_as_the_async_push_stores_it(
    registry: Registry,
) -> None:
    first = registry.blocking.push("q", "mail", Mail("a@example.com"))  # opens the driver
    opened = thread_connections(registry)

    second = registry.blocking.push("q", "mail", Mail("a@example.com"))

    assert len(thread_connections(registry)) == len(opened) + 1  # this thread's own
    mine, theirs = stored_alike(
        registry.blocking.job_info(second), registry.blocking.job_info(first)
    )
    assert mine == theirs
    assert registry.blocking.queue_info()["q"].pending == 2
    [connection] = thread_connections(registry)
    assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: durable


def test_a_blocking_push_from_a_thread_keeps_every_option(registry: Registry) -> None:
    registry.blocking.push("q", "mail", Mail("first"))
    options = dict(priority=7, timeout=30.0, meta={"k": "v"}, retry=4, delay=60)

    job_id = registry.blocking.push("q", "mail", Mail("b"), **options)  # type: ignore[arg-type]

    assert thread_connections(registry)
    info = registry.blocking.job_info(job_id)
    assert info is not None
    assert (info.priority, info.timeout, info.meta, info.max_attempts) == (7, 30.0, {"k": "v"}, 5)
    assert info.available_at - info.created_at == pytest.approx(60, abs=0.01)
    assert registry.blocking.queue_info()["q"].delayed == 1


def test_blocking_pushes_from_several_threads_at_once_are_all_stored(registry: Registry) -> None:
    registry.blocking.push("q", "mail", Mail("first"))
    threads, each = 8, 25
    used: set[sqlite3.Connection] = set()

    def push(text: str) -> str:
        job_id = registry.blocking.push("q", "mail", Mail(text))
        used.add(this_threads_connection(registry))
        return job_id

    ids = push_from_threads(push, threads, each)
    assert len(used) == threads  # each thread's own
    assert thread_connections(registry) == []  # each closed as its thread ended
    assert len({job_id for mine in ids for job_id in mine}) == threads * each
    assert registry.blocking.queue_info()["q"].pending == threads * each + 1


def test_a_unique_push_from_a_thread_still_holds_its_key(registry: Registry) -> None:
    registry.blocking.push("q", "mail", Mail("first"))

    ids = {registry.blocking.push("q", "mail", Mail("x"), unique="k") for _ in range(3)}

    assert len(ids) == 1
    assert registry.blocking.queue_info()["q"].pending == 2


async def test_push_in_thread_wakes_a_worker_of_the_same_driver(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        await driver.push(make_job())
        assert len(await driver.reserve(["q"], 10, 30.0, "w")) == 1
        waiting = asyncio.create_task(driver.wait(["q"], 30))
        await asyncio.sleep(0.05)

        await asyncio.to_thread(driver.push_in_thread, make_job())

        await asyncio.wait_for(waiting, 10)  # well before its 30 s
        assert len(await driver.reserve(["q"], 10, 30.0, "w")) == 1
    finally:
        await driver.close()


async def test_push_in_thread_declines_a_unique_key_and_a_driver_not_opened(
    tmp_path: Path,
) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        assert driver.push_in_thread(make_job()) is None  # not opened yet
        await driver.push(make_job())
        assert await asyncio.to_thread(driver.push_in_thread, make_job(unique="u")) is None
        assert (await driver.counts(["q"]))["q"].pending == 1
    finally:
        await driver.close()


async def test_a_driver_opened_again_never_uses_a_connection_from_before(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    pusher = ThreadPoolExecutor(max_workers=1)  # one thread for both pushes
    loop = asyncio.get_running_loop()
    try:
        await driver.push(make_job())
        await loop.run_in_executor(pusher, driver.push_in_thread, make_job())
        [before] = in_threads(driver)
        await driver.close()
        with pytest.raises(sqlite3.ProgrammingError):
            before.execute("SELECT 1")  # closed with the driver

        await driver.push(make_job())  # opens it again
        await loop.run_in_executor(pusher, driver.push_in_thread, make_job())  # same thread

        assert in_threads(driver) != [before]
        assert (await driver.counts(["q"]))["q"].pending == 4
    finally:
        pusher.shutdown()
        await driver.close()


def test_a_thread_that_ended_leaves_no_connection_open(registry: Registry, tmp_path: Path) -> None:
    """Before, each thread's connection stayed open until the driver closed: a server starting
    a thread per request (Werkzeug's, Django's runserver) leaked two descriptors a request."""
    registry.blocking.push("q", "mail", Mail("first"))  # opens the driver
    before = open_files(tmp_path)
    for n in range(40):  # one thread per request
        thread = threading.Thread(target=registry.blocking.push, args=("q", "mail", Mail(f"{n}")))
        thread.start()
        thread.join()
    # SQLite may keep one closed connection's descriptor of the file for its next open (it
    # cannot close it while the process holds locks on the file); before, there were 80 more.
    assert open_files(tmp_path) <= before + 1
    assert thread_connections(registry) == []
    registry.blocking.push("q", "mail", Mail("last"))  # a thread still running keeps its own
    assert len(thread_connections(registry)) == 1
    assert registry.blocking.queue_info()["q"].pending == 42


def open_files(folder: Path) -> int:
    """How many descriptors this process has open on files in `folder` (the database's)."""
    fds = Path("/proc/self/fd")
    return sum(str(fd.resolve()).startswith(str(folder)) for fd in list(fds.iterdir()))
