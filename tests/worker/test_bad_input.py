"""Jobs the worker cannot run go straight to failed storage with the reason; the worker lives."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, field_validator

from conveyor import Job, JobState
from conveyor.job import NewJob, new_id
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


def raw_job(name: str, payload: str, max_attempts: int = 4) -> NewJob:
    return NewJob(new_id(), "q", name, payload, max_attempts=max_attempts)


@needs("lookup")
async def test_unknown_job_name_fails_without_retry(app: App, start) -> None:
    registry = app.registry()

    @registry.job("known")
    async def known(job: Job[Item]) -> None: ...

    driver = await registry.driver_of("q")
    job_id = await driver.push(raw_job("nobody.handles.this", "{}"))
    ok_id = await registry.push("q", "known", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED and info.attempt == 1
    assert info.error.type == "conveyor.errors.UnknownJobError"
    assert "nobody.handles.this" in info.error.message
    assert (await settle(registry, ok_id)).state is JobState.SUCCEEDED


@needs("lookup")
async def test_job_unknown_to_a_worker_of_an_older_deploy_says_how_to_run_it(
    app: App, start
) -> None:
    # Two versions of an app serve one queue: the old one fails the job only the new one has.
    old = app.registry()
    new = app.registry()
    for registry in (old, new):

        @registry.job("known")
        async def known(job: Job[Item]) -> None: ...

    ran: list[int] = []

    @new.job("added")
    async def added(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    job_id = await new.push("q", "added", Item(7))
    running = start(old)
    info = await settle(old, job_id)
    assert info.error.type == "conveyor.errors.UnknownJobError"
    assert "every worker serving queue 'q' must register it" in info.error.message
    assert "conveyor failed retry q" in info.error.message
    await running.stop()
    start(new)
    assert await new.retry_failed("q") == 1
    assert (await settle(new, job_id)).state is JobState.SUCCEEDED and ran == [7]


@needs("lookup")
async def test_payload_failing_validation_fails_with_reason(app: App, start) -> None:
    registry = app.registry()

    @registry.job("item")
    async def item(job: Job[Item]) -> None: ...

    driver = await registry.driver_of("q")
    wrong_type = await driver.push(raw_job("item", '{"n": "seven"}'))
    not_json = await driver.push(raw_job("item", "{not json"))
    start(registry)
    for job_id in (wrong_type, not_json):
        info = await settle(registry, job_id)
        assert info.state is JobState.FAILED and info.attempt == 1
        assert info.error.type == "conveyor.errors.PayloadError"
        assert "item" in info.error.message
    assert (
        "n: Input should be a valid integer" in (await registry.job_info(wrong_type)).error.message
    )


class Checked(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def not_thirteen(cls, n: int) -> int:
        if n == 13:
            raise RuntimeError("thirteen is refused here")  # not a ValueError: pydantic lets it out
        return n


@needs("lookup")
async def test_payload_validator_raising_other_than_value_error_fails_with_its_reason(
    app: App, start
) -> None:
    registry = app.registry()

    @registry.job("checked")
    async def checked(job: Job[Checked]) -> None: ...

    driver = await registry.driver_of("q")
    job_id = await driver.push(raw_job("checked", '{"n": 13}'))
    ok_id = await registry.push("q", "checked", Checked(n=1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED and info.attempt == 1
    assert info.error.type == "conveyor.errors.PayloadError"
    assert "RuntimeError: thirteen is refused here" in info.error.message
    assert (await settle(registry, ok_id)).state is JobState.SUCCEEDED
