"""The facade for code without an event loop (Flask, Django, scripts): thin wrappers that run
the async API on a private event loop in a background thread. Never a second implementation.

    registry.blocking.push("mail", "mail.send", Email(to="a@example.com"))

The loop thread starts on first use and stops at `close()` or interpreter exit. Called from a
thread where an event loop runs (async code), the facade raises RuntimeError (IN_LOOP): its
wait would block that loop. Under gevent's or eventlet's monkey patching, where threads are
greenlets, a loop another greenlet runs is not this thread's (conveyor.loop's
loop_of_this_thread): calls work from any greenlet (docs/web.md). A driver belongs to the
loop that first used it: while that loop runs in another thread (a worker, and this call from
a plain handler), calls run on it. Async code run before the facade
(`asyncio.run`) leaves no driver open: the loop's end closes them (conveyor.loop.LoopEnd). A
loop closed by hand (`loop.close()` alone) does not: drivers left open on it fail the
facade's calls with a RegistryError saying so (close the registry before that loop ends).
A process forked after the registry was used (gunicorn --preload) starts a loop and opens
drivers of its own: it never shares its parent's connections (conveyor.forked).

One shortcut, for `push` alone: called from a thread with no running event loop, on a driver
that declares `thread_push` (redis, sqlite, postgres, mysql), once the registry is frozen and
the driver open (after the first push), with no hook to tell and no `connection=`, the push
stays in the calling thread. The job is made by the registry's own `new_job`, as `push` makes
it, and stored by the driver's `push_in_thread`: on redis the very script call of its async
`push` (arguments built by the same function, errors translated by the same edge, NOSCRIPT
handled) on a synchronous connection, its deadline given to the socket; on sqlite the same
statement on a connection of the calling thread's own, on postgres and mysql on one of a few
synchronous connections the driver keeps. What is not shared is the wait: the thread blocks on
its socket instead of hopping to the loop's thread and back, two thread wake-ups that cost more
than the push's round trip on a loaded machine (docs/drivers.md). Anything else, and a push the
driver declines (redis: the first to a queue; the SQL drivers: one with a unique key; postgres
and mysql: one finding their connections all busy), takes the loop.

`push` and `push_many` with `connection=` (your own synchronous connection, in your own
transaction) run on the loop too, while this thread lends itself to them: each statement on
your connection runs here, in the thread that owns it (conveyor.drivers.lent).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import sys
import threading
import traceback
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor import forked
from conveyor.chain import ChainInfo
from conveyor.drivers.base import (
    ALIVE_WITHIN,
    QueueCounts,
    Throughput,
    WorkerCounts,
    WorkerPresence,
)
from conveyor.drivers.lent import Lender, LentConnection
from conveyor.errors import RegistryError
from conveyor.job import JobInfo, JobState
from conveyor.loop import loop_of_this_thread, made_by_facade

if TYPE_CHECKING:
    from conveyor.core import Overview, RegistryCore

T = TypeVar("T")

ENDED_LOOP = (
    "the registry's drivers were opened by async code whose event loop has ended"
    " (closed by hand, loop.close(), without closing the registry), and their connections"
    " belong to it:"
    " end that code with `await registry.close()`, and the blocking facade opens them again"
    " on its own loop"
)

FINALIZING = (
    "the interpreter is finalizing (a __del__ or weakref callback run after the atexit"
    " handlers): no thread or event loop can run any more, so this call would fail or wait"
    " forever: make it earlier, from an atexit handler (atexit.register) or a close() the code"
    " calls"
)


IN_LOOP = (
    "registry.blocking was called from async code (an event loop runs in this thread):"
    " waiting here would block that loop, or wait for itself forever when the registry runs"
    " on it: await the registry's own method instead (`await registry.push(...)`)"
)

#: How long closing drivers left on an ended loop may take before they are forgotten (seconds).
ENDED_CLOSE = 2.0

#: How long a stop waits for the loop's thread to return before closing the loop (seconds).
STOP_WAIT = 10.0


class _Portal:
    """An event loop running in a daemon thread, and a way to call coroutines on it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.current_thread()  # `_loop`'s, once started
        #: No thread could start for `_loop` (see `_running_loop`): each call runs it itself.
        self._here = False
        #: The tasks of the calls running on `_loop`, kept on its thread, which `stop` waits for.
        self._calls: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        #: Every loop this portal started: one of them is never an `owner` to hand calls to.
        self._made: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        forked.watch(self)

    def after_fork(self) -> None:
        """In a child forked from this process, where the parent's loop thread is not: the
        next call starts a loop of the child's own (the lock may have been held at the fork)."""
        self._loop, self._calls, self._lock, self._here = None, set(), threading.Lock(), False

    def call(
        self,
        coroutine: Coroutine[Any, Any, T],
        owner: asyncio.AbstractEventLoop | None = None,
        lender: Lender | None = None,
    ) -> T:
        """Run `coroutine` on `owner` when that loop is running (a worker's, with this call
        from one of its handler threads), else on the private loop; with `lender`, this thread
        serves it while it waits."""
        if sys.is_finalizing():  # a thread started now never runs: the call would wait forever
            coroutine.close()
            raise RegistryError(FINALIZING)
        if loop_of_this_thread() is not None:  # blocking async code: refused, said why
            coroutine.close()
            raise RuntimeError(IN_LOOP)
        if owner is not None and owner not in self._made and owner.is_running():
            return _call_of(coroutine, lender).run_on(owner)
        with self._lock:  # handed over before a stop() takes the loop away, or after it
            loop = self._running_loop()  # first: a loop started anew brings its set of calls
            if self._here:
                return _run_here(loop, coroutine, lender)
            call = _call_of(coroutine, lender, self._calls)
            call.hand_to(loop)
        return call.outcome()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="conveyor-blocking", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # Python 3.12.0-3.12.1: no thread starts in atexit
                self._here = True  # (an atexit handler's first call): calls run the loop
            self._loop, self._calls, self._thread = loop, set(), thread
            self._made.add(loop)
            made_by_facade(loop)
        return self._loop

    def stop(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Let the calls already handed to the loop finish, run `last` (closing the drivers),
        then stop the loop. Calls made meanwhile wait, then start a loop of their own."""
        with self._lock:
            loop, calls, self._loop = self._loop, self._calls, None
            if loop is None:
                if last is not None:
                    last.close()
                return
            if self._here:
                self._here = False
                _close_here(loop, last)
                return
            try:
                _Call(_drained(calls, last)).run_on(loop)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                self._thread.join(STOP_WAIT)
                if not self._thread.is_alive():  # left open, the loop is a ResourceWarning
                    loop.close()


def _run_here(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T], lender: Lender | None
) -> T:
    """Run `coroutine` on `loop` in this thread, which then has no loop thread to wait for; a
    `connection=` lent by this thread is used from here directly."""
    if lender is not None:
        lender.here()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        if lender is not None:
            lender.done()


def _close_here(loop: asyncio.AbstractEventLoop, last: Coroutine[Any, Any, None] | None) -> None:
    try:
        if last is not None:
            loop.run_until_complete(last)
    finally:
        loop.close()


async def _drained(calls: set[asyncio.Task[None]], last: Coroutine[Any, Any, None] | None) -> None:
    while calls:
        await asyncio.wait(set(calls))
    if last is not None:
        await last


class _Call(Generic[T]):
    """One coroutine run on a loop in another thread while this thread waits for it: what
    `asyncio.run_coroutine_threadsafe(...).result()` does, with one lock to wait on instead
    of a concurrent Future, its condition and the callbacks that copy one future into the
    other (the hop there and back: 59 µs that way, 35 this way, docs/drivers.md#speed). The
    task releases the lock as its last step, with the outcome kept here, rather than from a
    done callback a loop turn later."""

    __slots__ = ("_calls", "_cancelled", "_coroutine", "_done", "_error", "_result", "_task")

    def __init__(
        self, coroutine: Coroutine[Any, Any, T], calls: set[asyncio.Task[None]] | None = None
    ) -> None:
        self._coroutine = coroutine
        self._calls = calls
        self._done = threading.Lock()
        self._done.acquire()
        self._task: asyncio.Task[None] | None = None  # held: a loop holds its tasks weakly
        self._result: T | None = None
        self._error: BaseException | None = None
        self._cancelled = False

    def run_on(self, loop: asyncio.AbstractEventLoop) -> T:
        self.hand_to(loop)
        return self.outcome()

    def hand_to(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop is closed
            self._coroutine.close()
            raise

    def outcome(self) -> T:
        self._done.acquire()
        if self._cancelled:  # its loop shut down: raised as run_coroutine_threadsafe did
            raise concurrent.futures.CancelledError
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _start(self) -> None:
        try:
            self._task = task = asyncio.ensure_future(self._run())
            if self._calls is not None:
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        except BaseException as error:
            self._coroutine.close()
            self._error = error
            self._finish()

    async def _run(self) -> None:
        try:
            self._result = await self._coroutine
        except asyncio.CancelledError:
            self._cancelled = True
        except BaseException as error:
            self._error = error
            if not isinstance(error, Exception):
                raise  # KeyboardInterrupt, SystemExit: the loop's too
        finally:
            self._finish()

    def _finish(self) -> None:
        """The outcome is kept: let `outcome` return it."""
        self._done.release()


class _LentCall(_Call[T]):
    """A call whose waiting thread serves its `Lender` until it is done."""

    __slots__ = ("_lender",)

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, T],
        lender: Lender,
        calls: set[asyncio.Task[None]] | None = None,
    ) -> None:
        super().__init__(coroutine, calls)
        self._lender = lender

    def outcome(self) -> T:
        self._lender.serve()
        return super().outcome()

    def _finish(self) -> None:
        super()._finish()
        self._lender.done()


def _call_of(
    coroutine: Coroutine[Any, Any, T],
    lender: Lender | None,
    calls: set[asyncio.Task[None]] | None = None,
) -> _Call[T]:
    return _Call(coroutine, calls) if lender is None else _LentCall(coroutine, lender, calls)


def _lend(options: dict[str, Any]) -> Lender | None:
    """With a `connection` among a push's `options`: put it there lent with this thread (a
    LentConnection) and return the lender that serves it."""
    connection = options.get("connection")
    if connection is None:
        return None
    lender = Lender()
    options["connection"] = LentConnection(connection, lender.run)
    return lender


class BlockingRegistry:
    """`Registry`'s push and inspection methods, callable without `await`."""

    def __init__(self, registry: RegistryCore) -> None:
        self._registry = registry
        self._portal = _Portal()
        _facades.append(self)  # closed at exit (_close_all)

    def push(self, queue: str, job_name: str, payload: Any, **options: Any) -> str:
        """`Registry.push`, blocking until the job is stored. From a plain thread, where the
        queue's driver can (redis, sqlite, postgres, mysql), the job is stored from this
        thread, on a connection of the driver's own, without the hop to the event loop's
        thread and back (see the module docstring). With `connection=` (your own synchronous
        psycopg, PyMySQL or mysqlclient connection) the job is written in your transaction,
        each statement run in this thread."""
        registry = self._registry
        lender = _lend(options)
        if lender is not None:  # your connection's statements run in this thread
            return self._call(registry.push(queue, job_name, payload, **options), lender)
        plain = "connection" not in options and loop_of_this_thread() is None
        driver = registry.thread_pusher(queue) if plain else None
        if driver is None:
            return self._call(registry.push(queue, job_name, payload, **options))
        new = registry.new_job(queue, job_name, payload, **options)
        job_id = driver.push_in_thread(new)
        return job_id if job_id is not None else self._call(registry.store(new))

    def push_many(
        self, queue: str, job_name: str, payloads: Iterable[Any], **options: Any
    ) -> list[str]:
        """`Registry.push_many`, blocking until the batch is stored; with `connection=`, each
        statement on it runs in this thread."""
        lender = _lend(options)
        return self._call(self._registry.push_many(queue, job_name, payloads, **options), lender)

    def queue_info(self) -> dict[str, QueueCounts]:
        """`Registry.queue_info`."""
        return self._call(self._registry.queue_info())

    def worker_info(self) -> dict[str, WorkerCounts]:
        """`Registry.worker_info`."""
        return self._call(self._registry.worker_info())

    def job_info(self, job_id: str) -> JobInfo | None:
        """`Registry.job_info`."""
        return self._call(self._registry.job_info(job_id))

    def list_jobs(
        self,
        queue: str,
        state: JobState | str,
        *,
        limit: int = 100,
        offset: int = 0,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        """`Registry.list_jobs`."""
        listed = self._registry.list_jobs
        return self._call(listed(queue, state, limit=limit, offset=offset, name=name, after=after))

    def retry_failed(
        self, queue: str, ids: Sequence[str] | None = None, *, name: str | None = None
    ) -> int:
        """`Registry.retry_failed`."""
        return self._call(self._registry.retry_failed(queue, ids, name=name))

    def purge(
        self, queue: str, state: JobState | str = JobState.FAILED, ids: Sequence[str] | None = None,
        *, name: str | None = None,
    ) -> int:  # fmt: skip
        """`Registry.purge`."""
        return self._call(self._registry.purge(queue, state, ids, name=name))

    def prune(self, queue: str) -> int:
        """`Registry.prune`: a cron job or a Django command can prune without a worker."""
        return self._call(self._registry.prune(queue))

    def migrate(self) -> list[str]:
        """`Registry.migrate`."""
        return self._call(self._registry.migrate())

    def workers_alive(self, within: float = ALIVE_WITHIN) -> list[WorkerPresence]:
        """`Registry.workers_alive`: a health check can ask whether any worker is running."""
        return self._call(self._registry.workers_alive(within))

    def overview(self, within: float = ALIVE_WITHIN, deadline: float | None = None) -> Overview:
        """`Registry.overview`: a backend out of reach is named in `down`, the rest shown."""
        return self._call(self._registry.overview(within, deadline))

    def paused_queues(self) -> set[str]:
        """`Registry.paused_queues`."""
        return self._call(self._registry.paused_queues())

    def throughput(self, queue: str, minutes: int = 60) -> Throughput | None:
        """`Registry.throughput`."""
        return self._call(self._registry.throughput(queue, minutes))

    def start_chain(self, job_name: str, payload: Any, **options: Any) -> str:
        """`Registry.start_chain`."""
        return self._call(self._registry.start_chain(job_name, payload, **options))

    def chain_info(self, chain_id: str) -> ChainInfo | None:
        """`Registry.chain_info`."""
        return self._call(self._registry.chain_info(chain_id))

    def cancel(self, job_id: str) -> bool:
        """`Registry.cancel`."""
        return self._call(self._registry.cancel(job_id))

    def pause(self, queue: str) -> None:
        """`Registry.pause`."""
        self._call(self._registry.pause(queue))

    def resume(self, queue: str) -> None:
        """`Registry.resume`."""
        self._call(self._registry.resume(queue))

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """`Registry.result`, blocking until the job finishes (or `timeout`)."""
        return self._call(self._registry.result(job_id, timeout))

    def _call(self, coroutine: Coroutine[Any, Any, T], lender: Lender | None = None) -> T:
        # Drivers belong to the loop that opened them: a plain handler of a running worker
        # pushes through the worker's loop, not through a second loop of its own.
        owner = self._registry._loop
        with _named_if_ended(owner):
            return self._portal.call(coroutine, owner, lender)

    def close(self) -> None:
        """Close the registry's drivers and stop the background loop."""
        self._portal.stop(self._closed())

    async def _closed(self) -> None:
        owner = self._registry._loop
        if owner is None or not owner.is_closed():
            await self._registry.close()
            return
        # Left open on a loop closed by hand (ENDED_LOOP): closed as far as they can be off it,
        # within ENDED_CLOSE seconds (mysql's close waited forever, hanging the exit), then
        # forgotten: this facade opens them anew, and the exit says nothing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._registry._close_ended(), ENDED_CLOSE)


#: Every facade made, closed at exit by one atexit handler registered at import, before the
#: application's (atexit runs the last first): pushes from its own handlers find drivers open.
_facades: list[BlockingRegistry] = []


def _close_all() -> None:
    facades, _facades[:] = _facades[::-1], []  # nothing kept alive past exit, as atexit does
    for facade in facades:
        try:
            facade.close()
        except Exception:  # as atexit would: said, and the other facades still closed
            traceback.print_exc()


atexit.register(_close_all)


@contextlib.contextmanager
def _named_if_ended(owner: asyncio.AbstractEventLoop | None) -> Iterator[None]:
    """A RuntimeError met on drivers whose loop has ended ("Event loop is closed", "attached
    to a different loop") as the RegistryError that says what to do (ENDED_LOOP)."""
    try:
        yield
    except RuntimeError as error:
        if owner is None or not owner.is_closed():
            raise
        raise RegistryError(ENDED_LOOP) from error
