"""Pushes from a process that is shutting down, on redis, as a user's script makes them.

From an atexit handler, the process's first push works: before, importing redis-py there
failed with "RuntimeError: can't register atexit after shutdown" (its import of
concurrent.futures' ThreadPoolExecutor); and on Python 3.12.0 and 3.12.1, where no thread
starts in an atexit handler (3.12.2 allows it again), with "can't create new thread at
interpreter shutdown" (the facade's loop thread, and the SQLite driver's). From a `__del__`
run once the interpreter finalizes, where no thread can start, the push is a RegistryError
saying so and what to do: before, the first failed with "ImportError: sys.meta_path is None"
and one after a push hung forever."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import JobState, Registry
from tests.backends import require_service
from tests.backends.redis import START, URL, delete_prefix, fresh_prefix

pytestmark = pytest.mark.timeout(120)

#: What both scripts start with: a registry on the URL given, with one job.
PREAMBLE = r"""
import atexit, sys
from conveyor import Job, Registry

registry = Registry(default_driver=sys.argv[1])
registry.queue("q", workers=["w"])
registry.worker("w")

@registry.job("item")
async def item(job: Job[dict]) -> None: ...
"""

SCRIPT = (
    PREAMBLE
    + r"""
class Holder:
    def __del__(self) -> None:
        registry.blocking.push("q", "item", {"from": "__del__"})

if sys.argv[2] == "atexit":
    atexit.register(lambda: print(registry.blocking.push("q", "item", {}), flush=True))
else:
    if sys.argv[2] == "del-after-push":
        registry.blocking.push("q", "item", {})
    holder = Holder()  # a module global: deleted as the interpreter finalizes
"""
)


def run(url: str, how: str, script: str = SCRIPT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, url, how], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
async def url() -> AsyncIterator[str]:
    require_service("redis", 6379, START)
    prefix = fresh_prefix()
    yield f"{URL}?prefix={prefix}"
    await delete_prefix(prefix)


async def test_the_first_push_from_an_atexit_handler_is_stored(url: str) -> None:
    await _stored_from_atexit(url)


async def test_the_first_push_from_an_atexit_handler_is_stored_on_sqlite(tmp_path: Path) -> None:
    await _stored_from_atexit(f"sqlite:///{tmp_path / 'jobs.db'}")


async def _stored_from_atexit(url: str, script: str = SCRIPT) -> None:
    done = run(url, "atexit", script)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.worker("w")
    try:
        info = await registry.job_info(done.stdout.strip())
        assert info is not None and info.state is JobState.PENDING
    finally:
        await registry.close()


@pytest.mark.parametrize("how", ["del", "del-after-push"])
def test_a_push_from_del_at_finalization_says_why_it_cannot_run(url: str, how: str) -> None:
    done = run(url, how)
    assert "conveyor.errors.RegistryError: the interpreter is finalizing" in done.stderr
    assert "make it earlier, from an atexit handler" in done.stderr
    assert "never awaited" not in done.stderr


AFTER_USE = (
    PREAMBLE
    + r"""
def last() -> None:  # one from the calling thread, one (a unique key) on the event loop
    print(registry.blocking.push("q", "item", {}), flush=True)
    print(registry.blocking.push("q", "item", {}, unique="last"), flush=True)

atexit.register(last)  # before the facade's first use, as an application registers it
print(registry.blocking.push("q", "item", {}), flush=True)
"""
)


async def test_pushes_from_an_atexit_handler_leave_no_driver_open() -> None:
    """Before, the facade's own atexit close ran first (registered at its first use, after the
    application's handler): the handler's pushes opened the drivers again and left them open,
    and on postgres the interpreter's exit printed "Task was destroyed but it is pending!" for
    each of psycopg's pool tasks."""
    from tests.backends import postgres

    require_service("postgres", 5432, postgres.START)
    prefix = postgres.fresh_prefix()
    url = f"{postgres.URL}?prefix={prefix}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", AFTER_USE, url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        ids = done.stdout.split()
        assert len(set(ids)) == 3
        registry = Registry(default_driver=url)
        registry.queue("q", workers=["w"])
        registry.worker("w")
        try:
            for job_id in ids:
                info = await registry.job_info(job_id)
                assert info is not None and info.state is JobState.PENDING
        finally:
            await registry.close()
    finally:
        await postgres.drop_tables(prefix)


IN_TRANSACTION = (
    PREAMBLE
    + r"""
import psycopg

def last() -> None:  # the first use: in the caller's own transaction, committed on leaving
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as conn:
        print(registry.blocking.push("q", "item", {}, connection=conn), flush=True)

atexit.register(last)
"""
)


async def test_a_push_in_the_callers_transaction_from_an_atexit_handler_is_stored() -> None:
    """On Python 3.12.0 and 3.12.1 the facade's loop runs in the calling thread there (no
    thread starts): the statements on the caller's connection then run at once rather than
    wait for that thread to serve them, which would have waited for ever."""
    from tests.backends import postgres

    require_service("postgres", 5432, postgres.START)
    prefix = postgres.fresh_prefix()
    try:
        await _stored_from_atexit(f"{postgres.URL}?prefix={prefix}", IN_TRANSACTION)
    finally:
        await postgres.drop_tables(prefix)
