"""conveyor.testing.use_sync: a registry switched to a fresh sync driver for a test, each job
run inside its push, and a job that failed for good raising in the push that made it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import Job, JobFailedError, JobState, Registry
from conveyor.testing import use_sync


@dataclass
class Email:
    to: str


def app_registry(tmp_path: Path) -> Registry:
    """An application's registry as it would be written: a real backend, two queues."""
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'app.db'}")
    registry.queue("orders", workers=["main"], retry=1, retry_delay=3600)
    registry.queue("mail", workers=["main"], retry=2, retry_delay=3600)
    registry.worker("main")
    registry.configure(environ={})
    return registry


async def test_each_job_runs_inside_its_push_and_the_jobs_it_pushes_inside_theirs(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)
    steps: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        steps.append(f"send {job.payload.to}")

    @registry.job("orders.place", queue="orders")
    async def place(job: Job[dict[str, str]]) -> None:
        steps.append("place")
        await send.push(Email(job.payload["email"]), delay=3600)
        steps.append("placed")

    with use_sync(registry) as queues:
        job_id = await place.push({"email": "ada@example.com"})
        assert steps == ["place", "send ada@example.com", "placed"]
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.SUCCEEDED
        [pushed] = queues.pushes(send)
        assert (pushed.payload, pushed.delay) == (Email("ada@example.com"), 3600.0)
        assert queues.driver.kind == "sync"
    assert not (tmp_path / "app.db").exists()


async def test_a_job_that_failed_for_good_raises_in_its_push_after_its_retries(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)
    attempts: list[int] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        attempts.append(job.attempt)
        raise ConnectionError(f"mailbox {job.payload.to} refused")

    with use_sync(registry) as queues:
        with pytest.raises(JobFailedError) as raised:
            await send.push(Email("bob@example.com"))
        assert attempts == [1, 2, 3]  # retry=2, the hour's retry delay not waited for
        message = str(raised.value)
        assert "(mail.send, queue 'mail') failed for good inside a push" in message
        assert "after 3 attempt(s): ConnectionError: mailbox bob@example.com refused" in message
        assert 'raise ConnectionError(f"mailbox {job.payload.to} refused")' in message
        [failed] = await registry.list_jobs("mail", JobState.FAILED)
        assert queues.pushes(send)[0].id == failed.id


async def test_check_false_records_the_failure_and_the_push_returns(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail", retry=0)
    async def send(job: Job[Email]) -> None:
        raise ValueError("no such mailbox")

    with use_sync(registry, check=False):
        job_id = await send.push(Email("bob@example.com"))
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.FAILED
        assert info.error is not None and info.error.message == "no such mailbox"


async def test_a_job_pushed_by_a_job_that_fails_raises_in_the_outermost_push_only(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)  # orders: retry=1, mail: retry=2
    sends: list[int] = []
    placed: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        sends.append(job.attempt)
        raise ConnectionError("smtp down")

    @registry.job("orders.place", queue="orders")
    async def place(job: Job[dict[str, str]]) -> None:
        await send.push(Email(job.payload["email"]))  # stores it in production: no raise
        placed.append(job.payload["email"])

    with use_sync(registry) as queues:
        with pytest.raises(JobFailedError) as raised:
            await place.push({"email": "ada@example.com"})
        [order] = queues.pushes(place)
        info = await registry.job_info(order.id)
        assert info is not None and info.state is JobState.SUCCEEDED
    assert (sends, placed) == ([1, 2, 3], ["ada@example.com"])  # the order ran once
    assert "(mail.send, queue 'mail') failed for good" in str(raised.value)
    assert "ConnectionError: smtp down" in str(raised.value)


async def test_a_job_that_pushes_itself_deeper_than_python_allows_stops_and_raises(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)
    depths: list[int] = []

    @registry.job("mail.send", queue="mail", retry=0)
    async def again(job: Job[dict[str, int]]) -> None:
        depths.append(job.payload["n"])
        await again.push({"n": job.payload["n"] + 1})

    with use_sync(registry), pytest.raises(JobFailedError, match="RecursionError"):
        await asyncio.wait_for(again.push({"n": 0}), timeout=30)
    assert 10 < len(depths) < 1000


def test_a_plain_push_from_code_without_an_event_loop_raises_too(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    done: list[str] = []

    @registry.job("mail.send", queue="mail", retry=0)
    def send(job: Job[Email]) -> None:
        if job.payload.to == "bad":
            raise ValueError("no such mailbox")
        done.append(job.payload.to)

    with use_sync(registry):
        send.blocking.push(Email("ada@example.com"))
        assert done == ["ada@example.com"]
        with pytest.raises(JobFailedError, match="ValueError: no such mailbox"):
            send.blocking.push(Email("bad"))


async def test_a_failure_is_raised_once_by_the_push_it_happened_in(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail", retry=0)
    async def send(job: Job[Email]) -> None:
        if job.payload.to == "bad":
            raise ValueError("no such mailbox")

    with use_sync(registry) as queues:
        with pytest.raises(JobFailedError) as raised:
            await send.push_many([Email("bad"), Email("ok"), Email("bad")])
        assert "after 1 attempt(s) (and 1 more): ValueError: no such mailbox" in str(raised.value)
        await send.push(Email("ok"))  # the failed jobs before it are not this push's
        assert len(queues.pushed(send)) == 4


async def test_each_use_starts_empty_and_the_registry_gets_its_drivers_back(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail", retry=0)
    async def send(job: Job[Email]) -> None: ...

    with use_sync(registry):
        await send.push(Email("ada@example.com"))
        assert (await registry.queue_info())["mail"].succeeded == 1
    with use_sync(registry) as queues:
        queues.assert_nothing_pushed()
        assert (await registry.queue_info())["mail"].succeeded == 0
    job_id = await send.push(Email("bob@example.com"))
    assert (await registry.driver_of("mail")).kind == "sqlite"
    info = await registry.job_info(job_id)
    assert info is not None and info.state is JobState.PENDING
    await registry.close()


async def test_a_handler_past_its_timeout_fails_its_push(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    started = asyncio.Event()

    @registry.job("mail.send", queue="mail", retry=0, timeout=0.05)
    async def send(job: Job[Email]) -> None:
        started.set()
        await asyncio.Event().wait()  # never set: only the timeout ends it

    with use_sync(registry), pytest.raises(JobFailedError) as raised:
        await send.push(Email("ada@example.com"))
    assert "JobTimeoutError: job 'mail.send' ran longer than its timeout" in str(raised.value)
    assert started.is_set()


async def test_a_chain_runs_every_page_inside_start_chain(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    cursors: list[int] = []

    @registry.job("orders.export", queue="orders", chain=True)
    async def export(job: Job[dict[str, int]]) -> int | None:
        cursor = job.cursor or 0
        cursors.append(cursor)
        return cursor + 1 if cursor < job.payload["pages"] - 1 else None

    with use_sync(registry):
        await registry.start_chain("orders.export", {"pages": 3}, chain_id="export-1")
        assert cursors == [0, 1, 2]
        info = await registry.chain_info("export-1")
        assert info is not None and (info.state, info.pages) == ("done", 3)
