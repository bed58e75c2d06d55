"""One attempt at one reserved job: decode its payload, run its handler under its timeout, and
decide what becomes of it (ack, release for a retry, or fail). Never raises for the job's own
faults; the worker settles the outcome.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor import retry
from conveyor.chain import with_successor
from conveyor.deadlines import Deadlines
from conveyor.drivers.base import Driver, Reservation
from conveyor.drivers.location import hide_passwords
from conveyor.errors import (
    CorruptJobError,
    DriverError,
    JobCancelledError,
    JobTimeoutError,
    LeaseExpiredError,
    PayloadError,
    UnknownJobError,
)
from conveyor.job import ErrorInfo, Job, JobInfo, NewJob
from conveyor.payload import non_finite_at
from conveyor.threads import Call, HandlerThreads

if TYPE_CHECKING:
    from conveyor.core import RegistryCore
    from conveyor.spec import JobSpec, WorkerSpec

log = logging.getLogger("conveyor.worker")


@dataclass(slots=True)
class Outcome:
    """What becomes of a job after an attempt, waiting to be written to its driver. Not
    frozen only so that `Runner.attempt` can note its duration without a copy per job."""

    kind: Literal["ack", "release", "fail"]
    job: JobInfo
    driver: Driver
    error: ErrorInfo | None = None
    #: For a release: seconds until the job is due again, by the backend's clock.
    delay: float = 0.0
    count_attempt: bool = True
    #: For an ack: the handler's return value as JSON text, when its job keeps results.
    result: str | None = None
    #: For a fail: the job was cancelled, not failed (not retried, state cancelled).
    cancelled: bool = False
    #: For an ack of a chain's page: the next page, pushed before the ack.
    successor: NewJob | None = None
    #: Seconds the attempt took, by this process's clock (0 when it never ran).
    duration: float = 0.0


class Runner:
    """Runs attempts for one worker: async handlers on the loop, plain ones on its threads."""

    def __init__(self, registry: RegistryCore, spec: WorkerSpec) -> None:
        self.registry = registry
        self.spec = spec
        self._threads: HandlerThreads | None = None
        self._calls: dict[str, Call] = {}  # job id -> its plain handler's call
        self._handed: dict[str, Job[Any]] = {}  # job id -> what its handler was handed
        self._deadlines = Deadlines()

    def cancel(self, job_id: str) -> None:
        """Tell a running job's handler it is cancelled (`job.cancelled`): a plain handler
        cannot be stopped, but may look; the worker cancels an async one's task itself."""
        handed = self._handed.get(job_id)
        if handed is not None:
            handed._cancel.append(True)

    def in_thread(self, job_id: str) -> bool:
        """True while a thread runs the job's plain handler: nothing can stop it until it
        returns, so the job must stay reserved to us until then."""
        call = self._calls.get(job_id)
        return call is not None and call.running

    async def attempt(self, job: JobInfo, driver: Driver) -> Outcome:
        """Run one reserved job and decide what becomes of it; never raises for the job's faults.
        The outcome says how long the attempt took."""
        started = time.monotonic()
        outcome = await self._attempt(job, driver)
        outcome.duration = time.monotonic() - started
        return outcome

    async def _attempt(self, job: JobInfo, driver: Driver) -> Outcome:
        if job.cancel_requested:  # cancelled while reserved, then given back or rescued
            return cancelled(job, driver, "before it could run")
        refused = _refusal(job)
        if refused is not None:
            return Outcome("fail", job, driver, error_info(refused))
        spec = self.registry.jobs.get(job.name)
        if spec is None:
            return retry_or_fail(job, driver, error_info(_unknown(job)))
        try:
            payload = spec.codec.decode(job.payload)
        except PayloadError as exc:
            return Outcome("fail", job, driver, error_info(exc))
        handed = Job(
            job.id, job.queue, job.name, payload, job.attempt, job.max_attempts, job.meta,
            job.created_at, job.rescued,
        )  # fmt: skip
        self._handed[job.id] = handed
        try:
            if self.registry.hooks.middleware:
                returned = await self.registry.hooks.call(
                    handed, lambda given: self._call(spec, given, job.timeout)
                )
            else:
                returned = await self._call(spec, handed, job.timeout)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside (a stop, a lost lease): not the job's fault
            # The handler's own CancelledError (a future someone else cancelled): counted as
            # a failed attempt, or the attempt given back would run the job again forever.
            return retry_or_fail(job, driver, error_info(exc))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the job's fault alone
            if handed.cancelled:
                return cancelled(job, driver, "while it ran")
            return retry_or_fail(job, driver, error_info(exc), exc)
        finally:
            self._handed.pop(job.id, None)
        if handed.cancelled:
            return cancelled(job, driver, "while it ran")
        if not spec.keep_result and not spec.chain:
            return Outcome("ack", job, driver)
        said = "cursor" if spec.chain else "result"
        import pydantic_core  # imported by the job's codec already; not by `import conveyor`

        try:
            raw = pydantic_core.to_json(returned)
        except (pydantic_core.PydanticSerializationError, ValueError) as exc:
            error = PayloadError(f"the {said} job {job.name!r} returned is not JSON: {exc}")
            return retry_or_fail(job, driver, error_info(error))
        if (refused := _non_finite(raw, f"the {said} job {job.name!r} returned")) is not None:
            return retry_or_fail(job, driver, error_info(refused))
        if len(raw) > spec.codec.max_bytes:  # as a payload: a backend may refuse it (MySQL)
            error = PayloadError(
                f"the {said} job {job.name!r} returned is {len(raw)} bytes, over the limit of"
                f" {spec.codec.max_bytes} (max_payload_bytes): store it elsewhere and return a"
                " reference to it"
            )
            return retry_or_fail(job, driver, error_info(error))
        result = raw.decode()
        successor = with_successor(job, json.loads(result)) if spec.chain else None
        if successor is not None and await _cancel_asked(job, driver):
            return cancelled(job, driver, "while it ran")
        # A page keeps the cursor it returned: chain_info tells a chain that ended (None) from
        # one whose next page was purged or pruned.
        kept = result if spec.keep_result or spec.chain else None
        return Outcome("ack", job, driver, result=kept, successor=successor)

    async def _call(self, spec: JobSpec, handed: Job[Any], timeout: float | None) -> Any:
        """Run the handler under its timeout: a coroutine is cancelled when it expires; a plain
        function runs on a thread, which Python cannot stop: its job waits for it to return."""
        try:
            with self._deadlines.within(timeout) as scope:
                if spec.is_async:
                    result = await spec.handler(handed)
                else:
                    result = await self._in_thread(spec.handler, handed)
                    if inspect.isawaitable(result):
                        result = await result  # an async handler behind a plain decorator
                if scope.passed():  # it caught our cancel, or blocked the loop: too late
                    raise TimeoutError
                return result
        except TimeoutError as exc:
            if not scope.passed():
                raise  # the handler's own TimeoutError, not ours
            error = JobTimeoutError(
                f"job {handed.name!r} ran longer than its timeout of {timeout}s"
            )
            if self.in_thread(handed.id):
                await self._outlive(handed, timeout)
            raise error from exc

    async def _in_thread(self, handler: Any, handed: Job[Any]) -> Any:
        call = self._pool().submit(handler, handed)
        self._calls[handed.id] = call
        try:
            await asyncio.shield(call.finished)
        finally:
            call.cancel()  # still queued at a timeout or a stop: it must never start
            self._forget(handed.id, call)
        return call.result()

    async def _outlive(self, handed: Job[Any], timeout: float | None) -> None:
        """Wait for a timed-out plain handler's thread to end. Until then the job stays
        reserved, its lease renewed and its slot taken, so no other worker starts it while
        it still runs here; then it is retried or failed with the JobTimeoutError."""
        call = self._calls[handed.id]
        log.warning(
            "job %s (%s): plain handler still running past its timeout of %ss; Python cannot "
            "stop its thread, so the job stays reserved (lease renewed) until it returns, "
            "then is retried or failed as timed out", handed.id, handed.name, timeout,
        )  # fmt: skip
        try:
            await asyncio.shield(call.finished)
        finally:
            self._forget(handed.id, call)
        log.info("job %s (%s): its timed-out handler's thread has returned", handed.id, handed.name)

    def _forget(self, job_id: str, call: Call) -> None:
        if not call.running and self._calls.get(job_id) is call:
            del self._calls[job_id]

    def _pool(self) -> HandlerThreads:
        if self._threads is None:
            # Never more than concurrency: a job keeps its slot until its thread returns.
            self._threads = HandlerThreads(self.spec.concurrency, f"conveyor-{self.spec.name}")
        return self._threads

    def close(self) -> None:
        """Let go of the threads; one still running a handler ends when it returns, or with
        the process (they are daemon threads)."""
        if self._threads is not None:
            self._threads.close()
            self._threads = None


