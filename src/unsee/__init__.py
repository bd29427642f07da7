"""unsee: make text-to-image diffusion models forget concepts, and measure it.

The Python API (:mod:`unsee.api`)::

    art = unsee.erase("toyworld", method="uce", concepts=["star"], out="runs/star")
    result = unsee.evaluate("toyworld", art, concepts=["star"])
    art.apply(pipe)  # fingerprint-checked
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
