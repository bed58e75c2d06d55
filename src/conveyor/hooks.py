"""Lifecycle hooks: one interface around a job's life and a worker's, and middleware around
the handler call. Metrics (`conveyor.metrics`) and tracing (`conveyor.tracing`) are hooks.

    @registry.hook("failed", "retried")
    def alert(event: Event) -> None:
        print(event.kind, event.job_id, event.error)

    @registry.middleware
    async def timed(job: Job[Any], call_next: CallNext) -> Any:
        started = time.monotonic()
        try:
            return await call_next(job)
        finally:
            print(job.name, time.monotonic() - started)

Events: pushed (once per stored job, in the pushing process), started (a worker begins an
attempt), succeeded, retried, failed, cancelled (once the outcome is written), lease lost
(another worker holds the job now: a renewal found it so while the job ran, or its outcome was
refused), worker started, worker stopped.

A hook is a plain function or an `async def` taking one `Event`; it may be registered at any
time, before or after the registry is frozen (observing changes no behaviour, so a metrics
exporter can be attached by the command that starts a worker). A hook that raises is logged
on the "conveyor.hooks" logger and never breaks a job, a push or a worker. Middleware wraps
every handler call from its registration on; its exceptions are the
job's (they fail or retry the attempt), as if the handler had raised them. With no hook and no
middleware registered, the hot path pays one attribute test per call point.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from conveyor.errors import ConfigError
from conveyor.job import ErrorInfo, Job, JobInfo, NewJob

log = logging.getLogger("conveyor.hooks")

EventKind = Literal[
    "pushed",
    "started",
    "succeeded",
    "retried",
    "failed",
    "cancelled",
    "lease_lost",
    "worker_started",
    "worker_stopped",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
#: Seconds the hooks of worker_started and worker_stopped may take before they are cut short.
WORKER_HOOKS_WITHIN = 10.0

Hook = Callable[["Event"], "Awaitable[None] | None"]
CallNext = Callable[[Job[Any]], Awaitable[Any]]
Middleware = Callable[[Job[Any], CallNext], Awaitable[Any]]
#: Called as each job is made for a push: (queue, job name, its meta) -> entries to add to it.
Stamp = Callable[[str, str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Event:
    """What happened. Job events carry the job's id, queue and name; worker events the
    worker's identity and queues. Times are `time.time()` seconds."""

    kind: EventKind
    job_id: str = ""
    queue: str = ""
    name: str = ""
    #: The attempt this event is about (1 for the first run; 0 for pushed).
    attempt: int = 0
    #: The job's metadata (pushed, started): where tracing carries its context.
    meta: dict[str, Any] = field(default_factory=dict)
    #: For retried, failed, cancelled: the error recorded with the job.
    error: ErrorInfo | None = None
    #: For started: seconds from the job being due (created or its delay over) to its start.
    wait: float | None = None
    #: For succeeded, retried, failed, cancelled: seconds the attempt ran.
    duration: float | None = None
    #: The worker's identity (worker events, and job events raised by a worker).
    worker: str = ""
    queues: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)