def _refusal(job: JobInfo) -> Exception | None:
    """Why a reserved job must be failed without running, if it must: its record cannot be
    read, or its attempts were used up by deaths of the worker running it alone."""
    if job.unreadable:
        problems = "; ".join(f"{name}: {problem}" for name, problem in job.unreadable.items())
        return CorruptJobError(
            f"the stored record of job {job.id} cannot be read ({problems}): it was failed"
            " without running; inspect it (job_info, `conveyor failed list`), then fix and"
            " retry it, or purge it"
        )
    if job.attempt > job.max_attempts:
        # Only the last death is known to be charged: earlier attempts may have raised, and
        # a death among other jobs is charged to none; the reserve counted an attempt that
        # never ran, so `attempt - 1` (= max_attempts) is the last one that did.
        deaths = "once" if job.rescued == 1 else f"{job.rescued} times"
        return LeaseExpiredError(
            f"the worker running job {job.id} ({job.name}) stopped answering (crash, kill -9,"
            f" out of memory) {deaths}, the last time while it ran alone in its last attempt"
            f" ({job.max_attempts} of {job.max_attempts}): it is failed as the likely cause"
            " instead of being run again"
        )
    return None


def cancelled(job: JobInfo, driver: Driver, when: str) -> Outcome:
    """The outcome of a job cancelled `when`: recorded as cancelled, never retried."""
    error = JobCancelledError(f"job {job.id} ({job.name}) was cancelled {when}")
    return Outcome("fail", job, driver, error_info(error), cancelled=True)


