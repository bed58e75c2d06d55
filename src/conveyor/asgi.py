"""Workers inside a web application's process, started and stopped with it by the ASGI lifespan:
the seed's "Host", for small projects that deploy one process.

    jobs = conveyor.asgi.lifespan(registry, "main")
    app = FastAPI(lifespan=jobs)                          # or Starlette(lifespan=jobs)

    app = conveyor.asgi.LifespanMiddleware(app, registry, "main")   # any other ASGI app

At start-up the registry is frozen and the workers' drivers are opened on the server's event
loop: a mistake in the registry or the configuration, or a backend that cannot be reached,
fails the start-up, and the server exits instead of serving an application whose jobs would
go nowhere. Each worker then runs as a task on that loop (`Worker(registry, name).run()`),
beside the HTTP requests; with no name given, the registry's default worker runs. At shutdown,
once the server has stopped taking requests, the workers stop as `conveyor work` does: running
jobs get the worker's `stop_timeout` to finish, then are released to run again, and the
drivers are closed. Signals belong to the server: it tells the application to shut down.

A worker that crashes (it does not on backend outages, which it rides out; this is for faults
of conveyor's own) is logged at ERROR with its traceback, and the application keeps serving:
pushes still work, and the jobs wait for the next start, or for a `conveyor work` process.
`healthy` turns False, so a health check can report it and let the orchestrator restart the
process. Each server process (`uvicorn --workers 4`) runs its own workers.

Once HTTP and jobs need to scale apart (more workers than web processes, or the other way
round, or jobs that hog the CPU the requests need), run the workers as their own processes
with `conveyor work` instead, and drop the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

__all__ = ["Host", "Lifespan", "LifespanMiddleware", "lifespan"]

log = logging.getLogger("conveyor.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What the application says when it is done: the workers stop before the server hears it.
_LAST_WORDS = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)

#: Seconds a shutdown waits, beyond what the workers' own stop takes, before cancelling them.
STOP_GRACE = 5.0


class Host:
    """Named workers running as tasks on the running event loop, from `start()` to `stop()`."""

    def __init__(self, registry: RegistryCore, workers: Sequence[str] = ()) -> None:
        self.registry = registry
        self.names = tuple(workers)
        #: Workers that ended with an error, by name.
        self.crashed: dict[str, Exception] = {}
        self._workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    @property
    def healthy(self) -> bool:
        """True while every worker runs: False before the start, after the stop, after a crash."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def start(self) -> None:
        """Freeze the registry, open the workers' drivers, and start the workers. Raises (and
        starts nothing) on a registry mistake or a backend that cannot be reached."""
        registry = self.registry
        registry.freeze()
        names = self.names or (registry.default_worker(),)
        workers = [Worker(registry, name) for name in names]
        try:
            # Opened here, on the server's loop, before any request: a blocking push from
            # a sync endpoint's thread then runs on this loop too (see conveyor.blocking).
            for queue in dict.fromkeys(q for name in names for q in registry.queues_of(name)):
                await registry.driver_of(queue)
        except BaseException:
            await registry.close()
            raise
        self._workers = workers
        self._tasks = [
            asyncio.create_task(self._run(worker), name=f"conveyor-worker-{worker.name}")
            for worker in workers
        ]
        log.info("started worker(s) %s inside the application", ", ".join(names))

    async def _run(self, worker: Worker) -> None:
        try:
            stopped = await worker.run()
        except Exception as exc:
            self.crashed[worker.name] = exc
            log.exception(
                "worker %s crashed inside the application, which keeps serving; its queues' "
                "jobs wait until the process restarts or a `conveyor work %s` runs them",
                worker.name, worker.name,
            )  # fmt: skip
            return
        if not stopped.clean:
            log.error("%s", stopped.summary(worker.name, worker.spec.stop_timeout))

    async def stop(self) -> None:
        """Stop the workers as `conveyor work` does on SIGTERM, then close the drivers.
        Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for worker in self._workers:
            worker.stop()
        try:
            if tasks:
                await self._wait(tasks)
        finally:
            await self.registry.close()
            log.info("stopped the application's worker(s)")

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for the workers' own stop; past it (and STOP_GRACE more), stop them at once,
        then cancel them: a shutdown must end."""
        bound = 2 * max(max(w.spec.stop_timeout, 1.0) for w in self._workers) + STOP_GRACE
        _, pending = await asyncio.wait(tasks, timeout=bound)
        if pending:
            log.error("workers still running %ss after the stop: stopping them at once", bound)
            for worker in self._workers:
                worker.stop(now=True)
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Lifespan:
    """A Starlette/FastAPI `lifespan=`: called with the application, it returns the async
    context manager that runs the workers while the application runs."""

    def __init__(self, registry: RegistryCore, workers: Sequence[str] = ()) -> None:
        self.registry = registry
        self.workers = tuple(workers)
        #: The workers of the running application; None before its start-up.
        self.host: Host | None = None

    @property
    def healthy(self) -> bool:
        """True while every worker runs: for a health check endpoint."""
        return self.host is not None and self.host.healthy

    def __call__(self, app: object) -> contextlib.AbstractAsyncContextManager[None]:
        """The context manager Starlette enters at start-up and leaves at shutdown."""
        return self._running()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        host = Host(self.registry, self.workers)
        await host.start()
        self.host = host
        try:
            yield
        finally:
            await host.stop()


