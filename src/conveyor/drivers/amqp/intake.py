"""Deliveries read straight off the socket, beside aiormq's reader.

aiormq decodes every frame with pamqp into objects (the basic.deliver method, a content header
with all fifteen properties, a body frame), queues each to its channel, assembles a
DeliveredMessage and starts a task per message for the consumer: about 60 µs of a worker's
time per job, most of what separated a worker from a bare consumer. Here the connection's
StreamReader walks the frames as they arrive and takes out the deliveries of one channel (the
driver's intake channel): the few fields conveyor reads (consumer tag, delivery tag, the
redelivered bit, priority, message id and the body) are sliced out of the bytes, and every
other frame is fed on to aiormq untouched and in order. So aiormq still opens the connection,
sends and checks heartbeats, runs every method call (qos, consume, declare, cancel) and sees
a channel or the connection close or fail, as before.

A delivery taken out here is never a frame aiormq reads, so while the broker sends nothing
but deliveries aiormq would find the connection silent and call it stuck: each batch of
deliveries feeds it a heartbeat frame in their place (at most one a second), a sign of life
from the broker as true as the deliveries. A delivery whose header this decoder does not
expect (property flags continued into a second word, a message id not UTF-8) is fed on to
aiormq whole, as it came, and reaches the channel's consumer callback the usual way.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq.exceptions
from aiormq.abc import DeliveredMessage
from aiormq.connection import TransportFactory
from pamqp import commands as spec
from yarl import URL

__all__ = ["Delivery", "Splitter", "SplittingTransport", "delivery_of"]

METHOD_FRAME, HEADER_FRAME, BODY_FRAME, FRAME_END = 1, 2, 3, 0xCE
#: basic.deliver's class and method ids (60, 60) as they start a method frame's payload.
DELIVER = b"\x00\x3c\x00\x3c"
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
#: The most often a batch of deliveries stands in for a heartbeat, in seconds.
SIGN_OF_LIFE = 1.0
#: Content header property flags, in the order their values follow (AMQP 0-9-1, basic class).
_SHORT_STRINGS_BEFORE_ID = (0x0400, 0x0200, 0x0100)  # correlation-id, reply-to, expiration
CONTENT_TYPE, CONTENT_ENCODING, HEADERS, DELIVERY_MODE, PRIORITY = (
    0x8000,
    0x4000,
    0x2000,
    0x1000,
    0x0800,
)
MESSAGE_ID, CONTINUED = 0x0080, 0x0001

_frame_head = struct.Struct(">BHI")
_long, _longlong, _short = struct.Struct(">I"), struct.Struct(">Q"), struct.Struct(">H")


@dataclass(slots=True)
class Delivery:
    """One message a consumer was sent: what the driver reads of it."""

    consumer_tag: str
    tag: int
    redelivered: bool
    priority: int
    message_id: str | None
    body: bytes


def delivery_of(message: DeliveredMessage) -> Delivery:
    """The same fields of a message aiormq decoded (basic.get, or a delivery fed on whole)."""
    delivery = message.delivery
    assert isinstance(delivery, spec.Basic.Deliver | spec.Basic.GetOk)
    properties = message.header.properties
    return Delivery(
        getattr(delivery, "consumer_tag", "") or "",
        delivery.delivery_tag or 0,
        bool(delivery.redelivered),
        properties.priority or 0,
        properties.message_id,
        message.body,
    )


@dataclass(slots=True)
class _Partial:
    """A delivery whose header or body frames have not all arrived."""

    consumer_tag: str
    tag: int
    redelivered: bool
    #: Its frames as they came, in case it must go on to aiormq after all.
    frames: list[bytes]
    size: int = -1  # the body's size, once the header came
    priority: int = 0
    message_id: str | None = None
    body: list[bytes] = field(default_factory=list)

    def done(self) -> Delivery:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        return Delivery(
            self.consumer_tag, self.tag, self.redelivered, self.priority, self.message_id, body
        )


class Splitter:
    """Walks the frames of a connection's incoming bytes and takes out the deliveries of
    channel `channel` (0: none). `feed` returns the bytes to pass on (every other frame, in
    order) and the deliveries completed."""

    def __init__(self) -> None:
        self.channel = 0
        #: Delivery tags of the deliveries given up on (passed on whole) since last emptied:
        #: aiormq hands them to the consumer later, in a task of its own.
        self.passed: list[int] = []
        self._buffer = bytearray()
        self._partial: _Partial | None = None
        #: The broker answered with a protocol header (a version it does not speak): not
        #: frames, so everything passes on for aiormq to report.
        self._raw = False
        self._started = False

    def split(self, channel: int) -> None:
        """Take channel `channel`'s deliveries out from here on (a channel opened after the
        last one closed: what was left of a delivery to that one is dropped)."""
        self.channel = channel
        self._partial = None

    def feed(self, data: bytes) -> tuple[bytes, list[Delivery]]:
        if self._raw:
            return data, []
        if not self._started:
            if not data:
                return data, []
            self._started = True
            if data[:1] == b"A":
                self._raw = True
                return data, []
        buffer = self._buffer
        if not buffer and self.channel == 0:
            # Not splitting and nothing held back: walk the frames only to stay on their
            # boundaries, and pass the bytes on as they came.
            buffer += data
            passed = self._walk(buffer, [])
            return (data, []) if not buffer else (passed, [])
        buffer += data
        deliveries: list[Delivery] = []
        return self._walk(buffer, deliveries), deliveries

    def _walk(self, buffer: bytearray, deliveries: list[Delivery]) -> bytes:
        """Consume the whole frames at the start of `buffer`; return the bytes passed on."""
        passed: list[bytes] = []
        at = start = 0
        size = len(buffer)
        channel = self.channel
        while size - at >= 8:
            kind, number, length = _frame_head.unpack_from(buffer, at)
            end = at + 8 + length
            if end > size:
                break
            if number != channel or channel == 0:
                at = end
                continue
            partial = self._partial
            if partial is None:
                if kind != METHOD_FRAME or buffer[at + 7 : at + 11] != DELIVER:
                    at = end
                    continue
                whole = self._whole(buffer, at, end, size)
                if whole is None:
                    taken = self._deliver(buffer, at, end)
                else:  # the common case, read in one go
                    delivery, end = whole
                    deliveries.append(delivery)
                    taken = []
            else:
                taken = self._content(partial, kind, buffer, at, end, deliveries)
            if taken is None:  # not what this decoder expects: give up on it
                at = end
                continue
            if at > start:
                passed.append(bytes(buffer[start:at]))
            if taken:
                passed.extend(taken)
            at = start = end
        if at > start:
            passed.append(bytes(buffer[start:at]))
        del buffer[:at]
        return b"".join(passed)

    def _whole(
        self, buffer: bytearray, at: int, end: int, size: int
    ) -> tuple[Delivery, int] | None:
        """A delivery whose method frame (at..end), header and body frames are all in
        `buffer` and read as expected: it and where its last frame ends. None for anything
        else (a frame still to come, a header this decoder does not read), which the frame
        by frame path then reads as before."""
        method = _method(buffer, at, end)
        if method is None or size - end < 8:
            return None
        kind, number, length = _frame_head.unpack_from(buffer, end)
        at = end + 8 + length
        if kind != HEADER_FRAME or number != self.channel or at > size:
            return None
        header = _content_header(bytes(buffer[end:at]))
        if header is None:
            return None
        remaining, priority, message_id = header
        bodies: list[bytes] = []
        while remaining > 0:
            if size - at < 8:
                return None
            kind, number, length = _frame_head.unpack_from(buffer, at)
            end = at + 8 + length
            if kind != BODY_FRAME or number != self.channel or end > size or length > remaining:
                return None
            if buffer[end - 1] != FRAME_END:
                return None
            bodies.append(bytes(buffer[at + 7 : end - 1]))
            remaining -= length
            at = end
        body = bodies[0] if len(bodies) == 1 else b"".join(bodies)
        return Delivery(*method, priority, message_id, body), at

    def _deliver(self, buffer: bytearray, at: int, end: int) -> list[bytes] | None:
        """basic.deliver, its header and body frames to come."""
        method = _method(buffer, at, end)
        if method is None:
            return None
        self._partial = _Partial(*method, [bytes(buffer[at:end])])
        return []

    def _content(
        self,
        partial: _Partial,
        kind: int,
        buffer: bytearray,
        at: int,
        end: int,
        deliveries: list[Delivery],
    ) -> list[bytes] | None:
        """The delivery's header, then its body frames; what to pass on (a delivery given up
        on goes on whole, as it came)."""
        sound = buffer[end - 1] == FRAME_END
        if partial.size < 0:
            frame = bytes(buffer[at:end])
            partial.frames.append(frame)
            header = _content_header(frame) if sound and kind == HEADER_FRAME else None
            if header is None:
                return self._as_they_came(partial)
            partial.size, partial.priority, partial.message_id = header
        elif sound and kind == BODY_FRAME and end - at - 8 <= partial.size:
            body = bytes(buffer[at + 7 : end - 1])
            partial.body.append(body)
            partial.size -= len(body)
        else:
            return self._as_they_came(partial, bytes(buffer[at:end]))
        if partial.size == 0:
            self._partial = None
            deliveries.append(partial.done())
        return []

    def _as_they_came(self, partial: _Partial, last: bytes = b"") -> list[bytes]:
        """The frames of a delivery given up on, then `last`: the method and header frames
        kept as they came, the body frames written again from their bodies."""
        self._partial = None
        self.passed.append(partial.tag)
        return [
            *partial.frames,
            *(
                _frame_head.pack(BODY_FRAME, self.channel, len(body)) + body + b"\xce"
                for body in partial.body
            ),
            last,
        ]


def _method(buffer: bytearray, at: int, end: int) -> tuple[str, int, bool] | None:
    """basic.deliver's consumer tag, delivery tag and redelivered bit (before its exchange
    and routing key); None for a frame cut short or a tag that is not UTF-8."""
    if buffer[end - 1] != FRAME_END:
        return None
    p = at + 11
    length = buffer[p]
    try:
        consumer_tag = buffer[p + 1 : p + 1 + length].decode()
    except UnicodeDecodeError:
        return None
    p += 1 + length
    (tag,) = _longlong.unpack_from(buffer, p)
    return consumer_tag, tag, bool(buffer[p + 8] & 1)


def _content_header(frame: bytes) -> tuple[int, int, str | None] | None:
    """A content header frame's body size, priority and message id; None if it has what this
    decoder does not read (continued flags, a message id not UTF-8) or is cut short."""
    if frame[-1] != FRAME_END:
        return None
    try:
        return _properties(frame)
    except (IndexError, struct.error):
        return None


def _properties(frame: bytes) -> tuple[int, int, str | None] | None:
    (size,) = _longlong.unpack_from(frame, 11)
    (flags,) = _short.unpack_from(frame, 19)
    if flags & CONTINUED:
        return None
    p = 21
    for flag in (CONTENT_TYPE, CONTENT_ENCODING):
        if flags & flag:
            p += 1 + frame[p]
    if flags & HEADERS:
        p += 4 + _long.unpack_from(frame, p)[0]
    if flags & DELIVERY_MODE:
        p += 1
    priority = 0
    if flags & PRIORITY:
        priority = frame[p]
        p += 1
    for flag in _SHORT_STRINGS_BEFORE_ID:
        if flags & flag:
            p += 1 + frame[p]
    message_id = None
    if flags & MESSAGE_ID:
        try:
            message_id = frame[p + 1 : p + 1 + frame[p]].decode()
        except UnicodeDecodeError:
            return None
    return (size, priority, message_id) if p < len(frame) else None


class SplittingReader(asyncio.StreamReader):
    """The connection's StreamReader: deliveries of the split channel go to `on_deliveries`,
    every other byte on to aiormq (see the module docstring)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.splitter = Splitter()
        self.on_deliveries: Callable[[Sequence[Delivery]], None] | None = None
        self.on_passed: Callable[[Sequence[int]], None] | None = None
        self._alive_at = 0.0

    def split(
        self,
        channel: int,
        on_deliveries: Callable[[Sequence[Delivery]], None],
        on_passed: Callable[[Sequence[int]], None],
    ) -> None:
        """Take channel `channel`'s deliveries out from here on, handing them over in
        batches to `on_deliveries` (synchronously, as their bytes arrive), and the tags of
        those given up on (which reach aiormq's consumer later) to `on_passed`."""
        self.on_deliveries, self.on_passed = on_deliveries, on_passed
        self.splitter.split(channel)

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]  # bytes, as it is fed
        passed, deliveries = self.splitter.feed(data)
        if self.splitter.passed:
            tags, self.splitter.passed = self.splitter.passed, []
            if self.on_passed is not None:
                self.on_passed(tags)
        if deliveries:
            now = time.monotonic()
            if not passed and now - self._alive_at >= SIGN_OF_LIFE:
                passed = HEARTBEAT
            self._alive_at = now
            if self.on_deliveries is not None:
                self.on_deliveries(deliveries)
        if passed:
            super().feed_data(passed)


class SplittingTransport(TransportFactory):
    """aiormq's TCP and TLS transports, with a SplittingReader: `reader` is the last made."""

    reader: SplittingReader | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider else None
        loop = asyncio.get_running_loop()
        assert url.host is not None and url.port is not None  # aiormq fills in the port
        reader = SplittingReader(2**16, loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host, url.port, ssl=ssl, **kwargs
            )
        except OSError as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        self.reader = reader
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
