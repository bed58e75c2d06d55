"""Payloads: JSON on the wire, validated against the type a handler declares.

The type comes from the handler's annotation, `Job[T]`, where T is a dataclass, a pydantic
model, a TypedDict or a dict. One pydantic `TypeAdapter` per job type does both directions,
so every kind of type is handled the same way. Payloads are never pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pydantic
from pydantic.errors import PydanticUserError
from pydantic_core import PydanticSerializationError

from conveyor.errors import PayloadError, RegistryError
from conveyor.job import Job
from conveyor.schema import (
    has_class_union,
    may_hold_float,
    may_hold_secret,
)
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
        # Fields are written by alias: pydantic reads a field by its alias alone unless told
        # otherwise (populate_by_name). By name once a payload is read back only so (a field
        # with serialization_alias= alone is read by its name).
        self._by_alias = True
        self._floats = may_hold_float(self._adapter.core_schema)
        # Looked for at each push, by comparing what a worker reads back with the payload
        # (of a type whose every dataclass compares by value: eq=False would never be equal).
        schema = self._adapter.core_schema
        self._secrets = may_hold_secret(schema)
        self._unions = has_class_union(schema)
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
        try:
            return self._encode(payload)
        except RecursionError as exc:  # walking it, deeper than Python's stack goes
            raise PayloadError(self._too_deep()) from exc

    def _encode(self, payload: Any) -> str:
        self._refuse_unknown_keys(payload)
        try:
            value = self._adapter.validate_python(payload)
            # No warnings: the check below says why.
            raw = self._adapter.dump_json(value, by_alias=self._by_alias, warnings=False)
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
            back = self._adapter.validate_json(raw)  # what a worker reads back must be valid too
        except pydantic.ValidationError as exc:
            if any("recursion limit" in error["msg"] for error in exc.errors()):
                raise PayloadError(self._too_deep()) from exc
            if self._by_alias and self._reads_names(value):
                self._by_alias = False  # a serialization_alias, which validation does not read
                return self._encode(payload)
            raise PayloadError(
                f"{self._invalid(exc)}, as a worker would read it back from JSON (an instance's"
                " fields are not checked when it is made: one holds a value of another type,"
                " or one that JSON cannot carry)"
            ) from exc
        if (self._secrets or self._unions) and changed(value, back):  # the handler gets another
            raise PayloadError(self._changed())
        return raw.decode()

    def _reads_names(self, value: Any) -> bool:
        """Whether `value` written with its fields' names is read back."""
        try:
            written = self._adapter.dump_json(value, by_alias=False, warnings=False)
            self._adapter.validate_json(written)
        except pydantic.ValidationError:
            return False
        return True

    def from_json(self, payload: Any) -> Any:
        """`payload`, parsed from JSON text (the command line, a file), validated as a worker
        reads it: from JSON, where a strict type takes its times, UUIDs and enums as text."""
        try:
            self._refuse_unknown_keys(payload)
            return self._adapter.validate_json(json.dumps(payload))
        except pydantic.ValidationError as exc:
            raise PayloadError(self._invalid(exc)) from exc
        except RecursionError as exc:
            raise PayloadError(self._too_deep()) from exc

    def _refuse_unknown_keys(self, payload: Any) -> None:
        """PayloadError for a dict with a key of no field, at any depth (pydantic drops it)."""
        if self._keys is not None and type(payload) is dict and not payload.keys() <= self._keys:
            raise PayloadError(self._unknown(payload))
        if self._nested is not None and (found := misfit(self._nested, payload)) is not None:
            raise PayloadError(self._unknown_nested(*found))

    def encode_many(self, payloads: Sequence[Any], first: int = 0) -> list[str]:
        """`encode` of each payload, in order, checked as one batch: what a worker reads back
        is validated in one call for the whole batch rather than one per payload. A batch
        with any fault is encoded again one by one, so the error is `encode`'s own, led by
        the payload's index (`payloads[7]: ...`; `first` is the index of the first one)."""
        # The serializer's own to_json, as dump_json calls it with its defaults: dump_json's
        # Python wrapper costs three times the serializing of a small payload.
        to_json, batch, keys = self._adapter.serializer.to_json, self._batch_adapter(), self._keys
        try:
            if keys is not None and any(type(p) is dict and not p.keys() <= keys for p in payloads):
                raise ValueError("encoded one by one: a payload has a key of no field")
            if self._nested is not None and any(misfit(self._nested, p) for p in payloads):
                raise ValueError("encoded one by one: a payload has a key of no field")
            values = batch.validate_python(payloads)
            raws = [to_json(value, by_alias=self._by_alias, warnings=False) for value in values]
            floats = self._floats and any(b"null" in raw for raw in raws)
            if floats or max(map(len, raws), default=0) > self.max_bytes:
                raise ValueError("encoded one by one: a payload needs a closer look")
            backs = batch.validate_json(b"[" + b",".join(raws) + b"]")
            if (self._secrets or self._unions) and changed(values, backs):
                raise ValueError("encoded one by one: a payload is read back as another")
        except (ValueError, PydanticSerializationError, RecursionError):  # ValidationError too
            return [self.encode_at(index, payload) for index, payload in enumerate(payloads, first)]
        return [raw.decode() for raw in raws]

    def encode_at(self, index: int, payload: Any) -> str:
        """`encode` of the payload at `index` of a batch, its error naming the index."""
        try:
            return self.encode(payload)
        except PayloadError as exc:
            raise PayloadError(f"payloads[{index}]: {exc}") from exc

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
        # A validator of the type's own raised something else: SystemExit and
        # KeyboardInterrupt too, which fail only this job, as a handler's do.
        except BaseException as exc:
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
        if "depth exceeded" in str(exc):
            return self._too_deep()
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

    def _changed(self) -> str:
        """Why a payload is read back from JSON other than it was pushed: a secret or a union
        of types alike (its type has one or both)."""
        causes = []
        if self._secrets:
            causes.append(
                "it holds a secret (SecretStr, SecretBytes), which pydantic writes to JSON masked"
                " ('**********'): push a reference to where the secret is kept (a payload is"
                " stored and shown as plain text), or give the field a field_serializer that"
                " writes it"
            )
        if self._unions:
            causes.append(
                "of a union of types alike (Cat | Dog, with the same fields) the first that fits"
                " is read: give each type a Literal field telling it apart (kind:"
                ' Literal["dog"]), a discriminated union'
            )
        return (
            f"payload of job {self.job_name!r} would reach its handler other than it was pushed,"
            f" as read back from JSON: {'; or '.join(causes)}"
        )

    def _too_deep(self) -> str:
        return (
            f"payload of job {self.job_name!r} is nested too deep: JSON is read back to at most"
            " 200 levels of lists and objects inside each other (pydantic's limit):"
            " flatten it, or store it elsewhere and push a reference to it"
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


def changed(pushed: Any, back: Any) -> bool:
    """Whether `back`, what a worker reads back, holds a secret other than `pushed` holds, or
    an instance of another class (a member of a union alike) in the same place. Only these:
    a tuple read back as a list, say, is what JSON does and no fault."""
    if isinstance(pushed, pydantic.SecretStr | pydantic.SecretBytes | pydantic.Secret):
        return bool(pushed != back)
    if isinstance(pushed, pydantic.BaseModel) or dataclasses.is_dataclass(pushed):
        if type(back) is not type(pushed):
            return True
        names = (
            type(pushed).model_fields
            if isinstance(pushed, pydantic.BaseModel)
            else [field.name for field in dataclasses.fields(pushed)]
        )
        return any(changed(getattr(pushed, n), getattr(back, n, None)) for n in names)
    if isinstance(pushed, dict) and isinstance(back, dict):
        return any(changed(item, back.get(key)) for key, item in pushed.items())
    if isinstance(pushed, list | tuple) and isinstance(back, list | tuple):
        return any(changed(item, again) for item, again in zip(pushed, back, strict=False))
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
    except NameError as exc:  # a name only the scope that defined the handler knew
        raise RegistryError(
            f"cannot read the annotations of handler {name}: {exc}: a type defined inside a"
            " function is not found by its name (with `from __future__ import annotations`"
            " every annotation is a name): define it at module level, or give it as"
            f" @registry.job(..., payload={exc.name or 'T'})"
        ) from exc
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
