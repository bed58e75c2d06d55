"""The amqp driver's lean delivery reader (drivers/amqp/intake.py) against pamqp's encoder:
the frames it takes out decode to what pamqp reads from the same bytes, and every other frame
goes on to aiormq byte for byte, in order, however the bytes are cut; and the JSON of the
records it reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from conveyor.drivers.amqp import AmqpDriver, intake
from conveyor.drivers.amqp.inspection import parse_record
from conveyor.drivers.amqp.intake import HEARTBEAT, Delivery, Splitter, SplittingReader
from conveyor.drivers.amqp.topology import record_body
from conveyor.drivers.base import Reservation
from conveyor.job import JobInfo
from tests.backends import require_service
from tests.backends.amqp import START, URL, delete_prefix, fresh_prefix
from tests.contract.helpers import make_job

CHANNEL = 2


def delivered(
    tag: int,
    body: bytes,
    *,
    channel: int = CHANNEL,
    frame_max: int = 4096,
    redelivered: bool = False,
    **properties: object,
) -> bytes:
    """A basic.deliver with its header and body frames, as pamqp writes them."""
    deliver = spec.Basic.Deliver(
        consumer_tag=f"conveyor.c{tag % 3}",
        delivery_tag=tag,
        redelivered=redelivered,
        exchange="conveyor.delay.0",
        routing_key="conveyor.q.x",
    )
    header = ContentHeader(0, len(body), spec.Basic.Properties(**properties))  # type: ignore[arg-type]
    parts = [frame.marshal(deliver, channel), frame.marshal(header, channel)]
    parts += [
        frame.marshal(ContentBody(body[at : at + frame_max]), channel)
        for at in range(0, len(body), frame_max)
    ]
    return b"".join(parts)


def expected(tag: int, body: bytes, *, redelivered: bool = False, **properties: object) -> Delivery:
    """What pamqp reads from `delivered`'s bytes, as a Delivery."""
    data = delivered(tag, body, redelivered=redelivered, **properties)
    _, _, deliver = frame.unmarshal(data)
    _used, _, header = frame.unmarshal(data[frame.unmarshal(data)[0] :])
    assert isinstance(deliver, spec.Basic.Deliver) and isinstance(header, ContentHeader)
    return Delivery(
        deliver.consumer_tag or "",
        deliver.delivery_tag or 0,
        bool(deliver.redelivered),
        header.properties.priority or 0,
        header.properties.message_id,
        body,
    )


MESSAGES = [
    (1, b'{"id":"a"}', {"priority": 7, "message_id": "a", "delivery_mode": 2}),
    (
        2,
        b"",
        {"content_type": "application/json", "headers": {"conveyor-queue": "x", "n": 3}},
    ),
    (
        3,
        b"z" * 10_000,  # three body frames
        {
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "headers": {"x-death": [{"count": 1, "queue": "conveyor.delay.0"}]},
            "delivery_mode": 2,
            "priority": 10,
            "correlation_id": "c",
            "reply_to": "r",
            "expiration": "60000",
            "message_id": "ü" * 40,
            "timestamp": None,
            "message_type": "t",
            "app_id": "app",
        },
    ),
    (4, b"{}", {}),
]

#: Frames of other channels and of the split channel that are not deliveries.
OTHERS = [
    frame.marshal(spec.Basic.Ack(delivery_tag=9), 1),
    frame.marshal(Heartbeat(), 0),
    frame.marshal(spec.Basic.ConsumeOk(consumer_tag="conveyor.c1"), CHANNEL),
    frame.marshal(spec.Queue.DeclareOk("conveyor.q.x", 3, 1), CHANNEL),
]


def stream() -> tuple[bytes, bytes, list[Delivery]]:
    """Deliveries of the split channel interleaved with other frames (a delivery of another
    channel among them): the whole stream, what must pass on, and the deliveries."""
    whole, passed, deliveries = [], [], []
    for n, (tag, body, properties) in enumerate(MESSAGES):
        other = OTHERS[n % len(OTHERS)]
        whole += [other, delivered(tag, body, **properties)]
        passed.append(other)
        deliveries.append(expected(tag, body, **properties))
    foreign = delivered(5, b"{}", channel=1)
    return b"".join([*whole, foreign]), b"".join([*passed, foreign]), deliveries


def test_deliveries_of_the_split_channel_come_out_as_pamqp_reads_them() -> None:
    whole, passed, deliveries = stream()
    splitter = Splitter()
    splitter.split(CHANNEL)
    assert splitter.feed(whole) == (passed, deliveries)