class Hooks:
    """The hooks and middleware of one registry (`registry.hooks`). `active` is the one test
    the hot path makes: False while nothing is registered."""

    def __init__(self) -> None:
        self._hooks: dict[EventKind, list[Hook]] = {kind: [] for kind in EVENT_KINDS}
        self.middleware: tuple[Middleware, ...] = ()
        self.stamps: tuple[Stamp, ...] = ()
        #: What an integration installed on this registry, by name (metrics keeps its own here).
        self.installed: dict[str, Any] = {}
        self.active = False

    def add(self, hook: Hook, kinds: Iterable[object] = ()) -> None:
        """Call `hook` for the events `kinds` (every event when none is named)."""
        wanted = tuple(kinds) or EVENT_KINDS
        for kind in wanted:
            if not isinstance(kind, str) or kind not in self._hooks:
                raise ConfigError(
                    f"no lifecycle event is called {kind!r}: use one of {', '.join(EVENT_KINDS)}"
                )
        for kind in dict.fromkeys(wanted):  # an event named twice: still called once
            self._hooks[kind].append(hook)  # type: ignore[index]
        self.active = True

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every handler call in `middleware(job, call_next)`; the first added is the
        outermost."""
        self.middleware = (*self.middleware, middleware)

    def add_stamp(self, stamp: Stamp) -> None:
        """Call `stamp` as each job is made for a push, adding what it returns to the job's
        metadata (tracing puts the trace context there)."""
        self.stamps = (*self.stamps, stamp)

    def stamp(self, queue: str, name: str, meta: dict[str, Any]) -> dict[str, Any]:
        """`meta` with every stamp's entries added; a stamp that raises is logged, skipped."""
        stamped = dict(meta)
        for stamp in self.stamps:
            try:
                stamped.update(stamp(queue, name, stamped))
            except Exception:
                log.exception("metadata stamp %r raised on a push of %s", stamp, name)
        return stamped

    def remove(self, hook: Hook) -> None:
        """Stop calling `hook` for any event."""
        for hooks in self._hooks.values():
            while hook in hooks:
                hooks.remove(hook)
        self.active = any(self._hooks.values())

    async def emit(self, event: Event) -> None:
        """Call the hooks for `event`; one that raises is logged, never raised."""
        for hook in tuple(self._hooks[event.kind]):
            try:
                returned = hook(event)
                if inspect.isawaitable(returned):
                    await returned
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the task running it was cancelled (a stop): not the hook's failure
                _failed(hook, event)  # its own: a future someone else cancelled
            except BaseException:  # SystemExit, KeyboardInterrupt too: the hook's fault alone
                _failed(hook, event)

    async def call(self, job: Job[Any], handler: CallNext) -> Any:
        """Run `handler(job)` inside the middleware, outermost first."""
        call = handler
        for middleware in reversed(self.middleware):
            call = _wrapped(middleware, call)
        return await call(job)


def _failed(hook: Hook, event: Event) -> None:
    """Log the exception `hook` raised on `event`: the hook's fault alone."""
    about = f"job {event.job_id} ({event.name})" if event.job_id else f"worker {event.worker}"
    log.exception(
        "lifecycle hook %s raised on %s of %s (ignored: the job and the worker go on)",
        getattr(hook, "__qualname__", repr(hook)), event.kind, about,
    )  # fmt: skip


def _wrapped(middleware: Middleware, call_next: CallNext) -> CallNext:
    async def call(job: Job[Any]) -> Any:
        return await middleware(job, call_next)

    return call


def pushed(job: NewJob) -> Event:
    """The event of `job` stored by a push."""
    return Event("pushed", job.id, job.queue, job.name, 0, job.meta)


def started(job: JobInfo, worker: str) -> Event:
    """The event of a worker starting an attempt at `job`."""
    wait = None
    if job.reserved_at is not None:
        wait = max(0.0, job.reserved_at - job.available_at)
    return Event(
        "started", job.id, job.queue, job.name, _attempt(job), job.meta, wait=wait, worker=worker
    )


def settled(
    kind: EventKind, job: JobInfo, error: ErrorInfo | None, duration: float | None, worker: str
) -> Event:
    """The event of an attempt's outcome written (or refused: lease_lost)."""
    return Event(
        kind, job.id, job.queue, job.name, _attempt(job), job.meta, error,
        duration=duration, worker=worker,
    )  # fmt: skip


def _attempt(job: JobInfo) -> int:
    """The attempt an event is about: a job failed as the likely cause of its worker's deaths
    was counted an attempt by the reserve that found it, which never ran (as the log says)."""
    return min(job.attempt, job.max_attempts)


def of_worker(kind: EventKind, worker: str, queues: Iterable[str]) -> Event:
    """A worker_started or worker_stopped event."""
    return Event(kind, worker=worker, queues=tuple(queues))


async def tell(hooks: Hooks, kind: EventKind, worker: str, queues: Iterable[str]) -> None:
    """Tell the hooks, if any, that a worker started or stopped, for up to WORKER_HOOKS_WITHIN
    seconds: a hook that hangs there would keep the worker from ever starting or exiting."""
    if hooks.active:
        try:
            async with asyncio.timeout(WORKER_HOOKS_WITHIN):
                await hooks.emit(of_worker(kind, worker, queues))
        except TimeoutError:
            log.error(
                "a %s hook of worker %s ran past %gs: cut short (hooks must be quick)",
                kind, worker, WORKER_HOOKS_WITHIN,
            )  # fmt: skip
