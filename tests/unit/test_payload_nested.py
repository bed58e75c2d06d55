"""A misspelt key in a nested dataclass, TypedDict or model of a dict payload (or in a list
or dict of them) is refused at push, naming its place: pydantic would drop it without a
word, as it would at the top level, where it was already refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, NotRequired, TypeVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, RootModel
from typing_extensions import TypedDict

from conveyor import ConfigError, Job, PayloadError, Registry
from conveyor.codec import Codec


@dataclass
class Address:
    street: str
    city: str


@dataclass
class Order:
    number: int
    ship_to: Address
    bill_to: Address | None = None


class Line(TypedDict):
    sku: str
    count: NotRequired[int]


class Basket(TypedDict):
    lines: list[Line]
    by_sku: dict[str, Line]


class Tag(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    tag_name: str = Field(alias="tagName")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    label: str
    tag: Tag | None = None


class Node(BaseModel):
    name: str
    children: list[Node] = []
    tags: tuple[Annotated[Tag, "a label"], ...] = ()
    open: Open | None = None


class Counts(RootModel[dict[str, int]]):
    """A root model's keys are its root's, not a field named root."""


class Tags(RootModel[list[Tag]]):
    pass


class Report(BaseModel):
    counts: Counts
    tags: Tags | None = None


T = TypeVar("T")


@dataclass
class Box(Generic[T]):
    item: T
    note: str = ""


class Parcel(TypedDict, Generic[T]):
    content: T


@dataclass
class Shipment:
    boxes: list[Box[Address]]
    parcel: Parcel[Line] | None = None


@pytest.mark.parametrize(
    ("payload_type", "payload", "where", "key"),
    [
        (Order, {"number": 1, "ship_to": {"street": "s", "cty": "c"}}, "ship_to", "cty"),
        (Order, {"number": 1, "ship_to": {"street": "s", "city": "c"},
                 "bill_to": {"street": "s", "city": "c", "zip": "1"}}, "bill_to", "zip"),
        (Basket, {"lines": [{"sku": "a"}, {"sku": "b", "cout": 2}], "by_sku": {}}, "lines.1",
         "cout"),
        (Basket, {"lines": [], "by_sku": {"a": {"sku": "a", "qty": 1}}}, "by_sku.a", "qty"),
        (Node, {"name": "r", "children": [{"name": "c", "children": [{"name": "g", "nam": 1}]}]},
         "children.0.children.0", "nam"),
        (Node, {"name": "r", "tags": [{"tagName": "x", "tag": "y"}]}, "tags.0", "tag"),
        (Node, {"name": "r", "open": {"label": "l", "tag": {"tag_nam": "x"}}}, "open.tag",
         "tag_nam"),
        (Report, {"counts": {}, "tags": [{"tagName": "a"}, {"tagname": "b"}]}, "tags.1",
         "tagname"),
        (Tags, [{"tagName": "a", "colour": "red"}], "0", "colour"),
        (Shipment, {"boxes": [{"item": {"street": "s", "city": "c"}, "nte": ""}]}, "boxes.0",
         "nte"),
        (Shipment, {"boxes": [{"item": {"street": "s", "cty": "c"}}]}, "boxes.0.item", "cty"),
        (Shipment, {"boxes": [], "parcel": {"content": {"sku": "a"}, "contnet": 1}}, "parcel",
         "contnet"),
        (Shipment, {"boxes": [], "parcel": {"content": {"sku": "a", "cnt": 1}}},
         "parcel.content", "cnt"),
    ],
)  # fmt: skip
def test_a_nested_key_of_no_field_is_refused_naming_its_place(
    payload_type: Any, payload: dict[str, Any], where: str, key: str
) -> None:
    codec = Codec("j", payload_type)
    with pytest.raises(PayloadError, match=rf"keys that are no field of \w+ at {where}: {key!r}"):
        codec.encode(payload)
    with pytest.raises(PayloadError, match=rf"at {where}: {key!r}.*misspelt key would be dropped"):
        codec.encode_many([payload])


@pytest.mark.parametrize("payload_type", [Box[Address], Parcel[int]])
def test_a_key_of_no_field_of_a_generic_type_is_refused(payload_type: Any) -> None:
    codec = Codec("j", payload_type)
    payload = {"item" if payload_type == Box[Address] else "content": 1, "bogus": 2}
    with pytest.raises(PayloadError, match=r"keys that are no field of \w+: 'bogus'"):
        codec.encode(payload)
    box = Codec("j", Box[Address])
    assert box.decode(box.encode({"item": {"street": "s", "city": "c"}})) == Box(Address("s", "c"))


def test_root_models_take_their_roots_keys() -> None:
    # Before, a RootModel of a dict was refused: its keys were taken for no field of `root`.
    assert Codec("j", Counts).encode({"a": 1}) == '{"a":1}'
    report = Codec("j", Report)
    assert report.decode(report.encode({"counts": {"a": 1}})).counts.root == {"a": 1}


def test_nested_dicts_that_fit_instances_aliases_and_open_types_are_accepted() -> None:
    order = Codec("j", Order)
    given = {"number": 1, "ship_to": {"street": "s", "city": "c"}, "bill_to": None}
    assert order.decode(order.encode(given)) == Order(1, Address("s", "c"))
    assert order.encode(Order(1, Address("s", "c"))) == order.encode(given)
    node = Codec("j", Node)
    tree = {"name": "r", "children": [{"name": "c", "tags": [{"tagName": "a"}, {"tag_name": "b"}]}],
            "open": {"label": "l", "anything": 1, "tag": {"tagName": "t"}}}  # fmt: skip
    decoded = node.decode(node.encode(tree))
    assert [tag.tag_name for tag in decoded.children[0].tags] == ["a", "b"]
    assert decoded.open.anything == 1  # type: ignore[union-attr]
    assert len(node.encode_many([tree, tree])) == 2


def test_push_refuses_a_misspelt_nested_key() -> None:
    registry = Registry(default_driver="memory")

    @registry.job("ship")
    async def ship(job: Job[Order]) -> None:
        """Never run: the push is refused."""

    payload = {"number": 1, "ship_to": {"street": "s", "cty": "c"}}
    with pytest.raises(PayloadError, match="no field of Address at ship_to: 'cty'"):
        registry.blocking.push("default", "ship", payload)
    registry.blocking.close()


def nested_lists(depth: int) -> list[Any]:
    deep: list[Any] = []
    for _ in range(depth):
        deep = [deep]
    return deep


#: Deeper than json writes or reads on any Python: about 1,000 levels up to 3.12, and 10,000
#: from 3.13 on (its C recursion limit).
PAST_JSON = 20_000


@pytest.mark.parametrize("depth", [900, 5000])
async def test_a_payload_or_meta_nested_too_deeply_is_refused_saying_so(depth: int) -> None:
    """Nested deeper than JSON is written (pydantic stops at 500-odd levels, json at the
    recursion limit): a PayloadError or ConfigError, not a RecursionError from the push."""
    registry = Registry(default_driver="memory")

    @registry.job("deep")
    async def deep(job: Job[dict[str, Any]]) -> None:
        """Never run."""

    with pytest.raises(PayloadError, match="payload of job 'deep' is nested too deep"):
        await registry.push("default", "deep", {"a": nested_lists(depth)})
    with pytest.raises(ConfigError, match="meta nests too deeply"):
        await registry.push("default", "deep", {}, meta={"a": nested_lists(PAST_JSON)})
    assert await registry.push("default", "deep", {"a": nested_lists(20)}, meta={"a": [[1]]})
