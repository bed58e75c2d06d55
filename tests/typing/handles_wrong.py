"""Typed-handle mistakes that `mypy --strict` must report; tests/unit/test_handle_typing.py
asserts each error (this file is type-checked, never run)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from conveyor import Job, Registry

registry = Registry()


@dataclass
class Email:
    to: str


@dataclass
class Sms:
    number: str


@registry.job("mail.send")
async def send(job: Job[Email]) -> None:
    """Takes an Email."""


async def main() -> None:
    await send.push(Sms("+1"))
    send.blocking.push({"to": "a dict is not an Email"})
    await send.push_many([Email("a@example.com"), Sms("+1")])
    await send.push(Email("a@example.com"), dealy=5)
    await send(Job("id", "sms", "sms.send", Sms("+1"), 1, 1, {}, 0.0))


class Invoice(BaseModel):
    number: int


@registry.job("invoice.make")
def make(job: Job[Invoice]) -> None:
    """Takes an Invoice, a pydantic model."""


def blocking() -> None:
    make.blocking.push(Email("a@example.com"))
    send.blocking.push(Email("a@example.com"), delay="soon")
