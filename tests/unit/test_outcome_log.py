"""The per-job log line carries a damaged record's name and queue (bytes that were not UTF-8,
kept as lone surrogates) as escapes, so a log handler writing UTF-8 never fails on it."""

from __future__ import annotations

import logging

import pytest

from conveyor.attempt import Outcome, Runner, error_info
from conveyor.drivers.memory import MemoryDriver
from conveyor.job import JobInfo, JobState
from conveyor.settle import log_outcome


@pytest.mark.parametrize("name", ["caf\udce9 \udcff", "lone \ud800", "café"])
def test_a_name_that_is_not_utf8_is_logged_as_escapes(
    caplog: pytest.LogCaptureFixture, name: str
) -> None:
    job = JobInfo("0" * 32, name, name, "{}", JobState.RESERVED, 1, 1, 0, 0.0, 0.0)
    outcome = Outcome("fail", job, MemoryDriver(), error_info(ValueError("boom")))
    caplog.set_level(logging.INFO, "conveyor.worker")
    log_outcome(outcome, settled=True)
    [record] = caplog.records
    line = record.getMessage()
    line.encode("utf-8")  # raises if a surrogate is left
    assert record.job.encode("utf-8") and record.queue.encode("utf-8")  # type: ignore[attr-defined]
    assert "boom" in line
    if name == "café":
        assert "(café)" in line  # text that is UTF-8 stays as it is
    else:
        assert "\\x" in line or "\\ud800" in line


async def test_lease_expired_error_counts_only_the_deaths_it_knows() -> None:
    # retry=1: the first attempt raised; the second died among other jobs (not charged), then
    # alone (charged), so the reserve found attempt 3 of 2. One alone death, not two.
    job = JobInfo("0" * 32, "q", "item", "{}", JobState.RESERVED, 3, 2, 0, 0.0, 0.0, rescued=2)
    outcome = await Runner(None, None).attempt(job, MemoryDriver())  # type: ignore[arg-type]
    assert outcome.kind == "fail" and outcome.error is not None
    assert outcome.error.message.endswith(
        "stopped answering (crash, kill -9, out of memory) 2 times, the last time while it ran"
        " alone in its last attempt (2 of 2): it is failed as the likely cause instead of being"
        " run again"
    )
    once = JobInfo("0" * 32, "q", "item", "{}", JobState.RESERVED, 2, 1, 0, 0.0, 0.0, rescued=1)
    outcome = await Runner(None, None).attempt(once, MemoryDriver())  # type: ignore[arg-type]
    assert outcome.error is not None and "out of memory) once, the last" in outcome.error.message
