"""Payloads: the type a handler declares, and the checks of JSON that need no pydantic.

The type comes from the handler's annotation, `Job[T]`, where T is a dataclass, a pydantic
model, a TypedDict or a dict; `conveyor.codec.Codec` writes payloads of it to JSON and reads
them back. Payloads are never pickled.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

from conveyor.errors import RegistryError
from conveyor.job import Job

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


def non_finite_at(value: Any) -> tuple[str, float] | None:
    """The first NaN or infinity in `value`, a tree of dicts, lists, tuples and sets, with its
    place as dotted keys and indexes ("items.3.price"); None if there is none."""
    return first_at(value, lambda item: isinstance(item, float) and not math.isfinite(item))


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


def first_at(value: Any, wrong: Callable[[Any], bool], where: str = "") -> tuple[str, Any] | None:
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
        found = first_at(item, wrong, f"{where}.{key}" if where else str(key))
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
