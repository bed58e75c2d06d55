"""The worker's counters count what the backend accepted: a retry whose release was refused
(its lease lost) is no retry, even beside a stop's give-back the backend took."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

import pytest

from conveyor import Retry
from conveyor.attempt import Outcome, error_info, given_back, retry_or_fail
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.values import Failure, Release, Reservation, WorkerCounts
from conveyor.errors import BackendUnavailableError
from conveyor.job import NewJob
from conveyor.settle import Settler


async def _never(what: str, error: Exception, failures: int, woken: asyncio.Event) -> None:
    raise AssertionError(f"no write should fail here: {what}: {error}")


async def test_a_refused_retry_is_not_counted_as_retried() -> None:
    driver = MemoryDriver()
    await driver.open()
    await driver.push_many([NewJob(name, "q", "j", "{}", max_attempts=3) for name in "ab"])
    first, second = await driver.reserve(["q"], 2, 30.0, "w")
    lost = replace(first, reservation="another worker's")  # its lease was taken over
    settler = Settler("w", _never)
    await settler.settle(
        driver,
        [
            retry_or_fail(lost, driver, error_info(Retry(delay=5)), Retry(delay=5)),
            given_back(second, driver),  # a stop gave it back: accepted, not a retry
        ],
    )
    # Before, retried was min(releases with an error, releases accepted) = 1. The give-back
    # came to no outcome: not processed either (it is, where it runs again).
    assert settler.counts == WorkerCounts(processed=0, succeeded=0, failed=0, retried=0)


class LostReply(MemoryDriver):
    """Makes the first write of `verb`, then fails it as a connection dropped before the
    reply would: the write was made, and the settler cannot know."""

    def __init__(self, verb: str) -> None:
        super().__init__()
        self.verb, self.lost = verb, False

    async def _lose(self, made: set[str]) -> set[str]:
        if not self.lost:
            self.lost = True
            raise BackendUnavailableError("the connection dropped before the reply")
        return made

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        made = await super().ack(reservations)
        return await self._lose(made) if self.verb == "ack" else made

    async def release(self, releases: Sequence[Release]) -> set[str]:
        made = await super().release(releases)
        return await self._lose(made) if self.verb == "release" else made

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        made = await super().fail(failures)
        return await self._lose(made) if self.verb == "fail" else made


async def _at_once(what: str, error: Exception, failures: int, woken: asyncio.Event) -> None:
    """No back-off: the write is tried again at once."""


@pytest.mark.parametrize(
    ("verb", "counted"),
    [
        ("ack", WorkerCounts(processed=1, succeeded=1)),
        ("release", WorkerCounts(processed=1, retried=1)),
        ("fail", WorkerCounts(processed=1, failed=1)),
    ],
)
async def test_a_write_made_though_its_reply_was_lost_is_counted_once_refused_again(
    verb: str, counted: WorkerCounts, caplog: pytest.LogCaptureFixture
) -> None:
    """Written again, it is refused (the job is settled already): it was counted as a lease
    lost, not at all, and logged so."""
    driver = LostReply(verb)
    await driver.push(NewJob("a", "q", "j", "{}", max_attempts=2))
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    error = error_info(ValueError("boom"))
    settler = Settler("w", _at_once)
    settler.add(
        Outcome("ack", job, driver)
        if verb == "ack"
        else Outcome(verb, job, driver, error)  # a retry, or a failure for good
    )

    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await settler.flush()

    assert driver.lost
    assert settler.counts == counted
    assert not [r for r in caplog.records if getattr(r, "outcome", None) == "lost"]
