"""MiM-MU: its loss reads no retain prompt, its targets, the forget-set cache, and its
guarantee on ToyWorld."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devices import DEVICE
from toyworld_rates import shape_rates
from unsee.erase.engine import EraseConfig, Erasure, run_erasure, validate
from unsee.erase.methods.mim_mu import MiMMU, score_matching_weights, strip_concept
from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle
from unsee.models.image_sets import generate_set
from unsee.toyworld.vocab import SHAPES


def test_strip_concept_keeps_the_rest_of_the_prompt():
    assert strip_concept("a striped star", "striped") == "a star"
    assert strip_concept("an orange star", "orange") == "a star"
    assert strip_concept("a red octagon", "red") == "an octagon"
    assert (
        strip_concept("Van Gogh style painting of a cat", "Van Gogh") == "style painting of a cat"
    )


def test_score_matching_weights_are_the_kl_bound_weights(toyworld):
    ab = toyworld.alphas_cumprod().cpu()
    w = score_matching_weights(ab)
    assert w.shape == ab.shape and torch.isfinite(w).all() and (w > 0).all()
    assert abs(float(w.mean()) - 1) < 1e-5
    ab = ab.double()
    beta = 1 - ab[1:] / ab[:-1]
    ratio = (beta / (1 - ab[1:])) / (beta[100] / (1 - ab[101]))
    assert torch.allclose((w[1:] / w[101]).double(), ratio, rtol=1e-3)


def test_bad_variant_is_refused_before_loading():
    with pytest.raises(UnseeError, match=r"mim-mu\.variant"):
        validate(EraseConfig(method="mim-mu", concepts=["star"], params={"variant": "x"}))


@pytest.mark.parametrize("variant", ["off-policy", "conditional", "on-policy"])
def test_loss_reads_only_forget_prompts_and_their_targets(tiny_sd, tmp_path, monkeypatch, variant):
    # Compensation-free: no prompt of another concept (no retain set) enters the loss.
    seen: list[str] = []
    real_init = MiMMU.__init__

    def spy_init(self, params, ctx):
        real_init(self, params, ctx)
        real_encode = ctx.encode

        def encode(prompts):
            seen.extend(prompts)
            return real_encode(prompts)

        ctx.encode = encode

    monkeypatch.setattr(MiMMU, "__init__", spy_init)
    cfg = EraseConfig(
        method="mim-mu",
        concepts=["cat"],
        model=str(tiny_sd),
        iterations=3,
        batch_size=2,
        params={
            "variant": variant,
            "forget_images": 3,
            "forget_steps": 3,
            "ddim_steps": 3,
            "cache": False,
            "templates": "a blue {}",
        },
    )
    res = run_erasure(cfg, tmp_path / "art")
    assert res.card["cost"]["optimizer_steps"] == 3
    allowed = {"a blue cat", "a blue" if variant == "conditional" else ""}
    assert set(seen) == allowed, set(seen)


def _context(sd, **params):
    """A MiM-MU method on a tiny SD model, as the engine builds it (no training)."""

    recipe = Erasure(
        EraseConfig(
            method="mim-mu",
            concepts=["cat"],
            model=str(sd),
            batch_size=2,
            params={"forget_images": 2, "forget_steps": 3, "cache": False, **params},
        )
    )
    recipe.setup()
    assert isinstance(recipe.method, MiMMU)
    return recipe.method, recipe.bundle


def test_loss_is_zero_when_the_model_already_ignores_the_concept(tiny_sd):
    method, _ = _context(tiny_sd)
    assert method.loss(0, np.random.default_rng(0))[0].item() > 1e-6
    method, bundle = _context(tiny_sd)
    # zero cross-attention values: predictions no longer depend on the text, so the
    # concept's prediction already equals the unconditional teacher's
    with torch.no_grad():
        for name, p in bundle.unet.named_parameters():
            if "attn2.to_v" in name:
                p.zero_()
    method.ctx.start_values = {n: p.detach().clone() for n, p in method.ctx.params.items()}
    for step in range(3):
        assert method.loss(step, np.random.default_rng(step))[0].item() < 1e-10


def test_gradient_touches_only_cross_attention(tiny_sd, tmp_path):
    from unsee.artifacts import read_delta

    cfg = EraseConfig(
        method="mim-mu",
        concepts=["cat"],
        model=str(tiny_sd),
        iterations=2,
        batch_size=1,
        params={"forget_images": 2, "forget_steps": 3, "cache": False},
    )
    run_erasure(cfg, tmp_path / "art")
    delta, _ = read_delta(tmp_path / "art")
    assert delta and all(".attn2." in n for n in delta)
    assert any(float(d.abs().max()) > 0 for d in delta.values())


def test_forget_set_is_cached_and_a_damaged_entry_is_redrawn(tiny_sd, tmp_path):
    bundle = load_bundle(tiny_sd)
    a = generate_set(bundle, ["cat", "cat"], [1, 2], steps=3, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    b = generate_set(bundle, ["cat", "cat"], [1, 2], steps=3, cache_dir=tmp_path)
    assert torch.equal(a.latents, b.latents)
    files[0].write_bytes(b"not a safetensors file")
    c = generate_set(bundle, ["cat", "cat"], [1, 2], steps=3, cache_dir=tmp_path)
    assert torch.allclose(a.latents, c.latents, atol=1e-6)
    d = generate_set(bundle, ["cat", "cat"], [1, 3], steps=3, cache_dir=tmp_path)
    assert not torch.allclose(a.latents[1], d.latents[1])


@pytest.mark.slow
def test_mim_mu_erases_star_and_keeps_other_shapes(judge, tmp_path):
    base = load_bundle("toyworld", device=DEVICE)
    before = shape_rates(base, judge, 8)
    res = run_erasure(
        EraseConfig(method="mim-mu", concepts=["star"], params={"forget_steps": 20}),
        tmp_path / "art",
        bundle=base,
    )
    after = shape_rates(res.bundle, judge, 8)
    assert before["star"] >= 0.5
    assert after["star"] <= 0.25, after
    others = [s for s in SHAPES if s != "star"]
    drop = np.mean([before[s] for s in others]) - np.mean([after[s] for s in others])
    assert drop <= 0.12, (before, after)
