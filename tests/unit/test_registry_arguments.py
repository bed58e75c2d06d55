"""Arguments of the registry's reading and cleaning calls. A job state is taken by its name too
("failed"), as the command line and the dashboard take it; a name that is no state, ids given
as one string, an id that is not a string or a page that cannot be are refused, naming the
fix, before any backend is asked. Before, a state's name listed nothing on memory and raised
AttributeError on every other driver, and ids="<id>" purged the ids of its characters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry
from conveyor.errors import RegistryError


def registry_on(driver: str) -> Registry:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w")

    @registry.job("j")
    async def j(job: Job[dict[str, Any]]) -> None:
        """Only pushed."""

    return registry


@pytest.fixture(params=["memory", "sqlite"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    driver = "memory" if request.param == "memory" else f"sqlite:///{tmp_path}/jobs.db"
    return registry_on(driver)


async def test_list_jobs_and_purge_take_a_state_by_name(registry: Registry) -> None:
    job_id = await registry.push("q", "j", {})

    assert [job.id for job in await registry.list_jobs("q", "pending")] == [job_id]
    assert await registry.purge("q", "pending") == 1
    assert await registry.list_jobs("q", JobState.PENDING) == []
    await registry.close()


async def test_a_name_that_is_no_state_is_refused_naming_the_states(registry: Registry) -> None:
    await registry.push("q", "j", {})

    for call in (registry.list_jobs("q", "pendng"), registry.purge("q", "pendng")):
        with pytest.raises(
            RegistryError, match="'pendng' is not a job state: use one of pending, delayed"
        ):
            await call
    assert len(await registry.list_jobs("q", JobState.PENDING)) == 1
    await registry.close()


async def test_reserved_jobs_are_not_purged_when_named_either(registry: Registry) -> None:
    with pytest.raises(ValueError, match="reserved jobs cannot be purged"):
        await registry.purge("q", "reserved")
    await registry.close()


async def test_ids_given_as_one_string_are_refused(registry: Registry) -> None:
    job_id = await registry.push("q", "j", {})

    for call in (
        registry.purge("q", JobState.PENDING, job_id),  # type: ignore[arg-type]
        registry.retry_failed("q", job_id),  # type: ignore[arg-type]
    ):
        with pytest.raises(RegistryError, match=r"ids must be a list of job ids, not the string"):
            await call
    assert len(await registry.list_jobs("q", JobState.PENDING)) == 1
    await registry.close()


async def test_an_id_that_is_not_a_string_is_refused(registry: Registry) -> None:
    await registry.push("q", "j", {})

    for call in (
        registry.job_info(123),  # type: ignore[arg-type]
        registry.cancel(123),  # type: ignore[arg-type]
        registry.purge("q", JobState.PENDING, [None]),  # type: ignore[list-item]
        registry.purge("q", JobState.PENDING, [123]),  # type: ignore[list-item]
    ):
        with pytest.raises(RegistryError, match=r"job id (123|None) is not a string"):
            await call
    await registry.close()


async def test_a_page_that_cannot_be_is_refused(registry: Registry) -> None:
    await registry.push("q", "j", {})

    for limit, offset in ((-1, 0), ("5", 0), (10, -3), (True, 0)):
        with pytest.raises(RegistryError, match="must be a whole number, 0 or more"):
            await registry.list_jobs("q", "pending", limit=limit, offset=offset)  # type: ignore[arg-type]
    assert await registry.list_jobs("q", "pending", limit=0) == []
    await registry.close()
