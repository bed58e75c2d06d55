"""Registry.retry_failed(name=) and purge(name=): one job name's failed jobs, page by page."""

from __future__ import annotations

import pytest

from conveyor import RegistryError, core
from conveyor.drivers.base import Driver
from conveyor.job import JobState
from tests.backends import needs

from .helpers import failure_of, make_job, push_and_reserve
from .test_cursor import failed_jobs
from .test_hostile_names import registry_on

NAMES = ["a", "b", "a", "a", "b", "a", "a"]


async def failed_names(driver: Driver) -> list[str]:
    """The job names of the queue's failed jobs, in id order."""
    return [job.name for job in await driver.list_jobs("q", JobState.FAILED, limit=100)]


async def test_retry_failed_by_name_moves_only_that_names_jobs(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "NAMED_BATCH", 2)  # several pages, each retried before the next
    await failed_jobs(driver, NAMES)
    registry = registry_on(driver)

    assert await registry.retry_failed("q", name="a") == 5

    assert await failed_names(driver) == ["b", "b"]
    assert await registry.retry_failed("q", name="nobody") == 0


async def test_purge_by_name_deletes_only_that_names_failed_jobs(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "NAMED_BATCH", 2)
    await failed_jobs(driver, NAMES)
    registry = registry_on(driver)

    assert await registry.purge("q", JobState.FAILED, name="b") == 2

    assert await failed_names(driver) == ["a"] * 5


@needs("unique")
async def test_retry_failed_by_name_passes_over_a_job_whose_key_is_held(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held job stays failed and first in the listing: paging by offset 0 again would
    find it on every page and never end; by cursor, the jobs after it are reached once."""
    monkeypatch.setattr(core, "NAMED_BATCH", 1)
    first = make_job(name="a", unique="k")  # the lowest id: listed first
    await failed_jobs(driver, ["a", "a"])
    held = await push_and_reserve(driver, first)
    assert await driver.fail([failure_of(held)]) == {held.id}
    await driver.push(make_job(name="a", unique="k"))  # an unfinished job now holds key "k"
    registry = registry_on(driver)

    assert await registry.retry_failed("q", name="a") == 2

    assert [job.id for job in await driver.list_jobs("q", JobState.FAILED)] == [held.id]


async def test_retry_failed_or_purge_by_name_and_ids_together_is_refused(driver: Driver) -> None:
    [job] = await failed_jobs(driver, ["a"])
    registry = registry_on(driver)

    with pytest.raises(RegistryError, match=r"pass ids .* or name .*, not both"):
        await registry.retry_failed("q", [job.id], name="a")
    with pytest.raises(RegistryError, match=r"pass ids .* or name .*, not both"):
        await registry.purge("q", JobState.FAILED, [job.id], name="a")
    assert await failed_names(driver) == ["a"]


@pytest.mark.parametrize("tail", ["\0", "\ud800"])
async def test_retry_failed_or_purge_by_a_name_no_job_can_have_touches_nothing(
    driver: Driver, tail: str
) -> None:
    await failed_jobs(driver, ["a"])
    registry = registry_on(driver)

    assert await registry.retry_failed("q", name="a" + tail) == 0
    assert await registry.purge("q", JobState.FAILED, name="a" + tail) == 0
    assert await failed_names(driver) == ["a"]
