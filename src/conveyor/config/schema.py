"""The one schema of configuration: every setting, its TOML key, its environment names, its
type and its default, read by `conveyor.config` and written out as docs/configuration.md.

A value from a file, the environment or the command line is first read into the type the code
takes (`Kind`: "30s" becomes 30.0; a TOML table stays a dict), then checked by the code's own
checks (`check`, which builds a spec with it exactly as `registry.queue(...)` or
`registry.worker(...)` would), so no rule is written twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from conveyor import duration
from conveyor.drivers import safe_url
from conveyor.errors import ConfigError
from conveyor.options import (
    DEFAULT_PRIORITY,
    DEFAULT_RETRY,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    Options,
)
from conveyor.retry import Exponential, Fixed
from conveyor.spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DRIVER,
    DEFAULT_LEASE,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_QUEUE,
    DEFAULT_RETENTION,
    DEFAULT_STOP_TIMEOUT,
    check_name,
    queue_spec,
    worker_spec,
)

Scope = Literal["conveyor", "queue", "worker", "driver"]
#: A setting of one thing: (scope, queue/worker/driver name or "" for conveyor-wide, key).
Target = tuple[Scope, str, str]

#: The file's tables of named sections, and the scope of each.
SECTIONS: dict[str, Scope] = {"queues": "queue", "workers": "worker", "drivers": "driver"}
#: What `QUEUE_DRIVER` may say, as RapidGo says it.
SEED_DRIVERS = ("database", "redis", "memory", "sync", "amqp")


@dataclass(frozen=True, slots=True)
class Kind:
    """How a value of one type is written: read from TOML, read from text (the environment, a
    text override), and shown. Readers raise ValueError("expected ...") for a wrong form only;
    whether the value fits is the code's check to say."""

    name: str
    from_toml: Callable[[Any], Any]
    from_text: Callable[[str], Any]
    show: Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class Seed:
    """An environment name from a seed (RapidGo), read with the seed's meaning."""

    env: str
    read: Callable[[str], Any]
    doc: str


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its scope, TOML key, type, conveyor's default and what it means."""

    scope: Scope
    name: str
    kind: Kind
    default: Any
    doc: str
    #: A queue key that falls back to the conveyor-wide key of the same name.
    inherits: bool = False
    seeds: tuple[Seed, ...] = ()
    #: A key with no default: its section means nothing without it.
    required: bool = False


@dataclass(frozen=True, slots=True)
class Given:
    """One value given for a setting, where it came from, and how an error about it reads."""

    value: Any
    source: str
    where: str = ""


def _same(value: Any) -> Any:
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _duration_toml(value: Any) -> Any:
    if isinstance(value, str):
        return duration.parse(value)
    if isinstance(value, dt.time):
        raise ValueError(f'expected {duration.FORMS} (00:05:00 is a time of day in TOML: "5m")')
    if not isinstance(value, int | float):  # an array, a table, a date
        raise ValueError(f"expected {duration.FORMS}")
    return value


def _show_seconds(value: Any) -> str:
    return duration.show(value) if isinstance(value, int | float) else str(value)


def _retention_text(text: str) -> float | None:
    if text.strip() == "forever":
        return None
    try:
        return duration.parse(text)
    except ValueError as exc:
        raise ValueError(f'{exc}, or "forever" to keep them all') from None


def _retention_toml(value: Any) -> Any:
    if isinstance(value, str):
        return _retention_text(value)
    try:
        return _duration_toml(value)
    except ValueError as exc:
        raise ValueError(f'{exc}, or "forever" to keep them all') from None