def lifespan(registry: RegistryCore, *workers: str) -> Lifespan:
    """The lifespan that runs `workers` (default: the registry's default worker) inside the
    application: `FastAPI(lifespan=conveyor.asgi.lifespan(registry, "main"))`. With a
    lifespan of your own, enter it inside yours: `async with jobs(app): yield`."""
    return Lifespan(registry, workers)


class LifespanMiddleware:
    """Runs `workers` inside any ASGI application, through the lifespan protocol: started
    before the application's own start-up, stopped after its shutdown. An application that
    does not speak the protocol gets the answers to the server from this middleware."""

    def __init__(self, app: ASGIApp, registry: RegistryCore, *workers: str) -> None:
        self.app = app
        self.lifespan = Lifespan(registry, workers)

    @property
    def healthy(self) -> bool:
        """True while every worker runs."""
        return self.lifespan.healthy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        startup = await receive()
        host = Host(self.lifespan.registry, self.lifespan.workers)
        try:
            await host.start()
        except Exception as exc:
            log.exception("the application's workers could not start")
            await send({"type": "lifespan.startup.failed", "message": f"conveyor: {exc}"})
            return
        self.lifespan.host = host
        await _Wrapped(self.app, host).run(scope, startup, receive, send)


class _Wrapped:
    """The wrapped application's lifespan, with the host stopped before the server hears that
    the application's shutdown (or failed start-up) is over."""

    def __init__(self, app: ASGIApp, host: Host) -> None:
        self.app = app
        self.host = host
        self.answered = False  # the application answered the server at least once

    async def run(self, scope: Scope, startup: Message, receive: Receive, send: Send) -> None:
        given = [startup]

        async def app_receive() -> Message:
            return given.pop() if given else await receive()

        async def app_send(message: Message) -> None:
            self.answered = True
            if message["type"] in _LAST_WORDS:
                await self.host.stop()
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if self.answered:
                await self.host.stop()  # nothing to do if it stopped already
                raise
            # The application does not speak the lifespan protocol: answer for it.
            await self._answer_alone(receive, send)
            return
        if not self.answered:
            # It returned without a word (one that serves http and ignores other scopes): the
            # server would go on without a shutdown to stop the workers at, so answer for it.
            await self._answer_alone(receive, send)

    async def _answer_alone(self, receive: Receive, send: Send) -> None:
        await send({"type": "lifespan.startup.complete"})
        try:
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        finally:
            await self.host.stop()
        await send({"type": "lifespan.shutdown.complete"})
