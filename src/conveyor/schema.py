"""What a payload type's pydantic core schema may hold, read once per job type: the places
`Codec` must look into at each push (a float that may be NaN, a secret written masked, a
union whose members JSON does not tell apart)."""

from __future__ import annotations

from typing import Any

import pydantic

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


def may_hold_float(schema: Any) -> bool:
    """False only when no value of the core `schema` can be or hold a float."""
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, str) and kind not in _FLOATLESS:
            return True
        return any(may_hold_float(part) for part in schema.values())
    if isinstance(schema, list | tuple):
        return any(may_hold_float(part) for part in schema)
    return False


def may_hold_secret(schema: Any) -> bool:
    """Whether the core `schema` has a place for one of pydantic's secrets (SecretStr,
    SecretBytes, Secret[...]), which it writes to JSON masked unless told otherwise."""
    if isinstance(schema, type):
        return issubclass(schema, pydantic.SecretStr | pydantic.SecretBytes | pydantic.Secret)
    if isinstance(schema, dict):
        return any(may_hold_secret(part) for part in schema.values())
    if isinstance(schema, list | tuple):
        return any(may_hold_secret(part) for part in schema)
    return False


def has_class_union(schema: Any) -> bool:
    """Whether the core `schema` has a union of two or more models, dataclasses or other
    types defined apart (a tagged union tells its members apart: it is another kind)."""
    if isinstance(schema, dict):
        if schema.get("type") == "union":
            choices = [c[0] if isinstance(c, tuple) else c for c in schema["choices"]]
            if sum(c.get("type") in _CLASS_KINDS for c in choices) > 1:
                return True
        return any(has_class_union(part) for part in schema.values())
    if isinstance(schema, list | tuple):
        return any(has_class_union(part) for part in schema)
    return False


_CLASS_KINDS = frozenset({"model", "dataclass", "definition-ref"})
