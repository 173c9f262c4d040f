"""Typed method configs declared as dataclasses, with forms and validation derived from them.

A config is a plain ``@dataclass`` whose fields are declared with :func:`param`::

    @dataclass(frozen=True)
    class MyConfig:
        learning_rate: float = param(1e-3, min=0, min_exclusive=True, max=1, help="Peak learning rate.")

        def check(self) -> dict[str, str]:  # optional cross-field rules
            return {}

From that one declaration come :func:`config_schema` (a list of field descriptions for
building HTML forms), :func:`json_schema` (for the API) and :func:`validate_config`
(coercion of form strings plus bounds/choices checks, one message per field).

Standard library only: the web process imports this to build forms.
"""

import dataclasses
import math
import typing
from typing import Any, TypeVar

__all__ = [
    "param",
    "config_fields",
    "config_schema",
    "json_schema",
    "validate_config",
    "config_defaults",
    "config_to_dict",
]

T = TypeVar("T")

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}
_PY_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}
_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "choice": "string"}


def param(
    default: Any,
    *,
    help: str,
    label: str | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    choices: tuple[str, ...] | list[str] | None = None,
    group: str | None = None,
    after: str | None = None,
) -> Any:
    """Declare one config field: its default plus what the form and the validator need to know.

    ``after`` names the field this one follows in the form (see :func:`config_fields`).
    """
    metadata = {
        "help": help,
        "label": label,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
        "choices": tuple(choices) if choices is not None else None,
        "group": group,
        "after": after,
    }
    return dataclasses.field(default=default, metadata=metadata)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass in form order.

    A config that extends another (a method's config extends the shared training settings of
    :mod:`trainers.configs.training`) lists the fields it adds first, in declaration order, then the
    inherited ones in their order; a field it overrides keeps its inherited place. A field declared with
    ``param(..., after="name")`` goes right after that field.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    every = dataclasses.fields(cls)
    order = [f for f in every if f.name not in inherited] + [f for f in every if f.name in inherited]
    placed = [f for f in order if f.metadata.get("after")]
    order = [f for f in order if not f.metadata.get("after")]
    while placed:  # a field may follow one that is placed itself
        names = [g.name for g in order]
        ready = next((f for f in placed if f.metadata["after"] in names), None)
        if ready is None:
            raise TypeError(f"{cls.__name__}.{placed[0].name}: after={placed[0].metadata['after']!r} names no field")
        placed.remove(ready)
        order.insert(names.index(ready.metadata["after"]) + 1, ready)
    return order


def _fields(cls: type) -> list[tuple[dataclasses.Field, str]]:
    hints = typing.get_type_hints(cls)
    result = []
    for f in config_fields(cls):
        py_type = hints[f.name]
        if py_type not in _PY_TYPES:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {py_type!r} (use int, float, bool or str)")
        kind = _PY_TYPES[py_type]
        if f.metadata.get("choices"):
            if kind != "str":
                raise TypeError(f"{cls.__name__}.{f.name}: choices need a str field")
            kind = "choice"
        result.append((f, kind))
    return result


def _label(name: str, metadata: typing.Mapping[str, Any]) -> str:
    return metadata.get("label") or name.replace("_", " ").capitalize()


def config_schema(cls: type) -> list[dict[str, Any]]:
    """Describe every field of a config dataclass, in declaration order, for building forms."""
    schema = []
    for f, kind in _fields(cls):
        m = f.metadata
        schema.append(
            {
                "name": f.name,
                "type": kind,
                "default": f.default,
                "min": m.get("min"),
                "max": m.get("max"),
                "min_exclusive": bool(m.get("min_exclusive")),
                "max_exclusive": bool(m.get("max_exclusive")),
                "choices": list(m["choices"]) if m.get("choices") else None,
                "help": m.get("help", ""),
                "label": _label(f.name, m),
                "group": m.get("group"),
            }
        )
    return schema


