"""What RabbitMQ itself gives a consumer, per kind of queue, and what one worker takes of it.

    .venv/bin/python benchmarks/amqp_queues.py --rounds 4 --reader intake
    .venv/bin/python benchmarks/amqp_queues.py --worker --concurrency 200

Without `--worker`: per round and per queue kind (taking turns, the order reversed every
other round), publish `--count` persistent job-sized records (confirmed, batches of 1,000) to
a fresh durable queue, then consume them at prefetch `--prefetch` with one `multiple` ack per
100. `--reader aiormq` consumes as `benchmarks/raw.py` does (aiormq decodes every frame);
`--reader intake` reads the deliveries with the driver's own frame reader
(conveyor.drivers.amqp.intake), which costs the client so little that the broker is what is
measured. Printed: messages/s, and the CPU of this process and of the broker (`beam.smp`,
read from /proc) over the consume, in cores.

With `--worker`: push `--count` jobs with `push_many`, then one burst worker runs them
(an empty handler); printed: jobs/s, the worker's and the broker's CPU. To compare two
versions of the code, run it under each one's PYTHONPATH in turns.

Needs the RabbitMQ on 127.0.0.1:5672 (or `--url`) and root or the broker's user to read its
CPU time. Run by hand; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.amqp.intake import Delivery, SplittingTransport
from conveyor.drivers.amqp.topology import record_body
from conveyor.drivers.amqp.wire import Outgoing, publish_all
from conveyor.errors import Unsupported

URL = "amqp://guest:guest@127.0.0.1:5672/"

#: The queue kinds, by the arguments they are declared with.
KINDS: dict[str, dict[str, Any]] = {
    "v1+prio": {"x-max-priority": 10},
    "v2+prio": {"x-max-priority": 10, "x-queue-version": 2},
    "v1": {},
    "v2": {"x-queue-version": 2},
}

#: A record as the driver writes one (about 320 bytes).
RECORD = record_body(
    {
        "id": uuid.uuid4().hex, "queue": "bench", "name": "tick", "payload": '{"n":1}',
        "state": "pending", "attempt": 0, "max_attempts": 1, "priority": 0,
        "created_at": time.time(), "available_at": time.time(), "timeout": None,
        "retry_delay": "exponential", "meta": "{}", "error": None, "rescued": 0,
        "finished_at": None,
    }
)  # fmt: skip


def broker_seconds() -> float:
    """The broker's CPU time so far (user + system), from /proc."""
    pid = int(subprocess.check_output(["pgrep", "-f", "beam.smp"]).split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    published: float  # messages/s
    consumed: float  # messages/s
    client: float  # cores
    broker: float  # cores


async def one_round(url: str, kind: str, count: int, prefetch: int, reader: str) -> Round:
    transport = SplittingTransport()
    connection = await aiormq.connect(url, transport_factory=transport)
    publisher = await connection.channel(publisher_confirms=True)
    name = f"bench_queues_{uuid.uuid4().hex[:8]}"
    await publisher.queue_declare(name, durable=True, arguments=KINDS[kind])
    try:
        message = Outgoing(RECORD, "", name, None, 5, uuid.uuid4().hex)
        started = time.perf_counter()
        for first in range(0, count, 1000):
            await publish_all(publisher, [message] * min(1000, count - first), 30.0)
        published = count / (time.perf_counter() - started)
        consumer = await connection.channel()
        await consumer.basic_qos(prefetch_count=prefetch)
        done, seen = asyncio.Event(), 0

        def ack(tag: int) -> None:
            frames = [spec.Basic.Ack(delivery_tag=tag, multiple=True)]
            consumer.write_queue.put_nowait(ChannelFrame.marshall(consumer.number, frames, None))

        def batch(deliveries: list[Delivery]) -> None:
            nonlocal seen
            before, seen = seen, seen + len(deliveries)
            if seen // 100 != before // 100 or seen == count:
                ack(deliveries[-1].tag)
            if seen == count:
                done.set()

        async def each(message: Any) -> None:
            batch([Delivery("", message.delivery.delivery_tag, False, 0, None, message.body)])

        if reader == "intake":
            assert transport.reader is not None
            transport.reader.split(consumer.number, batch)  # type: ignore[arg-type]
        started, cpu, broker = time.perf_counter(), time.process_time(), broker_seconds()
        await consumer.basic_consume(name, each)
        await asyncio.wait_for(done.wait(), 300)
        took = time.perf_counter() - started
        client, broker = time.process_time() - cpu, broker_seconds() - broker
        return Round(published, count / took, client / took, broker / took)
    finally:
        await publisher.queue_delete(name)
        await connection.close()


@dataclass
class Tick:
    n: int


async def worker_round(url: str, count: int, concurrency: int) -> None:
    registry = Registry()
    registry.queue("bench_queues", driver=url, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency, poll_interval=0.5)
    done = 0

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        nonlocal done
        done += 1

    for state in (JobState.PENDING, JobState.FAILED):
        with contextlib.suppress(Unsupported):
            await registry.purge("bench_queues", state)  # what an interrupted run left
    for first in range(0, count, 1000):
        batch = [Tick(n) for n in range(first, min(first + 1000, count))]
        await registry.push_many("bench_queues", "tick", batch)
    started, cpu, broker = time.perf_counter(), time.process_time(), broker_seconds()
    await Worker(registry, "w", burst=True).run()
    took = time.perf_counter() - started
    cpu, broker = time.process_time() - cpu, broker_seconds() - broker
    assert done == count, (done, count)
    await registry.close()
    print(
        f"worker: {count / took:,.0f} jobs/s, {cpu / count * 1e6:.0f} µs CPU per job, worker"
        f" {cpu / took:.2f} and broker {broker / took:.2f} of a core (concurrency"
        f" {concurrency}, load {os.getloadavg()[0]:.2f})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS), help="of " + ", ".join(KINDS))
    parser.add_argument("--reader", choices=("intake", "aiormq"), default="intake")
    parser.add_argument("--worker", action="store_true", help="one worker, not the queues")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    if args.worker:
        await worker_round(args.url, args.count, args.concurrency)
        return
    kinds = args.kinds.split(",")
    rounds: dict[str, list[Round]] = {kind: [] for kind in kinds}
    for number in range(args.rounds):
        for kind in kinds if number % 2 == 0 else kinds[::-1]:
            got = await one_round(args.url, kind, args.count, args.prefetch, args.reader)
            rounds[kind].append(got)
            print(
                f"round {number} {kind:8} publish {got.published:8,.0f}/s consume"
                f" {got.consumed:8,.0f}/s  client {got.client:.2f} broker {got.broker:.2f}"
                f" of a core, load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    for kind, runs in rounds.items():
        consumed = [run.consumed for run in runs]
        print(
            f"{kind:8} ({args.reader}): consume median {statistics.median(consumed):,.0f}/s"
            f" ({min(consumed):,.0f}-{max(consumed):,.0f}), publish median"
            f" {statistics.median(run.published for run in runs):,.0f}/s"
        )


if __name__ == "__main__":
    asyncio.run(main())
