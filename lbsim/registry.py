"""Registries of extension points, and parameters checked at the edge.

Every extension point of lbsim (routers, backend models, rate families, size
distributions, token workloads, step-time and power models, admission
policies) is a :class:`Registry`: a table from name to class that a class
joins with one decorator line, that rejects a second class under a taken
name, and whose lookups fail with one line naming the scenario key and the
closest valid name. :func:`from_params` turns a TOML table into a class's
pydantic parameters with the same kind of error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .errors import ScenarioError, unknown

T = TypeVar("T", bound=type)
M = TypeVar("M", bound=BaseModel)


class Registry(dict[str, Any]):
    """Name -> class for one extension point; a class's name is its attribute ``attribute``.

    A name belongs to one class: registering another class under a taken name
    is an error. The same class may be registered again, and so may its
    re-definition by a reloaded module (same module and qualified name).
    """

    def __init__(self, what: str, attribute: str = "kind"):
        super().__init__()
        self.what = what  #: what a member is, in messages ("rate family")
        self.attribute = attribute  #: the class attribute holding the name, and the TOML key naming it

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` available by its name."""
        name = getattr(cls, self.attribute, None)
        if not name:
            raise ValueError(f"{self.what} class {cls.__qualname__} has no {self.attribute}")
        known = self.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"{self.what} '{name}' is already registered by {known.__module__}.{known.__qualname__}; "
                f"give {cls.__module__}.{cls.__qualname__} another name"
            )
        self[name] = cls
        return cls

    def lookup(self, name: Any, key: str) -> Any:
        """The class called ``name``; a ScenarioError naming ``key`` (and the closest name) otherwise."""
        if not isinstance(name, str) or name not in self:
            raise ScenarioError(key, unknown(self.what, str(name), self))
        return self[name]

    def split(self, spec: Any, key: str, example: str, default: str | None = None) -> tuple[Any, dict[str, Any]]:
        """A table ``{ <attribute> = NAME, <parameters> }``: NAME's class and the parameters."""
        if not isinstance(spec, Mapping):
            raise ScenarioError(key, f"must be a table like {example}, got {spec!r}")
        params = dict(spec)
        name = params.pop(self.attribute, default)
        if name is None:
            raise ScenarioError(f"{key}.{self.attribute}", f"missing (one of: {', '.join(sorted(self))})")
        return self.lookup(name, f"{key}.{self.attribute}"), params

    def make(self, spec: Any, key: str, example: str, default: str | None = None) -> Any:
        """The member a table describes, its parameters validated (:func:`from_params`)."""
        cls, params = self.split(spec, key, example, default)
        return from_params(cls, params, key, getattr(cls, self.attribute))


def _format(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)


def first_error(exc: ValidationError) -> Any:
    """The error of a pydantic report to show the user: an unknown key first.

    An unknown name is usually a misspelt one that is then also "missing"
    (``rat = 1.0`` for ``rate``): the misspelling carries the fix.
    """
    return min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def key_path(key: str, loc: tuple[Any, ...]) -> str:
    """``key`` extended by a pydantic location: ``("c",)`` -> ``key.c``, ``(0, "rate")`` -> ``key[0].rate``."""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def check_finite(value: Any, key: str) -> None:
    """Reject any float that is not finite anywhere in user input (tables, arrays, nested).

    No number a user gives lbsim may be ``inf`` or ``nan``: a rate, a horizon,
    a step or a probe rate of ``inf`` (TOML's ``inf``, or ``1e309``, which
    overflows to it) passes a ``> 0`` check and then never finishes, exhausts
    memory or writes NaN. The rule is applied to whole inputs at the edge
    (a scenario, a parameter table, a sweep file) rather than per field, so
    no field can forget it; the error names the first such key.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ScenarioError(key, f"must be finite, got {_format(value)}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(v, key_path(key, (str(k),)))
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            check_finite(v, key_path(key, (k,)))


def validate_strictly(cls: type[M], params: Mapping[str, Any], key: str) -> M:
    """``cls.model_validate(params)`` under lbsim's one rule for user numbers and types.

    Every number finite (:func:`check_finite`), and types strict: a TOML
    string, boolean or float is not read as a number, a flag or an integer
    (``rate = "2.0"``, ``horizon = true``, ``record_jobs = "no"`` and
    ``seed = 1.7`` are errors). An integer is still a float (``rate = 2``).
    Raises :class:`pydantic.ValidationError` for what pydantic rejects.
    """
    check_finite(dict(params), key)
    return cls.model_validate(dict(params), strict=True)


def from_params(cls: type[M], params: Mapping[str, Any], key: str, what: str) -> M:
    """Build ``cls`` from a TOML table, turning a pydantic error into one-line :class:`ScenarioError`.

    ``key`` is the dotted path of the table, ``what`` names the family in
    messages (``unknown saturating parameter 'kk' (did you mean 'k'?)``).
    Numbers must be finite and types are strict (:func:`validate_strictly`).
    """
    try:
        return validate_strictly(cls, params, key)
    except ValidationError as exc:
        error = first_error(exc)
    loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    kind, ctx, got = error["type"], error.get("ctx", {}), error["input"]
    fields = list(cls.model_fields)
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        if fields:
            message = unknown(f"{what} parameter", name, fields)
        else:
            message = f"unknown parameter '{name}' ({what} takes none)"
    elif kind == "missing":
        required = [name for name, field in cls.model_fields.items() if field.is_required()]
        message = f"missing ({what} needs {', '.join(required)})"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        message = f"must be {_BOUNDS[kind]} {_format(bound)}, got {_format(got)}"
    elif kind in ("float_type", "float_parsing"):
        message = f"must be a number, got {_format(got)}"
    elif kind in ("int_type", "int_from_float", "int_parsing"):
        message = f"must be an integer, got {_format(got)}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"must be true or false, got {_format(got)}"
    elif kind in ("string_type",):
        message = f"must be a string, got {_format(got)}"
    elif kind == "finite_number":
        message = f"must be finite, got {_format(got)}"
    elif kind == "too_short":
        message = "must not be empty"
    else:
        msg = str(error["msg"]).removeprefix("Value error, ")
        message = f"{msg[:1].lower()}{msg[1:]}, got {_format(got)}"
    raise ScenarioError(f"{key}{loc}", message)


def _constraints(field: FieldInfo) -> str:
    """A field's bounds as text, e.g. ``> 0, <= 1`` (from its ``Field(gt=..., le=...)`` metadata)."""
    parts = []
    for item in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{symbol} {_format(bound)}")
        if getattr(item, "min_length", None) is not None:
            parts.append(f"at least {item.min_length} value(s)")
    return ", ".join(parts)


def field_rows(cls: type[BaseModel]) -> list[dict[str, Any]]:
    """One row per parameter of a family: ``name``, ``default`` (None if required), ``required``,
    ``constraints`` (text such as ``> 0, <= 1``) and ``description``."""
    return [
        {
            "name": name,
            "default": None if field.is_required() else field.default,
            "required": field.is_required(),
            "constraints": _constraints(field),
            "description": field.description or "",
        }
        for name, field in cls.model_fields.items()
    ]


def first_paragraph(cls: type) -> str:
    """The first paragraph of a class docstring, on one line (what ``lbsim rates`` shows)."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
