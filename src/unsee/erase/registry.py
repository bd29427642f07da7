"""Where erasure methods are looked up by name.

Importing this module imports every method, and each registers itself
(:func:`unsee.erase.base.register`), so the registry is full once this module is loaded:
methods import only the method API (:mod:`unsee.erase.base`, :mod:`unsee.erase.context`),
never this module or the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

import unsee.erase.methods  # noqa: F401  (each method registers itself on import)
from unsee.erase.base import REGISTRY, Method
from unsee.errors import UnseeError, validation_error

__all__ = ["REGISTRY", "build_params", "get_method", "list_methods"]


def list_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(REGISTRY)


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise UnseeError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return REGISTRY[name]


def build_params(cls: type[Method], values: dict[str, Any]) -> Any:
    """Method hyper-parameters from a dict; unknown keys, wrong types and values out of
    range are one clear :class:`UnseeError` (pydantic validation of the ``Params``
    dataclass: ``"5"`` is an integer, ``2.7`` is not, ``123`` is not a string)."""
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UnseeError(
            f"unknown parameter(s) for {cls.name}: {', '.join(unknown)}; "
            f"known: {', '.join(fields) or 'none'}"
        )
    try:
        params: Any = TypeAdapter(cls.Params).validate_python(dict(values))
    except ValidationError as exc:
        raise validation_error(exc, cls.name, sep=".") from None
    for k in values:
        v = getattr(params, k)
        if isinstance(v, float) and not np.isfinite(v):
            raise UnseeError(f"{cls.name}.{k} must be finite (got {v!r})")
    return params
