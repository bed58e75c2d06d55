"""Worker processes whose connections go silent finish every job: a TCP proxy between them and
the real server starts dropping every byte of the connections open at that moment, both ways,
and leaves the sockets open, as a failed NAT gateway, a firewall or a failed-over server does.

Each driver call has a deadline (`timeout=1` here) past which its connection is thrown away,
so the workers carry on over new connections. In the second test (`make chaos`, as it takes
about 16 s per driver) the proxy also swallows new connections for 10 s before it heals. The
real server, shared with other tests, is never touched (tests/backends/proxy.py).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import Job, Registry
from tests.backends import require_service
from tests.backends.proxy import Proxy
from tests.integration.processes import Popen, Workers

pytestmark = pytest.mark.timeout(90)

JOBS = 3000
PROCESSES = 2
#: Jobs run before the fault, so that it lands mid-run.
BEFORE_FAULT = 600
#: Every job must be done this long after the fault.
RECOVERY = 30.0
#: Short, so jobs whose reserve answer the blackhole swallowed come back soon.
LEASE = 2.0

#: kind -> (port of the real server, driver URL through the proxy's {port}, with {prefix})
SERVERS = {
    "postgres": (
        5432,
        "postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=2&timeout=1&prefix={prefix}",
    ),
    "mysql": (
        3306,
        "mysql://root@127.0.0.1:{port}/test?connect_timeout=1&timeout=1&prefix={prefix}",
    ),
    "redis": (
        6379,
        "redis://127.0.0.1:{port}/0?socket_connect_timeout=1&timeout=1&prefix={prefix}",
    ),
}

#: The app every worker process loads: each run of a job appends "n pid started ended". The
#: first job in each process waits until every process has started one, so that the fault
#: finds them all at work (a worker started after it is another matter: start-up retries).
APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
import time
from typing import Any

from conveyor import Job, Registry
from tests.integration.processes import through_gate

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("numbers", workers=["w"], retry=5)
registry.worker("w", concurrency=16, poll_interval=0.05, lease={lease})


@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, {processes})
    started = time.time()
    await asyncio.sleep(0.005)
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}} {{started!r}} {{time.time()!r}}\\n")
"""


@dataclass
class Server:
    kind: str
    direct: str  # the driver URL straight to the server, with the test's prefix
    through: str  # the same through the proxy
    proxy: Proxy


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handler in this process, which only pushes and inspects."""


@pytest.fixture(params=list(SERVERS))
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    kind = request.param
    backend = importlib.import_module(f"tests.backends.{kind}")
    port, through = SERVERS[kind]
    require_service(kind, port, backend.START)
    prefix = backend.fresh_prefix()
    proxy = Proxy(port)
    await proxy.start()
    direct = f"{backend.URL}?prefix={prefix}"
    try:
        yield Server(kind, direct, through.format(port=proxy.port, prefix=prefix), proxy)
    finally:
        await proxy.close()
        if kind == "redis":
            await backend.delete_prefix(prefix)
        else:
            await backend.drop_tables(prefix)


@pytest.fixture
def started(tmp_path: Path) -> AsyncIterator[Workers]:
    workers = Workers(tmp_path)
    yield workers
    workers.close()


def _runs(folder: Path) -> list[tuple[int, int, float, float]]:
    """(job number, pid, started, ended) of every run so far."""
    runs = []
    for path in folder.glob("out-*.txt"):
        for line in path.read_text().splitlines():
            number, pid, begun, ended = line.split()
            runs.append((int(number), int(pid), float(begun), float(ended)))
    return runs


def _ran(folder: Path) -> int:
    return sum(path.read_text().count("\n") for path in folder.glob("out-*.txt"))


async def _until(check: object, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not within {timeout}s\n{workers.logs()}"
        await asyncio.sleep(0.02)


def _assert_never_twice_at_once(runs: list[tuple[int, int, float, float]]) -> None:
    by_job: dict[int, list[tuple[float, float]]] = {}
    for number, _, begun, ended in runs:
        by_job.setdefault(number, []).append((begun, ended))
    overlapping = [
        number
        for number, spans in by_job.items()
        for (_, first_end), (second_start, _) in zip(sorted(spans), sorted(spans)[1:], strict=False)
        if second_start < first_end
    ]
    assert overlapping == [], f"jobs run twice at once: {overlapping[:20]}"
    assert set(by_job) == set(range(JOBS)), f"never ran: {sorted(set(range(JOBS)) - set(by_job))}"


async def _run_through_a_blackhole(
    server: Server, tmp_path: Path, workers: Workers, *, new_for: float
) -> None:
    (tmp_path / "workapp.py").write_text(
        APP_SOURCE.format(url=server.through, lease=LEASE, processes=PROCESSES)
    )
    registry = Registry(default_driver=server.direct)
    registry.queue("numbers", workers=["w"])
    registry.worker("w")
    registry.job("mark")(_noop)
    try:
        await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
        processes = [workers.start("w", burst=True) for _ in range(PROCESSES)]

        async def under_way() -> bool:
            return _ran(tmp_path) >= BEFORE_FAULT

        await _until(under_way, 30, f"{BEFORE_FAULT} jobs", workers)
        fault = time.monotonic()
        server.proxy.blackhole(new_for=new_for)

        async def all_succeeded() -> bool:
            return (await registry.queue_info())["numbers"].succeeded == JOBS

        await _until(all_succeeded, RECOVERY, "every job done after the fault", workers)
        recovered = time.monotonic() - fault

        async def exited() -> bool:
            return all(process.poll() is not None for process in processes)

        await _until(exited, 20, "the burst workers' exit", workers)
        _assert_exited_cleanly(processes, workers)
        _assert_never_twice_at_once(_runs(tmp_path))
        counts = (await registry.queue_info())["numbers"]
        assert (counts.pending, counts.delayed, counts.reserved, counts.failed) == (0, 0, 0, 0)
        assert " WARNING " in workers.logs(), "the fault went unreported"
        print(f"{server.kind}: every job done {recovered:.1f}s after the fault")
    finally:
        await registry.close()


def _assert_exited_cleanly(processes: list[Popen], workers: Workers) -> None:
    assert [process.returncode for process in processes] == [0] * PROCESSES, workers.logs()


async def test_workers_finish_every_job_after_their_connections_go_silent(
    server: Server, tmp_path: Path, started: Workers
) -> None:
    await _run_through_a_blackhole(server, tmp_path, started, new_for=0.0)


@pytest.mark.chaos  # about 16 s per driver: `make chaos`
async def test_workers_finish_every_job_when_new_connections_are_swallowed_for_10s(
    server: Server, tmp_path: Path, started: Workers
) -> None:
    await _run_through_a_blackhole(server, tmp_path, started, new_for=10.0)
