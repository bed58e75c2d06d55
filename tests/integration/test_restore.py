"""A backup taken while jobs are pending, delayed and running, restored after things moved on.

Per driver: the backup is made the way docs/deploying.md says, while a driver holds jobs in
every state (one running job holds a unique key and has a short lease, one has a long lease, a
queue is paused, a schedule has ticked, one job has finished); then jobs finish and new ones
are pushed; then the store is replaced by the backup, and a new driver opens it. What the
backup held comes back as it was; what happened after it is gone (it may run again); a job
running at the backup comes back when its lease runs out, not before; its unique key is then
freed; and a token handed out after the backup settles nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Driver
from conveyor.drivers.values import QueueCounts, Release, Reservation
from conveyor.job import JobState, NewJob, new_id
from tests.backends.private import private_mariadb, private_postgres, private_redis
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(120)

#: The lease of the running job that must come back after the restore: short, so the test
#: waits it out; the other running job's lease is an hour, so it must not come back.
SHORT_LEASE = 1.0
HOUR = 3600.0
TICK = 1_700_000_000.0


@dataclass
class Store:
    """Where a driver's jobs live: its URL, and how to back it up and restore it."""

    url: str
    backup: Callable[[], None]
    restore: Callable[[], None]


@dataclass
class Before:
    """The jobs the backup holds, by role."""

    done: str
    held: str
    short: str
    pending: str
    delayed: str
    paused: str
    tick_job: str


@dataclass
class After:
    """What happened after the backup: a token handed out then, and jobs pushed then."""

    late_token: str
    pushed: list[str]


def job(queue: str = "q", *, delay: float = 0.0, unique: str | None = None) -> NewJob:
    return NewJob(new_id(), queue, "j", "{}", delay=delay, max_attempts=3, unique=unique)


async def reserve_one(driver: Driver, queue: str, lease: float) -> tuple[str, str]:
    [got] = await driver.reserve([queue], 1, lease, "w")
    assert got.reservation is not None
    return got.id, got.reservation


async def before_backup(driver: Driver) -> Before:
    done = await driver.push(job())
    await driver.ack([Reservation(*await reserve_one(driver, "q", HOUR))])
    held = await driver.push(job())
    await reserve_one(driver, "q", HOUR)
    short = await driver.push(job(unique="k"))
    await reserve_one(driver, "q", SHORT_LEASE)
    pending = await driver.push(job())
    delayed = await driver.push(job(delay=HOUR))
    paused = await driver.push(job("p"))
    await driver.pause("p")
    tick_job = await driver.push(job())
    await driver.mark_tick("nightly", TICK, tick_job)
    return Before(done, held, short, pending, delayed, paused, tick_job)


async def after_backup(driver: Driver, before: Before) -> After:
    """Things move on: every due job runs, new ones are pushed, the queue resumed."""
    await driver.pause("p", paused=False)
    tokens = {}
    for got in await driver.reserve(["q", "p"], 10, HOUR, "w"):
        assert got.reservation is not None
        tokens[got.id] = got.reservation
        await driver.ack([Reservation(got.id, got.reservation)])
    pushed = [await driver.push(job()), await driver.push(job("p"))]
    await driver.mark_tick("nightly", TICK + 60, pushed[0])
    return After(tokens[before.pending], pushed)


async def opened(url: str) -> Driver:
    driver = driver_from_url(url)
    await driver.open()
    return driver


async def wait_for(take: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Call `take` until it says yes; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await take():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def check_restored(driver: Driver, before: Before, after: After) -> None:
    for job_id in after.pushed:
        assert await driver.get(job_id) is None, "a job pushed after the backup is in it"
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.succeeded, counts.delayed) == (1, 1), counts
    assert await driver.paused(["p"]) == {"p"}, "a pause at backup time is kept"
    assert (await driver.ticks(["nightly"]))["nightly"].at == TICK
    # Fencing: the token of a reservation made after the backup settles nothing.
    late = Reservation(before.pending, after.late_token)
    assert await driver.renew([late], HOUR) == set()
    assert await driver.release([Release(before.pending, after.late_token)]) == set()
    assert await driver.ack([late]) == set()
    info = await driver.get(before.pending)
    assert info is not None and info.state is JobState.PENDING
    # The unique key of the running job is held while its lease lasts.
    assert await driver.push(job(unique="k")) == before.short
    ran = await run_due(driver, before)
    assert before.pending in ran and before.tick_job in ran
    assert before.held not in ran, "a job came back before its lease ran out"
    assert await driver.get(before.delayed) is not None
    # Its key freed once it ran, a job with that key is stored again.
    fresh = job(unique="k")
    assert await driver.push(fresh) == fresh.id
    assert (await driver.counts(["q"]))["q"] == QueueCounts(
        pending=1, delayed=1, reserved=1, succeeded=1 + len(ran)
    )


