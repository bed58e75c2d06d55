"""read_job's fast path for sound records never disagrees with the careful reader: whatever
value stands in any field, a JobInfo the fast path returns is the one `_read_carefully` reads.
Property-based: hypothesis picks the field and the value."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.drivers.record import _read_carefully, _read_sound, read_job
from conveyor.job import JobState

NOW = time.time()

SOUND: dict[str, Any] = {
    "id": "a1b2", "queue": "mail", "name": "send", "payload": '{"n": 1}', "state": "reserved",
    "attempt": 1, "max_attempts": 3, "priority": 0, "created_at": NOW, "available_at": NOW,
    "timeout": 30.0, "retry_delay": "exponential", "unique": None, "meta": '{"k": 1}',
    "error": None, "rescued": 0, "finished_at": None, "reservation": "t.1", "worker": "w1",
    "reserved_at": NOW, "lease_expires_at": NOW + 30, "result": None, "alone": None,
    "cancel": None,
}  # fmt: skip

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(
        [
            "",
            "{}",
            "[]",
            "1",
            "0",
            "1.5",
            "nan",
            "pending",
            "\udcff",
            "é",
            '{"a":1}',
            '{"a":"\udcff"}',
        ]
    ),
    st.sampled_from([b"", b"{}", b'{"a":1}', b"1", b"pending"]),
)


def test_a_sound_record_is_read_by_the_fast_path() -> None:
    job = _read_sound(SOUND, NOW)
    assert job is not None and job == _read_carefully(SOUND, NOW)
    assert job.state is JobState.RESERVED and job.unreadable == {}


@settings(max_examples=400)
@given(st.sampled_from(sorted(SOUND)), values)
def test_the_fast_path_agrees_with_the_careful_reader(field: str, value: object) -> None:
    raw = {**SOUND, field: value}
    try:
        fast = _read_sound(raw, NOW)
    except (KeyError, TypeError, ValueError, AttributeError):
        fast = None
    careful = _read_carefully(raw, NOW)
    if fast is not None:
        assert fast == careful and careful.unreadable == {}
    assert read_job(raw, NOW) == (fast or careful)


def test_a_finished_job_is_read_as_it_ended_without_an_error_history() -> None:
    # JobInfo shows a succeeded job with no error and a failed one at most at its last
    # attempt; the fast path, which builds a JobInfo through its slots, shows them so too.
    error = '{"type": "ValueError", "message": "smtp down", "traceback": ""}'
    succeeded = {**SOUND, "state": "succeeded", "attempt": 2, "error": error}
    failed = {**SOUND, "state": "failed", "attempt": 2, "max_attempts": 1, "error": error}
    reserved = {**SOUND, "attempt": 2, "max_attempts": 1}
    assert read_job(succeeded, NOW).error is None
    assert read_job(failed, NOW).attempt == 1 and read_job(failed, NOW).error is not None
    assert read_job(reserved, NOW).attempt == 2  # the worker tells a charged death by it


def test_meta_or_errors_nested_deeper_than_json_reads_are_unreadable_not_raised() -> None:
    # A record written by another program: before, RecursionError escaped read_job, and a
    # worker's reserve failed on it forever, the whole queue stuck behind one job.
    deep = "[" * 100_000 + "]" * 100_000
    for field in ("meta", "error", "errors"):
        job = read_job({**SOUND, field: deep}, NOW)
        assert job.id == "a1b2" and job.state is JobState.RESERVED
        if field != "errors":  # the history is for people: unreadable entries are left out
            assert job.unreadable[field].startswith("not JSON: '[[[")
        assert job.errors == ()
