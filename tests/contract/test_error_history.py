"""Each failed attempt's error is kept on the job (`JobInfo.errors`), the last MAX_ERRORS."""

from __future__ import annotations

from conveyor.drivers.base import Driver
from conveyor.job import MAX_ERRORS, ErrorInfo, JobState
from tests.backends import needs

from .helpers import LONG_LEASE, failure_of, make_job, push_and_reserve, release_of, reservation


@needs("error_history")
async def test_every_attempts_error_is_kept_in_order(driver: Driver) -> None:
    job = make_job(max_attempts=3)
    reserved = await push_and_reserve(driver, job)
    first = ErrorInfo("ValueError", "first", "Traceback: one")
    assert await driver.release([release_of(reserved, error=first)]) == {job.id}
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    second = ErrorInfo("KeyError", "second <script>", "Traceback: two")
    assert await driver.fail([failure_of(again, second)]) == {job.id}

    got = await driver.get(job.id)

    assert got is not None
    assert [(e.attempt, e.error) for e in got.errors] == [(1, first), (2, second)]
    assert got.errors[0].at <= got.errors[1].at
    assert got.error == second


@needs("error_history")
async def test_a_success_and_a_release_without_error_add_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, make_job(max_attempts=2))
    assert await driver.release([release_of(reserved, count_attempt=False)]) == {reserved.id}
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    assert await driver.ack([reservation(again)]) == {again.id}

    got = await driver.get(reserved.id)

    assert got is not None
    assert got.errors == ()


@needs("error_history")
async def test_only_the_last_errors_are_kept(driver: Driver) -> None:
    job = make_job(max_attempts=MAX_ERRORS + 5)
    reserved = await push_and_reserve(driver, job)
    for n in range(1, MAX_ERRORS + 5):
        error = ErrorInfo("ValueError", f"attempt {n}")
        assert await driver.release([release_of(reserved, error=error)]) == {job.id}
        [reserved] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")

    got = await driver.get(job.id)

    assert got is not None
    assert [e.attempt for e in got.errors] == list(range(5, MAX_ERRORS + 5))
    assert got.errors[-1].error.message == f"attempt {MAX_ERRORS + 4}"


@needs("lookup")
async def test_a_job_that_succeeded_after_a_failed_attempt_has_no_error(driver: Driver) -> None:
    """It did not fail: `error` is None (as Sidekiq and Celery show it); `errors` keeps the
    failed attempt."""
    reserved = await push_and_reserve(driver, make_job(max_attempts=2))
    first = ErrorInfo("ValueError", "smtp down", "Traceback: one")
    assert await driver.release([release_of(reserved, error=first)]) == {reserved.id}
    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
    assert await driver.ack([reservation(again)]) == {again.id}

    got = await driver.get(reserved.id)

    assert got is not None
    assert (got.state, got.attempt, got.error) == (JobState.SUCCEEDED, 2, None)
    if driver.capabilities.error_history:
        assert [(e.attempt, e.error) for e in got.errors] == [(1, first)]
