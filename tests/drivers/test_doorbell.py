"""The doorbell (drivers/doorbell.py) on its own, without a database: rings carry the queues
they are for, a driver is woken only for the queues it serves, and a folder in the shared
temporary folder is used only if it is the user's own. The SQLite and MySQL drivers' use of it
is tested in test_sqlite_doorbell.py and test_mysql_wakeup.py."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.drivers.doorbell import Doorbell, Ringer, RingingWakeup, private_folder

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")


class Listening:
    """A waiting driver's side of the doorbell: its socket and the wake-up it ends."""

    def __init__(self, folder: str, serving: set[str]) -> None:
        self.ringer = Ringer(folder)
        self.wakeup = RingingWakeup(self.ringer)
        self.wakeup.serving.update(serving)
        self.doorbell = Doorbell(folder)
        self.doorbell.open(self.wakeup.heard)

    async def woken(self) -> bool:
        """Whether a ring ends a wait of a tenth of a second (the rings were sent before);
        then forgotten, as a reserve does."""
        woken = await self.wakeup.wait(0.1)
        self.wakeup.forget()
        return woken

    def close(self) -> None:
        self.doorbell.close()
        self.ringer.close()


@pytest.fixture
async def listening(tmp_path: Path) -> AsyncIterator[list[Listening]]:
    made: list[Listening] = []
    yield made
    for each in made:
        each.close()


async def test_a_ring_wakes_the_drivers_serving_its_queues_only(
    tmp_path: Path, listening: list[Listening]
) -> None:
    folder = str(tmp_path / "wake")
    a, b = Listening(folder, {"a"}), Listening(folder, {"b", "c"})
    listening += [a, b]
    ringer = Ringer(folder)
    try:
        ringer.ring(["a"])
        assert (await a.woken(), await b.woken()) == (True, False)

        ringer.ring(["c", "x"])
        ringer.ring(["x"])
        assert (await a.woken(), await b.woken()) == (False, True)

        ringer.ring([])  # nothing pushed: nobody rung
        assert (await a.woken(), await b.woken()) == (False, False)

        ringer.ring(None)  # a release: its queue is not known
        assert (await a.woken(), await b.woken()) == (True, True)

        ringer.ring(f"q{n:04}" for n in range(1000))  # too many names for one ring: any
        assert (await a.woken(), await b.woken()) == (True, True)
    finally:
        ringer.close()


async def test_a_drivers_own_notify_rings_the_others_with_its_queues(
    tmp_path: Path, listening: list[Listening]
) -> None:
    folder = str(tmp_path / "wake")
    a, b = Listening(folder, {"a"}), Listening(folder, {"b"})
    listening += [a, b]
    b.wakeup.notify(["a"])  # b pushed to a: b's own waits end too, as any local push does
    assert (await a.woken(), await b.woken()) == (True, True)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root (chown)")
async def test_a_temporary_folder_another_user_made_is_not_used() -> None:
    folder = private_folder(f"test-{os.getpid()}")
    os.makedirs(folder, mode=0o777)
    os.chown(folder, 65534, 65534)  # as if another user had made it first
    doorbell = Doorbell(folder)
    try:
        doorbell.open(lambda queues: None)
        assert os.listdir(folder) == []  # no socket bound there
    finally:
        doorbell.close()
        os.rmdir(folder)


async def test_a_private_folder_is_the_users_own_and_no_one_elses(
    listening: list[Listening],
) -> None:
    folder = private_folder(f"test-{os.getpid()}")
    listening.append(Listening(folder, {"a"}))
    try:
        assert os.stat(folder).st_mode & 0o777 == 0o700
        assert len(os.listdir(folder)) == 1
        assert private_folder(f"test-{os.getpid()}") == folder
        assert private_folder(f"test-{os.getpid()}-other") != folder
    finally:
        listening.pop().close()
        os.rmdir(folder)
