"""Reading a stored job back into a JobInfo, field by field, so one damaged record never stops a
batch, a worker or an inspection.

Drivers hand `read_job` the raw fields of one record, as their client returns them (the
JobInfo field names, but `unique` for the unique key and `cancel` for cancel_requested): text,
numbers, bytes or None. Text that was not valid UTF-8 arrives as bytes, or as a str whose
undecodable bytes were kept as lone surrogates (the `surrogateescape` error handler, which the
drivers use so that a bad byte never raises in the client library). A field that cannot be
read gets a placeholder, and `JobInfo.unreadable` names it with what was wrong and its raw
value; a worker then fails the job with that reason instead of running it (see attempt.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, TypeVar

from conveyor.job import ErrorInfo, FailedAttempt, JobInfo, JobState
from conveyor.payload import not_utf8

__all__ = ["RAW_SHOWN", "decode_text", "read_errors", "read_job"]

#: How much of a damaged field's raw value a problem description shows.
RAW_SHOWN = 200

_STATES = {state.value: state for state in JobState}

P = TypeVar("P")


def decode_text(data: bytes) -> str:
    """Bytes as text, keeping bytes that are not UTF-8 as lone surrogates (surrogateescape), so
    they can be told apart, shown, and written back unchanged."""
    return data.decode("utf-8", "surrogateescape")


def read_job(raw: Mapping[str, object], now: float) -> JobInfo:
    """The JobInfo of a stored record: `raw` holds the JobInfo field names (`unique` for the
    unique key) and `now` is the backend's time, which tells a delayed job from a pending one.
    Never raises for damage; see the module docstring.

    Every reserve reads its jobs here, so a sound record takes a fast path that checks only
    what the careful reader would find wrong; anything it doubts is read again carefully."""
    try:
        job = _read_sound(raw, now)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        job = None
    if job is None:
        job = _read_carefully(raw, now)
    history = raw.get("errors")
    if history is not None and history != "":
        job = replace(job, errors=read_errors(history))
    elif job.attempt > job.max_attempts or (job.error and job.state is JobState.SUCCEEDED):
        job = replace(job)  # JobInfo.__post_init__ shows it as it ended; the fast path skips it
    return job


def read_errors(stored: object) -> tuple[FailedAttempt, ...]:
    """The error history of a job from its stored JSON array of objects (attempt, at, type,
    message, traceback), oldest first. Entries that cannot be read are left out: the history
    is for people to read, and its damage never hides the job."""
    if isinstance(stored, bytes):
        stored = decode_text(stored)
    try:
        entries = json.loads(stored) if isinstance(stored, str) else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
        return ()
    if not isinstance(entries, list):
        return ()
    history: list[FailedAttempt] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        attempt, at = _number(entry.get("attempt")), _number(entry.get("at"))
        if attempt is not None and at is not None:
            history.append(FailedAttempt(int(attempt), at, ErrorInfo.from_dict(entry)))
    return tuple(history)


def _read_sound(raw: Mapping[str, Any], now: float) -> JobInfo | None:
    """The JobInfo of a record whose every field is as written, else None (or an error).

    Every reserve of every driver reads each job here: the checks are written out, with no
    generator or helper call per field, and the text fields are checked for UTF-8 in one
    joined string (a join of anything but text raises TypeError: read carefully then). What
    it returns is what `_read_carefully` would (tests/unit/test_read_job.py checks it)."""
    get = raw.get
    retry_delay, unique, reservation = get("retry_delay"), get("unique"), get("reservation")
    worker, result = get("worker"), get("result")
    meta_text, error_text = get("meta"), get("error")
    optional = (retry_delay, unique, reservation, worker, result, meta_text, error_text)
    present = [text for text in optional if text]
    texts = "".join((raw["id"], raw["queue"], raw["name"], raw["payload"], *present))
    if not texts.isascii() and not_utf8(texts):
        return None
    for text in optional:
        if text is not None and type(text) is not str:
            return None  # 0, False or b"" never reached the join
    state = _STATES[raw["state"]]
    available_at = _finite(raw["available_at"])
    if state is JobState.PENDING and available_at > now:
        state = JobState.DELAYED
    meta = {} if meta_text in (None, "", "{}") else json.loads(meta_text)
    error = None if error_text in (None, "") else json.loads(error_text)
    if type(meta) is not dict or not (error is None or type(error) is dict):
        return None
    alone, cancel = get("alone"), get("cancel")
    if alone not in _FLAGS or cancel not in _FLAGS:
        return None
    timeout, finished_at, rescued = get("timeout"), get("finished_at"), get("rescued")
    reserved_at, lease_expires_at = get("reserved_at"), get("lease_expires_at")
    return _job_info(
        raw["id"], raw["queue"], raw["name"], raw["payload"], state, _whole(raw["attempt"]),
        _whole(raw["max_attempts"]), _whole(raw["priority"]), _finite(raw["created_at"]),
        available_at, None if timeout is None else _finite(timeout), retry_delay, unique,
        meta, reservation, worker, None if finished_at is None else _finite(finished_at),
        None if error is None else ErrorInfo.from_dict(error),
        _whole(0 if rescued is None else rescued), alone in (1, "1"),
        None if reserved_at is None else _finite(reserved_at),
        None if lease_expires_at is None else _finite(lease_expires_at), result,
        cancel in (1, "1"), {}, (),
    )  # fmt: skip


_FLAGS = (None, 0, 1, "0", "1")

#: Each JobInfo field's slot setter, in the fields' order.
_SLOTS = tuple(getattr(JobInfo, field.name).__set__ for field in fields(JobInfo))


def _job_info(*values: Any) -> JobInfo:
    """JobInfo(*values), every field given in order, through its slots: the frozen class's
    own __init__ sets each field with object.__setattr__, 1.2 µs a job more, on every job
    every reserve hands out."""
    job = object.__new__(JobInfo)
    for put, value in zip(_SLOTS, values):  # noqa: B905 (every caller gives every field)
        put(job, value)
    return job


def _whole(value: Any) -> int:
    """An int, or the text of one; ValueError (or TypeError) for anything else."""
    if type(value) is int or type(value) is str:
        return int(value)
    raise TypeError(value)


def _finite(value: Any) -> float:
    """A finite number, or the text of one; ValueError (or TypeError) for anything else."""
    kind = type(value)
    number: float
    if kind is float:
        number = value
    elif kind is bool or kind is bytes:
        raise TypeError(value)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _maybe(value: Any) -> float | None:
    return None if value is None else _finite(value)


def _read_carefully(raw: Mapping[str, object], now: float) -> JobInfo:
    """read_job for a record the fast path doubted: every field read on its own."""
    reader = _Reader(raw)
    state = reader.state()
    available_at = reader.number("available_at")
    if state is JobState.PENDING and available_at > now:
        state = JobState.DELAYED
    return JobInfo(
        id=reader.text("id"),
        queue=reader.text("queue"),
        name=reader.text("name"),
        payload=reader.text("payload"),
        state=state,
        attempt=reader.whole("attempt"),
        max_attempts=reader.whole("max_attempts", 1),
        priority=reader.whole("priority"),
        created_at=reader.number("created_at"),
        available_at=available_at,
        timeout=reader.optional_number("timeout"),
        retry_delay=reader.optional_text("retry_delay"),
        unique=reader.optional_text("unique"),
        meta=reader.meta(),
        reservation=reader.optional_text("reservation"),
        worker=reader.optional_text("worker"),
        finished_at=reader.optional_number("finished_at"),
        error=reader.error(),
        rescued=reader.whole("rescued") if raw.get("rescued") is not None else 0,
        alone=reader.flag("alone"),
        reserved_at=reader.optional_number("reserved_at"),
        lease_expires_at=reader.optional_number("lease_expires_at"),
        result=reader.optional_text("result"),
        cancel_requested=reader.flag("cancel"),
        unreadable=reader.unreadable,
    )


class _Reader:
    """Reads the fields of one record, noting each that cannot be read."""

    def __init__(self, raw: Mapping[str, object]) -> None:
        self.raw = raw
        self.unreadable: dict[str, str] = {}

    def text(self, name: str) -> str:
        value = self.raw.get(name)
        if isinstance(value, str) and (value.isascii() or not not_utf8(value)):
            return value
        if value is None:
            return self._damaged(name, "missing", value, "")
        # Undecodable text is kept as it is (the id, above all, must stay exact to be settled).
        if isinstance(value, str):
            return self._damaged(name, "not UTF-8 text", value, value)
        if isinstance(value, bytes):
            return self._damaged(name, "a binary value, not text", value, decode_text(value))
        return self._damaged(name, "not text", value, repr(value))

    def optional_text(self, name: str) -> str | None:
        return None if self.raw.get(name) is None else self.text(name)

    def whole(self, name: str, placeholder: int = 0) -> int:
        value = self.raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and number.is_integer():
            return int(number)
        return self._damaged(name, "not a whole number", value, placeholder)

    def flag(self, name: str) -> bool:
        """A yes or no stored as 1 or 0 (missing: no)."""
        value = self.raw.get(name)
        if value is None or value in (0, 1, "0", "1"):
            return value in (1, "1")
        return self._damaged(name, "not 0 or 1", value, False)

    def number(self, name: str) -> float:
        value = self.raw.get(name)
        if type(value) is float and math.isfinite(value):
            return value
        number = _number(value)
        if number is not None:
            return number
        return self._damaged(name, "not a number", value, 0.0)

    def optional_number(self, name: str) -> float | None:
        return None if self.raw.get(name) is None else self.number(name)

    def state(self) -> JobState:
        value = self.raw.get("state")
        found = _STATES.get(value) if isinstance(value, str) else None
        if found is None:
            return self._damaged("state", "not a job state", value, JobState.PENDING)
        return found

    def meta(self) -> dict[str, Any]:
        value = self.raw.get("meta")
        if value is None or value == "{}" or value == "":
            return {}
        parsed = self._json("meta", value)
        if isinstance(parsed, dict):
            return parsed
        if parsed is not None:
            self._damaged("meta", "not a JSON object", value, None)
        return {}

    def error(self) -> ErrorInfo | None:
        value = self.raw.get("error")
        if value is None or value == "":
            return None
        parsed = self._json("error", value)
        if isinstance(parsed, dict):
            return ErrorInfo.from_dict(parsed)
        if parsed is not None:
            self._damaged("error", "not a JSON object", value, None)
        return None

    def _json(self, name: str, value: object) -> Any:
        """The parsed JSON of a text field, or None (noted) when it is not JSON text."""
        if isinstance(value, str) and (value.isascii() or not not_utf8(value)):
            try:
                return json.loads(value)
            except (ValueError, RecursionError):  # nested deeper than json can read
                pass
        return self._damaged(name, "not JSON", value, None)

    def _damaged(self, name: str, problem: str, value: object, placeholder: P) -> P:
        self.unreadable[name] = f"{problem}: {_shown(value)}"
        return placeholder


def _number(value: object) -> float | None:
    """A finite number from a number or its text, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str | bytes):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _shown(value: object) -> str:
    """The raw value for a problem description: bytes that are not UTF-8 as \\x escapes, cut
    to RAW_SHOWN characters."""
    if isinstance(value, str):
        text = value
        try:
            value = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that did not come from a byte
            value = text.encode("utf-8", "backslashreplace")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    shown = repr(value)
    return shown if len(shown) <= RAW_SHOWN else shown[: RAW_SHOWN - 3] + "..."
