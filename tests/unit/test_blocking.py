"""The blocking facade: the async API called from plain code, against an SQLite file."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker, blocking
from conveyor.blocking import BlockingRegistry
from conveyor.drivers import lent
from conveyor.spec import DEFAULT_RETENTION


async def ok(job: Job[dict[str, Any]]) -> None:
    """Succeeds."""


async def boom(job: Job[dict[str, Any]]) -> None:
    """Always fails."""
    raise RuntimeError("boom")


def make_registry(db: Path, retention: float = DEFAULT_RETENTION) -> Registry:
    registry = Registry(default_driver=f"sqlite:///{db}")
    registry.queue("q", workers=["w"], retry=0, retention=retention)
    registry.worker("w", poll_interval=0.02)
    registry.job("ok")(ok)
    registry.job("boom")(boom)
    return registry


def run_worker(db: Path) -> None:
    """Work the queue to empty with a second registry on the same file, on its own loop."""

    async def burst() -> None:
        other = make_registry(db)
        try:
            await Worker(other, "w", burst=True).run()
        finally:
            await other.close()

    asyncio.run(burst())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


@pytest.fixture
def registry(db: Path) -> Iterator[Registry]:
    registry = make_registry(db)
    yield registry
    registry.blocking.close()


def test_blocking_push_stores_a_pending_job_and_returns_its_id(registry: Registry) -> None:
    job_id = registry.blocking.push("q", "ok", {"n": 1})
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    info = registry.blocking.job_info(job_id)
    assert info is not None
    assert (info.state, info.attempt, info.name, info.queue) == (JobState.PENDING, 0, "ok", "q")
    assert registry.blocking.queue_info()["q"].pending == 1


def test_blocking_push_passes_options_through(registry: Registry) -> None:
    job_id = registry.blocking.push("q", "ok", {}, delay=3600, priority=5, retry=2)
    info = registry.blocking.job_info(job_id)
    assert info is not None
    assert (info.state, info.priority, info.max_attempts) == (JobState.DELAYED, 5, 3)
    assert registry.blocking.queue_info()["q"].delayed == 1


def test_blocking_push_many_returns_ids_in_order(registry: Registry) -> None:
    ids = registry.blocking.push_many("q", "ok", [{"n": n} for n in range(3)])
    assert len(set(ids)) == 3
    payloads = [registry.blocking.job_info(job_id) for job_id in ids]
    assert [info.payload if info else None for info in payloads] == [
        '{"n":0}',
        '{"n":1}',
        '{"n":2}',
    ]
    listed = registry.blocking.list_jobs("q", JobState.PENDING)
    assert sorted(info.id for info in listed) == sorted(ids)


def test_blocking_job_info_of_an_unknown_id_is_none(registry: Registry) -> None:
    assert registry.blocking.job_info("0" * 32) is None


def test_blocking_retry_failed_moves_a_failed_job_back_to_pending(
    registry: Registry, db: Path
) -> None:
    job_id = registry.blocking.push("q", "boom", {})
    run_worker(db)
    failed = registry.blocking.job_info(job_id)
    assert failed is not None
    assert (failed.state, failed.attempt) == (JobState.FAILED, 1)
    assert failed.error is not None and failed.error.message == "boom"
    assert registry.blocking.queue_info()["q"].failed == 1

    assert registry.blocking.retry_failed("q") == 1
    again = registry.blocking.job_info(job_id)
    assert again is not None
    assert (again.state, again.attempt) == (JobState.PENDING, 0)
    assert registry.blocking.retry_failed("q") == 0


def test_blocking_failed_jobs_by_name_and_after_an_id(registry: Registry, db: Path) -> None:
    booms = sorted(registry.blocking.push("q", "boom", {}) for _ in range(3))
    run_worker(db)

    listed = registry.blocking.list_jobs("q", JobState.FAILED, name="boom", after=booms[0])
    assert [job.id for job in listed] == booms[1:]
    assert registry.blocking.retry_failed("q", name="boom") == 3
    run_worker(db)
    assert registry.blocking.purge("q", name="nobody") == 0
    assert registry.blocking.purge("q", name="boom") == 3


def test_blocking_purge_deletes_failed_jobs_only(registry: Registry, db: Path) -> None:
    doomed = registry.blocking.push("q", "boom", {})
    run_worker(db)
    kept = registry.blocking.push("q", "ok", {}, delay=3600)  # after the run: burst waits for it

    assert registry.blocking.purge("q") == 1
    assert registry.blocking.job_info(doomed) is None
    assert registry.blocking.job_info(kept) is not None
    counts = registry.blocking.queue_info()["q"]
    assert (counts.failed, counts.delayed) == (0, 1)


def test_blocking_purge_of_a_state_and_ids_deletes_only_those(registry: Registry) -> None:
    first, second, third = registry.blocking.push_many("q", "ok", [{}, {}, {}])
    assert registry.blocking.purge("q", JobState.PENDING, [first, third]) == 2
    assert registry.blocking.job_info(first) is None
    assert registry.blocking.job_info(second) is not None
    assert registry.blocking.job_info(third) is None


def test_blocking_worker_info_adds_up_what_workers_recorded(registry: Registry, db: Path) -> None:
    registry.blocking.push_many("q", "ok", [{}, {}])
    registry.blocking.push("q", "boom", {})
    run_worker(db)
    counts = registry.blocking.worker_info()["w"]
    assert (counts.processed, counts.succeeded, counts.failed) == (3, 2, 1)


def _blocking_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "conveyor-blocking" and t.is_alive()}


def test_blocking_close_stops_the_background_loop(db: Path) -> None:
    registry = make_registry(db)
    before = _blocking_threads()
    registry.blocking.push("q", "ok", {})
    # Threads of earlier registries may still be winding down: look only at the new one.
    (loop_thread,) = _blocking_threads() - before
    registry.blocking.close()
    loop_thread.join(timeout=5)
    assert not loop_thread.is_alive()


def test_blocking_close_closes_its_event_loop(db: Path) -> None:
    """Before, close() stopped the loop but never closed it: `python -X dev` warned
    "ResourceWarning: unclosed event loop" for each facade closed."""
    registry = make_registry(db)
    registry.blocking.push("q", "ok", {})
    loop = registry.blocking._portal._loop
    assert loop is not None
    registry.blocking.close()
    assert loop.is_closed()
    registry.blocking.push("q", "ok", {})  # a loop of its own again
    assert registry.blocking.queue_info()["q"].pending == 2


async def test_the_facade_called_from_async_code_is_refused_saying_what_to_await(
    db: Path,
) -> None:
    """Before, a call made from a running loop before the registry opened its drivers ran on
    the facade's loop while blocking this one, and the drivers it opened then belonged to the
    facade's loop: the async code's own `await registry.push(...)` met them there (redis:
    "attached to a different loop"). Now it is refused, whichever loop the drivers are on."""
    registry = make_registry(db)
    try:
        with pytest.raises(RuntimeError, match=r"called from async code.*await registry\.push"):
            registry.blocking.push("q", "ok", {})
        with pytest.raises(RuntimeError, match="called from async code"):
            registry.blocking.queue_info()
        assert registry.blocking._portal._loop is None  # no loop started for nothing
        await registry.push("q", "ok", {})
        with pytest.raises(RuntimeError, match="called from async code"):
            registry.blocking.push("q", "ok", {})
        assert (await registry.queue_info())["q"].pending == 1
    finally:
        await registry.close()


def test_a_stop_waits_for_a_call_that_started_the_loop_again() -> None:
    """Before, a call that started a loop after a stop kept the stopped loop's set of calls:
    the next stop did not wait for it, and its thread waited forever (a push from a plain
    thread while another closed the facade hung, one run in ten under load)."""
    portal = blocking._Portal()
    portal.call(asyncio.sleep(0))
    portal.stop()  # the next call starts a loop of its own
    started, results = threading.Event(), []

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "done"

    caller = threading.Thread(target=lambda: results.append(portal.call(slow())), daemon=True)
    caller.start()
    assert started.wait(10)
    portal.stop()  # waits for `slow` before it stops the loop
    caller.join(10)
    assert results == ["done"]


def test_blocking_close_twice_is_harmless(db: Path) -> None:
    registry = make_registry(db)
    registry.blocking.push("q", "ok", {})
    registry.blocking.close()
    registry.blocking.close()


def test_blocking_close_without_any_call_is_harmless(db: Path) -> None:
    registry = make_registry(db)
    registry.blocking.close()


def test_jobs_pushed_before_close_are_still_there_after_it(db: Path) -> None:
    registry = make_registry(db)
    job_id = registry.blocking.push("q", "ok", {})
    registry.blocking.close()

    other = make_registry(db)
    try:
        info = other.blocking.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
    finally:
        other.blocking.close()


def test_blocking_facade_works_again_after_close(registry: Registry) -> None:
    first = registry.blocking.push("q", "ok", {})
    registry.blocking.close()
    second = registry.blocking.push("q", "ok", {})
    assert second != first
    assert registry.blocking.queue_info()["q"].pending == 2


def test_blocking_facade_is_the_same_object_each_time(registry: Registry) -> None:
    assert registry.blocking is registry.blocking


def test_a_script_pushing_through_the_facade_exits_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "push.py"
    script.write_text(
        "from typing import Any\n"
        "from conveyor import Job, Registry\n"
        f"registry = Registry(default_driver='sqlite:///{tmp_path}/jobs.db')\n"
        "registry.queue('q', workers=['w'])\n"
        "registry.worker('w')\n"
        "@registry.job('j')\n"
        "def j(job: Job[dict[str, Any]]) -> None: ...\n"
        "print(registry.blocking.push('q', 'j', {}))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stderr == ""  # the close at exit raised nothing
    assert len(result.stdout.strip()) == 32


def test_an_interrupt_in_a_lending_thread_is_raised_there_and_the_loop_goes_on() -> None:
    """Ctrl-C while the calling thread runs a statement lent to a push (`connection=`): the
    thread raises it, the push on the loop is cancelled, and the facade's loop still serves
    calls (handed to the loop, the interrupt would have stopped it)."""
    portal = blocking._Portal()
    lender = lent.Lender()
    seen: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    async def push() -> None:
        try:
            await lender.run(interrupted)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(KeyboardInterrupt):
        portal.call(push(), None, lender)
    assert portal.call(asyncio.sleep(0, "served")) == "served"
    portal.stop()
    assert seen == ["cancelled"]


def test_blocking_prune_migrate_presence_pauses_and_throughput(db: Path) -> None:
    """What a cron job, a Django management command or a health check asks from plain code."""
    registry = make_registry(db, retention=0.001)
    assert registry.blocking.migrate() == ["sqlite"]
    first, second = registry.blocking.push_many("q", "ok", [{}, {}])
    run_worker(db)
    shown = registry.blocking.throughput("q", minutes=5)
    assert shown is not None and sum(shown.succeeded) == 2
    assert registry.blocking.workers_alive() == []  # the burst worker said goodbye
    time.sleep(0.01)  # past the retention
    assert registry.blocking.prune("q") == 2
    assert registry.blocking.job_info(first) is None and registry.blocking.job_info(second) is None
    registry.blocking.pause("q")
    assert registry.blocking.paused_queues() == {"q"}
    seen = registry.blocking.overview()  # all of it at once: README names it for plain code
    assert seen.paused == {"q"} and seen.down == {} and "q" in seen.counts
    registry.blocking.close()


def test_the_facade_has_each_of_the_registrys_public_calls() -> None:
    """README: "the facade has each of the registry's other calls too, blocking"; overview
    was missing."""
    internal = {"driver_of", "store"}  # for conveyor's own modules: they hand out drivers
    calls = {
        name
        for name, call in inspect.getmembers(Registry)
        if not name.startswith("_") and inspect.iscoroutinefunction(call)
    }
    assert calls - internal - set(dir(BlockingRegistry)) == set()
