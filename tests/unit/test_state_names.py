"""Registry calls that take a job state take its name too ("failed"), as the command line and
the dashboard do; a name that is no state is refused, naming the states, before any backend
is asked (a plain string listed nothing on memory, and crashed on every other driver)."""

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
