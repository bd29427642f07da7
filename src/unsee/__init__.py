"""unsee: make text-to-image diffusion models forget concepts, and measure it.

The Python API (:mod:`unsee.api`)::

    art = unsee.erase("toyworld", method="uce", concepts=["star"], out="runs/star")
    result = unsee.evaluate("toyworld", art, concepts=["star"])
    art.apply(pipe)  # fingerprint-checked
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from unsee.version import __version__

if TYPE_CHECKING:
    from unsee.api import Artifact, erase, evaluate, load, load_model

__all__ = ["Artifact", "__version__", "erase", "evaluate", "load", "load_model"]


def __getattr__(name: str) -> Any:
    # imported on first use: `unsee --help` and `from unsee import __version__` stay free
    # of torch and diffusers
    if name in __all__:
        from unsee import api

        return getattr(api, name)
    raise AttributeError(f"module 'unsee' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """The subpackages ``unsee.erase`` and ``unsee.evaluate`` share their names with the API
    functions: once one is imported, Python sets it as this package's attribute, hiding the
    function. The package then also calls the function, so ``unsee.erase(...)`` works
    whatever was imported before, and ``unsee.erase.engine`` stays the module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from unsee import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("erase", "evaluate") and type(value) is types.ModuleType:
            value.__class__ = _CallablePackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
