"""Payloads: JSON on the wire, validated against the type a handler declares.

The type comes from the handler's annotation, `Job[T]`, where T is a dataclass, a pydantic
model, a TypedDict or a dict. One pydantic `TypeAdapter` per job type does both directions,
so every kind of type is handled the same way. Payloads are never pickled.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic.errors import PydanticUserError
from pydantic_core import PydanticSerializationError

from conveyor.errors import PayloadError, RegistryError
from conveyor.job import Job

#: The largest encoded payload accepted by default: 1 MiB.
DEFAULT_MAX_BYTES = 1024 * 1024


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
                f"Python < 3.12) or dict ({exc})"
            ) from exc

    def encode(self, payload: Any) -> str:
        """Validate `payload` (an instance of the type or a dict of its fields) to JSON text."""
        try:
            value = self._adapter.validate_python(payload)
            raw = self._adapter.dump_json(value)
        except pydantic.ValidationError as exc:
            raise PayloadError(self._invalid(exc)) from exc
        except PydanticSerializationError as exc:
            raise PayloadError(f"payload of job {self.job_name!r} is not JSON: {exc}") from exc
        if len(raw) > self.max_bytes:
            raise PayloadError(
                f"payload of job {self.job_name!r} is {len(raw)} bytes, over the limit of "
                f"{self.max_bytes}: store large data elsewhere and push a reference to it"
            )
        try:
            self._adapter.validate_json(raw)  # what a worker reads back must be valid too
        except pydantic.ValidationError as exc:
            raise PayloadError(
                f"{self._invalid(exc)}, once stored as JSON (where NaN and infinity become null)"
            ) from exc
        return raw.decode()

    def decode(self, text: str) -> Any:
        """Parse and validate stored JSON text into the payload type."""
        try:
            return self._adapter.validate_json(text)
        except pydantic.ValidationError as exc:
            raise PayloadError(self._invalid(exc)) from exc

    def _invalid(self, exc: pydantic.ValidationError) -> str:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
            for error in exc.errors()
        )
        return (
            f"payload of job {self.job_name!r} does not match "
            f"{_type_name(self.payload_type)}: {problems}"
        )


def payload_type_of(handler: Callable[..., Any]) -> Any:
    """The T of the handler's first parameter annotated `Job[T]`; `dict[str, Any]` if bare."""
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:  # any failure to resolve is a fault in the annotation
        raise RegistryError(
            f"cannot read the annotations of handler {handler.__qualname__}: {exc}"
        ) from exc
    parameters = list(inspect.signature(handler).parameters)
    if not parameters:
        raise RegistryError(
            f"handler {handler.__qualname__} takes no argument: it must take one `job: Job[T]`"
        )
    hint = hints.get(parameters[0])
    if hint is None or hint is Job:
        return dict[str, Any]
    if typing.get_origin(hint) is Job:
        return typing.get_args(hint)[0]
    raise RegistryError(
        f"handler {handler.__qualname__}: annotate its first parameter as Job[T], not {hint!r}"
    )


def _type_name(payload_type: Any) -> str:
    return getattr(payload_type, "__qualname__", None) or repr(payload_type)
