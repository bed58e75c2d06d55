"""How a worker's run ended (`Stopped`), and the line saying what became of the jobs a stop
did not see through: `conveyor work` exits with it, the ASGI host logs it; and what a stopping
worker tells its backends first (`stop_reserving`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.drivers.base import HEARTBEAT_EVERY, Driver

log = logging.getLogger("conveyor.worker")


async def stop_reserving(groups: Sequence[tuple[Driver, list[str]]], identity: str) -> None:
    """Tell each backend that the worker reserves its queues no more (Driver.stop_reserving),
    so its process holds back none of their jobs from other workers. A backend that fails or
    has not answered within HEARTBEAT_EVERY seconds is passed over, logged: closing the
    registry gives all back."""
    for driver, queues in groups:
        try:
            async with asyncio.timeout(HEARTBEAT_EVERY):
                await driver.stop_reserving(queues, identity)
        except Exception as exc:  # a DriverError, a deadline: the stop goes on
            log.warning("could not tell %r that worker %s stops reserving (%s: %s): it may hold"
                        " jobs of %s until the registry is closed", driver, identity,
                        type(exc).__name__, exc, ", ".join(queues))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stopped:
    """How a worker's run ended. `released` names the jobs still running when stop_timeout ran
    out (or a second signal came), cancelled and given back to run again; `left` the jobs whose
    plain handler still ran in a thread, left reserved until their lease runs out; `unsettled`
    the jobs whose outcome (an ack, a fail, or a release, theirs included) the backend had not
    taken when the stop gave up writing it: still reserved, they run again once their lease
    runs out. A clean stop has none of them. `at_once`: a second stop (signal) came, so the
    running jobs were cut short without waiting out stop_timeout."""

    released: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    unsettled: tuple[str, ...] = ()
    at_once: bool = False

    @property
    def clean(self) -> bool:
        """True when every job finished before the worker stopped, its outcome written."""
        return not self.released and not self.left and not self.unsettled

    def summary(self, worker: str, stop_timeout: float) -> str:
        """One line naming the jobs of a stop that was not clean, and what became of each."""
        running = []
        if self.released:
            running.append(f"released to run again: {', '.join(self.released)}")
        if self.left:
            running.append(f"left to their threads until their lease ends: {', '.join(self.left)}")
        parts = []
        if running:
            when = (
                "at a second signal" if self.at_once else f"after stop_timeout ({stop_timeout:g}s)"
            )
            parts.append(f"with jobs still running {when}: " + "; ".join(running))
        if self.unsettled:
            parts.append(
                "with outcomes the backend never took (ack, fail or release), so still reserved"
                f" and run again once their lease ends: {', '.join(self.unsettled)}"
            )
        return f"worker {worker!r} stopped " + "; and ".join(parts)
