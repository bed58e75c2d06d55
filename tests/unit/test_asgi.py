"""conveyor.asgi: workers started and stopped with a web application, through a Starlette-style
`lifespan=` or through the ASGI lifespan protocol itself (LifespanMiddleware). The server here
is this test, speaking the protocol; tests/integration/test_asgi.py runs uvicorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor import Job, Registry, UnknownWorkerError
from conveyor.asgi import (
    ASGIApp,
    Host,
    LifespanMiddleware,
    Message,
    Receive,
    Scope,
    Send,
    lifespan,
)
from conveyor.drivers.memory import MemoryDriver

pytestmark = pytest.mark.timeout(30)


class WatchedDriver(MemoryDriver):
    """The memory driver, noting when it is opened and closed in a shared list of events."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def open(self) -> None:
        self.events.append("driver opened")

    async def close(self) -> None:
        self.events.append("driver closed")


class BuggyDriver(MemoryDriver):
    """A driver with a bug the worker cannot ride out: `wait` raises when called."""

    def wait(self, queues: Sequence[str], timeout: float) -> Any:
        raise RuntimeError("a bug in the driver")


def registry_on(driver: MemoryDriver) -> tuple[Registry, asyncio.Event]:
    """A registry whose job "ping" sets the returned event."""
    registry = Registry()
    registry.configure(environ={})
    registry.queue("q", driver=driver, workers=["web"])
    registry.worker("web", poll_interval=0.05, stop_timeout=2)
    ran = asyncio.Event()

    @registry.job("ping", queue="q")
    async def ping(job: Job[dict[str, Any]]) -> None:
        ran.set()

    return registry, ran


async def test_lifespan_runs_the_worker_while_the_app_runs_and_closes_the_drivers() -> None:
    events: list[str] = []
    registry, ran = registry_on(WatchedDriver(events))
    jobs = lifespan(registry, "web")
    assert not jobs.healthy
    async with jobs(object()):
        assert events == ["driver opened"]  # before the first request
        assert jobs.healthy
        await registry.push("q", "ping", {})
        await asyncio.wait_for(ran.wait(), timeout=5)
    assert not jobs.healthy
    assert events == ["driver opened", "driver closed"]
    assert (await registry.queue_info())["q"].succeeded == 1  # reopened to look


async def test_lifespan_without_a_name_runs_the_default_worker() -> None:
    registry = Registry(default_driver="memory://")
    registry.configure(environ={})
    ran = asyncio.Event()

    @registry.job("ping")
    async def ping(job: Job[dict[str, Any]]) -> None:
        ran.set()

    jobs = lifespan(registry)
    async with jobs(object()):
        await ping.push({})
        await asyncio.wait_for(ran.wait(), timeout=5)
        assert jobs.host is not None and jobs.host.names == ()


async def test_an_unknown_worker_fails_the_start_up_and_starts_nothing() -> None:
    events: list[str] = []
    registry, _ = registry_on(WatchedDriver(events))
    with pytest.raises(UnknownWorkerError, match="mian"):
        async with lifespan(registry, "web", "mian")(object()):
            pytest.fail("the application must not start")
    assert events == []


async def test_a_backend_that_cannot_open_fails_the_start_up() -> None:
    class DownDriver(WatchedDriver):
        async def open(self) -> None:
            raise ConnectionRefusedError("backend down")

    events: list[str] = []
    registry, _ = registry_on(DownDriver(events))
    with pytest.raises(ConnectionRefusedError):
        async with lifespan(registry, "web")(object()):
            pytest.fail("the application must not start")


async def test_a_crashed_worker_is_logged_and_unhealthy_and_the_app_stops_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _ = registry_on(BuggyDriver())
    host = Host(registry, ["web"])
    with caplog.at_level(logging.ERROR, logger="conveyor.asgi"):
        await host.start()
        for _ in range(200):
            if not host.healthy:
                break
            await asyncio.sleep(0.01)
        assert not host.healthy
        assert isinstance(host.crashed["web"], RuntimeError)
        await registry.push("q", "ping", {})  # the application can still push
        await asyncio.wait_for(host.stop(), timeout=5)
    [record] = [r for r in caplog.records if r.name == "conveyor.asgi"]
    assert "worker web crashed inside the application, which keeps serving" in record.message
    assert record.exc_info is not None and "a bug in the driver" in str(record.exc_info[1])


