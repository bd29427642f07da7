"""The loader serves ToyWorld and Stable Diffusion alike; our sampler equals diffusers'."""

import numpy as np
import pytest
import torch

from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle
from unsee.models.sampling import ddim_sample, generate, initial_noise, to_eps


def test_tiny_sd_round_trips_and_matches_diffusers_pipeline(tiny_sd):
    from diffusers import StableDiffusionPipeline

    bundle = load_bundle(tiny_sd)
    assert bundle.vae is not None and bundle.latent_shape == (4, 8, 8)
    assert bundle.resolution == 16
    x, _ = ddim_sample(bundle, ["a cat", "a dog"], [1, 2], steps=5, guidance=3.0)
    ours = bundle.decode(x)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    lat = initial_noise(bundle, [1, 2])
    ref = pipe(
        ["a cat", "a dog"],
        num_inference_steps=5,
        guidance_scale=3.0,
        latents=lat,
        output_type="pt",
        height=16,
        width=16,
    ).images
    # diffusers returns [0, 1]; ours is [-1, 1]
    assert torch.allclose((ours + 1) / 2, ref, atol=2e-3)


def test_same_seed_same_images_regardless_of_batch(tiny_sd):
    bundle = load_bundle(tiny_sd)
    a = generate(bundle, ["a", "b", "c"], [5, 6, 7], steps=3, guidance=2.0, batch_size=3)
    b = generate(bundle, ["a", "b", "c"], [5, 6, 7], steps=3, guidance=2.0, batch_size=1)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_partial_sampling_stops_at_index(tiny_sd):
    bundle = load_bundle(tiny_sd)
    full_steps = 6
    x2, t2 = ddim_sample(bundle, ["a"], [0], steps=full_steps, guidance=3.0, stop_at=2)
    sched = bundle.scheduler()
    sched.set_timesteps(full_steps)
    assert t2 == int(sched.timesteps[2])
    # continuing from x2 by hand reaches the same end point as one full run
    x_full, _ = ddim_sample(bundle, ["a"], [0], steps=full_steps, guidance=3.0)
    x_start, _ = ddim_sample(bundle, ["a"], [0], steps=full_steps, guidance=3.0, stop_at=0)
    assert torch.allclose(x_start, initial_noise(bundle, [0]))
    assert not torch.allclose(x2, x_full)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_to_eps_inverts_each_prediction_type(ptype):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    ab = torch.tensor([0.9, 0.5, 0.1, 0.01]).view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    out = {"epsilon": eps, "v_prediction": ab.sqrt() * eps - (1 - ab).sqrt() * x0, "sample": x0}[
        ptype
    ]
    assert torch.allclose(to_eps(out, xt, ab, ptype), eps, atol=1e-5)


def test_v_prediction_sd_folder_loads_and_samples(tmp_path):
    from conftest import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "sd2", prediction_type="v_prediction")
    bundle = load_bundle(folder)
    assert bundle.prediction_type == "v_prediction"
    x, _ = ddim_sample(bundle, ["x"], [0], steps=3, guidance=2.0)
    assert torch.isfinite(x).all()


def test_toyworld_bundle_shapes(toyworld):
    assert toyworld.latent_shape == (3, 32, 32)
    assert toyworld.vae is None
    assert toyworld.text.hidden_size == toyworld.unet.config.cross_attention_dim == 384
    assert toyworld.prediction_type in {"epsilon", "v_prediction"}


def test_bad_model_specs(tmp_path):
    with pytest.raises(UnseeError, match="unknown model"):
        load_bundle("not a model!")
    with pytest.raises(UnseeError, match="not a model folder"):
        load_bundle(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UnseeError, match="is a file"):
        load_bundle(tmp_path / "f.txt")


def test_incomplete_folder(tiny_sd, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(UnseeError, match="incomplete"):
        load_bundle(broken)


def test_text_width_mismatch(tmp_path):
    from conftest import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "wide", text_width=48)
    with pytest.raises(UnseeError, match="does not match the UNet's cross_attention_dim"):
        load_bundle(folder)
