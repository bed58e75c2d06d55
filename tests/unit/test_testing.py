"""conveyor.testing: a registry switched to memory for a test, whatever drivers it was given,
its jobs run on demand, and assertions on what was pushed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, UnknownJobError, UnknownQueueError
from conveyor.testing import use_memory, use_sync


@dataclass
class Email:
    to: str


def app_registry(tmp_path: Path) -> Registry:
    """An application's registry as it would be written: a real backend, a sync queue."""
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'app.db'}")
    registry.queue("mail", workers=["main"], retry=2, retry_delay=3600)
    registry.queue("audit", driver="sync", workers=["main"])
    registry.worker("main")
    registry.configure(environ={})
    return registry


async def test_pushes_go_to_memory_not_to_the_registered_backend(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    sent: list[str] = []
    audited: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        sent.append(job.payload.to)

    @registry.job("audit.log", queue="audit")
    async def audit(job: Job[dict[str, str]]) -> None:
        audited.append(job.payload["what"])

    with use_memory(registry) as queues:
        await send.push(Email("ada@example.com"))
        await audit.push({"what": "signup"})
        assert (sent, audited) == ([], [])  # nothing runs by itself, sync queues included
        assert queues.driver.kind == "memory"
        assert (await registry.queue_info())["mail"].pending == 1
    assert not (tmp_path / "app.db").exists()


async def test_the_registry_gets_its_own_drivers_back_after_the_block(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry):
        await send.push(Email("ada@example.com"))
    job_id = await send.push(Email("bob@example.com"))
    assert (await registry.driver_of("mail")).kind == "sqlite"
    assert (await registry.queue_info())["mail"].pending == 1  # bob's only: ada's was in memory
    info = await registry.job_info(job_id)
    assert info is not None and info.state is JobState.PENDING
    await registry.close()


async def test_each_use_starts_empty() -> None:
    registry = Registry(default_driver="memory://")

    @registry.job("j")
    async def j(job: Job[dict[str, int]]) -> None: ...

    with use_memory(registry) as first:
        await j.push({"n": 1})
        assert first.pushed(j) == [{"n": 1}]
    with use_memory(registry) as second:
        second.assert_nothing_pushed()
        assert (await registry.queue_info())["default"].pending == 0


async def test_the_environment_cannot_send_jobs_elsewhere() -> None:
    registry = Registry()
    # Nothing listens on port 1: a push that went there would fail, not pass unnoticed.
    registry.configure(environ={"CONVEYOR_DRIVER": "redis://127.0.0.1:1/0"})

    @registry.job("j")
    async def j(job: Job[dict[str, int]]) -> None: ...

    with use_memory(registry) as queues:
        await j.push({"n": 1})
        assert queues.pushed("j") == [{"n": 1}]
    assert registry.queues["default"].driver == "redis://127.0.0.1:1/0"


async def test_pushed_returns_typed_payloads_in_push_order(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        await send.push_many([Email("b@example.com"), Email("c@example.com")])
        await registry.push("audit", "mail.send", Email("d@example.com"))
        assert queues.pushed(send) == [Email(f"{c}@example.com") for c in "abcd"]
        assert queues.pushed("mail.send", queue="audit") == [Email("d@example.com")]
        assert all(isinstance(payload, Email) for payload in queues.pushed(send))


async def test_pushes_keep_the_options_a_push_asked_for(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry) as queues:
        job_id = await send.push(Email("a@example.com"), delay=60, priority=5, unique="a")
        again = await send.push(Email("a@example.com"), unique="a")
        [push] = queues.pushes(send)
        assert (push.id, push.delay, push.priority, push.unique) == (job_id, 60.0, 5, "a")
        assert (push.max_attempts, push.queue) == (3, "mail")
        assert again == job_id  # the unique push stored nothing, and is not listed


async def test_assert_pushed_matches_payload_queue_and_count(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    @registry.job("audit.log", queue="audit")
    async def audit(job: Job[dict[str, str]]) -> None: ...

    with use_memory(registry) as queues:
        queues.assert_nothing_pushed()
        await send.push(Email("a@example.com"))
        await send.push(Email("a@example.com"))
        queues.assert_pushed(send)
        queues.assert_pushed(send, Email("a@example.com"), times=2)
        queues.assert_pushed("mail.send", Email("a@example.com"), queue="mail")
        queues.assert_not_pushed(send, Email("b@example.com"))
        queues.assert_not_pushed(audit)


async def test_a_failed_assertion_says_what_was_pushed_instead(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        with pytest.raises(AssertionError) as wrong_payload:
            queues.assert_pushed(send, Email("b@example.com"))
        with pytest.raises(AssertionError) as wrong_queue:
            queues.assert_pushed(send, queue="audit")
        with pytest.raises(AssertionError) as wrong_count:
            queues.assert_pushed(send, times=2)
        with pytest.raises(AssertionError) as not_nothing:
            queues.assert_nothing_pushed()
    assert "payload Email(to='b@example.com')" in str(wrong_payload.value)
    assert "'mail.send' to queue 'mail': Email(to='a@example.com')" in str(wrong_payload.value)
    assert "to queue 'audit' at least once, found it 0 time(s)" in str(wrong_queue.value)
    assert "2 time(s), found it 1 time(s)" in str(wrong_count.value)
    assert "Email(to='a@example.com')" in str(not_nothing.value)


async def test_a_job_or_queue_name_the_registry_lacks_is_an_error_not_a_pass(
    tmp_path: Path,
) -> None:
    """A misspelt name matched no push, so assert_not_pushed("mail.sned") passed whatever the
    code pushed, and pushed("mail.sned") was an empty list."""
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        with pytest.raises(UnknownJobError, match=r"mail\.sned"):
            queues.assert_not_pushed("mail.sned")
        with pytest.raises(UnknownJobError, match=r"mail\.sned"):
            queues.pushed("mail.sned")
        with pytest.raises(UnknownQueueError, match="mial"):
            queues.assert_not_pushed(send, queue="mial")
        with pytest.raises(UnknownQueueError, match="mial"):
            queues.pushes(queue="mial")
        queues.assert_not_pushed(send, queue="audit")  # a queue it has: fine


async def test_the_log_says_a_retry_runs_at_once_not_after_the_delay_it_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Queue mail's retry_delay is an hour: the failing test's log said "retrying in
    3600.0s" while the retry ran at once, under both helpers."""
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        raise ConnectionError("refused")

    caplog.set_level(logging.WARNING, "conveyor.worker")
    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        await queues.run_all(check=False)
    with use_sync(registry, check=False):
        await send.push(Email("b@example.com"))
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 4, retries  # retry=2 on each
    assert all("failed, retrying at once: ConnectionError: refused" in m for m in retries)


async def test_run_all_runs_every_job_and_the_jobs_they_push(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    sent: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        sent.append(job.payload.to)

    @registry.job("audit.log", queue="audit")
    async def audit(job: Job[dict[str, str]]) -> None:
        await send.push(Email(job.payload["what"]))

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"), delay=3600)
        await audit.push({"what": "b@example.com"})
        finished = await queues.run_all()
        assert sent == ["a@example.com", "b@example.com"]
        assert [info.name for info in finished] == ["mail.send", "audit.log", "mail.send"]
        assert {info.state for info in finished} == {JobState.SUCCEEDED}
        assert await queues.run_all() == []  # nothing left


async def test_run_all_retries_at_once_whatever_the_retry_delay(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)  # mail: retry=2, retry_delay=3600
    attempts: list[int] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise ConnectionError("smtp down")

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        [info] = await asyncio.wait_for(queues.run_all(), timeout=10)
    assert attempts == [1, 2, 3]
    assert (info.state, info.attempt) == (JobState.SUCCEEDED, 3)


async def test_run_all_raises_for_a_job_that_failed_for_good_after_running_the_rest(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)
    sent: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        if job.payload.to == "bad":
            raise ValueError("no such mailbox")
        sent.append(job.payload.to)

    with use_memory(registry) as queues:
        await send.push_many([Email("bad"), Email("good")])
        with pytest.raises(AssertionError) as raised:
            await queues.run_all()
        assert sent == ["good"]
        message = str(raised.value)
        assert "1 job(s) failed for good" in message
        assert "queue 'mail') after 3 attempt(s): ValueError: no such mailbox" in message
        assert 'raise ValueError("no such mailbox")' in message  # the traceback

        await send.push(Email("bad"))
        [failed] = await queues.run_all(check=False)
        assert failed.state is JobState.FAILED
        assert failed.error is not None and failed.error.type == "ValueError"


async def test_run_all_stops_a_job_that_pushes_itself_for_ever() -> None:
    registry = Registry(default_driver="memory://")

    @registry.job("again")
    async def again(job: Job[dict[str, int]]) -> None:
        await again.push({"n": job.payload["n"] + 1})

    with use_memory(registry) as queues:
        await again.push({"n": 0})
        with pytest.raises(AssertionError, match=r"made 50 attempts and jobs are still due"):
            await queues.run_all(limit=50)
        assert len(queues.pushed(again)) == 51


async def test_run_all_runs_plain_handlers_that_push_through_the_blocking_facade() -> None:
    registry = Registry(default_driver="memory://")
    done: list[int] = []

    @registry.job("first")
    def first(job: Job[dict[str, int]]) -> None:
        second.blocking.push({"n": job.payload["n"] + 1})

    @registry.job("second")
    def second(job: Job[dict[str, int]]) -> None:
        done.append(job.payload["n"])

    with use_memory(registry) as queues:
        await first.push({"n": 1})
        await queues.run_all()
        assert done == [2]


async def test_a_push_inside_a_callers_transaction_is_stored_at_once() -> None:
    registry = Registry(default_driver="memory://")

    @registry.job("j")
    async def j(job: Job[dict[str, int]]) -> None: ...

    with use_memory(registry) as queues:
        await j.push({"n": 1}, connection=object())
        assert queues.pushed(j) == [{"n": 1}]


def test_a_test_without_an_event_loop_runs_the_jobs_with_asyncio_run() -> None:
    registry = Registry(default_driver="memory://")
    done: list[Any] = []

    @registry.job("j")
    def j(job: Job[dict[str, int]]) -> None:
        done.append(job.payload)

    with use_memory(registry) as queues:
        j.blocking.push({"n": 1})
        queues.assert_pushed(j, {"n": 1})
        asyncio.run(queues.run_all())
        assert done == [{"n": 1}]


async def test_run_all_after_the_block_refuses_rather_than_run_on_the_real_backend(
    tmp_path: Path,
) -> None:
    registry = app_registry(tmp_path)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
    with pytest.raises(RuntimeError, match="after its `with use_memory"):
        await queues.run_all()
    await registry.close()
    assert not (tmp_path / "app.db").exists()  # the real backend was not even opened


async def test_cancel_pause_and_resume_work_as_on_the_apps_own_driver(tmp_path: Path) -> None:
    registry = app_registry(tmp_path)
    sent: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None:
        sent.append(job.payload.to)

    with use_memory(registry) as queues:
        cancelled = await send.push(Email("a@example.com"))
        assert await registry.cancel(cancelled)
        await registry.pause("mail")
        await send.push(Email("b@example.com"))
        assert await queues.run_all() == []  # a worker takes nothing from a paused queue
        assert await registry.paused_queues() == {"mail"}
        await registry.resume("mail")
        [info] = await queues.run_all()
        assert (info.state, sent) == (JobState.SUCCEEDED, ["b@example.com"])
        cancelled_info = await registry.job_info(cancelled)
        assert cancelled_info is not None and cancelled_info.state is JobState.CANCELLED
