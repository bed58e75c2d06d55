"""The amqp driver's batched publishing (drivers/amqp/wire.py) on the real broker: one future
per batch counts every confirm, a refusal (basic.nack), a message no queue takes (returned)
and a channel the broker closed are told apart, and a batch longer than a slice goes out
whole, built as it is written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aiormq
import pytest
from aiormq.abc import AbstractChannel

from conveyor.drivers.amqp import wire
from conveyor.drivers.amqp.wire import Confirms, Outgoing, publish_all
from tests.backends import require_service
from tests.backends.amqp import START, URL


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    require_service("amqp", 5672, START)
    connection = await aiormq.connect(URL)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def a_queue(channel: AbstractChannel, **arguments: object) -> str:
    name = f"conveyor-test.wire.{uuid.uuid4().hex[:12]}"
    await channel.queue_declare(name, auto_delete=False, arguments=arguments or None)  # type: ignore[arg-type]
    return name


def messages(queue: str, count: int, built: list[int]) -> Iterator[Outgoing]:
    for n in range(count):
        built.append(n)
        yield Outgoing(b'{"n":%d}' % n, "", queue, None, 0, str(n))


async def test_a_batch_longer_than_a_slice_is_confirmed_whole(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "SLICE", 7)
    queue = await a_queue(channel)
    built: list[int] = []
    try:
        assert await publish_all(channel, messages(queue, 50, built), 10.0) == Confirms(50, 0, 0)
        assert built == list(range(50))
        assert (await channel.queue_declare(queue, passive=True)).message_count == 50
        assert not channel.confirmations  # nothing left behind for aiormq's reader
    finally:
        await channel.queue_delete(queue)


async def test_refused_messages_are_counted_apart_from_confirmed_ones(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "SLICE", 2)
    # The broker nacks a publish to a full queue that rejects overflow.
    queue = await a_queue(channel, **{"x-max-length": 3, "x-overflow": "reject-publish"})
    try:
        assert await publish_all(channel, messages(queue, 5, []), 10.0) == Confirms(3, 2, 0)
    finally:
        await channel.queue_delete(queue)


async def test_a_channel_the_broker_closes_leaves_the_batch_unconfirmed(
    channel: AbstractChannel,
) -> None:
    nowhere = Outgoing(b"{}", f"conveyor-test.none.{uuid.uuid4().hex}", "k", None, 0, None)
    confirms = await publish_all(channel, [nowhere] * 3, 10.0)
    assert confirms[:4] == (0, 0, 3, 0)
    assert channel.is_closed  # 404: no such exchange, the reason the batch carries
    assert isinstance(confirms.closed_by, aiormq.exceptions.ChannelNotFoundEntity)


async def test_messages_no_queue_takes_are_counted_returned_not_confirmed(
    channel: AbstractChannel,
) -> None:
    queue = await a_queue(channel)
    try:
        gone = f"conveyor-test.gone.{uuid.uuid4().hex[:12]}"  # as a queue deleted behind us
        batch = [*messages(queue, 2, []), *messages(gone, 3, [])]
        assert await publish_all(channel, batch, 10.0) == Confirms(2, 0, 0, 3)
        assert not channel.is_closed
        assert not channel.confirmations  # nothing left behind for aiormq's reader
        assert not channel.message_id_delivery_tag  # type: ignore[attr-defined]
    finally:
        await channel.queue_delete(queue)
