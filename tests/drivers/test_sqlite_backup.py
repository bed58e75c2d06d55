"""`conveyor backup` and SqliteDriver.backup: a copy of a live database that holds every push
that returned before it began, written whole or not at all, never over an existing file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.errors import ConfigError, DriverError
from conveyor.job import NewJob, new_id
from tests.backends import postgres, require_service
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(60)

#: Pushes batches of jobs with payloads big enough to keep the write-ahead log from being
#: checkpointed into the file, and prints each batch's ids once its push returned.
PUSHER = """
import asyncio, sys
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.job import NewJob, new_id

async def main():
    driver = SqliteDriver(sys.argv[1])
    await driver.open()
    while True:
        ids = [new_id() for _ in range(20)]
        await driver.push_many([NewJob(i, "q", "j", '"' + "x" * 500 + '"') for i in ids])
        print(" ".join(ids), flush=True)

asyncio.run(main())
"""

APP = """
from conveyor import Registry
registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.worker("w")
"""


def stored_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in db.execute("SELECT id FROM conveyor_jobs")}


async def test_backup_holds_every_push_that_returned_while_another_process_pushes(
    tmp_path: Path,
) -> None:
    path, copy = tmp_path / "app.db", tmp_path / "backup.db"
    driver = SqliteDriver(path)
    await driver.open()
    pusher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSHER, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert pusher.stdout is not None
    returned: set[str] = set()
    try:
        while len(returned) < 2000:  # more than the log's pages before a checkpoint
            returned.update((await pusher.stdout.readline()).decode().split())
        await driver.backup(str(copy))
    finally:
        pusher.kill()
        await pusher.wait()
        await driver.close()
    assert returned <= stored_ids(copy)
    assert not any(tmp_path.glob("*.partial*")), "the copy's working file was left behind"


async def test_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "app.db")
    await driver.open()
    await driver.push(NewJob(new_id(), "q", "j", "{}"))
    earlier = tmp_path / "backup.db"
    earlier.write_text("an earlier backup")
    try:
        with pytest.raises(ConfigError, match=r"backup\.db' exists: .*give a new path"):
            await driver.backup(str(earlier))
        with pytest.raises(DriverError, match="does the folder exist"):
            await driver.backup(str(tmp_path / "no" / "such" / "backup.db"))
    finally:
        await driver.close()
    assert earlier.read_text() == "an earlier backup"


def conveyor(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "--app", "backupapp:registry"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_backup_command_copies_the_apps_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    (tmp_path / "backupapp.py").write_text(APP.format(url=f"sqlite:///{path}"))
    none = conveyor(tmp_path, "backup", "first.db")
    assert none.returncode == 1 and "nothing to back up: no SQLite database" in none.stderr
    driver = SqliteDriver(path)
    await driver.open()
    job_id = await driver.push(NewJob(new_id(), "q", "j", "{}"))
    done = conveyor(tmp_path, "backup", "copy.db")
    await driver.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"backed up sqlite {path} to copy.db\n"
    assert stored_ids(tmp_path / "copy.db") == {job_id}


async def test_the_backup_command_on_a_server_names_its_own_tools(tmp_path: Path) -> None:
    require_service("postgres", 5432, postgres.START)
    prefix = postgres.fresh_prefix()
    (tmp_path / "backupapp.py").write_text(APP.format(url=f"{postgres.URL}?prefix={prefix}"))
    try:
        refused = conveyor(tmp_path, "backup", "copy.db")
    finally:
        await postgres.drop_tables(prefix)
    assert refused.returncode == 1
    assert "'postgres' driver does not support backup" in refused.stderr
    assert "docs/deploying.md#backups" in refused.stderr
    assert not (tmp_path / "copy.db").exists()


#: Pushes `count` batches, then kills itself: its -wal file stays beside the database.
KILLED = """
import asyncio, os, signal, sys
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.job import NewJob, new_id

