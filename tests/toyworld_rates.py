"""Shared by the ToyWorld erasure tests: how often the judge sees each shape."""

from __future__ import annotations

import numpy as np

from unsee.models.sampling import generate
from unsee.toyworld.judge import predict
from unsee.toyworld.vocab import SHAPES, compose_caption


def shape_rates(
    bundle, judge, n: int, steps: int = 20, shapes: tuple[str, ...] = SHAPES
) -> dict[str, float]:
    """Share of the ``n`` images of "a {shape}" ("an arrow": the caption grammar; seeds
    1000..) judged as that shape, for every shape of ``shapes``."""
    prompts = [compose_caption(s) for s in shapes for _ in range(n)]
    seeds = [1000 + k for _ in shapes for k in range(n)]
    labels = [
        p["label"] for p in predict(judge, generate(bundle, prompts, seeds, steps=steps))["shape"]
    ]
    return {
        s: float(np.mean([lab == s for lab in labels[i * n : (i + 1) * n]]))
        for i, s in enumerate(shapes)
    }


def reduced_esd_x(model: str):
    """ESD-x on ``star``, reduced to stay within a few minutes on 2 cores: 40 iterations at
    ToyWorld's lr 3e-4 (a reduced run needs the faster rate on both bundled models) with
    20-step trajectories instead of 50."""
    from unsee.erase.engine import EraseConfig

    return EraseConfig(
        model=model,
        method="esd-x",
        concepts=["star"],
        iterations=40,
        lr=3e-4,
        params={"ddim_steps": 20},
    )
