"""A worker's upkeep beside its jobs: saying it is alive, pruning finished jobs, what it
waits on while idle, and which backend it asks for jobs first.

Every HEARTBEAT_EVERY seconds the worker tells each backend it uses that it is alive
(`conveyor list` shows who is), and every PRUNE_EVERY seconds it deletes the finished jobs of
its queues that are past their queue's retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.drivers.base import HEARTBEAT_EVERY, Driver

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

log = logging.getLogger("conveyor.worker")

__all__ = [
    "PRUNE_EVERY", "beat", "beat_loop", "first_of", "idle_waits", "in_turn", "prune_loop",
]  # fmt: skip

PRUNE_EVERY = 60.0

G = TypeVar("G")


async def beat_loop(drivers: Sequence[Driver], identity: str, name: str) -> None:
    """Say this process is alive, for ever."""
    while True:
        await beat(drivers, identity, name)
        await asyncio.sleep(HEARTBEAT_EVERY)


async def beat(
    drivers: Sequence[Driver],
    identity: str,
    name: str,
    *,
    stopping: bool = False,
    within: float = HEARTBEAT_EVERY,
) -> None:
    """Say this process is alive (or, `stopping`, that it stops) to each driver, giving up on
    one that has not answered within `within` seconds (at most HEARTBEAT_EVERY)."""
    for driver in drivers:
        try:
            async with asyncio.timeout(min(within, HEARTBEAT_EVERY)):
                await driver.beat(identity, name, stopping=stopping)
        except Exception as exc:  # a DriverError, a deadline: the next beat tries again
            log.debug("could not say worker %s is alive (%s)", identity, exc)


async def prune_loop(registry: RegistryCore, queues: Callable[[], list[str]]) -> None:
    """Prune the finished jobs of `queues()` past their retention, for ever."""
    while True:
        for queue in queues():
            try:
                await registry.prune(queue)
            except Exception as exc:  # a DriverError, or one no driver wrapped: try next time
                log.warning("could not prune queue %s (%s: %s); will try again in %gs",
                            queue, type(exc).__name__, exc, PRUNE_EVERY)  # fmt: skip
        await asyncio.sleep(PRUNE_EVERY)


def idle_waits(
    groups: Sequence[tuple[Driver, list[str]]], paused: set[str], timeout: float
) -> list[Awaitable[object]]:
    """What an idle worker waits on, per driver: a push to one of its queues not `paused`,
    for up to `timeout` (the poll interval, after which the pauses are read again). A driver
    whose queues are all paused is not asked: its wait ends at once while a job it holds is
    due or a push it made is unreserved, and nothing reserves from a paused queue, so the
    worker would go round its loop for as long as the pause lasts."""
    waits: list[Awaitable[object]] = []
    for driver, queues in groups:
        unpaused = [queue for queue in queues if queue not in paused]
        waits.append(driver.wait(unpaused, timeout) if unpaused else asyncio.sleep(timeout))
    return waits


def in_turn(groups: Sequence[G], turn: int) -> list[G]:
    """A worker's backends (each with its queues) in the order its `turn`-th reserve asks
    them: each reserve starts one further on. Asked always in one order, the first backend's
    backlog took every freed slot and a queue on another backend waited for all of it (its
    higher priorities too, which a backend compares only among its own queues)."""
    start = turn % len(groups) if groups else 0
    return [*groups[start:], *groups[:start]]


async def first_of(*waits: Awaitable[Any]) -> Exception | None:
    """Wait until the first of `waits` is done, then cancel the others. Returns the error
    of a wait that failed, if the first to finish did."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [task.exception() for task in done if not task.cancelled()]
    return next((error for error in errors if isinstance(error, Exception)), None)