def json_schema(cls: type) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) object for a config dataclass; all fields are optional."""
    properties: dict[str, Any] = {}
    for field in config_schema(cls):
        prop: dict[str, Any] = {
            "type": _JSON_TYPES[field["type"]],
            "title": field["label"],
            "description": field["help"],
            "default": field["default"],
        }
        if field["choices"]:
            prop["enum"] = field["choices"]
        if field["min"] is not None:
            prop["exclusiveMinimum" if field["min_exclusive"] else "minimum"] = field["min"]
        if field["max"] is not None:
            prop["exclusiveMaximum" if field["max_exclusive"] else "maximum"] = field["max"]
        if field["group"]:
            prop["x-group"] = field["group"]
        properties[field["name"]] = prop
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": cls.__name__,
        "description": doc,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def config_defaults(cls: type) -> dict[str, Any]:
    """The default value of every field."""
    return {f.name: f.default for f, _ in _fields(cls)}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A validated config instance as a plain JSON-ready dict, in form order."""
    return {f.name: getattr(config, f.name) for f in config_fields(type(config))}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _coerce(kind: str, value: Any, choices: tuple[str, ...] | None) -> Any:
    """Turn a JSON or HTML-form value into the field's type; raise ValueError with the reason."""
    if isinstance(value, str) and kind != "str" and kind != "choice":
        value = value.strip()
        if value == "" and kind != "bool":
            raise ValueError("a value is required")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"must be true or false, got {_fmt(value)}")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"must be an integer, got {value}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = math.nan
                if as_float.is_integer():
                    return int(as_float)
        raise ValueError(f"must be an integer, got {_fmt(value)}")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value}")
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"must be a number, got {_fmt(value)}") from None
        else:
            raise ValueError(f"must be a number, got {_fmt(value)}")
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {_fmt(value)}")
        return number
    if kind == "choice":
        if not isinstance(value, str) or value.strip() not in (choices or ()):
            raise ValueError(f"must be one of {', '.join(choices or ())}; got {_fmt(value)}")
        return value.strip()
    # str
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_fmt(value)}")
    return value.strip()


def _bounds_error(value: float, m: typing.Mapping[str, Any]) -> str | None:
    lo, hi = m.get("min"), m.get("max")
    lo_x, hi_x = bool(m.get("min_exclusive")), bool(m.get("max_exclusive"))
    too_low = lo is not None and (value <= lo if lo_x else value < lo)
    too_high = hi is not None and (value >= hi if hi_x else value > hi)
    if not (too_low or too_high):
        return None
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_x else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_x else '<='} {_fmt(hi)}")
    return f"must be {' and '.join(parts)}, got {_fmt(value)}"


def validate_config(cls: type[T], data: typing.Mapping[str, Any] | None) -> tuple[T | None, dict[str, str]]:
    """Build a config instance from JSON or HTML-form data.

    Missing fields take their defaults. Returns ``(instance, {})`` on success, or
    ``(None, errors)`` where ``errors`` maps a field name (or ``"__all__"``) to one
    message that starts with the field name, e.g.
    ``{"learning_rate": "learning_rate: must be > 0 and <= 1, got 5"}``.
    Cross-field rules come from an optional ``check(self) -> dict[str, str]`` method,
    which runs only once every field is valid on its own.
    """
    if data is None:
        data = {}
    if not isinstance(data, typing.Mapping):
        return None, {"__all__": f"config must be an object of field values, got {type(data).__name__}"}
    errors: dict[str, str] = {}
    fields = _fields(cls)
    known = {f.name for f, _ in fields}
    for name in data:
        if name not in known:
            errors[str(name)] = f"{name}: unknown field (known fields: {', '.join(sorted(known))})"
    values: dict[str, Any] = {}
    for f, kind in fields:
        if f.name not in data:
            values[f.name] = f.default
            continue
        try:
            value = _coerce(kind, data[f.name], f.metadata.get("choices"))
        except ValueError as exc:
            errors[f.name] = f"{f.name}: {exc}"
            continue
        if kind in ("int", "float"):
            problem = _bounds_error(value, f.metadata)
            if problem:
                errors[f.name] = f"{f.name}: {problem}"
                continue
        values[f.name] = value
    if errors:
        return None, errors
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if callable(check):
        for name, message in (check() or {}).items():
            prefix = f"{name}: "
            errors[name] = message if message.startswith(prefix) or name == "__all__" else prefix + message
    if errors:
        return None, errors
    return instance, {}
