"""The blocking facade in a process's life, on every driver with storage.

A registry used before `os.fork()` (gunicorn --preload imports the app, and so the
registry, before forking its workers): pushes from a forked child work, through the blocking
facade and from async code, and never go over the parent's connections or SQLite handle, while
the parent keeps pushing beside them. Before, the child's facade handed its calls to the
parent's loop thread, which the child does not have, and waited forever.

Async code that opened the drivers under asyncio.run (startup code), then the facade: the
loop's end closed the drivers, and the facade opens them anew. On a loop closed by hand
(`loop.close()`, which closes nothing), an error saying to close the registry, not asyncio's
"Event loop is closed" or "attached to a different loop"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import Job, Registry
from conveyor.errors import RegistryError
from tests.backends import require_service

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
import asyncio, os, sys, threading
from conveyor import Registry

url = sys.argv[1]
registry = Registry(default_driver=url)
registry.queue("q", workers=["w"])
registry.worker("w")

@registry.job("j", queue="q")
async def j(job): pass

def driver():
    return registry._resolve_driver(registry.queue_spec("q").driver)

registry.blocking.push("q", "j", {})  # the parent opens its drivers before the fork
parents = driver()

def in_threads(count):
    threads = [
        threading.Thread(target=lambda: [registry.blocking.push("q", "j", {}) for _ in range(5)])
        for _ in range(count)
    ]
    for thread in threads: thread.start()
    for thread in threads: thread.join()

def child(blocking):
    import signal
    signal.alarm(30)  # a hang fails the test rather than stalling it
    if blocking:
        in_threads(4)
        registry.blocking.push("q", "j", {}, unique="once")  # on the event loop, everywhere
        assert registry.blocking.queue_info()["q"].pending >= 22
        registry.blocking.close()
    else:
        async def main():
            await registry.push("q", "j", {})
            await registry.close()
        asyncio.run(main())
    assert driver() is not parents, "the child pushed on its parent's driver"
    os._exit(0)

children = []
for blocking in (True, False):
    pid = os.fork()
    if pid == 0:
        try:
            child(blocking)
        except BaseException as error:
            print("child:", type(error).__name__, error, flush=True)
        os._exit(1)
    children.append(pid)
in_threads(4)  # the parent goes on beside its children, on its own connections
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
assert codes == [0, 0], codes
assert driver() is parents
print(registry.blocking.queue_info()["q"].pending)
registry.blocking.close()
"""


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    elif kind == "postgres":
        from tests.backends import postgres

        require_service(kind, 5432, postgres.START)
        prefix = postgres.fresh_prefix()
        yield f"{postgres.URL}?prefix={prefix}"
        await postgres.drop_tables(prefix)
    elif kind == "mysql":
        from tests.backends import mysql

        require_service(kind, 3306, mysql.START)
        prefix = mysql.fresh_prefix()
        yield f"{mysql.URL}?prefix={prefix}"
        await mysql.drop_tables(prefix)
    else:
        from tests.backends import redis

        require_service(kind, 6379, redis.START)
        prefix = redis.fresh_prefix()
        yield f"{redis.URL}?prefix={prefix}"
        await redis.delete_prefix(prefix)


async def test_pushes_from_forked_children(url: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # 1 before the fork; 20 + 1 unique from the blocking child, 1 from the async one; 20 after
    assert done.stdout.split()[-1] == "43"


async def test_a_driver_instance_opened_before_the_fork_is_refused(tmp_path: Path) -> None:
    script = r"""
import os, sys
from conveyor import Registry
from conveyor.drivers.sql.sqlite import SqliteDriver
registry = Registry()
registry.queue("q", driver=SqliteDriver(sys.argv[1]), workers=["w"])
registry.worker("w")
registry.job("j", queue="q")(lambda job: None)
registry.blocking.push("q", "j", {})
pid = os.fork()
if pid == 0:
    try:
        registry.blocking.push("q", "j", {})
    except Exception as error:
        print(error, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(tmp_path / "jobs.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "was opened before this process was forked" in done.stdout, done.stdout + done.stderr
    assert "register it by URL" in done.stdout


async def noop(job: Job[dict[str, int]]) -> None:
    """Does nothing."""


def make_registry(url: str) -> Registry:
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.worker("w")
    registry.job("j", queue="q")(noop)
    return registry


async def after_async(url: str, how: str) -> str:
    """In a thread of its own, as a Flask app would: a push on a loop first, then the facade.
    `how` the loop ends: "close" (the code closes the registry), "run" (asyncio.run's end,
    which closes the drivers: conveyor.loop.LoopEnd) or "bare" (`loop.close()` alone)."""

    def run() -> str:
        registry = make_registry(url)

        async def startup() -> None:
            await registry.push("q", "j", {"n": 1})
            if how == "close":
                await registry.close()

        if how == "bare":
            loop = asyncio.new_event_loop()
            loop.run_until_complete(startup())
            loop.close()
        else:
            asyncio.run(startup())
        try:
            registry.blocking.push("q", "j", {"n": 2}, unique="u")
            registry.blocking.push("q", "j", {"n": 3})
            pending = registry.blocking.queue_info()["q"].pending
            registry.blocking.close()
            return str(pending)
        except RegistryError as error:
            registry.blocking._portal.stop()
            return str(error)

    return await asyncio.to_thread(run)


@pytest.mark.parametrize("how", ["close", "run"])
async def test_async_startup_under_asyncio_run_leaves_the_facade_working(
    url: str, how: str
) -> None:
    assert await after_async(url, how) == "3"


@pytest.mark.parametrize("url", ["mysql", "redis"], indirect=True)
async def test_drivers_left_on_a_loop_closed_by_hand_are_named(url: str) -> None:
    said = await after_async(url, "bare")
    assert "event loop has ended" in said and "await registry.close()" in said, said


def close_while_pushing(url: str) -> tuple[int, list[str], int, int]:
    """Four threads push (half with a unique key, which takes the loop everywhere) while the
    facade is closed ten times: (threads still waiting after 20 s, errors, pushes returned,
    jobs stored)."""
    registry = make_registry(url)
    registry.blocking.push("q", "j", {"n": 0})
    stop = threading.Event()
    pushed = [0, 0, 0, 0]
    errors: list[str] = []

    def pusher(index: int) -> None:
        while not stop.is_set():
            unique = f"{index}-{pushed[index]}" if index % 2 else None
            try:
                registry.blocking.push("q", "j", {"n": 1}, unique=unique)
                pushed[index] += 1
            except Exception as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=pusher, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(10):
        time.sleep(0.02)
        registry.blocking.close()
    stop.set()
    deadline = time.monotonic() + 20
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = sum(thread.is_alive() for thread in threads)
    stored = registry.blocking.queue_info()["q"].pending if not hung else -1
    registry.blocking.close()
    return hung, errors, sum(pushed) + 1, stored


async def test_close_while_threads_push(url: str) -> None:
    """Before, a push handed to the loop as close() stopped it waited forever (every driver),
    a closed SQLite driver's thread connection could be closed under a push (a segfault), and
    a SQL driver opened again on the facade's next loop failed with "bound to a different
    event loop" when its opening had ever been waited for."""
    hung, errors, pushed, stored = await asyncio.to_thread(close_while_pushing, url)
    assert hung == 0
    assert errors == []
    assert stored == pushed
