"""Push options and their precedence: a value given to push wins over the job's default,
which wins over the queue's default, which wins over conveyor's own default."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

from conveyor.duration import Duration, seconds
from conveyor.errors import ConfigError
from conveyor.payload import non_finite_at, not_utf8
from conveyor.retry import Exponential, RetryDelay, as_policy

#: conveyor's own defaults, used when neither push, job nor queue says otherwise.
DEFAULT_RETRY = 3
DEFAULT_RETRY_DELAY: RetryDelay = Exponential(base=1.0, factor=2.0, max=3600.0)
DEFAULT_TIMEOUT = 300.0
DEFAULT_PRIORITY = 0
#: The range every driver stores: a 32-bit integer column in PostgreSQL and MySQL.
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
#: The most retries: attempts (retry + 1) are a 32-bit integer column too.
MAX_RETRY = MAX_PRIORITY - 1
#: The longest unique key, in characters: short enough for every driver's unique index.
MAX_UNIQUE_KEY = 256


@dataclass(frozen=True, slots=True)
class Options:
    """Options as given at one level; None means "not said here, ask the next level"."""

    retry: int | None = None
    retry_delay: RetryDelay | None = None
    timeout: float | None = None
    priority: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def given(
        cls,
        *,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Options:
        """Check user-given values and build the options of one level."""
        if (
            retry is None
            and retry_delay is None
            and timeout is None
            and priority is None
            and meta is None
        ):
            return NO_OPTIONS  # what most pushes give: nothing to check
        if retry is not None and (
            isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= MAX_RETRY
        ):
            raise ConfigError(
                f"retry must be a whole number from 0 to {MAX_RETRY} (retries after the first),"
                f" not {retry!r}"
            )
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ConfigError(
                f"priority must be a whole number (higher runs first), not {priority!r}"
            )
        if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigError(
                f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {priority!r}"
            )
        if meta is not None and not isinstance(meta, dict):
            raise ConfigError(f"meta must be a dict of JSON values, not {type(meta).__name__}")
        return cls(
            retry=retry,
            retry_delay=None if retry_delay is None else as_policy(retry_delay),
            timeout=None if timeout is None else seconds(timeout, "timeout"),
            priority=priority,
            meta=_as_json(meta),
        )


#: Options that say nothing at their level: what `Options.given()` returns for no arguments.
NO_OPTIONS = Options()


class _SharedOptions(TypedDict, total=False):
    """The keyword options `push` and `push_many` share."""

    delay: Duration | None
    retry: int | None
    retry_delay: float | RetryDelay | None
    timeout: float | None
    meta: dict[str, Any] | None
    priority: int | None
    connection: object | None


class PushManyOptions(_SharedOptions, total=False):
    """The keyword options of `push_many`, as a typed job handle passes them on."""

    chunk: int


class PushOptions(_SharedOptions, total=False):
    """The keyword options of `push`: those of `push_many` but `chunk`, and `unique` and
    `job_id`."""

    unique: str | None
    job_id: str | None


@dataclass(frozen=True, slots=True)
class Resolved:
    """Every option decided, ready to store on a job."""

    retry: int
    retry_delay: RetryDelay
    timeout: float
    priority: int
    meta: dict[str, Any]

    @property
    def max_attempts(self) -> int:
        """`retry=n` means n retries after the first attempt."""
        return self.retry + 1


def resolve(push: Options, job: Options, queue: Options) -> Resolved:
    """Merge the three levels: push > job > queue > conveyor's default; meta is merged by key."""
    levels = (push, job, queue)
    return Resolved(
        retry=_first([level.retry for level in levels], DEFAULT_RETRY),
        retry_delay=_first([level.retry_delay for level in levels], DEFAULT_RETRY_DELAY),
        timeout=_first([level.timeout for level in levels], DEFAULT_TIMEOUT),
        priority=_first([level.priority for level in levels], DEFAULT_PRIORITY),
        meta={**queue.meta, **job.meta, **push.meta},
    )


