"""`conveyor work` deployed as a service runs it: SIGTERM while the app still loads (PID 1 of a
container ignores a signal nothing handles), what handlers print reaching a pipe at once,
`--health-port`'s /health and /ready through a worker's life, and several processes of one
worker on one host; on sqlite and on postgres where a backend is involved."""

from __future__ import annotations

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
from tests.integration.processes import PYTHONPATH, app_on, run_cli

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
    """The app's handlers, not run in this process (it pushes)."""


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    with app_on(request.param, tmp_path, App) as made:
        yield made


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
    assert "PID 1" not in err, err


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
    assert "running as PID 1" in err and "tini" in err, err


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _probe(port: int, path: str) -> tuple[int, Any]:
    """What a Kubernetes httpGet probe gets: the status and the JSON body; (0, None) while
    nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
    except OSError:
        return 0, None


def _wait_for_probe(port: int, path: str, status: int, state: str) -> Any:
    deadline = time.monotonic() + 30
    while (got := _probe(port, path))[0] != status or got[1]["status"] != state:
        assert time.monotonic() < deadline, f"{path} never answered {status} {state}: {got}"
        time.sleep(0.05)
    return got[1]


def test_health_answers_while_the_process_runs_and_ready_while_it_works(app: App) -> None:
    port = _free_port()
    process = app.start("--health-port", str(port))
    try:
        ready = _wait_for_probe(port, "/ready", 200, "working")
        app.push("hold", {})
        app.wait_for("holding-*")
        health = _wait_for_probe(port, "/health", 200, "working")
        process.send_signal(signal.SIGTERM)
        stopping = _wait_for_probe(port, "/ready", 503, "stopping")
        still_alive = _wait_for_probe(port, "/health", 200, "stopping")
        (app.folder / "release").touch()
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    [worker] = ready["workers"]
    assert worker["identity"] == f"w:{socket.gethostname()}:{process.pid}"
    assert worker["state"] == "working"
    assert health["workers"][0]["running"] == 1
    assert stopping["workers"][0]["state"] == still_alive["workers"][0]["state"] == "stopping"


def test_health_says_starting_and_is_not_ready_while_the_backend_is_out_of_reach(
    tmp_path: Path,
) -> None:
    app = App(tmp_path, "postgresql://127.0.0.1:1/test")  # nothing listens on port 1
    port = _free_port()
    process = app.start("--health-port", str(port))
    try:
        starting = _wait_for_probe(port, "/health", 200, "starting")
        not_ready = _wait_for_probe(port, "/ready", 503, "starting")
    finally:
        status, err = _stopped(process)
    assert status == 0, err
    assert starting["workers"][0]["state"] == not_ready["workers"][0]["state"] == "starting"
    assert "stopped during start-up" in err, err


def test_health_port_taken_is_an_error_naming_the_option(sqlite_app: App) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = sqlite_app.start("--health-port", str(taken.getsockname()[1]))
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "cannot serve health on 127.0.0.1:" in err and "--health-port" in err, err


def test_processes_of_one_worker_on_one_host_each_stop_on_their_own_signal(app: App) -> None:
    """N `conveyor work w` on one host (a systemd template unit, supervisord's numprocs):
    each is its own presence, and a signal stops only the process it is sent to."""
    ports = [_free_port(), _free_port()]
    first, second = (app.start("--health-port", str(port)) for port in ports)
    try:
        for port in ports:
            _wait_for_probe(port, "/ready", 200, "working")
        listed = json.loads(run_cli(app.folder, "deployapp:registry", "list", "--json").stdout)
        first_status, first_err = _stopped(first)
        assert _probe(ports[1], "/ready")[0] == 200
        app.push("say", {"text": "after the first stopped"})
        assert second.stdout is not None
        line = second.stdout.readline()
    finally:
        second_status, second_err = _stopped(second)
    assert (first_status, second_status) == (0, 0), first_err + second_err
    assert sorted(p["identity"] for p in listed["alive"]) == sorted(
        f"w:{socket.gethostname()}:{p.pid}" for p in (first, second)
    )
    assert line == "after the first stopped\n", second_err
