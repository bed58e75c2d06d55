"""The SQLite driver's watcher (drivers/sql/sqlite/watcher.py): it looks at the file only while
a `wait` is in progress, and a commit made elsewhere while it did not look still ends the next
wait at once."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import conveyor.drivers.sql.sqlite.watcher as watcher_module
from conveyor.drivers.doorbell import Doorbell
from conveyor.drivers.sql.sqlite import SqliteDriver
from tests.contract.helpers import make_job


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The time of each look the watcher makes at the file."""
    seen: list[float] = []
    real = watcher_module._version_of

    def counted(db: sqlite3.Connection) -> int:
        seen.append(time.monotonic())
        return real(db)

    monkeypatch.setattr(watcher_module, "_version_of", counted)
    return seen


async def test_the_watcher_looks_only_while_a_wait_is_in_progress(
    tmp_path: Path, looks: list[float]
) -> None:
    """A busy worker never waits: looks then (every 2 ms after a reserve that found jobs)
    cost its process CPU and hand-overs of the GIL, and told it nothing."""
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        await driver.push(make_job())
        assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1
        started = len(looks)  # the first version, read as the watcher starts
        await asyncio.sleep(0.1)
        assert len(looks) == started

        await driver.wait(["q"], 0.1)  # may end at its first look: the reserve committed
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        await driver.wait(["q"], 0.3)  # looks every 20-25 ms now (a tenth of the quiet)
        assert len(looks) > started + 2  # looked again and again while it waited
        waited = len(looks)
        await asyncio.sleep(0.1)
        assert len(looks) <= waited + 1  # at most the look under way as the wait ended
    finally:
        await driver.close()


async def test_a_commit_elsewhere_before_the_wait_ends_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, looks: list[float]
) -> None:
    """Committed after the reserve began and before the wait (no doorbell rings: the
    watcher alone can tell), while the watcher did not look: its first look finds it."""
    monkeypatch.setattr(Doorbell, "open", lambda self, notify: None)
    driver = SqliteDriver(tmp_path / "jobs.db")
    other = SqliteDriver(tmp_path / "jobs.db")
    try:
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        await driver.wait(["q"], 0.05)  # the watcher's version is now the file's
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        await other.push(make_job())
        begin = time.monotonic()
        await driver.wait(["q"], 30.0)
        assert time.monotonic() - begin < 5.0  # far sooner than its timeout
        assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1
    finally:
        await other.close()
        await driver.close()


async def test_close_returns_once_the_watchers_connection_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last connection to close writes the log into the file. Before, close returned while
    the watcher's thread still held one: an operator's restore that copied a backup over the
    file next had the old log written into it when that connection closed (a job pushed after
    the backup was in the restored file, 1 run in 6 under load). A slow look holds the thread
    here, as a loaded machine did."""
    real = watcher_module._version_of

    def slow(db: sqlite3.Connection) -> int:
        time.sleep(0.3)
        return real(db)

    driver = SqliteDriver(tmp_path / "jobs.db")
    assert await driver.reserve(["q"], 1, 30.0, "w") == []  # the watcher starts
    monkeypatch.setattr(watcher_module, "_version_of", slow)
    waiting = asyncio.create_task(driver.wait(["q"], 5.0))
    await asyncio.sleep(0.1)  # the watcher is in the middle of a look
    waiting.cancel()
    await driver.close()

    watching = [t for t in threading.enumerate() if t.name == "conveyor-sqlite-watch"]
    assert not any(thread.is_alive() for thread in watching)
    folder = Path("/proc/self/fd")
    held = [link for link in folder.iterdir() if str(tmp_path) in os.path.realpath(link)]
    assert held == [], f"files of the database still open: {held}"
