"""Typed job handles: `@registry.job(...)` returns a handle that pushes that job (to its queue,
else the default queue), blocking or not, and that still runs the handler when called."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import Job, JobState, PayloadError, Registry, UnknownQueueError
from conveyor.handle import AsyncJobHandle, JobHandle, PlainJobHandle


@dataclass
class Email:
    to: str


def job_of(email: Email) -> Job[Email]:
    return Job("id", "mail", "mail.send", email, 1, 1, {}, 0.0)


def declared_app(driver: str = "memory") -> Registry:
    registry = Registry(default_driver=driver)
    registry.queue("mail", workers=["main"])
    registry.queue("bulk", workers=["main"])
    registry.worker("main")
    return registry


async def test_a_handle_pushes_its_job_to_its_queue_with_the_push_options() -> None:
    registry = declared_app()

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    job_id = await send.push(Email("a@example.com"), delay=60, priority=5, meta={"k": 1})
    info = await registry.job_info(job_id)
    assert info is not None
    assert (info.queue, info.name, info.state) == ("mail", "mail.send", JobState.DELAYED)
    assert (info.priority, info.meta, info.payload) == (5, {"k": 1}, '{"to":"a@example.com"}')
    other = await send.push(Email("b@example.com"), queue="bulk")
    assert (await registry.job_info(other)).queue == "bulk"  # type: ignore[union-attr]
    await registry.close()


async def test_push_many_stores_every_payload_in_order() -> None:
    registry = declared_app()

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    ids = await send.push_many([Email("a@x"), Email("b@x")], retry=0)
    infos = [await registry.job_info(job_id) for job_id in ids]
    assert [(i.payload, i.max_attempts) for i in infos if i] == [
        ('{"to":"a@x"}', 1),
        ('{"to":"b@x"}', 1),
    ]
    await registry.close()


def test_blocking_push_and_push_many_from_code_without_an_event_loop(tmp_path: Path) -> None:
    registry = declared_app(f"sqlite:///{tmp_path / 'jobs.db'}")

    @registry.job("mail.send", queue="mail")
    def send(job: Job[Email]) -> None: ...

    job_id = send.blocking.push(Email("a@x"), unique="once")
    assert send.blocking.push(Email("a@x"), unique="once") == job_id
    more = send.blocking.push_many([Email("b@x")], queue="bulk")
    assert registry.blocking.queue_info()["mail"].pending == 1
    assert registry.blocking.queue_info()["bulk"].pending == len(more) == 1
    registry.blocking.close()


async def test_a_payload_of_the_wrong_shape_is_refused_at_push() -> None:
    registry = declared_app()

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    with pytest.raises(PayloadError, match=r"mail\.send"):
        await send.push({"nobody": 1})  # type: ignore[arg-type]
    await registry.close()


async def test_calling_a_handle_runs_the_handler_itself_for_unit_tests() -> None:
    registry = declared_app()
    seen: list[tuple[str, str]] = []

    @registry.job("mail.send")
    async def send(job: Job[Email]) -> None:
        seen.append(("async", job.payload.to))

    @registry.job("mail.log")
    def log(job: Job[Email]) -> None:
        seen.append((threading.current_thread().name, job.payload.to))

    assert isinstance(send, AsyncJobHandle) and isinstance(log, PlainJobHandle)
    assert isinstance(send, JobHandle)
    await send(job_of(Email("a@x")))
    log(job_of(Email("b@x")))
    assert seen == [("async", "a@x"), (threading.current_thread().name, "b@x")]
    assert registry.jobs["mail.send"].is_async and not registry.jobs["mail.log"].is_async


async def test_calling_a_handle_returns_what_its_handler_returned() -> None:
    """A unit test of a chain page asserts on the cursor it returns, and one of a job with
    keep_result=True on its result: the plain handle used to drop it (None)."""
    registry = declared_app()

    @registry.job("mail.page", chain=True)
    async def page(job: Job[Email]) -> int | None:
        return 1000

    @registry.job("mail.count", keep_result=True)
    def count(job: Job[Email]) -> dict[str, int]:
        return {"rows": 42}

    assert await page(job_of(Email("a@x"))) == 1000
    assert count(job_of(Email("b@x"))) == {"rows": 42}


async def test_a_handle_without_a_queue_pushes_to_the_default_queue() -> None:
    registry = Registry(default_driver="memory", default_queue="jobs")
    registry.queue("jobs", workers=["main"])
    registry.worker("main")

    @registry.job("mail.send")
    async def send(job: Job[Email]) -> None: ...

    info = await registry.job_info(await send.push(Email("a@x")))
    assert info is not None and info.queue == "jobs"
    await registry.close()


async def test_a_handle_without_a_queue_when_the_default_queue_is_not_declared_says_the_fix() -> (
    None
):
    registry = declared_app()

    @registry.job("mail.send")
    async def send(job: Job[Email]) -> None: ...

    with pytest.raises(UnknownQueueError) as caught:
        await send.push(Email("a@x"))
    assert caught.value.name == "default"
    assert str(caught.value) == (
        "job 'mail.send' names no queue and the default queue 'default' is not registered:"
        " give @registry.job('mail.send', queue=...) or push(..., queue=...)"
    )
    assert await send.push(Email("a@x"), queue="mail")  # named at push: fine
    await registry.close()


async def test_the_string_form_keeps_working_beside_the_handle() -> None:
    registry = declared_app()

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    job_id = await registry.push("bulk", "mail.send", {"to": "a@x"})
    info = await registry.job_info(job_id)
    assert info is not None and (info.queue, info.name) == ("bulk", "mail.send")
    await registry.close()
