"""Which parameters an erasure may change, chosen by name like peft's ``target_modules``.

A scope is a preset name or a regular expression (prefix ``re:``) matched with
``re.search`` against ``unet.named_parameters()`` names.
"""

from __future__ import annotations

import re

import torch

from unsee.errors import UnseeError

#: preset -> (include pattern, exclude pattern or None)
PRESETS: dict[str, tuple[str, str | None]] = {
    # cross-attention: ESD-x, Sculpting Memory, MiM-MU
    "xattn": (r"attn2\.", None),
    # everything but cross-attention, the time embedding and the output layer: ESD-u
    "noxattn": (r".", r"attn2\.|time_embedding|time_proj|conv_norm_out|conv_out"),
    # KSCU's selection: every Linear/Conv2d weight and bias outside cross-attention, time
    # embedding and output layer included (normalisation layers are not Linear/Conv2d)
    "noxattn-linear": (r".", r"attn2\.|norm"),
    # cross-attention keys and values: ESD-x-strict, UCE
    "kv": (r"attn2\.to_[kv]\.", None),
    "full": (r".", None),
}


def describe_scope(scope: str) -> str:
    if scope in PRESETS:
        inc, exc = PRESETS[scope]
        return f"{scope} (include /{inc}/" + (f", exclude /{exc}/)" if exc else ")")
    return scope


def select_parameters(unet: torch.nn.Module, scope: str) -> dict[str, torch.nn.Parameter]:
    """Parameters of ``unet`` in ``scope`` (name -> parameter), in module order.

    Raises :class:`UnseeError` for an unknown preset, a bad regex, or a scope that
    matches nothing.
    """
    if scope in PRESETS:
        include, exclude = PRESETS[scope]
    elif scope.startswith("re:"):
        include, exclude = scope[3:], None
    else:
        raise UnseeError(
            f"unknown scope {scope!r}: use one of {', '.join(PRESETS)} or 're:<regex>'"
        )
    try:
        inc, exc = re.compile(include), re.compile(exclude) if exclude else None
    except re.error as err:
        raise UnseeError(f"scope {scope!r} is not a valid regular expression: {err}") from err
    chosen = {
        n: p for n, p in unet.named_parameters() if inc.search(n) and not (exc and exc.search(n))
    }
    if not chosen:
        raise UnseeError(f"scope {scope!r} matches no parameter of this UNet")
    return chosen


def train_only(unet: torch.nn.Module, scope: str) -> dict[str, torch.nn.Parameter]:
    """Freeze every parameter of ``unet`` but those in ``scope``; returns those
    (:func:`select_parameters`)."""
    params = select_parameters(unet, scope)
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    return params
