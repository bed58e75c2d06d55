"""NaN and infinity: JSON cannot carry them and pydantic would store null, silently changing
the data; a push refuses them with PayloadError naming the field, in any payload type."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from conveyor import ConfigError, Job, PayloadError, Registry
from conveyor.codec import Codec
from conveyor.payload import non_finite_at


@dataclass
class Reading:
    sensor: str
    value: float | None


class Sample(BaseModel):
    readings: list[Reading]
    extra: dict[str, Any] = {}


class Point(TypedDict):
    x: float | None
    tags: list[Any]


class Keeps(BaseModel):
    """A model that asks pydantic to write NaN as the string "NaN": nothing is lost."""

    model_config = ConfigDict(ser_json_inf_nan="strings")
    value: float


NOT_STORABLE = [
    (dict[str, Any], {"ratio": math.nan}, "ratio", "nan"),
    (dict[str, Any], {"a": {"b": [1, 2, -math.inf]}}, "a.b.2", "-inf"),
    (Reading, Reading("t1", math.inf), "value", "inf"),
    (Reading, {"sensor": "t1", "value": "NaN"}, "value", "nan"),  # lax float parsing
    (Sample, Sample(readings=[Reading("a", 1.0), Reading("b", math.nan)]), "readings.1.value",
     "nan"),
    (Sample, {"readings": [], "extra": {"k": [math.inf]}}, "extra.k.0", "inf"),
    (Point, {"x": math.nan, "tags": []}, "x", "nan"),
    (Point, {"x": 1.0, "tags": [None, (0.5, math.nan)]}, "tags.1.1", "nan"),
    (float, math.nan, "the payload", "nan"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "payload", "where", "number"), NOT_STORABLE, ids=repr)
async def test_push_refuses_nan_and_infinity_naming_the_field(
    kind: Any, payload: Any, where: str, number: str
) -> None:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"])
    registry.worker("w")

    def handle(job: Job[Any]) -> None: ...

    registry.job("j", payload=kind)(handle)
    with pytest.raises(PayloadError) as caught:
        await registry.push("q", "j", payload)
    message = str(caught.value)
    assert f"job 'j': {where} is {number}, which JSON cannot carry" in message
    assert (await registry.queue_info())["q"].pending == 0


STORABLE = [
    (dict[str, Any], {"a": None, "b": 1.5, "c": "NaN", "d": "null", "e": 1e308}),
    (Reading, Reading("t1", None)),
    (Point, {"x": None, "tags": [None, "Infinity"]}),
]


@pytest.mark.parametrize(("kind", "payload"), STORABLE, ids=repr)
def test_nulls_and_finite_numbers_pass_unchanged(kind: Any, payload: Any) -> None:
    codec = Codec("j", kind)
    raw = codec.encode(payload)
    assert codec.encode(codec.decode(raw)) == raw


def test_a_model_that_writes_nan_as_a_string_keeps_it() -> None:
    codec = Codec("j", Keeps)
    assert codec.encode(Keeps(value=math.nan)) == '{"value":"NaN"}'
    assert math.isnan(codec.decode('{"value":"NaN"}').value)


async def test_push_refuses_nan_in_meta_naming_the_key() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"])
    registry.worker("w")

    @registry.job("j")
    def handle(job: Job[dict[str, Any]]) -> None: ...

    with pytest.raises(ConfigError, match=r"meta .*\(trace.weights.1 is inf, which JSON"):
        await registry.push("q", "j", {}, meta={"trace": {"weights": [0.5, math.inf]}})
    assert (await registry.queue_info())["q"].pending == 0


def test_non_finite_at_finds_the_first_and_its_place() -> None:
    found = non_finite_at({"a": [1.0, {"b": math.nan}]})
    assert found is not None and found[0] == "a.1.b" and math.isnan(found[1])
    assert non_finite_at({"a": [1.0, "nan", None], "b": (2, 3)}) is None
    assert non_finite_at(frozenset({math.inf})) == ("0", math.inf)
