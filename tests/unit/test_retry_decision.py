"""What `retry_or_fail` makes of what a handler raised: a `Retry` or `Fail` alone, or inside
the exception group an asyncio.TaskGroup raises (before, a group hid them: a Fail was retried,
a Retry waited the queue's retry delay)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor import ConfigError, Fail, Retry
from conveyor.attempt import error_info, retry_or_fail
from conveyor.drivers.memory import MemoryDriver
from conveyor.job import JobInfo, JobState
from conveyor.retry import Fixed, to_json


def _decided(raised: BaseException, attempt: int = 1) -> tuple[str, float]:
    job = JobInfo("0" * 32, "q", "item", "{}", JobState.RESERVED, attempt, 3, 0, 0.0, 0.0,
                  retry_delay=to_json(Fixed(60.0)))  # fmt: skip
    outcome = retry_or_fail(job, MemoryDriver(), error_info(raised), raised)
    return outcome.kind, outcome.delay


@pytest.mark.parametrize(
    ("raised", "decided"),
    [
        (ValueError("boom"), ("release", 60.0)),
        (Retry(delay=5), ("release", 5.0)),
        (Retry(5), ("release", 5.0)),  # the message was "5", and the retry delay waited
        (Retry(timedelta(minutes=1, seconds=30)), ("release", 90.0)),
        (Retry(), ("release", 60.0)),
        (Fail("no"), ("fail", 0.0)),
        (ExceptionGroup("g", [Fail("no")]), ("fail", 0.0)),
        (
            ExceptionGroup("g", [ValueError("boom"), ExceptionGroup("h", [Fail("no")])]),
            ("fail", 0.0),
        ),
        (ExceptionGroup("g", [Retry(delay=5), Retry(delay=2)]), ("release", 5.0)),
        (ExceptionGroup("g", [Retry(delay=5), Retry()]), ("release", 60.0)),
        (ExceptionGroup("g", [Retry(delay=5), ValueError("boom")]), ("release", 60.0)),
    ],
)
def test_what_a_handler_raised_decides_the_outcome(
    raised: BaseException, decided: tuple[str, float]
) -> None:
    assert _decided(raised) == decided


def test_a_retry_in_a_group_on_the_last_attempt_fails_the_job() -> None:
    assert _decided(ExceptionGroup("g", [Retry(delay=5)]), attempt=3)[0] == "fail"


def test_a_retry_delay_set_to_no_duration_waits_the_retry_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, the text reached the driver, which could not write it: the job was failed.
    raised = Retry("soon")
    raised.delay = "soon"  # type: ignore[assignment]
    assert _decided(raised) == ("release", 60.0)
    assert "Retry.delay must be seconds or a timedelta, not 'soon'" in caplog.text


class Patient(Retry):
    delay = -1


def test_a_subclass_default_delay_out_of_range_is_refused_where_it_is_raised() -> None:
    with pytest.raises(ConfigError, match=r"Patient.delay must be from 0 seconds"):
        Patient()


def test_an_exception_group_s_message_says_what_its_tasks_raised() -> None:
    inner = ExceptionGroup("inner", [KeyError("k")])
    error = error_info(ExceptionGroup("outer", [ValueError("boom"), inner, Fail("no")]))
    assert error.type == "ExceptionGroup"
    assert error.message == (
        "outer (3 sub-exceptions): ValueError: boom; KeyError: 'k'; conveyor.retry.Fail: no"
    )


def test_a_group_nested_past_the_recursion_limit_is_decided() -> None:
    raised: BaseException = Fail("no")
    for _ in range(5000):
        raised = ExceptionGroup("g", [raised])
    assert _decided(raised) == ("fail", 0.0)


def test_a_delay_given_twice_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Retry\(5, delay=3\): give the delay once"):
        Retry(5, delay=3)