def check_unique(unique: str | None) -> None:
    """Refuse a unique key that some driver could not store exactly, so that every driver
    treats the same keys alike: NUL (SQLite compares text only up to it, and PostgreSQL text
    cannot hold it) and lone surrogates (not text that UTF-8 can encode)."""
    if unique is None:
        return
    if not isinstance(unique, str):
        raise ConfigError(
            f"unique must be a string, not {type(unique).__name__} {unique!r}: give str(key)"
        )
    if not unique:
        raise ConfigError("unique must be a non-empty string: give unique=None for no key")
    if len(unique) > MAX_UNIQUE_KEY:
        raise ConfigError(
            f"unique must be a string of at most {MAX_UNIQUE_KEY} characters, not one of"
            f" {len(unique)}: give a longer key as its digest"
            " (hashlib.sha256(key.encode()).hexdigest())"
        )
    if "\0" in unique:
        raise ConfigError(
            f"unique key {unique!r} holds a NUL character (\\x00), which SQLite and PostgreSQL"
            " cannot store: remove it, or use the hex or base64 form of a binary key"
        )
    if not_utf8(unique):
        raise ConfigError(
            f"unique key {unique!r} holds a lone surrogate, which is not text UTF-8 can"
            f" encode: {_SURROGATE_FIX}"
        )


#: What to do about a lone surrogate, said by every error about one.
_SURROGATE_FIX = (
    "decode the bytes it came from as UTF-8 (errors='replace' if they may be invalid),"
    " or use their hex or base64 form"
)


def _as_json(meta: dict[str, Any] | None) -> dict[str, Any]:
    """`meta` as every driver gives it back, JSON read back from its text (keys strings, tuples
    lists) and none of the caller's objects in it, so a later change to them changes no job;
    ConfigError for meta some driver could not store: every driver keeps it as UTF-8 JSON
    text. NUL is fine here: JSON writes it as an escape, which every driver stores as it is."""
    if not meta:
        return {}
    try:
        text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise ConfigError(
            "meta nests too deeply to be written as JSON (about 1,000 levels of lists or"
            " dicts; 10,000 from Python 3.13 on): flatten it"
        ) from None
    except (TypeError, ValueError) as exc:
        found = non_finite_at(meta)  # json says only "Out of range float values": name the key
        reason = f"{found[0]} is {found[1]}, which JSON cannot carry" if found else exc
        raise ConfigError(f"meta must be a dict of JSON values ({reason})") from exc
    if not_utf8(text):
        raise ConfigError(
            f"{_surrogate_in(meta, 'meta')} holds a lone surrogate, which is not text"
            f" UTF-8 can encode: {_SURROGATE_FIX}"
        )
    found = _key_not_text(meta)
    if found is not None:
        where, key = found
        raise ConfigError(
            f"{where} key {key!r} is not a string: JSON keys are text, so it would come back"
            f" as {json.dumps(key)!r} (one key with any key of that text): write it as a string"
        )
    stored: dict[str, Any] = json.loads(text)
    return stored


def _key_not_text(meta: dict[Any, Any]) -> tuple[str, Any] | None:
    """Where in `meta` (JSON already) the first dict key that is not a str is, and that key:
    json writes 1, None and True as "1", "null" and "true". Walked without recursion."""
    stack: list[tuple[str, Any]] = [("meta", meta)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            key = next((key for key in value if not isinstance(key, str)), "")
            if not isinstance(key, str):
                return path, key
            stack.extend((f"{path}[{key!r}]", item) for key, item in reversed(value.items()))
        elif isinstance(value, list | tuple):
            stack.extend(
                (f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value)))
            )
    return None


def _surrogate_in(value: Any, path: str) -> str:
    """Where in a JSON value the first lone surrogate is: `meta key 'a'`, `meta['a'][0]`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not_utf8(str(key)):
                return f"{path} key {key!r}"
            if not_utf8(json.dumps(item, ensure_ascii=False)):
                return _surrogate_in(item, f"{path}[{key!r}]")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not_utf8(json.dumps(item, ensure_ascii=False)):
                return _surrogate_in(item, f"{path}[{index}]")
    return path


def _first(values: list[Any], default: Any) -> Any:
    return next((value for value in values if value is not None), default)
