"""Payloads of one job type to JSON and back, validated both ways against the type.

One pydantic `TypeAdapter` per job type does both directions, so every kind of type (a
dataclass, a pydantic model, a TypedDict, a dict) is handled the same way. This module is
imported with the first job registered: pydantic takes tens of milliseconds to import, which
`import conveyor` and `conveyor --help` need not pay.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import pydantic
from pydantic.errors import PydanticUserError
from pydantic_core import PydanticSerializationError

from conveyor.errors import PayloadError, RegistryError
from conveyor.payload import DEFAULT_MAX_BYTES, first_at, non_finite_at, not_utf8
from conveyor.schema import (
    has_class_union,
    may_hold_float,
    may_hold_secret,
)
from conveyor.shape import Shape, misfit, walk_of


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
            found = first_at(self._adapter.dump_python(value), not_utf8)
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


def _type_name(payload_type: Any) -> str:
    return getattr(payload_type, "__qualname__", None) or repr(payload_type)
