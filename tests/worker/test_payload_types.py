"""Payloads of the types users write reach the handler equal and of the declared type, on
every driver: times naive and aware, dates, decimals, UUIDs, enums, bytes, optional and
default fields, nested dataclasses and models, lists and dicts of them, literals, no payload
at all, and text of every kind (non-ASCII, emoji, NUL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from conveyor import Job, Worker

from .conftest import App

TEXT = 'héllo — 日本語 🚀👩‍👩‍👧 \x00 nul \x01 \U0010ffff "quoted" \\ back'
AWARE = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Line:
    sku: str
    tags: list[str] = field(default_factory=list)


@dataclass
class Order:
    __pydantic_config__ = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    naive: dt.datetime
    aware: dt.datetime
    day: dt.date
    total: Decimal
    ref: uuid.UUID
    color: Color
    level: Level
    scan: bytes
    note: str
    mode: Literal["a", "b"] = "a"
    coupon: str | None = None
    first: Line = field(default_factory=lambda: Line("none"))
    lines: list[Line] = field(default_factory=list)
    by_sku: dict[str, Line] = field(default_factory=dict)


class Item(BaseModel):
    n: int


class Invoice(BaseModel):
    at: dt.datetime
    amount: Decimal
    items: list[Item]
    by_name: dict[str, Item]
    memo: str
    paid: bool = False


class Signup(BaseModel):
    """Fields named in JSON by their aliases, pydantic's default: read by alias only."""

    user_id: int = Field(alias="userId")
    plan_name: str = Field(alias="planName", default="free")


class Outbound(BaseModel):
    """A field renamed for others to read (serialization_alias alone): read by its name."""

    user_id: int = Field(serialization_alias="userId")


class Ping(TypedDict):
    at: dt.datetime
    ref: uuid.UUID
    line: Line
    text: str


ORDER = Order(
    naive=dt.datetime(2026, 3, 1, 12, 30, 15, 654321),
    aware=AWARE,
    day=dt.date(2026, 2, 28),
    total=Decimal("12345678901234567890.123456789"),
    ref=uuid.uuid4(),
    color=Color.BLUE,
    level=Level.HIGH,
    scan=bytes(range(256)),
    note=TEXT,
    mode="b",
    lines=[Line("a", ["é", "🚀"]), Line("b", ["\x00"])],
    by_sku={"ключ": Line("c"), "🚀": Line("d")},
)
INVOICE = Invoice(
    at=AWARE,
    amount=Decimal("-0.0000001"),
    items=[Item(n=1), Item(n=2)],
    by_name={"ü": Item(n=3)},
    memo=TEXT,
)
PING: Ping = {"at": AWARE, "ref": uuid.uuid4(), "line": Line("e", ["f"]), "text": TEXT}


async def test_every_payload_type_reaches_its_handler_equal_and_of_its_type(app: App) -> None:
    registry = app.registry()
    got: dict[str, Any] = {}

    @registry.job("order", queue="q")
    async def order(job: Job[Order]) -> None:
        got["order"] = job.payload

    @registry.job("invoice", queue="q")
    def invoice(job: Job[Invoice]) -> None:
        got["invoice"] = job.payload

    @registry.job("ping", queue="q")
    async def ping(job: Job[Ping]) -> None:
        got["ping"] = job.payload

    @registry.job("tick", queue="q")
    async def tick(job: Job[None]) -> None:
        got["tick"] = job.payload

    await order.push(ORDER)
    await invoice.push(INVOICE)
    await ping.push(PING)
    await tick.push(None)
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 20)
    assert got == {"order": ORDER, "invoice": INVOICE, "ping": PING, "tick": None}
    assert type(got["order"].first) is Line and type(got["invoice"].items[0]) is Item
    assert got["order"].aware.utcoffset() == AWARE.utcoffset()
    assert got["order"].naive.tzinfo is None


async def test_model_with_aliased_fields_reaches_its_handler_pushed_as_instance_or_dict(
    app: App,
) -> None:
    registry = app.registry()
    got: list[Signup] = []

    @registry.job("signup", queue="q")
    async def signup(job: Job[Signup]) -> None:
        got.append(job.payload)

    pushed = [Signup(userId=7, planName="pro"), Signup(userId=8)]
    await signup.push(pushed[0])
    await signup.push_many([pushed[1], {"userId": 9, "planName": "team"}])
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 20)
    assert sorted(got, key=lambda s: s.user_id) == [*pushed, Signup(userId=9, planName="team")]


async def test_model_with_a_serialization_alias_alone_reaches_its_handler(app: App) -> None:
    registry = app.registry()
    got: list[Outbound] = []

    @registry.job("outbound", queue="q")
    def outbound(job: Job[Outbound]) -> None:
        got.append(job.payload)

    await outbound.push_many([Outbound(user_id=1), {"user_id": 2}])
    await outbound.push(Outbound(user_id=3))
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 20)
    assert sorted(got, key=lambda o: o.user_id) == [Outbound(user_id=n) for n in (1, 2, 3)]
