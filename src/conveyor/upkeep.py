"""A worker's upkeep beside its jobs: saying it is alive, and pruning finished jobs.

Every HEARTBEAT_EVERY seconds the worker tells each backend it uses that it is alive
(`conveyor list` shows who is), and every PRUNE_EVERY seconds it deletes the finished jobs of
its queues that are past their queue's retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.drivers.base import HEARTBEAT_EVERY, Driver
from conveyor.errors import DriverError

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

log = logging.getLogger("conveyor.worker")

__all__ = ["PRUNE_EVERY", "beat", "beat_loop", "prune_loop"]

PRUNE_EVERY = 60.0


async def beat_loop(drivers: Sequence[Driver], identity: str, name: str) -> None:
    """Say this process is alive, for ever."""
    while True:
        await beat(drivers, identity, name)
        await asyncio.sleep(HEARTBEAT_EVERY)


async def beat(
    drivers: Sequence[Driver], identity: str, name: str, *, stopping: bool = False
) -> None:
    """Say this process is alive (or, `stopping`, that it stops) to each driver."""
    for driver in drivers:
        try:
            async with asyncio.timeout(HEARTBEAT_EVERY):
                await driver.beat(identity, name, stopping=stopping)
        except Exception as exc:  # a DriverError, a deadline: the next beat tries again
            log.debug("could not say worker %s is alive (%s)", identity, exc)


async def prune_loop(registry: RegistryCore, queues: Callable[[], list[str]]) -> None:
    """Prune the finished jobs of `queues()` past their retention, for ever."""
    while True:
        for queue in queues():
            try:
                await registry.prune(queue)
            except DriverError as exc:
                log.warning("could not prune queue %s (%s)", queue, exc)
        await asyncio.sleep(PRUNE_EVERY)
