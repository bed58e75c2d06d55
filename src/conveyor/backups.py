"""Backing up a jobs store while it is in use, and putting such a copy back, on the drivers
that declare `Capabilities.backup` (sqlite; a server's own tools back up the others:
docs/deploying.md#backups). `conveyor backup` and `conveyor restore` call these, and so may a
script of yours:

    from conveyor.backups import backup, restore

    await backup(registry, "/backups/jobs.db")    # while workers and pushers go on
    await restore(registry, "/backups/jobs.db")   # once every worker has stopped
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.drivers.base import ALIVE_WITHIN, Driver
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.registry import Registry

__all__ = ["backup", "restore"]


async def backup(registry: Registry, path: str, queue: str | None = None) -> Driver:
    """Copy the store that keeps `queue` (the app's one store when None) to the new file
    `path`: every push that returned before the call began is in the copy. The driver."""
    queue = _store_queue(registry, queue)
    if (missing := registry.driver_for(queue).unmade()) is not None:
        raise ConveyorError(f"nothing to back up: {missing}")  # and none made by looking
    driver = await registry.driver_of(queue)
    await driver.backup(path)
    return driver


async def restore(registry: Registry, path: str, queue: str | None = None) -> Driver:
    """Replace the store that keeps `queue` (the app's one store when None) with the copy at
    `path` that `backup` made, at once; refused while a worker process uses the store, as it
    would go on with jobs the copy puts back. Jobs finished since the copy run again, and jobs
    running when it was made run again once their lease runs out. The driver."""
    driver = await registry.driver_of(_store_queue(registry, queue))
    if alive := await driver.alive(ALIVE_WITHIN):
        names = ", ".join(process.identity for process in alive)
        raise ConveyorError(
            f"{len(alive)} worker process(es) use this store ({names}): stop them first; one"
            f" stopped or killed shows here up to {ALIVE_WITHIN:g}s after its last beat."
            " Nothing restored"
        )
    await driver.restore(path)
    return driver


def _store_queue(registry: Registry, queue: str | None) -> str:
    """`queue`, or a queue of the app's one store; with queues in several stores, an error
    asking for one that names a queue of each (not the stores: a store is named by its URL)."""
    if queue is not None:
        return queue
    stores = {spec.driver: name for name, spec in registry.queues.items()}
    if len(stores) > 1:
        raise ConveyorError(
            f"the queues live in {len(stores)} stores: name a queue of the one you mean"
            f" (--queue, or queue=; a queue of each: {', '.join(stores.values())})"
        )
    return next(iter(stores.values()))
