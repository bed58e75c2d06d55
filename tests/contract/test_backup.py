"""backup and restore: a copy of the whole store made while it is in use, put back later,
gives the store as it was at the copy (a `backup` driver: sqlite); every other driver refuses
both with Unsupported naming the server's own tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.drivers.base import Driver
from conveyor.errors import Unsupported
from tests.backends import needs

from .helpers import LONG_LEASE, make_job, reservation


@needs("backup")
@needs("lookup")
async def test_a_restored_backup_gives_the_store_as_it_was_at_the_copy(
    driver: Driver, tmp_path: Path
) -> None:
    kept, running = make_job(), make_job()
    await driver.push_many([kept, running])
    [held] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    copy = str(tmp_path / "copy.db")
    await driver.backup(copy)
    later = await driver.push(make_job())
    assert await driver.ack([reservation(held)]) == {held.id}

    await driver.restore(copy)

    assert await driver.get(later) is None  # pushed after the copy: gone
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.reserved, counts.succeeded) == (1, 1, 0)
    restored = await driver.get(held.id)
    assert restored is not None and restored.state.value == "reserved"  # back by its lease


async def test_a_driver_without_backups_refuses_both_naming_its_servers_tools(
    driver: Driver, tmp_path: Path
) -> None:
    if driver.capabilities.backup:
        pytest.skip(f"{driver.kind} declares the backup capability")
    copy = str(tmp_path / "copy.db")
    for call in (driver.backup, driver.restore):
        with pytest.raises(Unsupported, match=r"server's own tools \(docs/deploying.md#backups\)"):
            await call(copy)
    assert not Path(copy).exists()
