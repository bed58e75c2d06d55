"""The sync driver: every job runs inside the push that made it, retries included."""

from __future__ import annotations

import threading
from typing import Any

from conveyor import Job, JobState, Registry, WorkerCounts


def make_registry() -> Registry:
    registry = Registry(default_driver="sync")
    registry.queue("q", workers=["w"])
    registry.worker("w")
    return registry


async def test_push_returns_only_after_the_handler_ran() -> None:
    registry = make_registry()
    ran: list[int] = []

    @registry.job("j")
    async def handler(job: Job[dict[str, int]]) -> None:
        ran.append(job.payload["n"])

    job_id = await registry.push("q", "j", {"n": 1})
    assert ran == [1]
    info = await registry.job_info(job_id)
    assert info is not None
    assert (info.state, info.attempt) == (JobState.SUCCEEDED, 1)
    assert info.finished_at is not None


async def test_plain_handler_runs_inside_push_too() -> None:
    registry = make_registry()
    threads: list[str] = []

    @registry.job("j")
    def handler(job: Job[dict[str, Any]]) -> None:
        threads.append(threading.current_thread().name)

    await registry.push("q", "j", {})
    assert len(threads) == 1


async def test_push_many_runs_every_job_before_returning() -> None:
    registry = make_registry()
    ran: list[int] = []

    @registry.job("j")
    async def handler(job: Job[dict[str, int]]) -> None:
        ran.append(job.payload["n"])

    ids = await registry.push_many("q", "j", [{"n": n} for n in range(5)])
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert (await registry.queue_info())["q"].succeeded == 5
    assert len(set(ids)) == 5


async def test_failing_once_is_retried_within_push_and_succeeds_on_attempt_two() -> None:
    registry = make_registry()
    attempts: list[int] = []

    @registry.job("flaky", retry=3, retry_delay=3600)
    async def flaky(job: Job[dict[str, Any]]) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("busy")

    job_id = await registry.push("q", "flaky", {})
    assert attempts == [1, 2]  # the hour-long retry delay is not waited for
    info = await registry.job_info(job_id)
    assert info is not None
    assert (info.state, info.attempt, info.max_attempts) == (JobState.SUCCEEDED, 2, 4)


async def test_always_failing_job_ends_in_failed_storage_after_retry_plus_one_attempts() -> None:
    registry = make_registry()
    attempts: list[int] = []

    @registry.job("doomed", retry=2)
    async def doomed(job: Job[dict[str, Any]]) -> None:
        attempts.append(job.attempt)
        raise ValueError(f"no luck on attempt {job.attempt}")

    job_id = await registry.push("q", "doomed", {})
    assert attempts == [1, 2, 3]
    info = await registry.job_info(job_id)
    assert info is not None
    assert (info.state, info.attempt) == (JobState.FAILED, 3)
    assert info.error is not None
    assert info.error.type == "ValueError"
    assert info.error.message == "no luck on attempt 3"
    assert "ValueError" in info.error.traceback
    assert [job.id for job in await registry.list_jobs("q", JobState.FAILED)] == [job_id]
    assert (await registry.queue_info())["q"].failed == 1


async def test_delay_is_ignored_and_the_job_runs_at_once() -> None:
    registry = make_registry()
    ran: list[str] = []

    @registry.job("j")
    async def handler(job: Job[dict[str, Any]]) -> None:
        ran.append(job.id)

    job_id = await registry.push("q", "j", {}, delay=3600)
    assert ran == [job_id]
    counts = (await registry.queue_info())["q"]
    assert (counts.delayed, counts.succeeded) == (0, 1)


async def test_worker_info_counts_successes_retries_and_failures() -> None:
    registry = make_registry()

    @registry.job("ok")
    async def ok(job: Job[dict[str, Any]]) -> None: ...

    @registry.job("flaky", retry=3)
    async def flaky(job: Job[dict[str, Any]]) -> None:
        if job.attempt == 1:
            raise ConnectionError("busy")

    @registry.job("doomed", retry=2)
    async def doomed(job: Job[dict[str, Any]]) -> None:
        raise ValueError("never")

    await registry.push("q", "ok", {})
    await registry.push("q", "flaky", {})
    await registry.push("q", "doomed", {})
    # ok: 1 attempt; flaky: 2 attempts, 1 retry; doomed: 3 attempts, 2 retries, then failed.
    assert (await registry.worker_info())["w"] == WorkerCounts(
        processed=6, succeeded=2, failed=1, retried=3
    )


async def test_job_moved_back_from_failed_storage_runs_with_the_next_push() -> None:
    registry = make_registry()
    ran: list[tuple[int, int]] = []
    broken = True

    @registry.job("j", retry=0)
    async def handler(job: Job[dict[str, int]]) -> None:
        ran.append((job.payload["n"], job.attempt))
        if broken:
            raise RuntimeError("down")

    first = await registry.push("q", "j", {"n": 1})
    info = await registry.job_info(first)
    assert info is not None and info.state is JobState.FAILED
    broken = False
    assert await registry.retry_failed("q") == 1
    await registry.push("q", "j", {"n": 2})  # the queue runs until nothing is due
    assert sorted(ran) == [(1, 1), (1, 1), (2, 1)]
    info = await registry.job_info(first)
    assert info is not None and (info.state, info.attempt) == (JobState.SUCCEEDED, 1)
