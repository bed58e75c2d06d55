"""What the multi-process tests share: starting `conveyor work` processes on an app written into
a folder, reading back which process ran which job, and checking every job ran exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol, TypeVar

from conveyor import Registry
from tests.backends import amqp as amqp_backend
from tests.backends import mysql as mysql_backend
from tests.backends import postgres as postgres_backend
from tests.backends import redis as redis_backend
from tests.backends import require_service

Popen = subprocess.Popen[bytes]

#: The repository, put on the worker processes' path so their app can import this module.
ROOT = Path(__file__).resolve().parents[2]
#: Their PYTHONPATH: this tree's conveyor first, not the one the virtualenv was installed from
#: (a second checkout's tests would run the first's code in their subprocesses).
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])

_gate_open = False


async def through_gate(folder: Path, processes: int, timeout: float = 20.0) -> None:
    """Called by a worker process's jobs: the first one waits until `processes` processes have
    each started a job, so none can finish the queue before the others are up; after that
    (or with one process) it returns at once."""
    global _gate_open
    if _gate_open or processes == 1:
        return
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < processes:
        if time.monotonic() > deadline:
            raise RuntimeError("another worker process never started a job")
        await asyncio.sleep(0.01)
    _gate_open = True


class Workers:
    """`conveyor work` processes of workapp:registry in a folder, each logging to a file of its
    own; `close` kills any still alive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[Popen, IO[str]]] = []

    def start(self, worker: str = "w", *, burst: bool) -> Popen:
        command = [sys.executable, "-m", "conveyor", "work", worker, "--app", "workapp:registry"]
        number = len(list(self.folder.glob("worker-*.log")))
        log = (self.folder / f"worker-{number}.log").open("w")
        process = subprocess.Popen(
            [*command, "--burst"] if burst else command,
            cwd=self.folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": PYTHONPATH},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append((process, log))
        return process

    def logs(self) -> str:
        return worker_logs(self.folder)

    def close(self) -> None:
        for process, log in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


@contextmanager
def workers(folder: Path, count: int, *, burst: bool = True) -> Iterator[list[Popen]]:
    """`count` worker processes of the app in `folder`, killed if still running at exit."""
    started = Workers(folder)
    try:
        yield [started.start(burst=burst) for _ in range(count)]
    finally:
        started.close()


def worker_logs(folder: Path) -> str:
    """Everything the worker processes of `folder` printed, for failure messages."""
    return "\n".join(path.read_text() for path in sorted(folder.glob("worker-*.log")))


def assert_every_job_ran_once(folder: Path, jobs: int, processes: list[Popen]) -> None:
    """The apps append "n pid ..." to out-<pid>.txt per run: jobs 0..jobs-1 each ran exactly
    once, and every process ran some."""
    per_process: dict[int, list[int]] = {}
    for path in folder.glob("out-*.txt"):
        for line in path.read_text().splitlines():
            number, pid = line.split()[:2]
            per_process.setdefault(int(pid), []).append(int(number))
    assert {p.pid for p in processes} == set(per_process), "a process did no work"
    ran = Counter(n for numbers in per_process.values() for n in numbers)
    twice = sorted(n for n, count in ran.items() if count > 1)
    assert twice == [], f"jobs run more than once: {twice[:20]}"
    assert set(ran) == set(range(jobs)), f"never ran: {sorted(set(range(jobs)) - set(ran))}"


#: The drivers the multi-process tests run on, each with its own backend.
KINDS = ["sqlite", "postgres", "mysql", "redis"]


def backend_of(kind: str, tmp_path: Path) -> tuple[str, str]:
    """A URL of `kind` with tables (or keys) of their own, and their prefix; skips (or fails
    under CI) when the service is down."""
    prefix = "t" + redis_backend.fresh_prefix().split(":")[1] + "_"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}", prefix
    if kind == "amqp":
        require_service(kind, 5672, amqp_backend.START)
        return f"{amqp_backend.URL}?prefix={prefix}", prefix
    backend = {"redis": redis_backend, "postgres": postgres_backend, "mysql": mysql_backend}[kind]
    port = {"redis": 6379, "postgres": 5432, "mysql": 3306}[kind]
    require_service(kind, port, backend.START)
    return f"{backend.URL}?prefix={prefix}", prefix


async def clean_backend(kind: str, prefix: str) -> None:
    """Drop what `backend_of` made for `kind`."""
    if kind == "redis":
        await redis_backend.delete_prefix(prefix)
    elif kind == "postgres":
        await postgres_backend.drop_tables(prefix)
    elif kind == "mysql":
        await mysql_backend.drop_tables(prefix)
    elif kind == "amqp":
        await amqp_backend.delete_prefix(prefix, {"q"})


class HasRegistry(Protocol):
    registry: Registry


A = TypeVar("A", bound=HasRegistry)


@contextmanager
def app_on(kind: str, folder: Path, make: Callable[[Path, str], A]) -> Iterator[A]:
    """The app `make(folder, url)` makes on a backend of `kind` of its own (`backend_of`); its
    registry closed and the backend cleaned at exit."""
    url, prefix = backend_of(kind, folder)
    made = make(folder, url)
    try:
        yield made
    finally:
        made.registry.blocking.close()
        asyncio.run(clean_backend(kind, prefix))


def run_cli(
    folder: Path, app: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`conveyor ARGS --app APP` run in `folder` as a user would, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "--app", app],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