async def run_due(driver: Driver, before: Before) -> set[str]:
    """Run every due job of 'q' until the running job whose lease was short came back; their ids."""
    ran: set[str] = set()

    async def take() -> bool:
        for got in await driver.reserve(["q"], 10, HOUR, "w2"):
            assert got.reservation is not None
            assert await driver.ack([Reservation(got.id, got.reservation)]) == {got.id}
            ran.add(got.id)
        return before.short in ran

    await wait_for(take, "the job whose lease ran out came back")
    return ran


async def scenario(store: Store) -> None:
    driver = await opened(store.url)
    try:
        before = await before_backup(driver)
        store.backup()
        after = await after_backup(driver, before)
    finally:
        await driver.close()
    store.restore()
    driver = await opened(store.url)
    try:
        await check_restored(driver, before, after)
    finally:
        await driver.close()


@contextmanager
def sqlite_store(folder: Path) -> Iterator[Store]:
    path, copy = folder / "app.db", folder / "backup.db"

    def backup() -> None:  # the online backup API, as docs/deploying.md shows
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(copy)) as target:
            source.backup(target)

    def restore() -> None:  # every process stopped; the old write-ahead log must go too
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(copy, path)

    yield Store(f"sqlite:///{path}", backup, restore)


@contextmanager
def postgres_store(folder: Path) -> Iterator[Store]:
    with private_postgres() as server:
        dump = folder / "jobs.dump"
        url = f"postgresql://postgres@127.0.0.1:{server.port}/app"
        tools = ["--host=127.0.0.1", f"--port={server.port}", "--username=postgres"]

        def tool(program: str, *args: str) -> None:
            subprocess.run([str(server.bin / program), *tools, *args], check=True, timeout=60)

        tool("createdb", "app")

        def restore() -> None:
            tool("dropdb", "app")
            tool("createdb", "app")
            tool("pg_restore", "--dbname=app", "--no-owner", str(dump))

        yield Store(
            url, lambda: tool("pg_dump", "--format=custom", f"--file={dump}", "app"), restore
        )


@contextmanager
def redis_store(folder: Path) -> Iterator[Store]:
    live, restored = folder / "live", folder / "restored"
    live.mkdir()
    restored.mkdir()
    with private_redis(live) as server, private_redis(restored, persistent=False) as second:
        url = f"{server.url}?prefix=restore_"

        def backup() -> None:
            subprocess.run(["redis-cli", "-p", str(server.port), "SAVE"], check=True)
            shutil.copyfile(live / "dump.rdb", folder / "backup.rdb")

        def restore() -> None:  # a new server started on the backup's file
            second.kill()
            shutil.copyfile(folder / "backup.rdb", restored / "dump.rdb")
            second.start()
            store.url = f"{second.url}?prefix=restore_"

        store = Store(url, backup, restore)
        yield store


@contextmanager
def mysql_store(folder: Path) -> Iterator[Store]:
    with private_mariadb() as server:
        server.sql("CREATE DATABASE app; CREATE USER app@'%' IDENTIFIED BY 'pw';"
                   " GRANT ALL ON app.* TO app@'%';")  # fmt: skip
        dump = folder / "jobs.sql"
        client = ["--no-defaults", f"--socket={server.socket}", "-uroot"]

        def backup() -> None:  # one consistent snapshot, triggers included
            with dump.open("wb") as out:
                subprocess.run(["mariadb-dump", *client, "--single-transaction", "--triggers",
                                "app"], check=True, stdout=out, timeout=60)  # fmt: skip

        def restore() -> None:
            server.sql("DROP DATABASE app; CREATE DATABASE app")
            with dump.open("rb") as source:
                subprocess.run(["mariadb", *client, "app"], check=True, stdin=source, timeout=60)

        yield Store(f"mysql://app:pw@127.0.0.1:{server.port}/app", backup, restore)


