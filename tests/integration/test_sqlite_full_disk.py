"""A worker whose SQLite file can take no more writes for a while (a full or failing disk, here
the process's file size limit) keeps what became of its jobs until it can write it."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import Job, Registry
from tests.integration.processes import ROOT

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit"),
]

JOBS = 200

#: Bytes any file of the worker may reach while its disk is "full": a few dozen commits' worth
#: of the -wal file, and more than its log reaches meanwhile.
WAL_ROOM = 120_000

APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent
registry = Registry(default_driver=f"sqlite:///{HERE / 'jobs.db'}")
registry.queue("numbers", workers=["w"], retry=0)
registry.worker("w", concurrency=4, poll_interval=0.05)


@registry.job("mark", queue="numbers")
async def mark(job: Job[dict[str, Any]]) -> None:
    await asyncio.sleep(0.01)
    with open(HERE / f"out-{os.getpid()}.txt", "a") as out:
        out.write(f"{job.payload['n']}\\n")
"""


def _limited(size: int) -> None:
    """In the worker, before it execs: no file it writes may grow past `size` bytes."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG) instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def _states(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        rows = conn.execute("SELECT state, count(*) FROM conveyor_jobs GROUP BY state")
        return dict(rows.fetchall())


def _settled(db: Path) -> int:
    states = _states(db)
    return states.get("succeeded", 0) + states.get("failed", 0)


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handler in this process, which only pushes."""


def _wait_for(what: str, done: Callable[[], bool], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"never {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


async def test_acks_a_full_disk_refused_are_written_once_it_has_room(tmp_path: Path) -> None:
    (tmp_path / "workapp.py").write_text(APP_SOURCE)
    db = tmp_path / "jobs.db"
    registry = Registry(default_driver=f"sqlite:///{db}")
    registry.queue("numbers", workers=["w"], retry=0)
    registry.worker("w")
    registry.job("mark", queue="numbers")(_noop)
    await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
    await registry.close()  # the -wal file checkpointed into the file and removed

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "work", "w", "--app", "workapp:registry"],
            cwd=tmp_path,
            # This checkout's conveyor, not the one installed (editable, from another one).
            env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT / "src", ROOT]))},
            stdout=out,
            stderr=subprocess.STDOUT,
            # The -wal file (made anew) may take some commits, then no more: the disk is full.
            preexec_fn=lambda: _limited(WAL_ROOM),
        )
    try:
        _wait_for("failed to settle", lambda: "settle failed" in log.read_text(), log)
        time.sleep(2)  # long enough for a settler to give up on each ack, as it did
        resource.prlimit(
            worker.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        _wait_for("settled every job", lambda: _settled(db) == JOBS, log)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    text = log.read_text()
    # Before, the settler took the disk's errors for the database refusing those acks, and
    # within half a second wrote jobs that had succeeded as failed (or, that write failing too,
    # left them to run again once their lease ran out).
    assert "writing it as failed" not in text, text[-3000:]
    assert _states(db) == {"succeeded": JOBS}
    ran = [line for path in tmp_path.glob("out-*.txt") for line in path.read_text().split()]
    assert sorted(map(int, ran)) == list(range(JOBS)), "a job ran twice or never"
