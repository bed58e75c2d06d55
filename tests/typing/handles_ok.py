"""Typed-handle usage that `mypy --strict` must accept; tests/unit/test_handle_typing.py
checks it (this file is type-checked, never run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

from pydantic import BaseModel

from conveyor import Job, JobHandle, Registry

registry = Registry()


@dataclass
class Email:
    to: str


class Sms(TypedDict):
    number: str


@registry.job("mail.send", queue="mail")
async def send(job: Job[Email]) -> None:
    """An async handler: its handle is awaited when called."""


@registry.job("sms.send")
def text(job: Job[Sms]) -> None:
    """A plain handler: its handle is called as it is."""


@registry.job("mail.page", chain=True)
async def page(job: Job[Email]) -> int | None:
    """A chain's page returns the next page's cursor: its handle is still typed by Email."""
    return None


@registry.job("sms.count", keep_result=True)
def count(job: Job[Sms]) -> dict[str, int]:
    """A plain handler whose result is kept."""
    return {"sent": 1}


class Invoice(BaseModel):
    number: int


@registry.job("invoice.make", keep_result=True)
def make(job: Job[Invoice]) -> int:
    """A pydantic model's payload: typed as the model, with pydantic's mypy plugin or without."""
    return job.payload.number


def name_of(handle: JobHandle[Email]) -> str:
    """Any handle of an Email job."""
    return handle.name


async def main() -> None:
    job_id: str = await send.push(Email("a@example.com"), delay=5, priority=2, unique="k")
    ids: list[str] = await send.push_many([Email("b@example.com")], queue="bulk", retry=1)
    await send.push_many((Email(f"{n}@example.com") for n in range(3)), chunk=2)
    blocking_id: str = send.blocking.push(Email("c@example.com"), timeout=30.0)
    await send.push(Email("e@example.com"), job_id="order-7")  # an id of your own: pushed once
    send.blocking.push(Email("e@example.com"), job_id="order-7")
    text.blocking.push_many([{"number": "+1"}], meta={"from": "signup"})
    await text.push({"number": "+44"}, connection=None)
    await send(Job(job_id, "mail", "mail.send", Email("d@example.com"), 1, 1, {}, 0.0))
    text(Job(ids[0], "sms", "sms.send", {"number": "+1"}, 1, 1, {}, 0.0))
    await registry.push("mail", "mail.send", {"to": blocking_id})  # by name: checked at run
    name_of(send)
    await page.push(Email("f@example.com"))
    first = Job("p", "mail", "mail.page", Email("g@example.com"), 1, 1, {}, 0.0)
    cursor: int | None = await page(first)
    sent: dict[str, int] = count(Job("c", "sms", "sms.count", {"number": "+1"}, 1, 1, {}, 0.0))
    name_of(page)
    invoice_id: str = make.blocking.push(Invoice(number=7), delay=timedelta(seconds=5))
    del cursor, sent, invoice_id
