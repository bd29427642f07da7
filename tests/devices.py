"""Where tests that build an erasure context by hand run: the GPU when there is one, as the
engine does (accelerate keeps one device per process, so a hand-made CPU accelerator would
clash with the engine's on a GPU machine), else the CPU."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

#: where tests load the models they hand to the engine
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_accelerator() -> Accelerator:
    return Accelerator(cpu=DEVICE == "cpu")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-equal on the CPU; on the GPU, equal up to its run-to-run kernel noise (atomic
    adds in backward passes make two identical computations differ in the last bits)."""
    if a.device.type == "cpu":
        return torch.equal(a, b)
    return bool((a - b).abs().max() <= 1e-3 * b.abs().max() + 1e-12)


#: bit-exact resume holds on the CPU; on CUDA two identical runs already differ slightly
CPU_EXACT = pytest.mark.skipif(
    DEVICE != "cpu",
    reason="CUDA kernels are not reproducible run to run, so resume cannot be bit-exact there",
)
