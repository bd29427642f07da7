"""Shared by the resume tests: two artifacts carry the same weight delta."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def _delta(art: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(art) / "delta.safetensors"))


def assert_same_delta(a_dir: Path, b_dir: Path, atol: float = 1e-6) -> None:
    """The delta tensors in ``a_dir`` and ``b_dir`` have the same names and agree to ``atol``."""
    a, b = _delta(a_dir), _delta(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


def max_gap(a_dir: Path, b_dir: Path) -> float:
    """Largest absolute difference between the delta tensors of two artifacts."""
    a, b = _delta(a_dir), _delta(b_dir)
    return max(float((a[k] - b[k]).abs().max()) for k in a)