def _non_finite(raw: bytes, what: str) -> PayloadError | None:
    """A PayloadError when JSON text `raw` holds NaN or infinity, which pydantic writes as the
    tokens NaN and Infinity: no JSON (a reader such as jq, or `conveyor job --json`, refuses
    it). One substring scan for JSON without them."""
    if b"NaN" not in raw and b"Infinity" not in raw:
        return None
    found = non_finite_at(json.loads(raw))  # the tokens may be inside a string
    if found is None:
        return None
    where, number = found
    return PayloadError(
        f"{what} is {number}{f' at {where}' if where else ''}, which JSON cannot carry:"
        " return a string (or None) there instead"
    )


async def _cancel_asked(job: JobInfo, driver: Driver) -> bool:
    """Whether a cancel of this chain's page came since its last renewal: the page's ack
    pushes the next page, so a cancel seen only at the next renewal (lease/2) would come too
    late and the chain would go on. A backend away: False, the ack meets the same outage."""
    if not driver.capabilities.control or job.reservation is None:
        return False
    try:
        return bool(await driver.cancelling([Reservation(job.id, job.reservation)]))
    except (DriverError, TimeoutError):
        return False


def given_back(job: JobInfo, driver: Driver, started: float | None = None) -> Outcome:
    """Release a job stopped before it could finish (a stop, a reserve returning too many),
    with its attempt given back: the job did not fail. Not a rescued job's: its reserve did
    not charge the attempt the first time, and a later one charged a death, which stands.
    `started` (monotonic): when it began to run, for the outcome's duration."""
    ran = 0.0 if started is None else time.monotonic() - started
    return Outcome("release", job, driver, count_attempt=job.rescued > 0, duration=ran)


