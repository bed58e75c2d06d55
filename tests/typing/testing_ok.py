"""Correct use of conveyor.testing: mypy --strict must accept it, with the payload types known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from conveyor import Job, Registry
from conveyor.testing import PushedJob, use_memory, use_sync

registry = Registry()


@dataclass
class Email:
    to: str


@registry.job("mail.send")
async def send(job: Job[Email]) -> None: ...


async def check() -> None:
    with use_memory(registry) as queues:
        await send.push(Email("a@example.com"))
        assert_type(queues.pushed(send), list[Email])
        assert_type(queues.pushed("mail.send"), list[Any])
        assert_type(queues.pushes(send), list[PushedJob[Email]])
        assert_type(queues.assert_pushed(send, Email("a@example.com")), list[PushedJob[Email]])
        queues.assert_not_pushed(send, Email("b@example.com"), queue="mail")
        await queues.run_all(check=False)
    with use_sync(registry, check=True) as inline:
        await send.push(Email("a@example.com"))
        assert_type(inline.pushed(send), list[Email])
