"""conveyor against its peers on one workload, in one run: `make bench-peers`.

Each library gets the same Redis (127.0.0.1:6379), the same job (one INCR through redis-py,
see peers_app.py), one worker process at concurrency 100 started by the library's own command
line, and is measured twice:

- push: PUSHES jobs pushed one at a time from this process, the way a web request pushes;
- process: JOBS jobs queued first, then the time from starting the worker process until the
  counter the jobs increment reaches JOBS (the worker's start-up is included for every one).

The peers are installed by `make bench-peers` into a virtualenv of their own (.venv-peers),
never into the project's. Prints one table; docs/benchmarks.md shows the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers_app  # noqa: E402

BIN = Path(sys.executable).parent


async def conveyor_push(n: int) -> None:
    await peers_app.conveyor_count.push({"n": n})


async def saq_push(n: int) -> None:
    await peers_app.saq_settings["queue"].enqueue("saq_count", n=n)


_arq: object | None = None


async def arq_push(n: int) -> None:
    global _arq
    from arq import create_pool

    if _arq is None:
        _arq = await create_pool(peers_app.ArqSettings.redis_settings)
    await _arq.enqueue_job("arq_count", n, _queue_name="peers-bench-arq")  # type: ignore[attr-defined]


async def taskiq_push(n: int) -> None:
    await peers_app.taskiq_count.kiq(n)


async def huey_push(n: int) -> None:
    peers_app.huey_count(n)  # huey's enqueue is a plain call: its cost is what we time


PEERS: dict[str, tuple[Callable[[int], Awaitable[None]], list[str]]] = {
    "conveyor": (conveyor_push, [str(BIN / "conveyor"), "work", "w", "--app",
                                 "peers_app:registry"]),
    "saq": (saq_push, [str(BIN / "saq"), "peers_app.saq_settings", "--workers", "1"]),
    "arq": (arq_push, [str(BIN / "arq"), "peers_app.ArqSettings"]),
    "taskiq": (taskiq_push, [str(BIN / "taskiq"), "worker", "peers_app:broker", "--workers",
                             "1", "--max-async-tasks", str(peers_app.CONCURRENCY)]),
    "huey": (huey_push, [str(BIN / "huey_consumer"), "peers_app.huey", "-w",
                         str(peers_app.CONCURRENCY), "-k", "thread"]),
}  # fmt: skip


async def measure(name: str, pushes: int, jobs: int) -> tuple[float, float]:
    push, command = PEERS[name]
    client = aioredis.Redis.from_url(peers_app.REDIS)
    await _clear(client)
    started = time.perf_counter()
    for n in range(pushes):
        await push(n)
    push_rate = pushes / (time.perf_counter() - started)
    for n in range(pushes, jobs):
        await push(n)
    started = time.perf_counter()
    worker = subprocess.Popen(
        command,
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while int(await client.get(peers_app.COUNTER) or 0) < jobs:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the worker stopped or took too long")
            await asyncio.sleep(0.01)
        process_rate = jobs / (time.perf_counter() - started)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await _clear(client)
        await client.aclose()
    return push_rate, process_rate


async def _clear(client: aioredis.Redis) -> None:
    keys = [key async for key in client.scan_iter("peers-bench*")]
    keys += [key async for key in client.scan_iter("saq:peers-bench*")]
    keys += [key async for key in client.scan_iter("arq:*")]
    keys += [key async for key in client.scan_iter("huey*peers-bench*")]
    if keys:
        await client.delete(*keys)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--only", nargs="*", default=list(PEERS))
    args = parser.parse_args()
    print(f"{args.jobs:,} jobs of one Redis INCR, one worker process at concurrency "
          f"{peers_app.CONCURRENCY}, Redis on 127.0.0.1")  # fmt: skip
    print(f"| library | push, one at a time (jobs/s) | process (jobs/s) |")
    print("|---|---|---|")
    for name in args.only:
        try:
            push_rate, process_rate = await measure(name, args.pushes, args.jobs)
        except Exception as exc:  # one peer failing must not hide the others' figures
            print(f"| {name} | failed: {type(exc).__name__}: {exc} | |")
            continue
        print(f"| {name} | {push_rate:,.0f} | {process_rate:,.0f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