async def main():
    driver = SqliteDriver(sys.argv[1])
    await driver.open()
    for _ in range(int(sys.argv[2])):
        jobs = [NewJob(new_id(), "q", "j", '"' + "x" * 500 + '"') for _ in range(20)]
        await driver.push_many(jobs)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def pushed_then_killed(path: Path, batches: int) -> None:
    subprocess.run([sys.executable, "-c", KILLED, str(path), str(batches)], check=False)
    assert Path(f"{path}-wal").stat().st_size > 0, "the killed pusher left no log"


async def test_restore_over_a_log_a_killed_process_left_gives_the_backup_whole(
    tmp_path: Path,
) -> None:
    """Copied over the .db file, this backup made a malformed database: SQLite replayed the
    old -wal file into it. Restored through SQLite, the database holds the backup's jobs."""
    path, copy = tmp_path / "app.db", tmp_path / "backup.db"
    pushed_then_killed(path, 20)
    driver = SqliteDriver(path)
    await driver.backup(str(copy))
    pushed_then_killed(path, 100)
    await driver.restore(str(copy))
    assert stored_ids(path) == stored_ids(copy)
    await driver.open()
    try:
        assert (await driver.counts(["q"]))["q"].pending == 400
    finally:
        await driver.close()


async def test_restore_refuses_what_is_not_a_backup_of_these_queues(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    driver = SqliteDriver(path)
    await driver.open()
    job_id = await driver.push(NewJob(new_id(), "q", "j", "{}"))
    text, other, elsewhere = tmp_path / "notes.txt", tmp_path / "other.db", tmp_path / "gone.db"
    text.write_text("not a database " * 100)
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
    try:
        with pytest.raises(ConfigError, match=r"notes\.txt' is not an SQLite database"):
            await driver.restore(str(text))
        with pytest.raises(ConfigError, match=r"holds no table 'conveyor_jobs'.*prefix"):
            await driver.restore(str(other))
        with pytest.raises(ConfigError, match=r"no backup at .*gone\.db"):
            await driver.restore(str(elsewhere))
        with pytest.raises(ConfigError, match=r"app\.db' is the database itself"):
            await driver.restore(str(path))
    finally:
        await driver.close()
    assert stored_ids(path) == {job_id}


async def test_the_restore_command_waits_for_every_worker_to_stop(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    (tmp_path / "backupapp.py").write_text(APP.format(url=f"sqlite:///{path}"))
    driver = SqliteDriver(path)
    await driver.open()
    kept = await driver.push(NewJob(new_id(), "q", "j", "{}"))
    assert conveyor(tmp_path, "backup", "copy.db").returncode == 0
    later = await driver.push(NewJob(new_id(), "q", "j", "{}"))
    await driver.beat("w:host:42", "w")
    try:
        refused = conveyor(tmp_path, "restore", "copy.db")
        assert refused.returncode == 1
        assert "1 worker process(es) use this store (w:host:42): stop them first" in refused.stderr
        assert await driver.get(later) is not None
        await driver.beat("w:host:42", "w", stopping=True)
        done = conveyor(tmp_path, "restore", "copy.db")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"restored sqlite {path} from copy.db\n"
        assert await driver.get(later) is None
        assert await driver.get(kept) is not None
    finally:
        await driver.close()


TWO_STORES = """
from conveyor import Registry
registry = Registry(default_driver="sqlite:///a.db")
registry.driver("other", "sqlite:///b.db")
registry.queue("q", workers=["w"])
registry.queue("r", workers=["w"], driver="other")
registry.worker("w")
"""


async def test_the_backup_command_asks_which_store_when_there_are_several(
    tmp_path: Path,
) -> None:
    (tmp_path / "backupapp.py").write_text(TWO_STORES)
    driver = SqliteDriver(tmp_path / "b.db")
    await driver.open()
    job_id = await driver.push(NewJob(new_id(), "r", "j", "{}"))
    await driver.close()
    asked = conveyor(tmp_path, "backup", "copy.db")
    assert asked.returncode == 1
    assert "live in 2 stores: name a queue of the one you mean (--queue" in asked.stderr
    assert "a queue of each: q, r)" in asked.stderr
    done = conveyor(tmp_path, "backup", "copy.db", "--queue", "r")
    assert done.returncode == 0, done.stderr
    assert stored_ids(tmp_path / "copy.db") == {job_id}
