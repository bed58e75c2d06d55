"""Payloads: JSON on the wire, validated against the type a handler declares.

The type comes from the handler's annotation, `Job[T]`, where T is a dataclass, a pydantic
model, a TypedDict or a dict. One pydantic `TypeAdapter` per job type does both directions,
so every kind of type is handled the same way. Payloads are never pickled.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pydantic
from pydantic.errors import PydanticUserError
from pydantic_core import PydanticSerializationError

from conveyor.errors import PayloadError, RegistryError
from conveyor.job import Job
from conveyor.shape import Shape, misfit, walk_of

#: The largest encoded payload accepted by default: 1 MiB.
DEFAULT_MAX_BYTES = 1024 * 1024


def check_max_bytes(max_bytes: object) -> int:
    """`max_bytes` if it can be a payload size limit (a whole number of bytes, at least 1),
    else RegistryError naming the value."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise RegistryError(
            f"max_payload_bytes must be a whole number of bytes, at least 1, not {max_bytes!r}:"
            f" the default is {DEFAULT_MAX_BYTES} (1 MiB)"
        )
    return max_bytes


class Codec:
    """Encodes payloads of one job type to JSON text and decodes them back, validating both ways."""

    def __init__(self, job_name: str, payload_type: Any, max_bytes: int = DEFAULT_MAX_BYTES):
        self.job_name = job_name
        self.payload_type = payload_type
        self.max_bytes = max_bytes
        try:
            self._adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(payload_type)
        except PydanticUserError as exc:  # includes PydanticSchemaGenerationError
            raise RegistryError(
                f"job {job_name!r}: payload type {_type_name(payload_type)} cannot be a payload: "
                "use a dataclass, a pydantic model, a TypedDict (from typing_extensions on "
                f"Python < 3.12) or dict ({str(exc).split('. ')[0]})"
            ) from exc  # pydantic's advice past its first sentence (arbitrary types) is not ours
        self._floats = _may_hold_float(self._adapter.core_schema)
        self._many: pydantic.TypeAdapter[list[Any]] | None = None
        walk = walk_of(payload_type)
        self._keys = walk.keys if isinstance(walk, Shape) else None
        # Walked only for a type with fields holding other types: a flat one needs no more
        # than the look at its keys in `encode`.
        flat = walk is None or (isinstance(walk, Shape) and not walk.fields)
        self._nested = None if flat else walk

    def encode(self, payload: Any) -> str:
        """Validate `payload` (an instance of the type or a dict of its fields) to JSON text.
        NaN and infinity are refused: JSON cannot carry them (pydantic writes null)."""
        if self._keys is not None and type(payload) is dict and not payload.keys() <= self._keys:
            raise PayloadError(self._unknown(payload))
        if self._nested is not None and (found := misfit(self._nested, payload)) is not None:
            raise PayloadError(self._unknown_nested(*found))
        try:
            value = self._adapter.validate_python(payload)
            raw = self._adapter.dump_json(value, warnings=False)  # the check below says why
            # pydantic writes NaN and infinity as null (unless a model's ser_json_inf_nan asks
            # for a form that keeps them), so JSON without null, or a type that can hold no
            # float, needs no look: most pushes pay one substring scan at most.
            if self._floats and b"null" in raw:
                self._refuse_non_finite(self._adapter.dump_python(value))
        except pydantic.ValidationError as exc:
            raise PayloadError(self._invalid(exc)) from exc
        except PydanticSerializationError as exc:
            raise PayloadError(self._not_json(value, exc)) from exc
        if len(raw) > self.max_bytes:
            raise PayloadError(
                f"payload of job {self.job_name!r} is {len(raw)} bytes, over the limit of "
                f"{self.max_bytes}: store large data elsewhere and push a reference to it"
            )
        try:
            self._adapter.validate_json(raw)  # what a worker reads back must be valid too
        except pydantic.ValidationError as exc:
            raise PayloadError(
                f"{self._invalid(exc)}, as a worker would read it back from JSON (an instance's"
                " fields are not checked when it is made: one holds a value of another type,"
                " or one that JSON cannot carry)"
            ) from exc
        return raw.decode()

    def encode_many(self, payloads: Sequence[Any]) -> list[str]:
        """`encode` of each payload, in order, checked as one batch: what a worker reads back
        is validated in one call for the whole batch rather than one per payload. A batch
        with any fault is encoded again one by one, so the error is `encode`'s own."""
        # The serializer's own to_json, as dump_json calls it with its defaults: dump_json's
        # Python wrapper costs three times the serializing of a small payload.
        to_json, batch, keys = self._adapter.serializer.to_json, self._batch_adapter(), self._keys
        try:
            if keys is not None and any(type(p) is dict and not p.keys() <= keys for p in payloads):
                raise ValueError("encoded one by one: a payload has a key of no field")
            if self._nested is not None and any(misfit(self._nested, p) for p in payloads):
                raise ValueError("encoded one by one: a payload has a key of no field")
            raws = [to_json(value, warnings=False) for value in batch.validate_python(payloads)]
            floats = self._floats and any(b"null" in raw for raw in raws)
            if floats or max(map(len, raws), default=0) > self.max_bytes:
                raise ValueError("encoded one by one: a payload needs a closer look")
            batch.validate_json(b"[" + b",".join(raws) + b"]")
        except (ValueError, PydanticSerializationError):  # pydantic.ValidationError included
            return [self.encode(payload) for payload in payloads]
        return [raw.decode() for raw in raws]

    def _batch_adapter(self) -> pydantic.TypeAdapter[list[Any]]:
        """A list of the payload type, for `encode_many`; built on first use (once per type)."""
        if self._many is None:
            self._many = pydantic.TypeAdapter(list[self.payload_type])  # type: ignore[name-defined]
        return self._many

    def decode(self, text: str) -> Any:
        """Parse and validate stored JSON text into the payload type."""
        try:
            return self._adapter.validate_json(text)
        except pydantic.ValidationError as exc:
            raise PayloadError(self._invalid(exc)) from exc
        except Exception as exc:  # a validator of the type's own raised something else
            raise PayloadError(
                f"payload of job {self.job_name!r} could not be read as"
                f" {_type_name(self.payload_type)}: a validator of the type raised"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    def _refuse_non_finite(self, value: Any) -> None:
        if not _has_non_finite(value):
            return
        found = non_finite_at(value)  # again, slowly, to say where
        if found is not None:
            where, number = found
            raise PayloadError(
                f"payload of job {self.job_name!r}: {where or 'the payload'} is {number}, which "
                "JSON cannot carry (it would be stored as null): send None, or a string, instead"
            )

    def _unknown(self, payload: dict[Any, Any]) -> str:
        known = self._keys or frozenset()
        unknown = ", ".join(repr(key) for key in payload if key not in known)
        return (
            f"payload of job {self.job_name!r} has keys that are no field of"
            f" {_type_name(self.payload_type)}: {unknown} (its fields: {', '.join(sorted(known))}):"
            " a misspelt key would be dropped; remove them or add the fields"
        )

    def _unknown_nested(self, where: str, shape: Shape, unknown: list[Any]) -> str:
        known = shape.keys or frozenset()
        return (
            f"payload of job {self.job_name!r} has keys that are no field of {shape.name} at"
            f" {where}: {', '.join(repr(key) for key in unknown)} (its fields:"
            f" {', '.join(sorted(known))}): a misspelt key would be dropped; remove them or add"
            " the fields"
        )

    def _not_json(self, value: Any, exc: PydanticSerializationError) -> str:
        """Why the payload cannot be written as JSON: bytes that are not UTF-8 (pydantic
        writes bytes as text) are named with their place and the fix."""
        try:
            found = _first_at(self._adapter.dump_python(value), not_utf8)
        except (RecursionError, PydanticSerializationError):  # too deep to walk: exc says so
            found = None
        if found is None:
            return f"payload of job {self.job_name!r} is not JSON: {exc}"
        if isinstance(found[1], str):
            return (
                f"payload of job {self.job_name!r}: {found[0] or 'the payload'} holds a lone"
                " surrogate, which is not Unicode text: find where that text was decoded"
                " (errors='surrogateescape' makes them) and send it whole"
            )
        return (
            f"payload of job {self.job_name!r}: {found[0] or 'the payload'} holds bytes that are"
            " not UTF-8 text, and bytes travel in JSON as text: put base64.b64encode(data)"
            ".decode() in a str, or give the model or dataclass pydantic's config"
            " ser_json_bytes='base64', val_json_bytes='base64'"
        )

    def _invalid(self, exc: pydantic.ValidationError) -> str:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
            for error in exc.errors()
        )
        return (
            f"payload of job {self.job_name!r} does not match "
            f"{_type_name(self.payload_type)}: {problems}"
        )