STORES = {
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "mysql": mysql_store,
    "redis": redis_store,
}


@pytest.mark.parametrize("kind", list(STORES))
async def test_restored_backup_runs_its_jobs_and_fences_later_tokens(
    kind: str, tmp_path: Path
) -> None:
    with STORES[kind](tmp_path) as store:
        await scenario(store)


async def test_postgres_tables_restored_without_their_function_count_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database shared with the app is backed up by conveyor's tables alone (`pg_dump
    --table='conveyor_*'`), which leaves out the function their counting triggers call:
    pg_restore could not make the triggers, and from then on finished jobs went uncounted
    (`conveyor list` and the dashboard said 1 succeeded after 2). Opening the store puts the
    function and triggers back, and counts the finished jobs again from the rows."""
    with private_postgres() as server:
        tools = ["--host=127.0.0.1", f"--port={server.port}", "--username=postgres"]

        def tool(program: str, *args: str) -> int:
            run = [str(server.bin / program), *tools, *args]
            return subprocess.run(run, check=False, capture_output=True, timeout=60).returncode

        assert tool("createdb", "live") == tool("createdb", "restored") == 0
        url = f"postgresql://postgres@127.0.0.1:{server.port}/live?prefix=bk_"
        driver = await opened(url)
        try:
            await driver.push(job())
            await driver.push(job())
            await driver.ack([Reservation(*await reserve_one(driver, "q", HOUR))])
        finally:
            await driver.close()
        dump = str(tmp_path / "tables.dump")
        assert tool("pg_dump", "--format=custom", f"--file={dump}", "--table=bk_*", "live") == 0
        assert tool("pg_restore", "--dbname=restored", "--no-owner", dump) == 1  # no triggers
        restored = url.replace("/live", "/restored")
        await (await opened(f"{restored}&migrate=false")).close()  # may not change the schema
        assert "lack the triggers that count finished jobs" in caplog.text
        assert "run `conveyor migrate`" in caplog.text
        grants = "CREATE ROLE app LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO app"
        assert tool("psql", "--dbname=restored", f"--command={grants}") == 0
        caplog.clear()
        user = await opened(restored.replace("postgres@", "app@"))  # may not either: it opens
        await user.close()
        assert "could not put back the triggers" in caplog.text
        driver = await opened(restored)
        try:
            assert (await driver.counts(["q"]))["q"].succeeded == 1
            await driver.ack([Reservation(*await reserve_one(driver, "q", HOUR))])
            assert (await driver.counts(["q"]))["q"] == QueueCounts(succeeded=2)
        finally:
            await driver.close()


WORKER_APP = """
from pathlib import Path
from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.worker("w")


@registry.job("record", queue="q")
async def record(job: Job[int]) -> None:
    with Path({runs!r}).open("a") as runs:
        runs.write(f"{{job.payload}}\\n")
"""


def test_a_worker_on_a_restored_sqlite_store_runs_again_what_finished_since(
    tmp_path: Path,
) -> None:
    """As an operator does it: `conveyor backup` with jobs waiting, another pushed, a worker
    runs them all, `conveyor restore`, and a worker started on it runs the backup's jobs again
    and not the later one."""
    runs = tmp_path / "runs"
    app = WORKER_APP.format(url=f"sqlite:///{tmp_path / 'app.db'}", runs=str(runs))
    (tmp_path / "workapp.py").write_text(app)

    def conveyor(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--app", "workapp:registry"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": PYTHONPATH},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    (tmp_path / "first.jsonl").write_text("1\n2\n3\n")
    conveyor("push", "q", "record", "--file", "first.jsonl")
    conveyor("backup", "backup.db")
    conveyor("push", "q", "record", "--payload", "4")
    conveyor("work", "w", "--burst")
    conveyor("restore", "backup.db")
    conveyor("work", "w", "--burst")
    assert runs.read_text().split() == ["1", "2", "3", "4", "1", "2", "3"]
