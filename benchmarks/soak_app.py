"""The app of `benchmarks/soak.py --minutes`: the jobs a `conveyor work` process runs while the
soak run pushes, disrupts and samples it (`conveyor work w --app soak_app:registry`).

SOAK_DRIVER is the driver URL; SOAK_ROLE (worker or pusher) names this process's connections
on the server (postgres application_name, redis client name, amqp connection name), so that
the soak counts and drops only its own; SOAK_PROBE is the file the `probe` job appends to.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from conveyor import Job, Registry, Retry, Worker
from conveyor.spec import DEFAULT_RETENTION

#: Seconds a job may run before it times out; the timing-out jobs sleep past it.
TIMEOUT = 0.3
#: The worker's lease: short, so that the jobs of a killed worker come back within the run.
LEASE = 4.0


@dataclass
class Tick:
    n: int


def named(driver: str, role: str) -> str:
    """`driver` with this process's connections named `soak_<role>` where the driver lets."""
    scheme = urlsplit(driver).scheme.split("+")[0]
    key = {"postgresql": "application_name", "postgres": "application_name"}.get(scheme)
    key = key or {"redis": "client_name", "amqp": "name"}.get(scheme)
    if key is None:
        return driver
    return f"{driver}{'&' if '?' in driver else '?'}{key}=soak_{role}"


def kind(n: int) -> str:
    """What job number `n` does, by its last two digits."""
    k = n % 100
    kinds = [(80, "ok"), (86, "raise-once"), (88, "timeout"), (91, "retry-once"), (95, "delayed")]
    kinds += [(98, "unique"), (100, "plain")]
    return next(name for top, name in kinds if k < top)


registry = Registry()
DRIVER = named(os.environ.get("SOAK_DRIVER", "memory://"), os.environ.get("SOAK_ROLE", "worker"))
#: SOAK_RETENTION (seconds): finished jobs are pruned after it (each worker prunes every 60 s),
#: so the jobs kept level off; by default they are kept (7 days), and each is accounted for.
RETENTION = float(os.environ.get("SOAK_RETENTION") or DEFAULT_RETENTION)
registry.queue(
    "soak", driver=DRIVER, workers=["w"], retry=1, retry_delay=0.05, timeout=TIMEOUT,
    retention=RETENTION,
)  # fmt: skip
registry.worker("w", concurrency=20, lease=LEASE, stop_timeout=2)
registry.schedule("soak.every", job="tick", every=1, payload={"n": 0})


@registry.job("tick", queue="soak")
async def tick(job: Job[Tick]) -> None:
    """Succeeds, raises or raises Retry on a first attempt, or sleeps past its timeout."""
    what = kind(job.payload.n)
    if what == "raise-once" and job.attempt == 1:
        raise RuntimeError("soak: first attempt fails")
    if what == "retry-once" and job.attempt == 1:
        raise Retry(delay=0.1)
    if what == "timeout":
        await asyncio.sleep(TIMEOUT * 3)


@registry.job("plain", queue="soak")
def plain(job: Job[Tick]) -> None:
    """A threaded handler: does nothing."""


@registry.job("probe", queue="soak", retry=0)
async def probe(job: Job[Tick]) -> None:
    """Append this process's asyncio tasks and the sizes of the worker's containers to
    SOAK_PROBE: one JSON line per probe."""
    sizes: dict[str, int] = {"tasks": len(asyncio.all_tasks())}
    workers = [o for o in gc.get_objects() if isinstance(o, Worker)]
    for worker in workers:
        sizes.update(containers(worker, "worker", 4, set()))
    for key, driver in registry._drivers.items():  # a benchmark looks inside
        sizes.update(containers(driver, f"driver[{key}]", 4, set()))
    line = {"n": job.payload.n, "time": time.time(), "pid": os.getpid(), "sizes": sizes}
    with Path(os.environ["SOAK_PROBE"]).open("a") as out:
        out.write(json.dumps(line) + "\n")


def containers(obj: object, path: str, depth: int, seen: set[int]) -> Iterator[tuple[str, int]]:
    """The length of every dict, list, set and deque reachable from `obj`'s attributes within
    `depth` steps (not the registry's: its own are the configuration), by attribute path."""
    if depth == 0 or id(obj) in seen or isinstance(obj, Registry | type):
        return
    seen.add(id(obj))
    names = getattr(obj, "__dict__", None)
    slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
    attributes = dict(names) if isinstance(names, dict) else {}
    attributes.update((s, getattr(obj, s)) for s in slots if hasattr(obj, s))
    for name, value in attributes.items():
        if isinstance(value, dict | list | set | frozenset) or type(value).__name__ in _SIZED:
            yield f"{path}.{name}", len(value)
        elif type(value).__module__.startswith(
            ("conveyor", "redis", "aiormq", "psycopg", "asyncmy", "aiomysql")
        ):
            yield from containers(value, f"{path}.{name}", depth - 1, seen)


#: Other containers worth a length: a deque, a WeakSet.
_SIZED = ("deque", "WeakSet", "OrderedDict", "defaultdict", "WeakValueDictionary")
