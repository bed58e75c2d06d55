"""A wrong payload in an assertion of conveyor.testing: mypy must report it."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import Job, Registry
from conveyor.testing import use_memory

registry = Registry()


@dataclass
class Email:
    to: str


@registry.job("mail.send")
async def send(job: Job[Email]) -> None: ...


def check() -> None:
    with use_memory(registry) as queues:
        queues.assert_pushed(send, {"to": "a@example.com"})  # a dict, not an Email
