"""Noise levels (issue 19): SD 1.x settings map to themselves on SD 1.x's schedule and by
nearest log-SNR elsewhere; MiM-MU's timestep range is mapped and honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unsee.erase.engine import EraseConfig, validate
from unsee.erase.timesteps import (
    NoiseLevel,
    log_snr,
    map_sd1_range,
    model_level,
    sd1_alphas_cumprod,
    sd1_ddim_timesteps,
)
from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle
from unsee.models.sampling import ddim_timesteps


def test_a_model_with_sd1_betas_maps_every_setting_to_itself(tiny_sd):
    sd = load_bundle(tiny_sd)  # scaled-linear 0.00085..0.012, as SD 1.x ships
    ab = sd.alphas_cumprod()
    assert torch.equal(ab.cpu(), sd1_alphas_cumprod())
    for t in range(1000):
        assert NoiseLevel.from_sd1_timestep(t).timestep(ab) == t
    for steps in (50, 25):
        grid = ddim_timesteps(sd, steps)
        assert grid == sd1_ddim_timesteps(steps)
    grid = ddim_timesteps(sd, 50)
    for i in range(50):
        assert NoiseLevel.from_sd1_ddim_index(i).ddim_index(grid, ab) == i
        assert NoiseLevel.from_sd1_ddim_index(i).sd1_ddim_index() == i
    assert map_sd1_range(0, 999, ab) == (0, 999)
    assert map_sd1_range(300, 700, ab) == (300, 700)


def test_another_schedule_gets_the_nearest_noise_level_in_order(toyworld):
    ab = toyworld.alphas_cumprod()
    levels = log_snr(ab)
    sd_levels = log_snr(sd1_alphas_cumprod())
    mapped = [NoiseLevel.from_sd1_timestep(t).timestep(ab) for t in range(0, 1000, 7)]
    assert mapped == sorted(mapped)  # noisier on SD 1.x is noisier here
    for t, m in zip(range(0, 1000, 7), mapped, strict=True):
        gap = abs(float(levels[m] - sd_levels[t]))
        assert gap <= float((levels - sd_levels[t]).abs().min()) + 1e-12
    # ToyWorld ends at zero SNR, which SD 1.x never reaches: the full range is still full
    assert not torch.isfinite(levels[-1])
    assert map_sd1_range(0, 999, ab) == (0, len(ab) - 1)
    assert model_level(len(ab) - 1, ab).sd1_timestep() == 999
    lo, hi = map_sd1_range(455, 999, ab)
    assert abs(float(levels[lo] - sd_levels[455])) < 0.05 and hi == len(ab) - 1


@pytest.mark.parametrize("variant", ["off-policy", "on-policy"])
def test_mim_mu_draws_its_timesteps_from_the_mapped_range(toyworld, variant):
    from unsee.erase.engine import Erasure
    from unsee.erase.methods.mim_mu import MiMMU

    recipe = Erasure(
        EraseConfig(
            method="mim-mu",
            concepts=["star"],
            batch_size=4,
            params={
                "variant": variant,
                "t_min": 455,
                "forget_images": 2,
                "forget_steps": 2,
                "ddim_steps": 10,
                "cache": False,
            },
        )
    )
    recipe.setup(toyworld)
    m, ctx = recipe.method, recipe.ctx
    assert isinstance(m, MiMMU)
    lo, hi = m.t_range
    assert (lo, hi) == map_sd1_range(455, 999, toyworld.alphas_cumprod())
    seen = []
    real_pred = ctx.pred

    def pred(x_t, t, context):  # every loss queries the edited model at its x_t's t
        seen.append(t)
        return real_pred(x_t, t, context)

    ctx.pred = pred  # type: ignore[method-assign]
    for step in range(3):
        m.loss(step, np.random.default_rng(step))
    t = torch.cat(seen)
    assert len(t) == 12 and int(t.min()) >= lo and int(t.max()) <= hi


def test_bad_range_is_refused_before_loading():
    with pytest.raises(UnseeError, match="t_min"):
        validate(
            EraseConfig(method="mim-mu", concepts=["star"], params={"t_min": 800, "t_max": 700})
        )