def _retry_delay_toml(value: Any) -> Any:
    if not isinstance(value, dict):
        try:
            return _duration_toml(value)
        except ValueError as exc:
            raise ValueError(f'{exc}, or a table such as {{ base = "1s", factor = 2 }}') from None
    unknown = set(value) - {"base", "factor", "max", "jitter"}
    if unknown:
        raise ValueError(f"expected a table of base, factor, max, jitter, not {sorted(unknown)}")
    factor = value.get("factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise ValueError(f"expected factor = a number (1 or more, such as 2), not {factor!r}")
    read = {
        key: _duration_toml(item) if key in ("base", "max") else item for key, item in value.items()
    }
    return Exponential(**read)


def _show_retry_delay(value: Any) -> str:
    if isinstance(value, Fixed):
        return duration.show(value.seconds)
    if isinstance(value, Exponential):
        jitter = ", jitter" if value.jitter else ""
        return (
            f"exponential from {duration.show(value.base)}, x{value.factor:g},"
            f" at most {duration.show(value.max)}{jitter}"
        )
    return _show_seconds(value)


def _names_text(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _meta_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        raise ValueError('expected a JSON object, such as {"team": "mail"}') from None


def _seed_driver(text: str) -> str:
    name = text.strip().lower()
    if name not in SEED_DRIVERS:
        raise ValueError(
            "expected database, redis, memory, sync or amqp (for a URL, use CONVEYOR_DRIVER)"
        )
    return name


def _attempts(text: str) -> int:
    attempts = _whole(text)
    if attempts < 1:
        raise ValueError("expected total attempts, a whole number >= 1")
    return attempts - 1


TEXT = Kind("name", _same, str, str)
#: In the environment, a URL's surrounding white space (a .env file's, a secret's newline) is
#: dropped: no URL holds it, and a SQLite file name would keep it without a word.
DRIVER = Kind("driver name or URL", _same, str.strip, safe_url)
NAMES = Kind("list of names", _same, _names_text, lambda value: ", ".join(value))
WHOLE = Kind("whole number", _same, _whole, str)
DURATION = Kind("duration", _duration_toml, duration.parse, _show_seconds)
RETENTION = Kind(
    'duration or "forever"',
    _retention_toml,
    _retention_text,
    lambda value: "forever" if value is None else _show_seconds(value),
)
RETRY_DELAY = Kind(
    "duration or backoff table", _retry_delay_toml, duration.parse, _show_retry_delay
)
PREFETCH = Kind("whole number", _same, _whole, lambda v: "its concurrency" if v is None else str(v))
META = Kind("table", _same, _meta_text, lambda value: json.dumps(value, sort_keys=True))

_RETRY_SEED = Seed("QUEUE_MAX_ATTEMPTS", _attempts, "total attempts: retry is this minus 1")
KEYS: tuple[Key, ...] = (
    Key("conveyor", "driver", DRIVER, DEFAULT_DRIVER,
        "driver of every queue that names none: a [drivers] name, a URL, database, or a kind"
        " (sqlite is the file ./conveyor.db)",
        seeds=(Seed("QUEUE_DRIVER", _seed_driver, "database, redis, memory, sync or amqp"),)),
    Key("conveyor", "default_queue", TEXT, DEFAULT_QUEUE,
        "the queue a job handle pushes to when neither it nor the push names one",
        seeds=(Seed("QUEUE_DEFAULT", str, "the same"),)),
    Key("conveyor", "retry", WHOLE, DEFAULT_RETRY,
        "retries after the first attempt, for every queue that does not say",
        seeds=(_RETRY_SEED,)),
    Key("conveyor", "retry_delay", RETRY_DELAY, DEFAULT_RETRY_DELAY,
        "wait before each retry, for every queue that does not say",
        seeds=(Seed("QUEUE_RETRY_DELAY", duration.parse, "seconds"),)),
    Key("conveyor", "timeout", DURATION, DEFAULT_TIMEOUT,
        "how long one attempt may run, for every queue that does not say",
        seeds=(Seed("QUEUE_TIMEOUT", duration.parse, "seconds"),)),
    Key("queue", "driver", DRIVER, DEFAULT_DRIVER,
        "where the queue's jobs are stored", inherits=True),
    Key("queue", "workers", NAMES, (), "the workers that run the queue's jobs"),
    Key("queue", "retry", WHOLE, DEFAULT_RETRY, "retries after the first attempt", inherits=True),
    Key("queue", "retry_delay", RETRY_DELAY, DEFAULT_RETRY_DELAY, "wait before each retry",
        inherits=True),
    Key("queue", "timeout", DURATION, DEFAULT_TIMEOUT, "how long one attempt may run",
        inherits=True),
    Key("queue", "priority", WHOLE, DEFAULT_PRIORITY, "higher runs first among due jobs"),
    Key("queue", "retention", RETENTION, DEFAULT_RETENTION, "how long finished jobs are kept"),
    Key("queue", "meta", META, {}, "labels stored on every job (JSON values)"),
    Key("worker", "concurrency", WHOLE, DEFAULT_CONCURRENCY, "jobs run at once"),
    Key("worker", "poll_interval", DURATION, DEFAULT_POLL_INTERVAL,
        "how often to look for jobs when the backend cannot notify"),
    Key("worker", "lease", DURATION, DEFAULT_LEASE,
        "how long a reserved job is held; renewed every lease/2 while it runs"),
    Key("worker", "stop_timeout", DURATION, DEFAULT_STOP_TIMEOUT,
        "how long a stop waits for running jobs before releasing them"),
    Key("worker", "prefetch", PREFETCH, None,
        "jobs held reserved beyond concurrency while jobs are short (0: none)"),
    Key("driver", "url", DRIVER, None,
        "the driver's URL; any other key of the section is added to it as a URL option",
        required=True),
)  # fmt: skip

#: Keys by scope, then by TOML key.
BY_SCOPE: dict[Scope, dict[str, Key]] = {}
for _key in KEYS:
    BY_SCOPE.setdefault(_key.scope, {})[_key.name] = _key


def env_part(name: str) -> str:
    """A name as it appears inside an environment variable's: upper case, `_` for `.:-`."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def env_name(key: Key, name: str = "", *, shown: bool = False) -> str:
    """conveyor's environment variable for `key` (of the queue, worker or driver `name`;
    `shown` writes `name` as it is, for a placeholder such as <NAME>)."""
    if key.scope == "conveyor":
        return f"CONVEYOR_{key.name.upper()}"
    part = name if shown else env_part(name)
    return f"CONVEYOR_{key.scope.upper()}_{part}_{key.name.upper()}"


#: The environment variables that name a queue, worker or driver, by their start.
NAMED_ENV_PREFIXES = tuple(f"CONVEYOR_{scope.upper()}_" for scope in ("queue", "worker", "driver"))


def check(key: Key, name: str, value: Any) -> None:
    """Check `value` for `key` with the code's own checks: those of `registry.queue(...)`,
    `registry.worker(...)` and push options. Raises the code's ConveyorError."""
    if key.scope == "queue":
        queue_spec(name, **{"driver": DEFAULT_DRIVER, key.name: value})
    elif key.scope == "worker":
        worker_spec(name, **{key.name: value})
    elif key.name == "default_queue":
        check_name("queue", value)
    elif key.name in ("driver", "url"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key.name} must be a driver name or URL, not {value!r}")
    else:
        Options.given(**{key.name: value})


def reference() -> str:
    """Every setting as Markdown tables: the generated part of docs/configuration.md."""
    out: list[str] = []
    titles: Mapping[Scope, str] = {
        "conveyor": "Conveyor-wide (top level of the file)",
        "queue": "Queues: `[queues.<name>]`",
        "worker": "Workers: `[workers.<name>]`",
        "driver": "Drivers: `[drivers.<name>]`",
    }
    for scope, title in titles.items():
        out += [f"### {title}", "", "| TOML key | environment | type | default | meaning |"]
        out.append("|---|---|---|---|---|")
        for key in BY_SCOPE[scope].values():
            names = [f"`{env_name(key, '<NAME>', shown=True)}`"] + [
                f"`{seed.env}` ({seed.doc})" for seed in key.seeds
            ]
            shown = "(required)" if key.required else key.kind.show(key.default)
            shown = f"the conveyor-wide {key.name}" if key.inherits else shown or "(none)"
            out.append(
                f"| `{key.name}` | {', '.join(names)} | {key.kind.name} | {shown} | {key.doc} |"
            )
        out.append("")
    return "\n".join(out)


def quoted(key: Key, value: Any) -> str:
    """`value` as an error quotes it: a driver URL with its password masked."""
    masked = key.kind is DRIVER and isinstance(value, str)
    return repr(safe_url(value) if masked else value)
