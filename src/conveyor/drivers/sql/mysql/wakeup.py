"""How an idle MySQL worker hears of a job pushed by another process: the server has no
LISTEN/NOTIFY, so the driver looks, cheaply and often.

What it looks at is a probe (queries.sql, `wait_probe`): per queue, two index dives that stop
at their first entry and take no lock, saying whether a job may have fallen due since the
last reserve. On MariaDB the looking happens on the server (`wait`): one anonymous compound
statement runs the probe every `every` seconds, sleeping in between, and returns when it sees
a job due or after SLICE seconds, so an idle worker's process wakes twice a second, not at
every look, and the server's thread sleeps between looks. Such a wait holds one pooled
connection. MySQL runs compound statements only inside stored programs: the first refusal
switches the driver to running the probe from the client instead.

Looks are frequent right after a reserve that found jobs and spread out as the quiet lasts
(a tenth of the quiet time, between the BUSY and IDLE bounds), so a job pushed while work
flows starts within milliseconds and an idle worker costs little. A sighting that woke a
worker whose reserve then found nothing (a job another reserve holds locked, a clock that
disagrees) does not wake it again, nor does one no reserve of those queues followed (a worker
whose queue is paused reserves nothing from it); any change does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor.drivers.local import LocalWakeup
from conveyor.drivers.sql.adapter import Params, Row
from conveyor.drivers.sql.mysql.target import error_code
from conveyor.errors import DriverError

__all__ = ["PROBE_BUSY", "PROBE_IDLE", "SLICE", "SLICE_TICKS", "TICK_BUSY", "TICK_IDLE", "Wakeup"]

log = logging.getLogger("conveyor.mysql")

#: Seconds between two looks on the server, right after work and at the most when idle.
TICK_BUSY = 0.001
TICK_IDLE = 0.04

#: Seconds between two probes from the client (MySQL), right after work and when idle.
PROBE_BUSY = 0.002
PROBE_IDLE = 0.04

#: The longest one server-side wait lasts (how often an idle worker's process wakes, and how
#: long a stopping worker's last wait may hold its connection), and the most looks it makes:
#: a wait begun right after work looks often, but only for a short while.
SLICE = 0.5
SLICE_TICKS = 50

#: MySQL's "syntax error": a server without compound statements outside stored programs.
_PARSE_ERROR = 1064

Fetch = Callable[[str, Params], Awaitable[list[Row]]]


class Wakeup:
    """The `wait` of one MySQL driver: ends on a push through the driver (`pushed`), on a job
    due as the probe sees it, or at the timeout. `reserved` is told of every reserve."""

    def __init__(self, fetch: Fetch, pushed: LocalWakeup) -> None:
        self._fetch = fetch
        self._pushed = pushed
        self.on_server = True  # until the server refuses a compound statement
        self._last_work = -math.inf  # time.monotonic() of the last reserve that found jobs
        # Per list of queues: the sighting that last ended a wait, and the one after which
        # the reserve found nothing.
        self._woke: dict[tuple[str, ...], str] = {}
        self._futile: dict[tuple[str, ...], str] = {}
        # The server-side wait under way per list of queues, if any (see _look_on_server).
        self._looking: dict[tuple[str, ...], asyncio.Future[list[Row]]] = {}

    def reserved(self, queues: Sequence[str], found: bool) -> None:
        """Note a reserve: whether it found jobs decides how often the next wait looks."""
        key = tuple(queues)
        woke = self._woke.pop(key, None)
        if found:
            self._last_work = time.monotonic()
            self._futile.pop(key, None)
        elif woke is not None:
            self._futile[key] = woke

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return on a push through the driver, when a job may be due in `queues`, or after
        `timeout` seconds; while the server cannot be reached, wait out the timeout."""
        key = tuple(queues)
        # The sighting that ended the last wait, with no reserve of these queues since (some or
        # all of them paused): as futile as one whose reserve found nothing, or every wait would
        # end at once on the same due job, a loop of round trips for as long as the pause lasts.
        woke = self._woke.pop(key, None)
        if woke is not None:
            self._futile[key] = woke
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not key:
                    await self._pushed.wait(left)
                    return
                if await self._look(key, left):
                    return
            except DriverError as error:
                log.debug("looking for due jobs failed (%s); waiting out the timeout", error)
                await self._pushed.wait(max(0.0, deadline - time.monotonic()))
                return

    async def _look(self, key: tuple[str, ...], left: float) -> bool:
        """One look, for at most `left` seconds; True when the wait should end."""
        if self.on_server:
            try:
                return await self._on_server(key, left)
            except DriverError as error:
                if error.__cause__ is None or error_code(error.__cause__) != _PARSE_ERROR:
                    raise
                log.info("MySQL runs no compound statement here; idle workers poll instead")
                self.on_server = False
        return await self._from_client(key, left)

    async def _on_server(self, key: tuple[str, ...], left: float) -> bool:
        """Wait on the server's looks, or on a push through the driver, for up to `left`."""
        looking = self._looking.get(key)
        if looking is None or looking.done():
            looking = self._looking[key] = asyncio.ensure_future(self._look_on_server(key, left))
            looking.add_done_callback(_consume)
        pushed = asyncio.ensure_future(self._pushed.wait(left))
        either: set[asyncio.Future[Any]] = {looking, pushed}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pushed.cancel()
        if pushed.done() and not pushed.cancelled() and pushed.result():
            return True  # the looks go on, and the next wait takes them over
        if not looking.done():
            return False
        return self._saw(key, looking.result()[0]["sighting"])

    async def _look_on_server(self, key: tuple[str, ...], left: float) -> list[Row]:
        """One `wait` statement: SLICE_TICKS looks, at most SLICE seconds, at most `left`.

        Never more than one per list of queues: a wait that ends early (a push through the
        driver, a cancel) leaves its statement running on the server, where nothing can cut
        it short, and the next wait takes it over rather than starting another beside it."""
        every = min(self._interval(TICK_BUSY, TICK_IDLE), left)
        slice_ = min(left, SLICE, every * SLICE_TICKS)
        params = {
            "queues": json.dumps(key),
            "ticks": max(1, round(slice_ / every)),
            "every": every,
            "futile": self._futile.get(key, ""),
        }
        return await self._fetch("wait", params)

    async def _from_client(self, key: tuple[str, ...], left: float) -> bool:
        if await self._pushed.wait(min(self._interval(PROBE_BUSY, PROBE_IDLE), left)):
            return True
        rows = await self._fetch("wait_probe", {"queues": json.dumps(key)})
        return self._saw(key, rows[0]["sighting"])

    def _interval(self, busy: float, idle: float) -> float:
        """A tenth of the quiet since the last reserve that found jobs, between the bounds."""
        return min(idle, max(busy, (time.monotonic() - self._last_work) / 10))

    def _saw(self, key: tuple[str, ...], sighting: str) -> bool:
        """True for a sighting of a due job that did not already wake a worker for nothing."""
        if not sighting or sighting == self._futile.get(key):
            return False
        self._woke[key] = sighting
        return True


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