#: Kinds of pydantic core schema whose values can never be, or hold, a float; any other kind
#: (float, any, a function, a custom serializer...) may.
_FLOATLESS = frozenset(
    {
        "str", "int", "bool", "none", "nullable", "literal", "enum", "bytes", "decimal",
        "date", "datetime", "time", "timedelta", "uuid", "url", "multi-host-url",
        "list", "tuple", "set", "frozenset", "dict", "default", "union", "tagged-union",
        "model", "model-fields", "model-field", "dataclass", "dataclass-args",
        "dataclass-field", "typed-dict", "typed-dict-field", "definitions", "definition-ref",
    }
)  # fmt: skip


def _may_hold_float(schema: Any) -> bool:
    """False only when no value of the core `schema` can be or hold a float."""
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, str) and kind not in _FLOATLESS:
            return True
        return any(_may_hold_float(part) for part in schema.values())
    if isinstance(schema, list | tuple):
        return any(_may_hold_float(part) for part in schema)
    return False


def _has_non_finite(value: Any) -> bool:
    """Whether a tree of dicts, lists, tuples and sets holds NaN or infinity: the fast half
    of `non_finite_at` (a loop, exact types first: three times faster than isinstance)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind in _SCALARS:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return False


_SCALARS = (str, int, bool, type(None))


def non_finite_at(value: Any) -> tuple[str, float] | None:
    """The first NaN or infinity in `value`, a tree of dicts, lists, tuples and sets, with its
    place as dotted keys and indexes ("items.3.price"); None if there is none."""
    return _first_at(value, lambda item: isinstance(item, float) and not math.isfinite(item))


def not_utf8(item: Any) -> bool:
    """Whether `item` is bytes that are not UTF-8, or a str that UTF-8 cannot write (lone
    surrogates: bytes that were not UTF-8 when read, kept by errors='surrogateescape')."""
    try:
        if isinstance(item, bytes | bytearray):
            item.decode()
        elif isinstance(item, str):
            item.encode()
    except UnicodeError:
        return True
    return False


def _first_at(value: Any, wrong: Callable[[Any], bool], where: str = "") -> tuple[str, Any] | None:
    """The first item of `value`, a tree of dicts, lists, tuples and sets, that is `wrong`,
    with its place as dotted keys and indexes; None if there is none."""
    if wrong(value):
        return where, value
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_at(item, wrong, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def check_handler(handler: Any) -> None:
    """Refuse what cannot be a handler, naming it and the fix: something not callable, a
    generator function (its body would never run), or one needing more than its `job`."""
    name = handler_name(handler)
    if not callable(handler):
        raise RegistryError(f"handler {name} is not callable: decorate a function")
    target = _function_of(handler)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise RegistryError(
            f"handler {name} is a generator function, whose body would never run: make it "
            "return (or return a value) instead of yield"
        )
    parameters = list(inspect.signature(handler).parameters.values())
    if parameters and parameters[0].name == "self":
        raise RegistryError(
            f"handler {name} is a method taken from its class: register the bound method of"
            " an instance, as registry.job(name)(instance.method)"
        )
    required = [
        parameter.name
        for parameter in parameters[1:]
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if required:
        raise RegistryError(
            f"handler {name} needs more than its job ({', '.join(required)}): give those "
            "parameters defaults, or bind them with functools.partial"
        )


def payload_type_of(handler: Callable[..., Any], given: Any = None) -> Any:
    """The T of the handler's first parameter annotated `Job[T]`; `dict[str, Any]` if bare;
    `given` instead when not None. RegistryError for what cannot be a handler."""
    check_handler(handler)
    if given is not None:
        return given
    name = handler_name(handler)
    try:
        hints = typing.get_type_hints(_function_of(handler))
    except Exception as exc:  # any failure to resolve is a fault in the annotation
        raise RegistryError(f"cannot read the annotations of handler {name}: {exc}") from exc
    parameters = list(inspect.signature(handler).parameters)
    if not parameters:
        raise RegistryError(f"handler {name} takes no argument: it must take one `job: Job[T]`")
    hint = hints.get(parameters[0])
    if hint is None or hint is Job:
        return dict[str, Any]
    if typing.get_origin(hint) is Job:
        return typing.get_args(hint)[0]
    raise RegistryError(f"handler {name}: annotate its first parameter as Job[T], not {hint!r}")


def handler_name(handler: Any) -> str:
    """The handler's name for messages: a function's qualified name, else its repr."""
    function = _function_of(handler)
    return str(getattr(function, "__qualname__", None) or repr(handler))


def _function_of(handler: Any) -> Any:
    """The function whose annotations and kind a handler has: a partial's function, or a
    callable object's __call__."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if callable(handler) and not inspect.isroutine(handler) and not inspect.isclass(handler):
        return handler.__call__
    return handler


def _type_name(payload_type: Any) -> str:
    return getattr(payload_type, "__qualname__", None) or repr(payload_type)
