"""Jobs the worker cannot run go straight to failed storage with the reason; the worker lives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from conveyor import Job, JobState, PayloadError, Registry
from conveyor.job import NewJob, new_id
from conveyor.retry import Fixed, to_json
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


def raw_job(name: str, payload: str, max_attempts: int = 4) -> NewJob:
    return NewJob(new_id(), "q", name, payload, max_attempts=max_attempts)


@needs("lookup")
async def test_unknown_job_name_is_retried_then_fails_with_reason(app: App, start) -> None:
    registry = app.registry()

    @registry.job("known")
    async def known(job: Job[Item]) -> None: ...

    driver = await registry.driver_of("q")
    unknown = replace(raw_job("nobody.handles.this", "{}", 3), retry_delay=to_json(Fixed(0)))
    job_id = await driver.push(unknown)
    ok_id = await registry.push("q", "known", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED and info.attempt == 3
    assert [error.attempt for error in info.errors] == [1, 2, 3]
    assert info.error.type == "conveyor.errors.UnknownJobError"
    assert "nobody.handles.this" in info.error.message
    assert (await settle(registry, ok_id)).state is JobState.SUCCEEDED


@needs("lookup")
async def test_job_unknown_to_a_worker_of_an_older_deploy_runs_on_a_newer_one(
    app: App, start
) -> None:
    # Two versions of an app serve one queue, in a rolling deploy: the old one gives the job
    # only the new one has back for its next attempt, and the new one runs it.
    old = app.registry()
    new = app.registry()
    for registry in (old, new):

        @registry.job("known")
        async def known(job: Job[Item]) -> None: ...

    ran: list[int] = []

    @new.job("added")
    async def added(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    job_id = await new.push("q", "added", Item(7), retry=1, retry_delay=2)
    running = start(old)
    info = await released(old, job_id)
    await running.stop()
    assert info.error.type == "conveyor.errors.UnknownJobError"
    assert "every worker serving queue 'q' must register it" in info.error.message
    start(new)
    info = await settle(new, job_id)
    assert info.state is JobState.SUCCEEDED and info.attempt == 2 and ran == [7]


@needs("lookup")
async def test_job_unknown_after_its_last_attempt_says_how_to_run_it(app: App, start) -> None:
    old = app.registry()
    new = app.registry()

    @new.job("added")
    async def added(job: Job[Item]) -> None: ...

    job_id = await new.push("q", "added", Item(7), retry=0)
    running = start(old)
    info = await settle(old, job_id)
    await running.stop()
    assert info.state is JobState.FAILED and info.attempt == 1
    assert "conveyor failed retry q" in info.error.message
    start(new)
    assert await new.retry_failed("q") == 1
    assert (await settle(new, job_id)).state is JobState.SUCCEEDED


async def released(registry: Registry, job_id: str, timeout: float = 10.0) -> Any:
    """Wait until the job's first attempt has failed and it waits for its next; its JobInfo."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (info := await registry.job_info(job_id)) is None or info.error is None:
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} not released: {info}"
        await asyncio.sleep(0.01)
    assert info.state is JobState.DELAYED and info.attempt == 1
    return info


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
        if n == 14:
            raise SystemExit("fourteen exits")  # as a handler's, it fails only its job
        if n == 15:
            raise KeyboardInterrupt("fifteen")
        return n


@needs("lookup")
@pytest.mark.parametrize(
    ("n", "raised"),
    [(13, "RuntimeError: thirteen is refused here"), (14, "SystemExit: fourteen exits"),
     (15, "KeyboardInterrupt: fifteen")],
)  # fmt: skip
async def test_payload_validator_raising_other_than_value_error_fails_with_its_reason(
    app: App, start, n: int, raised: str
) -> None:
    registry = app.registry()

    @registry.job("checked")
    async def checked(job: Job[Checked]) -> None: ...

    driver = await registry.driver_of("q")
    job_id = await driver.push(raw_job("checked", f'{{"n": {n}}}'))
    ok_id = await registry.push("q", "checked", Checked(n=1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED and info.attempt == 1
    assert info.error.type == "conveyor.errors.PayloadError"
    assert raised in info.error.message
    assert (await settle(registry, ok_id)).state is JobState.SUCCEEDED


@pytest.mark.parametrize("stamped", [False, True], ids=["plain", "stamped"])
@pytest.mark.parametrize("reason", ["invalid", "oversized"])
async def test_push_many_error_names_the_payload_at_fault_and_earlier_chunks_stay(
    app: App, reason: str, stamped: bool
) -> None:
    registry = app.registry()
    registry.max_payload_bytes = 64
    if stamped:  # each job made on its own, as with tracing
        registry.hooks.add_stamp(lambda queue, name, meta: {"traced": True})

    @registry.job("item", queue="q")
    async def item(job: Job[Item]) -> None: ...

    payloads: list[Any] = [Item(n) for n in range(8)]
    payloads[4] = {"n": "four"} if reason == "invalid" else {"n": 10**80}

    with pytest.raises(PayloadError, match=r"^payloads\[4\]: payload of job 'item' ") as caught:
        await item.push_many(payloads, chunk=3)  # chunks 0-2, 3-5, 6-7

    assert ("valid integer" if reason == "invalid" else "over the limit of 64") in str(caught.value)
    assert (await registry.queue_info())["q"].pending == 3  # the first chunk; none of its own
