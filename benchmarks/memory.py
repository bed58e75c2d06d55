"""The memory a worker uses while it works through a deep queue: `--jobs` (100,000) pending
jobs pushed first, then one worker process at `--concurrency` (100) running them at full speed
(an empty async handler, burst mode) while this process samples its RSS.

    .venv/bin/python benchmarks/memory.py --driver sqlite        # or a driver URL, or all
    .venv/bin/python benchmarks/memory.py --driver redis://127.0.0.1:6379/0 --loop uvloop

Prints, per driver, the worker's RSS once started (the jobs all pending), its peak (the
kernel's high-water mark, VmHWM), the jobs/s it ran at, and issue 16's bound (150 MB).
Run by hand or with `make bench`; never part of the tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor import Job, JobState, Registry, Worker
from conveyor.collector import tune_for_work
from conveyor.loop import LOOPS, run

#: issue 16's bound on a worker's RSS, MB.
BOUND_MB = 150

#: The servers `--driver all` runs on, under a prefix of their own.
LOCAL_SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=memory_",
    "redis": "redis://127.0.0.1:6379/0?prefix=conveyor-memory:",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix=memory_",
}


@dataclass
class Tick:
    n: int


def make_registry(driver: str, concurrency: int) -> Registry:
    registry = Registry()
    registry.queue("memory", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        """Nothing: the worker's own cost is what is measured."""

    return registry


async def fill(driver: str, jobs: int) -> None:
    registry = make_registry(driver, 1)
    try:
        for state in (JobState.PENDING, JobState.SUCCEEDED):
            await registry.purge("memory", state)
        await registry.push_many("memory", "tick", (Tick(n) for n in range(jobs)))
    finally:
        await registry.close()


async def serve(driver: str, concurrency: int) -> None:
    """The worker process: say "ready" once started, run the queue empty, print jobs/s."""
    registry = make_registry(driver, concurrency)
    counts = await registry.queue_info()
    print("ready", flush=True)
    started = time.perf_counter()
    await Worker(registry, "w", burst=True).run()
    took = time.perf_counter() - started
    print(f"{counts['memory'].pending / took:.0f}", flush=True)
    await registry.purge("memory", JobState.SUCCEEDED)
    await registry.close()


def status_mb(pid: int, field: str) -> float:
    """A field of /proc/PID/status (VmRSS, VmHWM) in MB; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def watch(driver: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(RSS once started, peak RSS, jobs/s) of a worker process on `driver`'s full queue."""
    command = [sys.executable, __file__, "--serve", driver, "--loop", args.loop]
    command += ["--concurrency", str(args.concurrency)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as worker:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        at_start = status_mb(worker.pid, "VmRSS")
        peak = at_start
        while worker.poll() is None:
            peak = max(peak, status_mb(worker.pid, "VmHWM"))
            time.sleep(0.05)
        rate = float(worker.stdout.read().split()[-1])
    return at_start, peak, rate


def bench(kind: str, driver: str, folder: Path, args: argparse.Namespace) -> None:
    if kind in ("memory", "sync"):
        print(f"{kind}: no worker process can share its jobs: not measured")
        return
    url = f"sqlite:///{folder / 'memory.db'}" if driver == "sqlite" else driver
    run(fill(url, args.jobs), args.loop)
    at_start, peak, rate = watch(url, args)
    verdict = "under" if peak < BOUND_MB else "OVER"
    print(
        f"{kind}: worker RSS {at_start:.0f} MB with {args.jobs:,} jobs pending, peak"
        f" {peak:.0f} MB while running them at {rate:,.0f} jobs/s (concurrency"
        f" {args.concurrency}, loop {args.loop}): {verdict} the {BOUND_MB} MB bound"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite, a driver URL, or all")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0])
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        tune_for_work()  # as `conveyor work` does
        run(serve(args.serve, args.concurrency), args.loop)
        return
    drivers = {"sqlite": "sqlite", **LOCAL_SERVERS}
    chosen = drivers if args.driver == "all" else {args.driver.partition(":")[0]: args.driver}
    with tempfile.TemporaryDirectory() as folder:
        for kind, driver in chosen.items():
            bench(kind, driver, Path(folder), args)


if __name__ == "__main__":
    main()
