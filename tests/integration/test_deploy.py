"""`conveyor work` deployed as a service runs it: SIGTERM while the app still loads (PID 1 of a
container ignores a signal nothing handles), what handlers print reaching a pipe at once,
`--health-port`'s /health and /ready through a worker's life, and several processes of one
worker on one host; on sqlite and on postgres where a backend is involved."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, Registry
from tests.integration.processes import PYTHONPATH, backend_of, clean_backend, run_cli

pytestmark = pytest.mark.timeout(120)

APP_SOURCE = """
from __future__ import annotations

import pathlib
import time

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent
if (HERE / "slow-import").exists():  # an app slow to import (a large Django project)
    (HERE / "importing").touch()
    deadline = time.monotonic() + 10
    while not (HERE / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"], retry=0)
registry.worker("w", poll_interval=0.05, stop_timeout=20)


@registry.job("say", queue="tasks")
def say(job: Job[dict[str, str]]) -> None:
    print(job.payload["text"])


@registry.job("hold", queue="tasks")
def hold(job: Job[dict[str, str]]) -> None:
    (HERE / f"holding-{{job.id}}").touch()
    deadline = time.monotonic() + 30
    while not (HERE / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""


class App:
    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        (folder / "deployapp.py").write_text(APP_SOURCE.format(url=url))
        self.registry = Registry(default_driver=url)
        self.registry.queue("tasks", workers=["w"], retry=0)
        self.registry.worker("w")
        for name in ("say", "hold"):
            self.registry.job(name, queue="tasks")(_noop)

    def start(self, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """`conveyor work w ARGS` as a service manager starts it: stdout and stderr pipes,
        and no PYTHONUNBUFFERED (a container's environment has none unless set)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "conveyor", "work", "w", *args,
             "--app", "deployapp:registry"],
            cwd=self.folder,
            env={**env, "PYTHONPATH": PYTHONPATH},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def push(self, job: str, payload: dict[str, Any]) -> str:
        return self.registry.blocking.push("tasks", job, payload)

    def wait_for(self, pattern: str) -> list[Path]:
        deadline = time.monotonic() + 30
        while not (found := list(self.folder.glob(pattern))):
            assert time.monotonic() < deadline, f"nothing ever made {pattern}"
            time.sleep(0.01)
        return found


async def _noop(job: Job[dict[str, str]]) -> None:
    """Stands in for the app's handlers in this process, which pushes and inspects."""


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url, prefix = backend_of(request.param, tmp_path)
    made = App(tmp_path, url)
    yield made
    made.registry.blocking.close()
    asyncio.run(clean_backend(request.param, prefix))


@pytest.fixture
def sqlite_app(tmp_path: Path) -> App:
    return App(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}")


def _stopped(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_sigterm_while_the_app_loads_stops_the_worker_before_it_starts(sqlite_app: App) -> None:
    (sqlite_app.folder / "slow-import").touch()
    process = sqlite_app.start()
    sqlite_app.wait_for("importing")
    status, err = _stopped(process)
    assert status == 0, err
    assert "SIGTERM received while loading the app: not started" in err, err
    assert "started on queues" not in err, err


def _in_own_pid_namespace() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    tried = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, check=False)
    return tried.returncode == 0


@pytest.mark.skipif(not _in_own_pid_namespace(), reason="needs root and unshare --pid")
def test_sigterm_reaches_the_worker_as_pid_1_while_the_app_loads(sqlite_app: App) -> None:
    """As PID 1 of a PID namespace (a container) the kernel drops a signal nothing handles:
    the worker used to start anyway, and run on until SIGKILL."""
    (sqlite_app.folder / "slow-import").touch()
    unshare = sqlite_app.start(prefix=("unshare", "--pid", "--fork", "--mount-proc"))
    sqlite_app.wait_for("importing")
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGTERM)  # the worker, PID 1 inside
    _, err = unshare.communicate(timeout=60)
    assert unshare.returncode == 0, err
    assert "SIGTERM received while loading the app: not started" in err, err


def test_what_a_handler_prints_reaches_a_pipe_while_the_worker_runs(sqlite_app: App) -> None:
    process = sqlite_app.start()
    sqlite_app.push("say", {"text": "hello from the handler"})
    assert process.stdout is not None
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=30)
    running = process.poll() is None
    status, err = _stopped(process)
    reader.join()
    assert running, err
    assert read == ["hello from the handler\n"], err
    assert status == 0, err
