"""The SQLite file as other processes and the system leave it: permissions, paths, the WAL."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor.drivers.sql.sqlite.connection as sqlite_connection
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.errors import BackendUnavailableError, DriverError
from tests.contract.helpers import make_job

#: Run by a process the file is read-only to: each push (from the driver's loop, then from a
#: plain thread, as the blocking facade's) is refused, then tried again once the parent has
#: made the file writable (it says so on stdin), and the jobs are reserved.
READ_ONLY_CHILD = """
import asyncio, sys, threading
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.errors import BackendUnavailableError, DriverError
from conveyor.job import NewJob

def job(n):
    return NewJob(id=f"job-{n}", queue="q", name="j", payload="{}")

def in_thread(driver, n):
    said = []
    def push():
        try:
            said.append(driver.push_in_thread(job(n)))
        except Exception as error:
            said.append(f"{type(error).__name__}: {error}")
    thread = threading.Thread(target=push)
    thread.start()
    thread.join()
    return said[0]

async def main():
    driver = SqliteDriver(sys.argv[1])
    await driver.open()
    for n in (1, 3):
        try:
            print(await driver.push(job(n)), flush=True)
        except Exception as error:
            print(f"{type(error).__name__}: {error}", flush=True)
        print(in_thread(driver, n + 1), flush=True)
        if n == 1:
            sys.stdin.readline()  # the parent makes the file writable meanwhile
    reserved = await driver.reserve(["q"], 10, 30.0, "w")
    print(sorted(job.id for job in reserved), flush=True)
    await driver.close()

asyncio.run(main())
"""


def _bound_by_file_modes() -> None:
    """In a child about to exec, as root: give up the capabilities that let root open any file
    whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a file's mode binds it as it
    binds any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


async def test_a_file_read_only_to_the_process_is_named_and_used_once_it_may_be_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    driver = SqliteDriver(path)
    await driver.open()  # the tables, made by the file's owner
    await driver.close()
    path.chmod(0o444)

    child = subprocess.Popen(
        [sys.executable, "-c", READ_ONLY_CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_bound_by_file_modes if os.geteuid() == 0 else None,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        refused = [child.stdout.readline(), child.stdout.readline()]
        for file in (path, tmp_path / "jobs.db-wal", tmp_path / "jobs.db-shm"):
            file.chmod(0o666)  # as the message says; SQLite made the two with the file's mode
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    for line in refused:
        assert line.startswith("BackendUnavailableError: "), (refused, err)
        assert "read-only to this process" in line and str(path) in line
    # Before, the connection SQLite had opened read-only refused every write for as long as
    # the process lived, though the file could now be written.
    assert out.splitlines() == ["job-3", "job-4", "['job-3', 'job-4']"], err


async def test_the_wal_file_is_cut_back_after_a_large_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_connection, "WAL_LIMIT", 100_000)  # the one connect() reads
    path = tmp_path / "jobs.db"
    pusher, worker = SqliteDriver(path), SqliteDriver(path)  # two processes, as it were
    try:
        # Past SQLite's automatic checkpoint (1,000 pages), which the commit then runs.
        await pusher.push_many([make_job(payload=json.dumps("x" * 1000)) for _ in range(5000)])
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 4_000_000

        reserved = await worker.reserve(["q"], 10, 30.0, "w")  # the next write starts at the top

        assert len(reserved) == 10
        # Before, the file kept the size of the largest transaction while any process had it
        # open: for good, beside long-running workers.
        assert wal.stat().st_size <= 100_000
    finally:
        await pusher.close()
        await worker.close()


async def test_a_relative_path_that_names_no_file_yet_is_logged_as_the_file_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # a worker started from another folder than the pushers
    caplog.set_level(logging.INFO, logger="conveyor.sql")
    driver = SqliteDriver.from_url("sqlite:///jobs.db")
    await driver.counts(["q"])  # `conveyor list`: opens the driver, lazily
    await driver.close()

    made = [record.getMessage() for record in caplog.records]
    # Before, nothing said so: the worker waited for jobs pushed to another file, and
    # `conveyor list` showed every queue empty.
    assert len(made) == 1, made
    assert f"created the SQLite database {tmp_path / 'jobs.db'}" in made[0]
    assert "working directory" in made[0]

    caplog.clear()
    await driver.counts(["q"])  # the file is there now
    await driver.close()
    assert caplog.records == []


async def test_a_full_disk_is_an_outage_naming_it_not_a_refused_statement(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    conn = driver._conn
    try:
        await driver.push(make_job())

        def fill_up() -> None:  # the file may grow no more: SQLite's own "disk is full"
            db = conn._connection()
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}").fetchall()

        await conn._hop(fill_up)
        big = [make_job(payload=json.dumps("x" * 10_000)) for _ in range(100)]
        with pytest.raises(BackendUnavailableError, match="full or failing") as caught:
            await driver.push_many(big)
        # Before, a plain DriverError: a worker's settler took it for the database refusing
        # those acks, and wrote jobs that had succeeded as failed.
        assert "database or disk is full" in str(caught.value)

        await conn._hop(lambda: conn._connection().execute("PRAGMA max_page_count = 1000000"))
        assert len(await driver.push_many(big)) == 100  # space again: it carries on
    finally:
        await driver.close()


async def test_a_batch_past_what_one_statement_takes_names_the_chunk_to_push_instead(
    tmp_path: Path,
) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    conn = driver._conn
    try:
        await driver.open()
        # SQLite's own limit, 1,000,000,000 bytes in one string, lowered to spare the memory a
        # batch of 10,000 payloads of 100 KB takes (push_many's chunk): the same refusal.
        await conn._hop(lambda: conn._connection().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000))
        batch = [make_job(payload=json.dumps("x" * 1000)) for _ in range(1000)]

        with pytest.raises(DriverError, match="string or blob too big") as caught:
            await driver.push_many(batch)

        # Before, only SQLite's words: nothing said what to change.
        assert "chunk=" in str(caught.value)
        assert await driver.push_many(batch[:100]) == [job.id for job in batch[:100]]
    finally:
        await driver.close()
