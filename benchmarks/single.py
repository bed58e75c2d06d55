"""Single pushes only, as issue 16 measures them: `await registry.push(...)` one at a time next
to the raw client's one write (benchmarks/raw.py) and the blocking facade's push from a plain
thread, in blocks of 50 taken in turn so that all three meet the same load (the single-push
part of benchmarks/throughput.py, without the rest of `make bench`).

    .venv/bin/python benchmarks/single.py redis postgres sqlite mysql --runs 5

Per run: a fresh registry, 100 pushes of each kind to warm up, then `--count` of each. Prints
every run's push / raw ratio and the blocking push's time over the async push's, their
medians, and the figures no noise changes: Python function calls and event-loop turns per
async push (cProfile and a counted `_run_once`, over 500 pushes). Run by hand; never part of
the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw import raw_writer
from throughput import LOCAL_SERVERS, Tick, make_registry, single_pushes

from conveyor import Job, JobState, Registry


def _registry(url: str) -> Registry:
    registry = make_registry(url, 10)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        """Never run here: only pushed."""

    return registry


async def one_run(kind: str, url: str, folder: Path, count: int) -> tuple[float, float, float]:
    """(raw writes/s, pushes/s, blocking push time / push time) of one run."""
    registry = _registry(url)
    await registry.purge("bench", JobState.PENDING)
    try:
        async with raw_writer(kind, url, folder) as raw:
            assert raw is not None, f"no raw client for {kind}"
            await single_pushes(registry, raw[0], 100)
            spent = await single_pushes(registry, raw[0], count)
        return count / spent["raw"], count / spent["push"], spent["blocking"] / spent["push"]
    finally:
        await registry.purge("bench", JobState.PENDING)
        await registry.close()


async def calls_and_turns(url: str, count: int = 500) -> tuple[float, float]:
    """Python function calls and event-loop turns per async push."""
    registry = _registry(url)
    for n in range(20):
        await registry.push("bench", "tick", Tick(n))
    loop = asyncio.get_running_loop()
    turns = 0
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        nonlocal turns
        turns += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    profile = cProfile.Profile()
    profile.enable()
    for n in range(count):
        await registry.push("bench", "tick", Tick(n))
    profile.disable()
    loop._run_once = run_once  # type: ignore[attr-defined]
    calls = sum(row[1] for row in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]
    await registry.purge("bench", JobState.PENDING)
    await registry.close()
    return calls / count, turns / count


def _url(kind: str, folder: str) -> str:
    """The driver URL of `kind`: sqlite in `folder`, the servers of this machine (as
    throughput.py's --driver all), or the URL given."""
    return f"sqlite:///{folder}/bench.db" if kind == "sqlite" else LOCAL_SERVERS.get(kind, kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="+", help="sqlite, postgres, mysql, redis (or a URL)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for kind in args.kinds:
        name = kind.partition(":")[0]
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                url = _url(kind, folder)
                runs.append(asyncio.run(one_run(name, url, Path(folder), args.count)))
        with tempfile.TemporaryDirectory() as folder:
            calls, turns = asyncio.run(calls_and_turns(_url(kind, folder)))
        ratios = [push / raw for raw, push, _ in runs]
        slower = [blocking for _, _, blocking in runs]
        print(
            f"{name}: push {statistics.median(p for _, p, _ in runs):,.0f}/s, raw"
            f" {statistics.median(r for r, _, _ in runs):,.0f}/s; push / raw median"
            f" {statistics.median(ratios):.2f} ({' '.join(f'{r:.2f}' for r in ratios)});"
            f" blocking push {statistics.median(slower):.2f}x the async push's time"
            f" ({' '.join(f'{s:.2f}' for s in slower)}); {calls:.0f} Python calls and"
            f" {turns:.1f} loop turns per push",
            flush=True,
        )


if __name__ == "__main__":
    main()
