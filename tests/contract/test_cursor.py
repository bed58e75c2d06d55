"""list_jobs(after=): a cursor that pages on from a job id, however the pages before changed."""

from __future__ import annotations

import pytest

from conveyor import RegistryError
from conveyor.drivers.base import Driver
from conveyor.job import JobInfo, JobState
from tests.backends import needs

from .helpers import failure_of, make_job, push_and_reserve
from .test_hostile_names import registry_on


async def failed_jobs(driver: Driver, names: list[str]) -> list[JobInfo]:
    """One failed job per name in `names`, in id order (every driver lists failed jobs)."""
    failed = []
    for name in names:
        reserved = await push_and_reserve(driver, make_job(name=name))
        assert await driver.fail([failure_of(reserved)]) == {reserved.id}
        failed.append(reserved)
    return sorted(failed, key=lambda job: job.id)


async def test_list_jobs_after_an_id_lists_only_the_jobs_after_it(driver: Driver) -> None:
    jobs = await failed_jobs(driver, ["j"] * 5)

    listed = await driver.list_jobs("q", JobState.FAILED, limit=10, after=jobs[1].id)

    assert [job.id for job in listed] == [job.id for job in jobs[2:]]
    assert await driver.list_jobs("q", JobState.FAILED, after=jobs[-1].id) == []
    after_then_offset = await driver.list_jobs("q", JobState.FAILED, 1, 1, after=jobs[1].id)
    assert [job.id for job in after_then_offset] == [jobs[3].id]


async def test_list_jobs_after_an_id_filters_by_name_first(driver: Driver) -> None:
    jobs = await failed_jobs(driver, ["a", "b", "a", "b", "a", "a"])
    named = [job.id for job in jobs if job.name == "a"]

    listed = await driver.list_jobs("q", JobState.FAILED, limit=2, name="a", after=named[0])

    assert [job.id for job in listed] == named[1:3]


async def test_paging_by_after_skips_nothing_while_pages_are_retried(driver: Driver) -> None:
    jobs = await failed_jobs(driver, ["j"] * 7)
    seen: list[str] = []
    after: str | None = None
    while page := await driver.list_jobs("q", JobState.FAILED, limit=3, after=after):
        seen += [job.id for job in page]
        assert await driver.retry_failed("q", [job.id for job in page]) == len(page)
        after = page[-1].id

    assert seen == [job.id for job in jobs]  # by offset, the second page skipped 3 jobs


@needs("lookup")
async def test_list_jobs_after_an_id_pages_pending_jobs(driver: Driver) -> None:
    jobs = sorted([make_job() for _ in range(4)], key=lambda job: job.id)
    await driver.push_many(jobs)

    listed = await driver.list_jobs("q", JobState.PENDING, limit=2, after=jobs[0].id)

    assert [job.id for job in listed] == [job.id for job in jobs[1:3]]


@pytest.mark.parametrize("tail", ["\0", "\ud800"])
async def test_list_jobs_after_what_no_id_can_be_is_refused_saying_what_to_pass(
    driver: Driver, tail: str
) -> None:
    registry = registry_on(driver)

    with pytest.raises(RegistryError, match=r"no job id .*pass the id of the last job"):
        await registry.list_jobs("q", JobState.FAILED, after="x" + tail)
