"""What a registry holds about each queue, worker and job, and the one set of checks a value
goes through however it was given: in the code's registration, in a configuration file, in
the environment or on the command line (`conveyor.config` builds its specs with these same
functions, one key at a time, so that an error names where the value came from).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.drivers import safe_url
from conveyor.duration import Duration, seconds
from conveyor.errors import ConfigError, RegistryError
from conveyor.options import MAX_PRIORITY, Options
from conveyor.retry import RetryDelay

if TYPE_CHECKING:
    from conveyor.codec import Codec

#: Not "." or ".." alone: a path segment a browser resolves away (the dashboard could not
#: open the page of such a queue, worker or job).
NAME_PATTERN = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.:-]{1,128}")

#: conveyor's own defaults for what the code, the file and the environment leave unsaid.
DEFAULT_DRIVER = "sqlite"
DEFAULT_QUEUE = "default"
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_CONCURRENCY = 1
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_LEASE = 30.0
DEFAULT_STOP_TIMEOUT = 30.0
#: The most a worker's concurrency and prefetch may be: a reserve asks its backend for their sum
#: of jobs, a number every backend's integers hold (a larger one failed every reserve).
MAX_CONCURRENCY = MAX_PRIORITY


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A registered queue: where its jobs are stored, who works it, and its defaults."""

    name: str
    driver: str
    workers: tuple[str, ...]
    options: Options
    retention: float | None

    def __repr__(self) -> str:
        # `driver` may be a URL with a password in it: shown masked, as in every message.
        return (
            f"QueueSpec(name={self.name!r}, driver={safe_url(self.driver)!r},"
            f" workers={self.workers!r}, options={self.options!r}, retention={self.retention!r})"
        )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """A registered worker: how many jobs it runs at once and how it holds them.

    `prefetch`: how many jobs beyond `concurrency` it may hold reserved, waiting for a slot,
    while its jobs are short (None: as many as `concurrency`; see conveyor.worker)."""

    name: str
    concurrency: int
    poll_interval: float
    lease: float
    stop_timeout: float
    prefetch: int | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job: its handler, payload codec, defaults, and the queue its handle
    pushes to unless told otherwise (None: the registry's default queue)."""

    name: str
    handler: Callable[..., Any]
    codec: Codec
    options: Options
    is_async: bool
    queue: str | None = None
    #: Store the handler's return value (as JSON) with the job, for `registry.result()`.
    keep_result: bool = False
    #: A page of a cursor-chained job: its handler returns the next page's cursor.
    chain: bool = False


@dataclass(frozen=True, slots=True)
class Setting:
    """One value in force and where it came from (`source`): "default", "code", "implicit",
    a file and line ("conveyor.toml:12"), "env NAME" or "flag --name". `scope` is "conveyor"
    (then `name` is ""), "queue", "worker" or "driver"; `value` is shown as text, with any
    password masked."""

    scope: str
    name: str
    key: str
    value: str
    source: str


def check_name(kind: str, name: str) -> None:
    """Refuse names outside [A-Za-z0-9_.:-]{1,128}, and "." and "..", naming the item."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"{kind} name {name!r} is not valid: use 1 to 128 of the characters"
            " A-Z a-z 0-9 _ . : -, not . or .. alone"
        )


def queue_spec(
    name: str,
    *,
    driver: str,
    workers: Sequence[str] = (),
    retry: int | None = None,
    retry_delay: float | RetryDelay | None = None,
    timeout: float | None = None,
    priority: int | None = None,
    retention: Duration | None = DEFAULT_RETENTION,
    meta: dict[str, Any] | None = None,
) -> QueueSpec:
    """A checked QueueSpec; `retention=None` keeps finished jobs forever."""
    if isinstance(workers, str):
        raise RegistryError(f"queue {name!r}: workers must be a list, as workers=[{workers!r}]")
    if not isinstance(workers, Sequence):
        raise RegistryError(f"queue {name!r}: workers must be a list of worker names")
    for worker in workers:
        check_name("worker", worker)
    if not isinstance(driver, str):
        raise RegistryError(f"queue {name!r}: driver must be a name or a URL, not {driver!r}")
    if isinstance(retention, str):  # "forever", "7d": the configuration file's words
        raise ConfigError(
            f"queue {name!r} retention must be seconds or a timedelta (None keeps finished jobs"
            f" forever), not {retention!r}"
        )
    return QueueSpec(
        name=name,
        driver=driver,
        workers=tuple(workers),
        options=Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        ),
        retention=None if retention is None else seconds(retention, f"queue {name!r} retention"),
    )


def worker_spec(
    name: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    poll_interval: Duration = DEFAULT_POLL_INTERVAL,
    lease: Duration = DEFAULT_LEASE,
    stop_timeout: Duration = DEFAULT_STOP_TIMEOUT,
    prefetch: int | None = None,
) -> WorkerSpec:
    """A checked WorkerSpec."""
    if not _whole(concurrency, 1):
        raise RegistryError(
            f"worker {name!r}: concurrency must be a whole number >= 1 (at most {MAX_CONCURRENCY})"
        )
    if prefetch is not None and not _whole(prefetch, 0):
        raise RegistryError(
            f"worker {name!r}: prefetch must be a whole number >= 0 (0 turns it off; at most"
            f" {MAX_CONCURRENCY})"
        )
    return WorkerSpec(
        name=name,
        concurrency=concurrency,
        poll_interval=seconds(poll_interval, f"worker {name!r} poll_interval"),
        lease=seconds(lease, f"worker {name!r} lease"),
        stop_timeout=seconds(stop_timeout, f"worker {name!r} stop_timeout", zero_ok=True),
        prefetch=prefetch,
    )


def _whole(value: object, least: int) -> bool:
    """True for an int (not a bool) from `least` to MAX_CONCURRENCY."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and least <= value <= MAX_CONCURRENCY
    )


def run_times(
    queues: Mapping[str, QueueSpec], jobs: Iterable[JobSpec]
) -> list[tuple[str, str, float | None]]:
    """The timeouts `freeze()` checks against their driver's longest run of a job (amqp: the
    broker's consumer_timeout), as (the start of the error, driver, timeout): each queue's,
    and the own timeout of each job whose `queue=` names one, where its handle pushes (a job
    without `queue=` may go to any queue: its push checks it)."""
    found = [
        (f"queue {q.name!r} lets a job run", q.driver, q.options.timeout) for q in queues.values()
    ]
    for job in jobs:
        queue = queues.get(job.queue) if job.queue is not None else None
        if queue is not None and job.options.timeout is not None:
            what = f"job {job.name!r} on queue {queue.name!r} would run"
            found.append((what, queue.driver, job.options.timeout))
    return found


def over_run_limit(timeout: float | None, limit: float | None) -> str:
    """'' when a driver that lets a job run `limit` seconds at most (None: no limit; amqp:
    the broker's consumer_timeout) lets one run `timeout`; else the end of a sentence saying
    why not and what to do."""
    if limit is None or timeout is None or timeout <= limit:
        return ""
    return (f"{timeout:g} s (timeout=), longer than its driver lets a job stay unacknowledged"
            f" ({limit:g} s, the broker's consumer_timeout): lower the timeout, or raise"
            " consumer_timeout on the broker and tell the driver with ?consumer_timeout= in"
            " its URL")  # fmt: skip