def _unknown(job: JobInfo) -> UnknownJobError:
    """A job this worker's app does not register: perhaps one another version of it does, so
    the attempt fails like any other and the job is retried after its retry delay (as
    Sidekiq does), where a worker of the newer deploy may take it."""
    return UnknownJobError(
        job.name,
        f"no job named {job.name!r} is registered in the app of this worker: every worker "
        f"serving queue {job.queue!r} must register it with @registry.job({job.name!r}) (a "
        f"worker of an older deploy fails the attempt and the job is retried after its retry "
        f"delay; one failed after its last attempt runs again with: conveyor failed retry "
        f"{job.queue})",
    )


def retry_or_fail(
    job: JobInfo, driver: Driver, error: ErrorInfo, raised: BaseException | None = None
) -> Outcome:
    """Release the job for its next attempt after its retry delay (or the one the `Retry` it
    `raised` asks for), or fail it after its last attempt, or at once when it raised `Fail`.
    An exception group (a TaskGroup's) holding a `Fail` fails it; one of `Retry`s alone waits
    the longest delay they ask for."""
    leaves = _leaves(raised) if raised is not None else []
    if job.attempt < job.max_attempts and not any(isinstance(e, retry.Fail) for e in leaves):
        wait = retry.from_json(job.retry_delay).delay(job.attempt)
        if leaves and all(isinstance(e, retry.Retry) for e in leaves):
            asked = [retry.asked(e) for e in leaves if isinstance(e, retry.Retry)]
            wait = max(wait if delay is None else delay for delay in asked)
        return Outcome("release", job, driver, error, wait)
    return Outcome("fail", job, driver, error)


def _leaves(raised: BaseException) -> list[BaseException]:
    """The exceptions `raised` is made of: itself, or each of an exception group's, at any
    depth (an asyncio.TaskGroup raises its tasks' errors as one)."""
    leaves, left = [], [raised]
    while left:  # not recursive: a group nested deeper than Python's recursion limit is fine
        exc = left.pop()
        if isinstance(exc, BaseExceptionGroup):
            left.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves


def error_info(exc: BaseException) -> ErrorInfo:
    """The exception as recorded on a job: qualified type name, message, traceback, with the
    password of any URL in them hidden (they are logged, stored and shown)."""
    shown = "".join(traceback.format_exception(exc))
    return ErrorInfo(_kept(_type_name(exc)), _kept(_message(exc)), _kept(shown))


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _message(exc: BaseException) -> str:
    """`str(exc)`, or what Python's own traceback writes when the exception's `__str__` raises
    or returns no text: the job is failed all the same, with its own exception's type. An
    exception group's (a TaskGroup's) says what its tasks raised, each type and message."""
    try:
        said = str(exc)
    except BaseException:  # the handler's exception is at fault, not the worker
        said = "<exception str() failed>"
    if isinstance(exc, BaseExceptionGroup):
        said += ": " + "; ".join(f"{_type_name(e)}: {_message(e)}" for e in _leaves(exc))
    return said


def _kept(text: str) -> str:
    """Text as a job's error keeps it: passwords hidden, then lone surrogates (which no driver
    can store as UTF-8) as \\x escapes, then cut to TRACEBACK_MAX characters."""
    return capped(printable(hide_passwords(text)))


def printable(text: str) -> str:
    """`text` as a log line or a stored error can carry it: bytes that were not UTF-8 when
    read (a damaged record's name or queue, kept as lone surrogates) become \\x escapes, so
    no log handler or driver fails on them."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte
        data = text.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


#: The longest message or traceback a job keeps, in characters: its head and its tail (where
#: the error was raised) are kept, the middle (deep recursion, long chains) is cut.
TRACEBACK_MAX = 8000


def capped(text: str, limit: int = TRACEBACK_MAX) -> str:
    """`text` if it fits in `limit` characters, else its first quarter and last three
    quarters of that, with a line saying how much was cut between them."""
    if len(text) <= limit:
        return text
    head, tail = limit // 4, limit - limit // 4
    return f"{text[:head]}\n... {len(text) - head - tail} characters cut ...\n{text[-tail:]}"