@pytest.mark.parametrize("step", [1, 3, 7, 500])
def test_bytes_cut_anywhere_give_the_same_frames_and_deliveries(step: int) -> None:
    whole, passed, deliveries = stream()
    splitter = Splitter()
    splitter.split(CHANNEL)
    out, found = [], []
    for at in range(0, len(whole), step):
        more, complete = splitter.feed(whole[at : at + step])
        out.append(more)
        found += complete
    assert (b"".join(out), found) == (passed, deliveries)


def test_nothing_is_taken_before_a_channel_is_split_and_a_redelivery_is_marked() -> None:
    whole, _, _ = stream()
    splitter = Splitter()
    assert splitter.feed(whole) == (whole, [])
    splitter.split(CHANNEL)
    again = delivered(6, b"{}", redelivered=True)
    assert splitter.feed(again) == (b"", [expected(6, b"{}", redelivered=True)])


def test_a_new_split_channel_drops_what_was_left_of_the_last_ones_delivery() -> None:
    splitter = Splitter()
    splitter.split(CHANNEL)
    body_frame = frame.marshal(ContentBody(b"{}"), CHANNEL)
    # The channel closed between the header and the body frame.
    assert splitter.feed(delivered(1, b"{}")[: -len(body_frame)]) == (b"", [])
    splitter.split(CHANNEL + 1)
    again = delivered(2, b"[]", channel=CHANNEL + 1)
    assert splitter.feed(again) == (b"", [expected(2, b"[]")])


def test_a_protocol_header_from_the_broker_passes_on_untouched() -> None:
    splitter = Splitter()
    splitter.split(CHANNEL)
    refusal = b"AMQP\x00\x00\x09\x01"
    assert splitter.feed(refusal) == (refusal, [])
    assert splitter.feed(delivered(1, b"x")) == (delivered(1, b"x"), [])


def test_a_delivery_it_cannot_read_goes_on_whole_to_aiormq() -> None:
    splitter = Splitter()
    splitter.split(CHANNEL)
    cut_short = bytearray(delivered(1, b"abc", message_id="m"))
    header_at = frame.unmarshal(bytes(cut_short))[0]
    cut_short[header_at + 20] |= 0x01  # property flags continued into a second word
    assert splitter.feed(bytes(cut_short)) == (bytes(cut_short), [])
    # the next delivery is read as usual
    assert splitter.feed(delivered(2, b"{}")) == (b"", [expected(2, b"{}")])
    # A delivery cut off by another frame of its channel goes on whole, its body frames
    # written again byte for byte.
    whole = delivered(3, b"z" * 10_000)
    cut_at = len(whole) - len(frame.marshal(ContentBody(b"z" * (10_000 - 8192)), CHANNEL))
    other = frame.marshal(spec.Basic.CancelOk("conveyor.c1"), CHANNEL)
    assert splitter.feed(whole[:cut_at] + other) == (whole[:cut_at] + other, [])
    assert splitter.passed == [1, 3]  # their tags, for the driver to count unacknowledged


def test_a_delivery_with_another_channels_frame_amid_its_own_is_read_the_same() -> None:
    whole = delivered(1, b"z" * 5000)  # two body frames
    last = len(frame.marshal(ContentBody(b"z" * (5000 - 4096)), CHANNEL))
    other = frame.marshal(spec.Basic.Ack(delivery_tag=9), 1)
    splitter = Splitter()
    splitter.split(CHANNEL)
    mixed = whole[:-last] + other + whole[-last:]
    assert splitter.feed(mixed) == (other, [expected(1, b"z" * 5000)])


async def test_the_reader_hands_deliveries_over_and_aiormq_a_heartbeat_in_their_place() -> None:
    reader = SplittingReader(2**16, asyncio.get_running_loop())
    reader.feed_data(OTHERS[0])
    batches: list[list[Delivery]] = []
    passed: list[int] = []
    reader.split(CHANNEL, lambda deliveries: batches.append(list(deliveries)), passed.extend)
    reader.feed_data(delivered(1, b"{}") + delivered(2, b"[]"))
    reader.feed_data(delivered(3, b"{}"))  # within a second of the last sign of life
    assert batches == [[expected(1, b"{}"), expected(2, b"[]")], [expected(3, b"{}")]]
    assert passed == []  # none given up on
    assert await reader.readexactly(len(OTHERS[0]) + len(HEARTBEAT)) == OTHERS[0] + HEARTBEAT
    assert frame.unmarshal(HEARTBEAT)[2].name == "Heartbeat"
    reader.feed_eof()
    assert await reader.read() == b""


