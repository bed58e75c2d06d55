"""Shapes: the keys a dict given for a payload type may have, at every depth.

pydantic drops a key that is no field of a dataclass, TypedDict or model (unless its config
says `extra="forbid"`), so a misspelt key would vanish without a word. A payload's type is
read once into a `Shape`: its own keys, and the way to every field whose value is, or holds,
another such type (`address: Address`, `items: list[Item]`, `by_sku: dict[str, Item]`,
`note: Note | None`). `misfit` walks a dict payload along those ways only, so a flat payload
costs what it did: one look at its keys.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

#: Generic types whose every item is of their one argument; and those whose every value is
#: of their second.
_SEQUENCES = (list, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
              collections.abc.Set, collections.abc.MutableSet, collections.abc.Iterable,
              collections.abc.Collection)  # fmt: skip
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


class Shape:
    """The keys a dict given for one type may have (None: any, its config keeps or ignores
    unknown keys), and the way into each field that holds another shape, by key and alias."""

    __slots__ = ("fields", "keys", "name")

    def __init__(self, name: str, keys: frozenset[str] | None) -> None:
        self.name = name
        self.keys = keys
        self.fields: dict[str, Walk] = {}


@dataclass(frozen=True, slots=True)
class Each:
    """Every item of a list (or tuple, set) has this way in."""

    inner: Walk


@dataclass(frozen=True, slots=True)
class Values:
    """Every value of a dict has this way in."""

    inner: Walk


Walk = Shape | Each | Values


def walk_of(payload_type: Any) -> Walk | None:
    """The way into a payload of `payload_type`: the shape of a dataclass, model or TypedDict,
    or the way into what a RootModel, a list or a dict of them holds; None for a type holding
    none (`dict[str, Any]`)."""
    return _walk(payload_type, {})


def misfit(walk: Walk, value: Any) -> tuple[str, Shape, list[Any]] | None:
    """The first dict in `value` with keys its shape does not have: its place (dotted keys
    and indexes, "" for the payload), its shape and those keys; None if there is none.
    Instances (of a dataclass or model) are not looked into: they can hold no unknown key."""
    found = _misfit(walk, value)
    if found is None:
        return None
    path, shape, unknown = found
    return ".".join(str(part) for part in reversed(path)), shape, unknown


def _misfit(walk: Walk, value: Any) -> tuple[list[Any], Shape, list[Any]] | None:
    """`misfit` with the place as keys from the inside out, added only once one is found:
    no text is made on the way down, as this runs on every push of a nested type."""
    ways: list[tuple[Any, Walk, Any]]  # (key or index, the way in, the item)
    if isinstance(walk, Shape):
        if type(value) is not dict:
            return None
        if walk.keys is not None and not value.keys() <= walk.keys:
            return [], walk, [key for key in value if key not in walk.keys]
        ways = [(key, way, value[key]) for key, way in walk.fields.items() if key in value]
    elif isinstance(walk, Each) and isinstance(value, list | tuple):
        ways = [(index, walk.inner, item) for index, item in enumerate(value)]
    elif isinstance(walk, Values) and isinstance(value, dict):
        ways = [(key, walk.inner, item) for key, item in value.items()]
    else:
        return None
    for key, way, item in ways:
        found = _misfit(way, item)
        if found is not None:
            found[0].append(key)
            return found
    return None


def known_keys(payload_type: Any) -> frozenset[str] | None:
    """The keys a dict pushed for a dataclass, model or TypedDict may have (field names and
    aliases); None for any other type, or one whose config keeps unknown keys."""
    if not isinstance(payload_type, type):
        return None
    config = getattr(payload_type, "model_config", None) or getattr(
        payload_type, "__pydantic_config__", {}
    )
    if config.get("extra") in ("allow", "ignore"):  # said so: unknown keys are welcome
        return None
    if getattr(payload_type, "__pydantic_root_model__", False):  # no keys of its own
        return None
    fields = _field_types(payload_type)
    return None if fields is None else frozenset(fields)


def _field_types(payload_type: type) -> dict[str, Any] | None:
    """The type of each field of a model, dataclass or TypedDict, by name and by alias; None
    for any other type, or one whose annotations cannot be read."""
    fields = getattr(payload_type, "__pydantic_fields__", None)
    if fields is not None:  # a pydantic model or dataclass
        found = {name: info.annotation for name, info in fields.items()}
        for info in fields.values():
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str):
                    found[alias] = info.annotation
        return found
    if dataclasses.is_dataclass(payload_type):
        names = [field.name for field in dataclasses.fields(payload_type)]
    elif hasattr(payload_type, "__required_keys__"):  # a TypedDict, typing's or typing_extensions'
        names = [*payload_type.__required_keys__, *getattr(payload_type, "__optional_keys__", ())]
    else:
        return None
    try:
        hints = typing.get_type_hints(payload_type)
    except Exception:  # a name an annotation uses cannot be resolved: its value is not looked in
        hints = {}
    return {name: hints.get(name) for name in names}


def _shape(payload_type: Any, seen: dict[Any, Shape]) -> Walk | None:
    # A generic dataclass or TypedDict given its arguments (`Box[Address]`) has the fields
    # of its class, a field typed by a parameter (`item: T`) the type given for it.
    origin = typing.get_origin(payload_type)
    cls = origin if isinstance(origin, type) else payload_type
    if not isinstance(cls, type):
        return None
    if getattr(cls, "__pydantic_root_model__", False):  # its keys are its root's
        root = cls.__pydantic_fields__["root"]  # type: ignore[attr-defined]
        return _walk(root.annotation, seen)
    if payload_type in seen:  # a type holding itself (a tree): the shape being built
        return seen[payload_type]
    fields = _field_types(cls)
    if fields is None:
        return None
    shape = seen[payload_type] = Shape(cls.__qualname__, known_keys(cls))
    # No arguments when the class is given bare: its parameters' fields are not looked in.
    parameters, arguments = getattr(cls, "__parameters__", ()), typing.get_args(payload_type)
    given = dict(zip(parameters, arguments, strict=False))
    for key, annotation in fields.items():
        if isinstance(annotation, typing.TypeVar):
            annotation = given.get(annotation)
        way = _walk(annotation, seen)
        if way is not None:
            shape.fields[key] = way
    return shape


def _walk(annotation: Any, seen: dict[Any, Shape]) -> Walk | None:
    """The way into a value of `annotation`, if it is or holds a shape; a union is followed
    only when one member can be a dict (`Address | None`): which of several is meant is
    pydantic's to choose."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _walk(args[0], seen)
    if origin is typing.Union or origin is types.UnionType:
        members = [arg for arg in args if arg is not type(None)]
        return _walk(members[0], seen) if len(members) == 1 else None
    if origin in _SEQUENCES or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        inner = _walk(args[0], seen) if args else None
        return None if inner is None else Each(inner)
    if origin in _MAPPINGS:
        inner = _walk(args[1], seen) if len(args) == 2 else None
        return None if inner is None else Values(inner)
    return _shape(annotation, seen)
