"""A worker's start-up: opening the drivers of its queues, patiently.

A worker started before its backend (as any container orchestrator may start it) does not
exit: while a backend cannot be reached it tries again with the worker's back-off, logging
each attempt with the backend's URL (password masked), until it opens or a stop comes, or,
with a `startup_timeout`, until that many seconds have passed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from conveyor.drivers import safe_url
from conveyor.drivers.base import Driver, DriverError
from conveyor.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

log = logging.getLogger("conveyor.worker")

#: The drivers a worker uses, each with the names of its queues there.
Groups = list[tuple[Driver, list[str]]]
#: Waits after a failed attempt: (what failed, the error, failures in a row, until when).
BackOff = Callable[[str, Exception, int, float], Awaitable[None]]
#: How many queue names a start-up line shows before it counts the rest.
NAMES_SHOWN = 10


class StartUp:
    """Opens worker `worker`'s drivers; see the module docstring."""

    def __init__(
        self,
        registry: RegistryCore,
        worker: str,
        stopping: asyncio.Event,
        timeout: float | None,
        queues: list[str] | None = None,
    ) -> None:
        """`queues`: the queues to open (default: those `worker` serves)."""
        self.registry = registry
        self.worker = worker
        self.queues = queues
        self.stopping = stopping
        self.timeout = startup_timeout(timeout)
        self._opening = ""  # the queue whose driver is being opened, named in the logs

    async def open(self, back_off: BackOff) -> Groups | None:
        """The opened drivers; None when a stop came first (it ends the retries, and an
        attempt under way, at once). BackendUnavailableError after startup_timeout."""
        limit = self.timeout
        give_up = math.inf if limit is None else time.monotonic() + limit
        failures = 0
        while not self.stopping.is_set():
            try:
                groups = await self._open_unless_stopped()
            except BackendUnavailableError as exc:
                failures += 1
                if time.monotonic() >= give_up:
                    raise BackendUnavailableError(
                        f"worker {self.worker!r} gave up after {limit:g}s of start-up: {exc}; "
                        "start the backend first, or allow more time with startup_timeout "
                        "(conveyor work --startup-timeout)"
                    ) from exc
                backend = safe_url(self.registry.queue_spec(self._opening).driver)
                what = f"start-up attempt {failures}: opening {backend} (queue {self._opening!r})"
                await back_off(what, exc, failures, give_up)
                continue
            if groups is not None:
                await warn_of_hazards(groups)
                return groups
        return None

    async def _open_unless_stopped(self) -> Groups | None:
        """The opened drivers, or None if a stop came first (the opening is cancelled)."""
        opening = asyncio.ensure_future(self._groups())
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([opening, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (opening, stopped):
                task.cancel()
            await asyncio.gather(opening, stopped, return_exceptions=True)
        return None if opening.cancelled() else opening.result()

    async def _groups(self) -> Groups:
        groups: dict[int, tuple[Driver, list[str]]] = {}
        queues = self.registry.queues_of(self.worker) if self.queues is None else self.queues
        for queue in queues:
            self._opening = queue
            driver = await self.registry.driver_of(queue)
            groups.setdefault(id(driver), (driver, []))[1].append(queue)
        return list(groups.values())


async def warn_of_hazards(groups: Groups) -> None:
    """Log what the servers' settings may lose of the jobs pushed there (Driver.hazards), once
    at a worker's start, where someone reads the logs; a server that will not say (CONFIG
    renamed on a managed Redis) is not worth failing the start for."""
    for driver, queues in groups:
        try:
            hazards = await driver.hazards()
        except (DriverError, TimeoutError) as exc:
            log.info(
                "queue %s: could not read the server's settings to warn of what they may lose"
                " (%s); check them against docs/reliability.md yourself",
                named(queues), exc,
            )  # fmt: skip
            continue
        for hazard in hazards:
            log.warning("queue %s: %s", named(queues), hazard)


def stores(groups: Groups) -> str:
    """ "['mail'] in sqlite /srv/app/conveyor.db, ['video'] in redis redis://cache:6379/0": each
    group's queues and where its driver keeps their jobs (passwords masked), as a worker's
    start line shows them, so that a worker started from another directory than the app (a
    relative SQLite path) or with another URL is seen to look elsewhere."""
    return ", ".join(
        f"[{named(queues)}] in {' '.join(filter(None, (driver.kind, driver.where())))}"
        for driver, queues in groups
    )


def named(queues: list[str]) -> str:
    """ "'a', 'b'": the first NAMES_SHOWN queue names, then how many more (a worker serving
    300 queues printed 5 KB of names on each start-up line)."""
    shown = ", ".join(repr(queue) for queue in queues[:NAMES_SHOWN])
    more = len(queues) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def startup_timeout(seconds: float | None) -> float | None:
    """A valid startup_timeout (seconds >= 0, or None for ever); ConfigError otherwise."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ConfigError(f"startup_timeout must be seconds >= 0 or None, not {seconds!r}")
    return float(seconds)
