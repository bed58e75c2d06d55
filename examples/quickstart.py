"""conveyor quickstart: two typed jobs on the embedded SQLite driver, run to completion.

Run it with `make demo`, or `python examples/quickstart.py` inside the virtualenv. Jobs are
stored in ./conveyor.db, the default; delete the file to start afresh.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import BaseModel

from conveyor import Job, JobState, Registry, Worker

registry = Registry()  # queues use the sqlite driver and ./conveyor.db unless told otherwise
registry.queue("default", workers=["main"], retry=2, retry_delay=0.2)
registry.worker("main", concurrency=4, poll_interval=0.1)


@dataclass
class Email:
    to: str
    subject: str


class Invoice(BaseModel):
    number: int
    amount_cents: int


@registry.job("mail.send")
async def send_email(job: Job[Email]) -> None:
    """An async handler; the first attempt to the flaky address fails and is retried."""
    if job.payload.to == "flaky@example.com" and job.attempt == 1:
        raise ConnectionError("SMTP server busy")
    print(f"  sent {job.payload.subject!r} to {job.payload.to} (attempt {job.attempt})")


@registry.job("invoice.render", retry=1)
def render_invoice(job: Job[Invoice]) -> None:
    """A plain function runs in a thread; a negative amount always fails."""
    if job.payload.amount_cents < 0:
        raise ValueError(f"invoice {job.payload.number} has a negative amount")
    print(f"  rendered invoice {job.payload.number}: ${job.payload.amount_cents / 100:.2f}")


def show(title: str, counts: object) -> None:
    print(f"{title}: {counts}")


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  [%(levelname)s] %(message)s")
    await registry.push("default", "mail.send", Email("ada@example.com", "Welcome"))
    await registry.push("default", "mail.send", Email("bob@example.com", "Later"), delay=1.0)
    await registry.push("default", "mail.send", Email("flaky@example.com", "Retried"))
    await registry.push("default", "invoice.render", Invoice(number=7, amount_cents=1999))
    bad = await registry.push("default", "invoice.render", {"number": 8, "amount_cents": -5})
    show("pushed 5 jobs, queue counts", (await registry.queue_info())["default"])

    print("running worker 'main' until the queue settles:")
    await Worker(registry, "main", burst=True).run()

    failed = await registry.job_info(bad)
    assert failed is not None and failed.state is JobState.FAILED and failed.error is not None
    print(f"job {bad} is in failed storage after {failed.attempt} attempts: {failed.error.message}")
    show("queue counts", (await registry.queue_info())["default"])
    show("worker counts", (await registry.worker_info())["main"])
    await registry.close()


if __name__ == "__main__":
    asyncio.run(main())
