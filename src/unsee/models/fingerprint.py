"""Fingerprints of model weights and the library versions a result was made with.

A fingerprint is what an artifact card records as its base and what keys the image caches.
Hashing an SD-1.5-sized UNet takes ~15 s on one CPU thread, so each module's fingerprint is
kept until its weights change: every in-place edit (an optimiser step, an applied delta,
``load_state_dict``) bumps the edited tensor's version counter, and replacing a tensor
changes its storage, so a kept value is reused only while neither happened.
"""

from __future__ import annotations

import hashlib
import json
import platform
import weakref
from typing import Any

import torch

_Signature = tuple[tuple[int, int, torch.dtype, torch.device], ...]
_KEPT: weakref.WeakKeyDictionary[torch.nn.Module, tuple[_Signature, str]] = (
    weakref.WeakKeyDictionary()
)


def _signature(module: torch.nn.Module) -> _Signature:
    """Identity of the weights' current values without reading them (storage, version)."""
    return tuple(
        (t.data_ptr(), t._version, t.dtype, t.device)
        for t in (*module.parameters(), *module.buffers())
    )


def _hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer name, shape and float32 bytes (hex, 16 chars).

    Computed in float32 so a fp16 file loaded as fp32 and the same weights saved in fp32
    agree; computed once while the weights stay unchanged (see the module docstring).
    """
    sig = _signature(module)
    kept = _KEPT.get(module)
    if kept is not None and kept[0] == sig:
        return kept[1]
    value = _hash(module)
    _KEPT[module] = (sig, value)
    return value


def model_fingerprint(bundle: Any) -> str:
    """16 hex chars over the UNet, text encoder, VAE weights and the noise schedule of a
    :class:`unsee.models.bundle.Bundle`: everything that draws an image."""
    parts = [
        fingerprint(bundle.unet),
        fingerprint(bundle.text.model),
        fingerprint(bundle.vae) if bundle.vae is not None else "-",
        json.dumps(bundle.scheduler_config, sort_keys=True, default=str),
        str(bundle.resolution),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import safetensors
    import transformers

    from unsee.version import __version__

    return {
        "unsee": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }
