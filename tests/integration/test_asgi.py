"""A worker inside a web application, under a real ASGI server: uvicorn serves the FastAPI app of
tests/integration/webapp.py in a process of its own, on a free loopback port. Jobs pushed by
HTTP requests run on the worker its lifespan started; SIGTERM (the server's signal) stops the
worker gracefully within its stop_timeout, leaving no job reserved. On sqlite and postgres.

A bare ASGI application wrapped in LifespanMiddleware runs under uvicorn in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor import Job, JobState, Registry
from conveyor.asgi import LifespanMiddleware, Receive, Scope, Send
from conveyor.drivers import driver_from_url
from tests.backends import eventually, postgres, require_service
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(120)

#: The worker's stop_timeout in the app, and how long its slow job runs after SIGTERM.
STOP_TIMEOUT = 5.0
SLOW_JOB = 1.0


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgres"])
async def driver_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of fresh storage for the app's queue: a file, or a table prefix of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    require_service("postgres", 5432, postgres.START)
    prefix = postgres.fresh_prefix()
    yield f"{postgres.URL}?prefix={prefix}"
    await postgres.drop_tables(prefix)


class Uvicorn:
    """`python -m uvicorn tests.integration.webapp:app` in `folder`, logging to a file."""

    def __init__(self, folder: Path, driver_url: str, stop_timeout: float) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "uvicorn.log"
        env = {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "PYTHONUNBUFFERED": "1",
            "WEBAPP_DIR": str(folder),
            "WEBAPP_DRIVER": driver_url,
            "WEBAPP_STOP_TIMEOUT": str(stop_timeout),
        }
        command = [
            sys.executable, "-m", "uvicorn", "tests.integration.webapp:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on",
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text()

    async def ready(self, client: httpx.AsyncClient, timeout: float = 30.0) -> None:
        """Wait until the app answers that its workers run."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"uvicorn exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"uvicorn never became ready:\n{self.log()}"
            try:
                if (await client.get(f"{self.base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM, as an orchestrator stops a server: (exit status, seconds it took). Once
        shut down, uvicorn (0.29+) raises the signal it caught again: a clean exit by SIGTERM
        is status -15, not 0."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        while self.process.poll() is None:
            assert time.monotonic() - started < timeout, f"uvicorn did not exit:\n{self.log()}"
            await asyncio.sleep(0.02)
        return self.process.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server_in(tmp_path: Path) -> Iterator[Any]:
    started: list[Uvicorn] = []

    def start(driver_url: str, stop_timeout: float = STOP_TIMEOUT) -> Uvicorn:
        server = Uvicorn(tmp_path, driver_url, stop_timeout)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


async def stored(driver_url: str, job_ids: list[str]) -> tuple[list[Any], Any]:
    """The jobs as stored, and the queue's counts, read on a connection of the test's own."""
    driver = driver_from_url(driver_url)
    await driver.open()
    try:
        infos = [await driver.get(job_id) for job_id in job_ids]
        return infos, (await driver.counts(["mail"]))["mail"]
    finally:
        await driver.close()


async def test_jobs_pushed_over_http_run_in_the_app_and_sigterm_stops_cleanly(
    driver_url: str, server_in: Any, tmp_path: Path
) -> None:
    server = server_in(driver_url)
    async with httpx.AsyncClient(timeout=10) as client:
        await server.ready(client)
        first = (await client.post(f"{server.base}/mail", params={"to": "ada"})).json()["id"]
        await eventually(_exists(tmp_path / f"sent-{first}"))
        second = await client.post(f"{server.base}/mail-from-thread", params={"to": "bob"})
        second_id = second.json()["id"]
        await eventually(_exists(tmp_path / f"sent-{second_id}"))
        params = {"to": "cy", "seconds": str(SLOW_JOB)}
        slow = (await client.post(f"{server.base}/mail", params=params)).json()["id"]
        await eventually(_exists(tmp_path / f"started-{slow}"))
    status, took = await server.terminate()
    log = server.log()
    assert status in (0, -signal.SIGTERM), log
    assert took < STOP_TIMEOUT, f"took {took:.2f}s to exit\n{log}"
    assert (tmp_path / f"sent-{slow}").read_text() == "cy"  # finished, not cut short
    infos, counts = await stored(driver_url, [first, second_id, slow])
    assert [info.state for info in infos] == [JobState.SUCCEEDED] * 3
    assert (counts.reserved, counts.pending, counts.succeeded) == (0, 0, 3)
    assert "started worker(s) web inside the application" in log
    assert "stopped the application's worker(s)" in log
    assert "ERROR" not in log, log


async def test_a_job_longer_than_stop_timeout_is_released_and_the_server_exits_in_time(
    server_in: Any, tmp_path: Path
) -> None:
    driver_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = server_in(driver_url, stop_timeout=1.0)
    async with httpx.AsyncClient(timeout=10) as client:
        await server.ready(client)
        params = {"to": "slow", "seconds": "60"}
        job_id = (await client.post(f"{server.base}/mail", params=params)).json()["id"]
        await eventually(_exists(tmp_path / f"started-{job_id}"))
    status, took = await server.terminate()
    log = server.log()
    assert status in (0, -signal.SIGTERM), log
    assert took < 1.0 + 3.0, f"took {took:.2f}s to exit with stop_timeout 1s\n{log}"
    [info], counts = await stored(driver_url, [job_id])
    assert (info.state, info.attempt) == (JobState.PENDING, 0)  # given back, attempt too
    assert counts.reserved == 0
    assert "ERROR conveyor.asgi: worker 'web' stopped with jobs still running after" in log
    assert f"released to run again: {job_id}" in log


async def test_a_backend_that_cannot_be_reached_fails_the_server_start(
    server_in: Any, tmp_path: Path
) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/test?timeout=2"
    server = server_in(nobody)
    started = time.monotonic()
    while server.process.poll() is None:
        assert time.monotonic() - started < 30, f"uvicorn kept running:\n{server.log()}"
        await asyncio.sleep(0.05)
    log = server.log()
    assert server.process.returncode == 3, log  # uvicorn's status for a failed start-up
    assert "Application startup failed" in log
    assert "BackendUnavailableError" in log


async def test_middleware_runs_workers_of_a_bare_asgi_app_under_uvicorn() -> None:
    registry = Registry(default_driver="memory://")
    registry.configure(environ={})
    registry.worker("default", poll_interval=0.05, stop_timeout=2)
    ran = asyncio.Event()

    @registry.job("ping")
    async def ping(job: Job[dict[str, Any]]) -> None:
        ran.set()

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        """An ASGI app of no framework, without lifespan support: POST pushes a ping."""
        if scope["type"] != "http":
            raise RuntimeError("http only")
        await ping.push({})
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = LifespanMiddleware(bare, registry)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started and app.healthy
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"http://127.0.0.1:{config.port}/")
        assert response.status_code == 204
        await asyncio.wait_for(ran.wait(), timeout=5)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
    assert not app.healthy
    assert (await registry.queue_info())["default"].succeeded == 1


def _exists(path: Path) -> Any:
    async def check() -> bool:
        return path.exists()

    return check
