"""ESD's guarantee on both bundled models, reduced: after erasing `star` the judge sees far
fewer stars and the other shapes as before (ToyWorld: pixels, v-prediction; ToyWorld-SD:
VAE latents, CLIP, epsilon, SD v1.4's schedule)."""

import numpy as np
import pytest

from devices import DEVICE
from toyworld_rates import shape_rates
from unsee.erase.engine import EraseConfig, run_erasure
from unsee.models.bundle import load_bundle
from unsee.toyworld.vocab import SHAPES


@pytest.mark.slow
@pytest.mark.parametrize("model", ["toyworld", "toyworld-sd"])
def test_esd_x_erases_star_and_keeps_other_shapes(model, judge, tmp_path):
    n = 8
    base = load_bundle(model, device=DEVICE)
    before = shape_rates(base, judge, n)
    # A 20-step trajectory instead of 50 keeps the test within a minute or two on 2 cores.
    res = run_erasure(
        EraseConfig(
            model=model,
            method="esd-x",
            concepts=["star"],
            iterations=40,
            lr=3e-4,  # ToyWorld's default; a reduced run needs the faster rate on both
            params={"ddim_steps": 20},
        ),
        tmp_path / "art",
        bundle=base,
    )
    after = shape_rates(res.bundle, judge, n)
    assert before["star"] >= 0.5
    assert after["star"] <= 0.25, after
    others = [s for s in SHAPES if s != "star"]
    drop = np.mean([before[s] for s in others]) - np.mean([after[s] for s in others])
    assert drop <= 0.12, (before, after)