# -- the middleware, driven as a server drives it ------------------------------------------


class Server:
    """The server's half of the lifespan protocol: what it sends, and what it was told."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.told: list[str] = []
        self.answer = asyncio.Event()

    async def receive(self) -> Message:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        self.told.append(message["type"] + _detail(message))
        self.answer.set()

    async def say(self, kind: str) -> None:
        """Send `kind` and wait for the application's answer."""
        self.answer.clear()
        await self.inbox.put({"type": kind})
        await asyncio.wait_for(self.answer.wait(), timeout=5)


def _detail(message: Message) -> str:
    return f": {message['message']}" if message.get("message") else ""


class LifespanApp:
    """An application that speaks the lifespan protocol, noting its start-up and shutdown."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.events.append("app started")
                await send({"type": "lifespan.startup.complete"})
            else:
                self.events.append("app stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return


async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
    """An application that does not speak the lifespan protocol, as many do not."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']!r}")


async def run_protocol(app: LifespanMiddleware, server: Server) -> asyncio.Task[None]:
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   server.receive, server.send))  # fmt: skip
    await server.say("lifespan.startup")
    return task


async def test_middleware_starts_workers_before_the_app_and_stops_them_after_it() -> None:
    events: list[str] = []
    registry, ran = registry_on(WatchedDriver(events))
    app = LifespanMiddleware(LifespanApp(events), registry, "web")
    server = Server()
    task = await run_protocol(app, server)
    assert app.healthy
    await registry.push("q", "ping", {})
    await asyncio.wait_for(ran.wait(), timeout=5)
    await server.say("lifespan.shutdown")
    await asyncio.wait_for(task, timeout=5)
    assert events == ["driver opened", "app started", "app stopped", "driver closed"]
    assert server.told == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not app.healthy


async def http_or_nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """An application that serves http and returns on any other scope, as many do."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})


@pytest.mark.parametrize(
    "inner", [http_only, http_or_nothing], ids=["raising on lifespan", "returning on lifespan"]
)
async def test_middleware_answers_for_an_app_without_lifespan_support(inner: ASGIApp) -> None:
    events: list[str] = []
    registry, ran = registry_on(WatchedDriver(events))
    app = LifespanMiddleware(inner, registry, "web")
    server = Server()
    task = await run_protocol(app, server)
    await registry.push("q", "ping", {})
    await asyncio.wait_for(ran.wait(), timeout=5)
    await server.say("lifespan.shutdown")
    await asyncio.wait_for(task, timeout=5)
    assert server.told == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["driver opened", "driver closed"]
    assert not app.healthy


async def test_middleware_reports_a_failed_start_up_to_the_server() -> None:
    events: list[str] = []
    registry, _ = registry_on(WatchedDriver(events))
    app = LifespanMiddleware(LifespanApp(events), registry, "nobody")
    server = Server()
    task = await run_protocol(app, server)
    await asyncio.wait_for(task, timeout=5)
    [told] = server.told
    assert told.startswith("lifespan.startup.failed: conveyor: ")
    assert "nobody" in told
    assert events == []  # neither the drivers nor the app were started


async def test_middleware_stops_the_workers_when_the_app_fails_its_start_up() -> None:
    events: list[str] = []

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise RuntimeError("no database")

    registry, _ = registry_on(WatchedDriver(events))
    app = LifespanMiddleware(failing, registry, "web")
    server = Server()
    task = await run_protocol(app, server)
    with pytest.raises(RuntimeError, match="no database"):
        await asyncio.wait_for(task, timeout=5)
    assert server.told == ["lifespan.startup.failed: no database"]
    assert events == ["driver opened", "driver closed"]


async def test_middleware_passes_other_scopes_to_the_app() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    registry, _ = registry_on(MemoryDriver())
    server = Server()
    await LifespanMiddleware(app, registry, "web")({"type": "http"}, server.receive, server.send)
    assert seen == ["http"]
