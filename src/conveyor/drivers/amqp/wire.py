"""Publishes and acks written to the socket a batch at a time.

aiormq's `basic_publish` takes the channel's lock, writes one message, waits for the write to
drain and only then lets the next publish in, and `basic_ack` writes one frame per call: a
few event-loop turns per message, which caps a push_many near 4,000 messages/s on these
machines. Here a batch goes out in a few large writes: every publish of it numbered under the
channel's lock as aiormq numbers them (so aiormq's own reader resolves their confirms), and
acks merged into `multiple` acks where the tags allow. This leans on aiormq's channel
attributes (`lock`, `delivery_tag`, `confirmations`, `write_queue`, `create_future`,
`max_content_size`), public names of aiormq 7.x (the version pyproject.toml pins).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import weakref
from collections.abc import Iterable
from typing import NamedTuple

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.channel import Returning
from pamqp import commands as spec
from pamqp import frame
from pamqp.header import ContentHeader

from conveyor.drivers.amqp.pipeline import closing
from conveyor.drivers.amqp.topology import ROUTE_HEADER

__all__ = ["Confirms", "Encoder", "Outgoing", "ack_all", "merged_acks", "properties", "publish_all"]

HEADER_FRAME, BODY_FRAME, END = 2, 3, b"\xce"
#: The message-id bit of a content header's property flags.
MESSAGE_ID_FLAG = 0x0080


class Outgoing(NamedTuple):
    """One message to publish: its body, where it goes, and the properties that vary (every
    message is persistent JSON). `queue`, when given, is a work queue's name (prefix
    included), which goes in the `conveyor-work-queue` header that routes a delayed message
    back to it; a message published to its queue directly goes without (a header table is
    the costliest property to decode)."""

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
        headers=None if message.queue is None else {ROUTE_HEADER: message.queue},
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
            # Mandatory: a message no queue takes (its queue deleted behind the driver) comes
            # back (basic.return) instead of being confirmed and dropped.
            publish = spec.Basic.Publish(exchange=where[0], routing_key=where[1], mandatory=True)
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


class Confirms(NamedTuple):
    """A batch's answers: messages the broker confirmed (basic.ack), refused (basic.nack),
    left unanswered (no answer in time, or the channel closed first), and returned because no
    queue took them (basic.return: a queue deleted behind the driver); `closed_by`: the
    broker's reason when it closed the channel before answering them all."""

    acked: int
    refused: int
    missing: int
    returned: int = 0
    closed_by: BaseException | None = None


#: Messages encoded and written at a time within one publish_all: the broker stores and
#: confirms the first ones while the rest are encoded.
SLICE = 200


class _Batch:
    """What aiormq's reader resolves for every message of one batch, in place of a future per
    message: it stands in `channel.confirmations` under each of the batch's delivery tags, and
    counts the answers. One future per batch, registered with the channel (so a channel that
    closes rejects it), instead of one per message with its done callbacks and store entries:
    those took about a third of a push_many."""

    __slots__ = ("acked", "future", "refused", "returned", "sealed", "sent")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.sent = self.acked = self.refused = self.returned = 0
        self.sealed = False  # every message written: the last answer completes the batch

    def seal(self) -> None:
        self.sealed = True
        self._answered()

    # -- the part of asyncio.Future that aiormq's Channel._confirm_delivery calls -------------

    def done(self) -> bool:
        return self.future.done()

    def cancelled(self) -> bool:
        return self.future.cancelled()

    def set_result(self, answer: object) -> None:
        if isinstance(answer, spec.Basic.Ack):
            self.acked += 1
        else:
            self.refused += 1
        self._answered()

    def set_exception(self, error: BaseException) -> None:
        if isinstance(error, aiormq.exceptions.PublishError):
            self.returned += 1  # a basic.return; its basic.ack, which follows, is ignored
        else:
            self.refused += 1  # a basic.nack, as aiormq's DeliveryError
        self._answered()

    def heard(self) -> int:
        """How many of its messages the broker has answered so far."""
        return self.acked + self.refused + self.returned

    def _answered(self) -> None:
        if self.sealed and self.heard() == self.sent and not self.future.done():
            self.future.set_result(None)


async def publish_all(
    publisher: AbstractChannel, messages: Iterable[Outgoing], timeout: float
) -> Confirms:
    """Publish `messages` on a confirming channel, SLICE messages per write, each written
    before the next is encoded (so `messages` may be a generator that builds them); wait up
    to `timeout` for the broker's confirms, or until the channel closes."""
    channel = publisher
    assert isinstance(channel, aiormq.Channel) and channel.publisher_confirms
    if closing(channel):
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    encoder = _encoder(channel)
    future: asyncio.Future[None] = channel.create_future()
    batch = _Batch(future)
    confirmations: dict[int, object] = channel.confirmations  # type: ignore[assignment]
    # How aiormq's reader finds the confirmation a basic.return belongs to.
    returns = channel.message_id_delivery_tag
    message_ids: list[str] = []
    first = 0
    try:
        async with channel.lock:
            first = channel.delivery_tag + 1
            remaining = iter(messages)
            while part := list(itertools.islice(remaining, SLICE)):
                frames = b"".join([encoder.frames(message) for message in part])
                await channel.write_queue.put(ChannelFrame(frames, should_close=False))
                # Numbered once queued (a publish cancelled before is never numbered, so the
                # broker's numbering and aiormq's stay the same), before this task yields
                # again: no confirm can be read in between.
                for message in part:
                    channel.delivery_tag += 1
                    confirmations[channel.delivery_tag] = batch
                    if message.message_id is not None:
                        returns[message.message_id] = channel.delivery_tag
                        message_ids.append(message.message_id)
                batch.sent += len(part)
                await asyncio.sleep(0)  # the connection's writer sends it now
            tags = range(first, channel.delivery_tag + 1)
    except BaseException:
        future.cancel()  # confirms still to come are then ignored quietly
        raise
    batch.seal()
    # Ends with every answer in, after `timeout` seconds in which no answer came (then the
    # future is cancelled, so a late confirm is ignored quietly), or with the exception a
    # closing channel rejects its futures with: whichever, the counts say what was confirmed.
    # The deadline bounds the broker's silence, not the batch: a batch the broker confirms
    # for longer than `timeout` (60,000 messages with a timeout of 1 s) was given up while
    # its confirms still came, said to be stored in no part, and stored twice by the retry.
    heard = -1
    while not future.done() and batch.heard() != heard:
        heard = batch.heard()
        with contextlib.suppress(Exception):  # TimeoutError, or the closing channel's
            await asyncio.wait_for(asyncio.shield(future), timeout)
    closed_by = future.exception() if future.done() and not future.cancelled() else None
    future.cancel()
    for tag in tags:
        if confirmations.get(tag) is batch or isinstance(confirmations.get(tag), Returning):
            del confirmations[tag]
    for message_id in message_ids:
        if returns.get(message_id, 0) in tags:
            del returns[message_id]
    answered = batch.acked + batch.refused + batch.returned
    return Confirms(batch.acked, batch.refused, batch.sent - answered, batch.returned, closed_by)


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
    if closing(channel):
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    frames = merged_acks(tags, unacked)
    if frames:
        # Returns once written to the socket: a connection closed next sends them first.
        written = channel.create_future()
        await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames, written))
        await written
