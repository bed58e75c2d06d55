"""Publishes and acks written to the socket a batch at a time.

aiormq's `basic_publish` takes the channel's lock, writes one message, waits for the write to
drain and only then lets the next publish in, and `basic_ack` writes one frame per call: a
few event-loop turns per message, which caps a push_many near 4,000 messages/s on these
machines. Here a whole batch becomes one write: every publish of it numbered under the
channel's lock as aiormq numbers them (so aiormq's own reader resolves their confirms), and
acks merged into `multiple` acks where the tags allow. This leans on aiormq's channel
attributes (`lock`, `delivery_tag`, `confirmations`, `write_queue`, `create_future`,
`max_content_size`), public names of aiormq 7.x (the version pyproject.toml pins).
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp import commands as spec
from pamqp import frame
from pamqp.header import ContentHeader

from conveyor.drivers.amqp.topology import QUEUE_HEADER

__all__ = ["Encoder", "Outgoing", "ack_all", "merged_acks", "properties", "publish_all"]

HEADER_FRAME, BODY_FRAME, END = 2, 3, b"\xce"
#: The message-id bit of a content header's property flags.
MESSAGE_ID_FLAG = 0x0080


class Outgoing(NamedTuple):
    """One message to publish: its body, where it goes, and the properties that vary (every
    message is persistent JSON). `queue`, when given, goes in the `conveyor-queue` header,
    which routes a delayed message back to its work queue; a message published to its queue
    directly goes without (a header table is the costliest property to decode)."""

    body: bytes
    exchange: str
    routing_key: str
    queue: str | None
    priority: int
    message_id: str | None


def properties(message: Outgoing) -> spec.Basic.Properties:
    """The message's properties, as pamqp spells them."""
    return spec.Basic.Properties(
        delivery_mode=2,
        content_type="application/json",
        message_id=message.message_id,
        priority=message.priority,
        headers=None if message.queue is None else {QUEUE_HEADER: message.queue},
    )


class Encoder:
    """Publish frames for one channel, built from bytes cached per destination and per
    (queue, priority): pamqp marshals each property of each message anew, which took most
    of a push_many's time."""

    def __init__(self, channel_number: int, max_content_size: int) -> None:
        self.channel_number = channel_number
        self.max_content_size = max_content_size
        self._methods: dict[tuple[str, str], bytes] = {}
        self._headers: dict[tuple[str | None, int], tuple[bytes, int, bytes]] = {}

    def frames(self, message: Outgoing) -> bytes:
        """The method, header and body frames of one publish, as written to the socket."""
        where = (message.exchange, message.routing_key)
        method = self._methods.get(where)
        if method is None:
            publish = spec.Basic.Publish(exchange=where[0], routing_key=where[1])
            method = self._methods[where] = frame.marshal(publish, self.channel_number)
        return b"".join((method, self._header(message), *self._bodies(message.body)))

    def _header(self, message: Outgoing) -> bytes:
        message_id = (message.message_id or "").encode()
        if len(message_id) > 255:  # no short string: pamqp says what is wrong
            header = ContentHeader(0, len(message.body), properties(message))
            return frame.marshal(header, self.channel_number)
        shared = self._headers.get((message.queue, message.priority))
        if shared is None:
            header = ContentHeader(0, 0, properties(message._replace(message_id=None)))
            payload = frame.marshal(header, self.channel_number)[7:-1]
            shared = payload[:4], int.from_bytes(payload[12:14], "big"), payload[14:]
            self._headers[(message.queue, message.priority)] = shared
        start, flags, fields = shared
        if message.message_id is not None:
            flags |= MESSAGE_ID_FLAG  # message-id comes after every property set above
            fields += bytes((len(message_id),)) + message_id
        payload = start + struct.pack(">QH", len(message.body), flags) + fields
        return struct.pack(">BHI", HEADER_FRAME, self.channel_number, len(payload)) + payload + END

    def _bodies(self, body: bytes) -> Iterable[bytes]:
        size = self.max_content_size
        for at in range(0, len(body), size):
            part = body[at : at + size]
            yield struct.pack(">BHI", BODY_FRAME, self.channel_number, len(part)) + part + END


_encoders: weakref.WeakKeyDictionary[aiormq.Channel, Encoder] = weakref.WeakKeyDictionary()


def _encoder(channel: aiormq.Channel) -> Encoder:
    encoder = _encoders.get(channel)
    if encoder is None:
        encoder = _encoders[channel] = Encoder(channel.number, channel.max_content_size)
    return encoder


async def publish_all(
    publisher: AbstractChannel, messages: Sequence[Outgoing], timeout: float
) -> list[object | None]:
    """Publish `messages` on a confirming channel in one write; wait up to `timeout` for the
    broker's confirms. One answer per message: the broker's basic.ack or basic.nack, or None
    when none came in time or the channel closed first."""
    channel = publisher
    assert isinstance(channel, aiormq.Channel) and channel.publisher_confirms
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    confirms: list[asyncio.Future[object]] = []
    encoder = _encoder(channel)
    async with channel.lock:
        frames: list[bytes] = []
        for message in messages:
            channel.delivery_tag += 1
            confirm: asyncio.Future[object] = channel.create_future()
            channel.confirmations[channel.delivery_tag] = confirm
            confirms.append(confirm)
            frames.append(encoder.frames(message))
        await channel.write_queue.put(ChannelFrame(b"".join(frames), should_close=False))
    if confirms:
        await asyncio.wait(confirms, timeout=timeout)
    return [
        confirm.result()
        if confirm.done() and not confirm.cancelled() and confirm.exception() is None
        else None
        for confirm in confirms
    ]


def merged_acks(tags: Iterable[int], unacked: Iterable[int]) -> list[spec.Basic.Ack]:
    """Acks for `tags`, all of them held among `unacked` (every delivery not yet acked on the
    channel): one `multiple` ack for the run of the lowest unacked tags that are all acked
    now, single acks for the rest."""
    acking = set(tags)
    covered = 0
    for tag in sorted(unacked):
        if tag not in acking:
            break
        covered = tag
    frames = [spec.Basic.Ack(delivery_tag=covered, multiple=True)] if covered else []
    frames.extend(spec.Basic.Ack(delivery_tag=tag) for tag in sorted(acking) if tag > covered)
    return frames


async def ack_all(channel: AbstractChannel, tags: Iterable[int], unacked: Iterable[int]) -> None:
    """Acknowledge deliveries `tags` of `channel` in one write (see merged_acks); returns
    once it is written."""
    assert isinstance(channel, aiormq.Channel)
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    frames = merged_acks(tags, unacked)
    if frames:
        # Returns once written to the socket: a connection closed next sends them first.
        written = channel.create_future()
        await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames, written))
        await written
