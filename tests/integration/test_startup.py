"""A worker started before its server: it retries with back-off, a log line per attempt that
names the backend without its password, and runs jobs once the server appears; with
--startup-timeout it gives up with a clear message and a non-zero exit status; a SIGTERM
during the retries ends them at once.

The server "appears" as a TCP proxy (tests/backends/proxy.py) started, after a while, on the
port the worker was told to use, in front of the real server, which is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from tests.backends import require_service
from tests.backends.proxy import Proxy
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cret-start"
#: kind -> (port of the real server, URL of its database through a proxy on {port}). Only
#: PostgreSQL (trust authentication here) takes a password it does not check.
SERVERS = {
    "postgres": (5432, f"postgresql://postgres:{PASSWORD}@127.0.0.1:{{port}}/test"),
    "mysql": (3306, "mysql://root@127.0.0.1:{port}/test"),
    "redis": (6379, "redis://127.0.0.1:{port}/0"),
}


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=list(SERVERS))
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ModuleType, str]]:
    """(kind, its tests.backends module, storage of this test's own: a prefix)."""
    backend = importlib.import_module(f"tests.backends.{request.param}")
    require_service(request.param, SERVERS[request.param][0], backend.START)
    prefix = backend.fresh_prefix()
    yield request.param, backend, prefix
    if request.param == "redis":
        await backend.delete_prefix(prefix)
    else:
        await backend.drop_tables(prefix)


def _attempts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "start-up attempt" in r.getMessage()]


async def test_worker_started_before_its_server_waits_for_it_then_runs_jobs(
    server: tuple[str, ModuleType, str], caplog: pytest.LogCaptureFixture
) -> None:
    kind, backend, prefix = server
    upstream, url = SERVERS[kind]
    port = free_port()
    registry = Registry()
    registry.queue("q", driver=f"{url.format(port=port)}?prefix={prefix}", workers=["w"])
    registry.worker("w", poll_interval=0.05)
    ran = asyncio.Event()

    @registry.job("ping")
    async def ping(job: Job[dict[str, Any]]) -> None:
        ran.set()

    pusher = Registry(default_driver=f"{backend.URL}?prefix={prefix}")
    pusher.queue("q", workers=["w"])
    pusher.worker("w")
    pusher.job("ping")(ping)
    caplog.set_level(logging.WARNING, "conveyor.worker")
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    proxy = Proxy(upstream)
    try:
        job_id = await pusher.push("q", "ping", {})
        async with asyncio.timeout(10):
            while len(_attempts(caplog)) < 3:
                assert not task.done(), "the worker exited instead of waiting for its server"
                await asyncio.sleep(0.02)
        proxy.port = port  # the server appears where the worker looks for it
        await proxy.start()
        await asyncio.wait_for(ran.wait(), 15)
        async with asyncio.timeout(10):
            while (await pusher.job_info(job_id)).state is not JobState.SUCCEEDED:
                await asyncio.sleep(0.02)
    finally:
        worker.stop(now=True)
        await asyncio.wait_for(task, 10)
        await registry.close()
        await pusher.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()
    first = _attempts(caplog)[0]
    assert f"127.0.0.1:{port}" in first and "queue 'q'" in first, first
    assert PASSWORD not in caplog.text


#: An app whose only queue is on a PostgreSQL port nothing listens on.
APP_SOURCE = """
from typing import Any

from conveyor import Job, Registry

registry = Registry(default_driver="postgresql://postgres:{password}@127.0.0.1:{port}/test")
registry.queue("q", workers=["w"])
registry.worker("w", poll_interval=0.1)


@registry.job("noop")
def noop(job: Job[dict[str, Any]]) -> None: ...
"""


def _work(folder: Path, *options: str) -> subprocess.Popen[str]:
    (folder / "deadapp.py").write_text(APP_SOURCE.format(password=PASSWORD, port=free_port()))
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "work", "w", "--app", "deadapp:registry", *options],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_conveyor_work_gives_up_after_its_startup_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    process = _work(tmp_path, "--startup-timeout", "3")  # room for two attempts under load
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1, output
    assert time.monotonic() - started < 20
    assert "Error: worker 'w' gave up after 3s of start-up" in output
    assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1" in output
    assert output.count("start-up attempt") >= 2, output
    assert PASSWORD not in output


def test_sigterm_during_start_up_retries_exits_at_once(tmp_path: Path) -> None:
    process = _work(tmp_path)
    assert process.stdout is not None
    lines: list[str] = []
    while not any("start-up attempt 2" in line for line in lines):
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines) + output
    assert time.monotonic() - signalled < 2.0
    assert "stopped during start-up" in output
    assert PASSWORD not in "".join(lines) + output
