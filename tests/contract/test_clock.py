"""One clock: a caller whose clock is wrong changes nothing the backend decides. Leases, due
times and the retention horizon are all read off the backend's own clock, so a worker 30 s
ahead cannot take over running jobs, one 8 days ahead cannot prune early, and one behind
cannot make a delayed job due. The test shifts this process's `time.time()`, as a machine
with a wrong clock would have it; the backends keep theirs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from conveyor.drivers.base import Driver
from tests.backends import needs

from .helpers import make_job, release_of, reservation, state_of

Shift = Callable[[float], None]
DAY = 86400.0


@pytest.fixture
def shift(monkeypatch: pytest.MonkeyPatch) -> Shift:
    """Shift this process's clock (`time.time`) by some seconds, until the test ends."""
    real = time.time

    def shifted(offset: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + offset)

    return shifted


def own_clock_or_skip(driver: Driver) -> None:
    if not driver.capabilities.shared:
        pytest.skip(f"{driver.kind} lives in one process: no other clock can disagree with it")


@pytest.mark.parametrize("offset", [30.0, -30.0, 8 * DAY])
@needs("lookup")
@needs("timed_leases")
async def test_a_worker_with_a_wrong_clock_cannot_take_a_running_job(
    driver_pair: tuple[Driver, Driver], shift: Shift, offset: float
) -> None:
    running, skewed = driver_pair
    own_clock_or_skip(running)
    await running.push(make_job())
    [job] = await running.reserve(["q"], 1, 2.0, "w1")

    shift(offset)

    assert await skewed.reserve(["q"], 10, 2.0, "w2") == []
    assert await skewed.renew([reservation(job)], 2.0) == {job.id}
    assert await state_of(skewed, job.id) == "reserved"


@pytest.mark.parametrize("offset", [8 * DAY, 30 * DAY])
@needs("lookup")
async def test_a_worker_with_a_clock_days_ahead_prunes_nothing_early(
    driver: Driver, shift: Shift, offset: float
) -> None:
    own_clock_or_skip(driver)
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w1")
    await driver.ack([reservation(job)])

    shift(offset)

    assert await driver.prune("q", 7 * DAY) == 0
    assert await state_of(driver, job.id) == "succeeded"


@pytest.mark.parametrize("offset", [-30.0, 30.0])
@needs("lookup")
@needs("timed_leases")
async def test_a_push_from_a_wrong_clock_is_due_by_the_backends_clock(
    driver_pair: tuple[Driver, Driver], shift: Shift, offset: float
) -> None:
    worker, skewed = driver_pair
    own_clock_or_skip(worker)
    shift(offset)
    due, delayed = make_job(), make_job(delay=10.0)

    await skewed.push_many([due, delayed])

    assert [job.id for job in await worker.reserve(["q"], 10, 30.0, "w1")] == [due.id]
    assert await state_of(worker, delayed.id) == "delayed"


@pytest.mark.parametrize("offset", [-30.0, 30.0])
@needs("lookup")
@needs("timed_leases")
async def test_a_release_from_a_wrong_clock_delays_by_the_backends_clock(
    driver_pair: tuple[Driver, Driver], shift: Shift, offset: float
) -> None:
    worker, skewed = driver_pair
    own_clock_or_skip(worker)
    await worker.push(make_job())
    [job] = await worker.reserve(["q"], 1, 30.0, "w1")
    shift(offset)

    released = await skewed.release([release_of(job, 10.0)])

    assert released == {job.id}
    assert await worker.reserve(["q"], 10, 30.0, "w2") == []
    assert await state_of(worker, job.id) == "delayed"
