"""`conveyor work`'s exit line and log lines at a stop say what became of each job it held.

Stopped while its backend is out of reach: the worker reaches its server through a TCP proxy
(tests/backends/proxy.py) that the test cuts once a job runs, then SIGTERMs the worker. Before,
its exit line said "released to run again" of a job whose release never reached the server
(still reserved until its lease ran out), and a job that finished in time but whose ack was
never written made no line at all: exit status 0. Stopped by a second signal: the line said
"after stop_timeout" of a stop that never waited it out, the job left to its thread had no
outcome field in JSON logs, and with --log-format json the exit line was the one line on
stderr that was not JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conveyor import JobState, Registry
from tests.backends import eventually
from tests.backends.proxy import Proxy
from tests.integration.processes import PYTHONPATH, backend_of, clean_backend

pytestmark = pytest.mark.timeout(90)

APP_SOURCE = """
import asyncio
import pathlib
import time
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"])
registry.worker("w", poll_interval=0.05, stop_timeout=1, lease=120)


@registry.job("hold", queue="tasks")
async def hold(job: Job[dict[str, Any]]) -> None:
    (HERE / "started").touch()
    while not (HERE / "go").exists():
        await asyncio.sleep(0.02)


@registry.job("block", queue="tasks")
def block(job: Job[dict[str, Any]]) -> None:
    (HERE / "started").touch()
    while not (HERE / "go").exists():
        time.sleep(0.02)
"""

PORTS = {"redis": 6379, "postgres": 5432}


@pytest.fixture(params=list(PORTS))
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, Proxy]]:
    """(the backend's own URL, a proxy in front of it), the app in tmp_path going through it."""
    url, prefix = backend_of(request.param, tmp_path)
    port = PORTS[request.param]
    proxy = Proxy(port)
    await proxy.start()
    proxied = url.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{proxy.port}/")
    (tmp_path / "stopapp.py").write_text(APP_SOURCE.format(url=proxied))
    yield url, proxy
    await proxy.close()
    await clean_backend(request.param, prefix)


@pytest.mark.parametrize("finished", [False, True], ids=["running", "finished"])
async def test_a_stop_that_could_not_write_a_job_s_outcome_says_so_and_exits_1(
    backend: tuple[str, Proxy], tmp_path: Path, finished: bool
) -> None:
    url, proxy = backend
    registry = _registry(url)
    try:
        job_id = await registry.push("tasks", "hold", {})

        async def cut_then_stop(worker: Process) -> None:
            await proxy.cut()  # the server is out of reach from now on
            if finished:
                (tmp_path / "go").touch()  # the job ends at once: only its ack is missing
            worker.send_signal(signal.SIGTERM)

        status, log = await _stopped(tmp_path, [], cut_then_stop)
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.RESERVED, log  # nothing was written
        assert status == 1, log
        assert f"released to run again: {job_id}" not in log
        assert f"job {job_id} (hold) was not settled" in log
        [last] = log.strip().splitlines()[-1:]
        assert last.startswith("Error: worker 'w' stopped with outcomes the backend never took")
        assert last.endswith(job_id), log
    finally:
        await registry.close()


async def test_a_second_signal_says_it_cut_jobs_short_and_logs_the_job_left_to_its_thread(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "stopapp.py").write_text(
        APP_SOURCE.format(url=url).replace("stop_timeout=1", "stop_timeout=60")
    )
    registry = _registry(url)
    try:
        job_id = await registry.push("tasks", "block", {})

        async def interrupt_twice(worker: Process) -> None:
            worker.send_signal(signal.SIGINT)
            await asyncio.sleep(0.3)
            worker.send_signal(signal.SIGINT)  # long before stop_timeout's 60 s

        status, log = await _stopped(tmp_path, ["--log-format", "json"], interrupt_twice)
    finally:
        await registry.close()
    assert status == 1, log
    *records, last = [json.loads(line) for line in log.strip().splitlines()]  # the error too
    assert (last["level"], last["logger"]) == ("ERROR", "conveyor.cli")
    assert last["message"] == (
        "worker 'w' stopped with jobs still running at a second signal: left to their threads"
        f" until their lease ends: {job_id}"
    )
    [left] = [r for r in records if r.get("outcome") == "left"]
    assert (left["id"], left["job"], left["queue"], left["attempt"]) == (
        job_id,
        "block",
        "tasks",
        1,
    )


def _registry(url: str) -> Registry:
    """The app's registry in this process, which only pushes and inspects."""
    registry = Registry(default_driver=url)
    registry.queue("tasks", workers=["w"])
    registry.worker("w")
    for name in ("hold", "block"):
        registry.job(name, queue="tasks", payload=dict)(_noop)
    return registry


async def _stopped(
    folder: Path, options: list[str], stop: Callable[[Process], Awaitable[None]]
) -> tuple[int, str]:
    """Run `conveyor OPTIONS work w` on the app in `folder`, call `stop` once its job started,
    and return its exit status and output; the job's handler is let go at the end."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", *options, "work", "w", "--app", "stopapp:registry",
        cwd=folder, env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await eventually(_exists(folder / "started"), 30)
        await stop(worker)
        output, _ = await asyncio.wait_for(worker.communicate(), 60)
    finally:
        (folder / "go").touch()
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert worker.returncode is not None
    return worker.returncode, output.decode()


def _exists(path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return path.exists()

    return check


async def _noop(job: object) -> None:
    """Stands in for the app's handler in this process, which only pushes and inspects."""