def test_records_are_read_and_written_as_json_reads_and_writes_them() -> None:
    record = {"id": "é", "payload": '{"n": 1}', "at": 1796373122.9067295, "big": 10**30}
    assert parse_record(record_body(record)) == record == json.loads(record_body(record))
    # What pydantic-core refuses, json reads and writes: a lone surrogate, UTF-16 text.
    damaged = {"id": "x", "name": "\udcff"}
    assert parse_record(record_body(damaged)) == damaged
    assert parse_record(json.dumps({"id": "u"}).encode("utf-16")) == {"id": "u"}
    assert parse_record(b"not json") is None and parse_record(b'{"id": 1}') is None


async def test_deliveries_given_up_on_are_still_reserved_through_aiormq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the lean reader giving up on every header, each delivery reaches the driver the
    way aiormq hands it over (the consumer callback), and is reserved and acked the same."""
    require_service("amqp", 5672, START)
    monkeypatch.setattr(intake, "_content_header", lambda frame: None)
    prefix = fresh_prefix()
    driver = AmqpDriver(URL, prefix=prefix)
    try:
        await driver.push_many([make_job(priority=p) for p in (0, 3)])
        jobs = await driver.reserve(["q"], 5, 30.0, "w1")
        assert sorted(job.priority for job in jobs) == [0, 3]
        tokens = [Reservation(job.id, job.reservation or "") for job in jobs]
        assert await driver.ack(tokens) == {job.id for job in jobs}
        assert (await driver.counts(["q"]))["q"].pending == 0
    finally:
        await driver.close()
        await delete_prefix(prefix, driver.declared())


async def test_a_delivery_still_on_its_way_through_aiormq_is_never_taken_by_a_multiple_ack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery the lean reader gives up on reaches the driver later, through aiormq's
    consumer task; the ones after it come at once. Acking those merged into one `multiple`
    ack over its tag too: it was acknowledged before it ran (lost, should the worker die),
    and its own ack later made the broker close the intake channel ("unknown delivery tag"),
    taking every job held on it."""
    require_service("amqp", 5672, START)
    first, slow, last = make_job(), make_job(), make_job()
    read = intake._content_header

    def give_up_on_slow(frame: bytes) -> tuple[int, int, str | None] | None:
        header = read(frame)
        return None if header is not None and header[2] == slow.id else header

    monkeypatch.setattr(intake, "_content_header", give_up_on_slow)
    prefix = fresh_prefix()
    driver = AmqpDriver(URL, prefix=prefix)
    gate = asyncio.Event()
    fallback = driver._fallback

    def held_back(channel: object) -> Callable[[DeliveredMessage], Awaitable[None]]:
        receive = fallback(channel)  # type: ignore[arg-type]

        async def late(message: DeliveredMessage) -> None:  # aiormq's task, run late
            await gate.wait()
            await receive(message)

        return late

    monkeypatch.setattr(driver, "_fallback", held_back)
    try:
        await driver.push_many([first, slow, last])
        jobs = await reserve_all(driver, 2, slots=3)  # a prefetch of 3: all three sent
        assert {job.id for job in jobs} == {first.id, last.id}
        assert await driver.ack([Reservation(job.id, job.reservation or "") for job in jobs])
        gate.set()
        [again] = await reserve_all(driver, 1)
        assert again.id == slow.id
        assert await driver.ack([Reservation(again.id, again.reservation or "")]) == {slow.id}
        assert driver._intake is not None
        # The broker answers a channel's methods in order: an ack it refused closed it first.
        await driver._intake.queue_declare(driver.names.work("q"), passive=True, timeout=5)
        assert (await driver.counts(["q"]))["q"].pending == 0
    finally:
        await driver.close()
        await delete_prefix(prefix, driver.declared(), [driver.alone_queue()])


async def reserve_all(driver: AmqpDriver, count: int, slots: int = 1) -> list[JobInfo]:
    """`count` jobs of queue q, asking for `slots` at a time, however the broker's deliveries
    come (5 s at most)."""
    jobs: list[JobInfo] = []
    deadline = asyncio.get_running_loop().time() + 5
    while len(jobs) < count and asyncio.get_running_loop().time() < deadline:
        jobs += await driver.reserve(["q"], slots, 30.0, "w1")
    assert len(jobs) == count, f"{len(jobs)} of {count} jobs reserved"
    return jobs
