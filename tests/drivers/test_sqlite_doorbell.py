"""The SQLite driver's doorbell (doorbell.py): a push wakes the drivers waiting on the same file
at once, through a Unix datagram socket each binds beside it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

import conveyor.drivers.sql.sqlite as sqlite_module
from conveyor.drivers.base import Release
from conveyor.drivers.doorbell import Ringer, folder_of
from conveyor.drivers.sql.sqlite import SqliteDriver
from tests.contract.helpers import make_job

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")


@pytest.fixture(autouse=True)
def watcher_asleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher looks once a minute: only the doorbell can end a wait sooner."""
    monkeypatch.setattr(sqlite_module, "WATCH_BUSY", 60.0)
    monkeypatch.setattr(sqlite_module, "WATCH_IDLE", 60.0)


async def waiting(driver: SqliteDriver) -> asyncio.Task[None]:
    assert await driver.reserve(["q"], 1, 30.0, "w") == []
    return asyncio.create_task(driver.wait(["q"], 30.0))


async def test_a_push_release_or_blocking_push_elsewhere_rings_every_waiting_driver(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    workers = [SqliteDriver(path), SqliteDriver(path)]
    pusher = SqliteDriver(path)
    try:
        await pusher.open()
        waits = [await waiting(worker) for worker in workers]
        assert len(os.listdir(folder_of(str(path)))) == 2  # a socket each
        await pusher.push(make_job())
        await asyncio.wait_for(asyncio.gather(*waits), 5.0)  # not their 30 s, nor a minute

        [job] = await workers[0].reserve(["q"], 1, 30.0, "w")
        waits = [await waiting(workers[1])]  # the job is taken: nothing for it yet
        await workers[0].release([Release(job.id, job.reservation or "", 0.0)])
        await asyncio.wait_for(waits[0], 5.0)
        assert len(await workers[1].reserve(["q"], 1, 30.0, "w")) == 1

        waits = [await waiting(worker) for worker in workers]
        pushed = await asyncio.to_thread(pusher.push_in_thread, make_job())  # a plain thread
        assert pushed is not None
        await asyncio.wait_for(asyncio.gather(*waits), 5.0)
    finally:
        for driver in (*workers, pusher):
            await driver.close()
    assert os.listdir(folder_of(str(path))) == []  # each closed driver took its socket away


def test_a_dead_processs_socket_is_removed_and_an_absent_folder_is_no_error(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "jobs.db")
    Ringer(folder_of(path)).ring()  # nobody ever waited: no folder
    os.makedirs(folder_of(path))
    stale = os.path.join(folder_of(path), "12345-dead")
    left = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    left.bind(stale)
    left.close()  # as a killed process leaves it: the file, nobody bound
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.bind(os.path.join(folder_of(path), "1-live"))
    ringer = Ringer(folder_of(path))
    try:
        threads = [threading.Thread(target=ringer.ring) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert os.listdir(folder_of(path)) == ["1-live"]
        assert live.recv(64) == b"*"  # rung for any queue
    finally:
        live.close()
        ringer.close()


async def test_a_path_too_long_for_a_socket_address_rings_through_the_temporary_folder(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    path = deep / "jobs.db"
    assert not folder_of(str(path)).startswith(str(deep))
    worker, pusher = SqliteDriver(path), SqliteDriver(path)
    try:
        wait = await waiting(worker)
        assert len(os.listdir(folder_of(str(path)))) == 1
        await pusher.push(make_job())
        await asyncio.wait_for(wait, 5.0)
    finally:
        await worker.close()
        await pusher.close()
    os.rmdir(folder_of(str(path)))  # empty: its socket went with its driver
