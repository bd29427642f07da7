"""Concept Ablation against the official code (issue 21): the model-based target is the
anchor prediction of the model being trained (``diffusers/train.py``), with the frozen
model's one switch away; the ablation trains on many caption pairs, the anchor word
replaced by the concept as ``utils.py`` does, with the single pair one switch away; and
the official's training details, each one switch away: mirrored anchor images, no
gradient through the start token's key and value, the loss mask without the outer ring
(the optimiser, AdamW with clipping, is tested with the engine: ``test_engine.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unsee.concepts import text_concept, toyworld_concept
from unsee.erase.engine import EraseConfig, Erasure, validate
from unsee.erase.methods.ca import (
    SD_CAPTION_TEMPLATES,
    CAParams,
    caption_pairs,
    ring_loss,
    with_mirrors,
)
from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle

SETS = {"forget_images": 3, "forget_steps": 2, "cache": False}


def _ca(sd, tmp_path, **params) -> Erasure:
    # short captions: the tiny model's character tokenizer keeps 14 characters
    captions = tmp_path / "animal.txt"
    captions.write_text("animal\nan animal\nanimal run\nanimal sit\n")
    if params.get("captions") != "single":
        params = {"caption_file": str(captions), **params}
    recipe = Erasure(
        EraseConfig(
            method="ca",
            concepts=["cat"],
            anchors=["animal"],
            model=str(sd),
            batch_size=2,
            lr=1e-2,
            params={**SETS, **params},
        )
    )
    recipe.setup()
    return recipe


def test_training_target_is_the_trained_models_anchor_prediction(tiny_sd, tmp_path):
    recipe = _ca(tiny_sd, tmp_path)
    ctx, method = recipe.ctx, recipe.method
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *ctx.bundle.latent_shape, generator=g)
    t = torch.tensor([100, 700])
    anchor = ctx.encode(["an animal"] * 2)

    def official() -> torch.Tensor:  # train.py: unet(noisy_latents, t, anchor states) no_grad
        with torch.no_grad():
            return ctx.unet(x, t, anchor).sample

    assert torch.equal(method.model_target(x, t, anchor), official())
    # one update of the ablation, then the target follows the trained model
    loss, _ = method.loss(0, np.random.default_rng(0))
    recipe.accelerator.backward(loss)
    recipe.opt.step()
    trained, frozen = method.model_target(x, t, anchor), ctx.frozen_pred(x, t, anchor)
    torch.testing.assert_close(trained, official(), rtol=0, atol=0)
    assert (trained - frozen).abs().max() > 1e-3
    base = load_bundle(tiny_sd)
    with torch.no_grad():
        torch.testing.assert_close(frozen, base.unet(x, t, anchor).sample)
    # and the loss reads the target from the model it names, never from the other one
    method.p.target_model = "frozen"
    torch.testing.assert_close(method.model_target(x, t, anchor), frozen, rtol=0, atol=0)

    def refused(*args, **kwargs):
        raise AssertionError("the other model was asked for the target")

    for mode, other in (("training", "frozen_pred"), ("frozen", "current_pred")):
        method.p.target_model = mode
        setattr(ctx, other, refused)
        method.loss(1, np.random.default_rng(1))
        del ctx.__dict__[other]  # the class's method again


def _check_pairs(pairs: list[tuple[str, str]], concept: str, anchor: str) -> None:
    assert len(pairs) > 1 and len(set(pairs)) == len(pairs)
    for c, a in pairs:
        assert anchor in a and concept not in a, a
        assert concept in c and c == a.replace(anchor, concept), (c, a)


def test_toyworld_caption_set_is_every_grammar_caption_naming_the_anchor():
    star = toyworld_concept("star")
    assert star.anchor == "symbol"  # a shape's anchor is its superclass
    pairs = caption_pairs(CAParams(), star, "toyworld")
    _check_pairs(pairs, "star", "symbol")
    # 7 colour choices x 5 style choices x 4 background choices, "a symbol" among them
    assert len(pairs) == 140 and ("a star", "a symbol") in pairs
    assert (
        "a red striped star on a gray background",
        "a red striped symbol on a gray background",
    ) in pairs
    striped = caption_pairs(CAParams(), toyworld_concept("striped"), "toyworld")
    _check_pairs(striped, "striped", "solid")
    assert {a.split()[-1] for _, a in striped if "background" not in a} >= {"heart", "arrow"}
    single = caption_pairs(CAParams(captions="single"), star, "toyworld")
    assert single == [("a star", "a symbol")]


def test_sd_caption_sets_from_templates_or_the_official_file(tmp_path):
    tench = text_concept("tench")
    pairs = caption_pairs(CAParams(), tench, None)
    _check_pairs(pairs, "tench", "fish")
    assert len(pairs) == len(SD_CAPTION_TEMPLATES)
    assert caption_pairs(CAParams(captions="single"), tench, None) == [("tench", "fish")]
    # the official's fixed file format: one anchor caption per line
    f = tmp_path / "fish.txt"
    f.write_text("i caught a fish\n\nlook at this fish i caught\na boat at sea\n")
    from_file = caption_pairs(CAParams(caption_file=str(f)), tench, None)
    assert from_file == [
        ("i caught a tench", "i caught a fish"),
        ("look at this tench i caught", "look at this fish i caught"),
    ]
    # nudity: the concept added to each people caption, the official's three ways in turn
    f.write_text("a man\na woman\na child\n")
    nude = caption_pairs(CAParams(caption_file=str(f)), text_concept("nudity"), None)
    assert nude == [
        ("nudity, a man", "a man"),
        ("in nudity style, a woman", "a woman"),
        ("a child, nudity", "a child"),
    ]
    assert caption_pairs(CAParams(), text_concept("nudity"), None) == [("nudity", "fully dressed")]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"caption_file": "/nonexistent/fish.txt"}, "cannot read /nonexistent/fish.txt"),
        ({"caption_file": "EMPTY"}, "has no captions"),
        ({"caption_file": "NOFISH"}, "no caption contains the anchor 'fish'"),
        ({"caption_file": "NOFISH", "captions": "single"}, "needs ca.captions=many"),
        ({"target_model": "teacher"}, "target_model"),
    ],
)
def test_bad_caption_settings_fail_before_loading(tiny_sd, tmp_path, params, match):
    (tmp_path / "EMPTY").write_text("\n")
    (tmp_path / "NOFISH").write_text("a boat\n")
    if params.get("caption_file") in ("EMPTY", "NOFISH"):
        params = {**params, "caption_file": str(tmp_path / params["caption_file"])}
    with pytest.raises(UnseeError, match=match) as err:
        validate(EraseConfig(method="ca", concepts=["tench"], model=str(tiny_sd), params=params))
    assert "\n" not in str(err.value)


def test_anchor_images_are_drawn_for_distinct_captions(tiny_sd, tmp_path):
    method = _ca(tiny_sd, tmp_path).method
    images = method.anchor["cat"]
    assert len(images) == 3 and len(set(images.prompts)) == 3
    for a in images.prompts:
        c = method.concept_prompt["cat"][a]
        assert "animal" in a and c == a.replace("animal", "cat")
    single = _ca(tiny_sd, tmp_path, captions="single").method
    assert single.anchor["cat"].prompts == ["animal"] * 3
    assert single.concept_prompt["cat"] == {"animal": "cat"}


def _kv_grads(recipe: Erasure, context: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the scoped keys and values from a trainable prediction under
    ``context``, and the prediction (``"pred"``)."""
    ctx = recipe.ctx
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *ctx.bundle.latent_shape, generator=g)
    pred = ctx.pred(x, torch.tensor([100, 700]), context)
    grads = torch.autograd.grad(pred.square().sum(), list(recipe.params.values()))
    return {"pred": pred.detach(), **dict(zip(recipe.params, grads, strict=True))}


def test_start_token_key_and_value_get_no_gradient(tiny_sd, tmp_path):
    recipe = _ca(tiny_sd, tmp_path)
    method, ctx = recipe.method, recipe.ctx
    assert method.hooks and all(".to_k." in n or ".to_v." in n for n in recipe.params)
    prompts = ctx.encode(["a cat", "an animal"])
    start_only = torch.zeros_like(prompts)
    start_only[:, 0] = prompts[:, 0]  # keys and values come from the start token alone
    frozen = _kv_grads(recipe, start_only)
    frozen_prompts = _kv_grads(recipe, prompts)
    method.end_round(0)  # the run's last round: the hooks are removed
    assert not method.hooks
    free = _kv_grads(recipe, start_only)
    free_prompts = _kv_grads(recipe, prompts)
    # the forward pass is the same; only the start token's gradient is cut
    assert torch.equal(frozen["pred"], free["pred"])
    assert torch.equal(frozen_prompts["pred"], free_prompts["pred"])
    for n in recipe.params:
        assert torch.count_nonzero(frozen[n]) == 0, n
        assert free[n].abs().max() > 0, n
        assert frozen_prompts[n].abs().max() > 0, n  # the other tokens still train
        assert not torch.allclose(frozen_prompts[n], free_prompts[n]), n
    assert not _ca(tiny_sd, tmp_path, freeze_start_token=False).method.hooks


def _official_mask(side: int, factor: int) -> torch.Tensor:
    """``utils.py:166-175`` for an image at full scale (``random_scale == size``, as with
    ``--noaug``), at ``factor`` pixels per cell instead of 8: (1, 1, side, side)."""
    size = scale = side * factor  # no rescaling: the image fills the frame at (0, 0)
    top = left = 0
    mask = np.zeros((size // factor, size // factor))
    mask[
        top // factor + 1 : (top + scale) // factor - 1,
        left // factor + 1 : (left + scale) // factor - 1,
    ] = 1.0
    return torch.from_numpy(mask).float()[None, None]


@pytest.mark.parametrize(("channels", "side", "factor"), [(4, 64, 8), (4, 8, 4), (3, 32, 1)])
def test_ring_loss_is_the_official_masked_loss(channels, side, factor):
    g = torch.Generator().manual_seed(side)
    pred, target = (torch.randn(3, channels, side, side, generator=g) for _ in range(2))
    mask = _official_mask(side, factor).expand(3, 1, side, side)
    official = F.mse_loss(pred, target, reduction="none")  # train.py:1145-1149
    official = ((official * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3])).mean()
    torch.testing.assert_close(ring_loss(pred, target), official)
    # C times the mean over the kept cells: the mask has one channel
    kept = (pred - target)[..., 1:-1, 1:-1]
    torch.testing.assert_close(ring_loss(pred, target), channels * kept.square().mean())
    border = target.clone()
    border[..., 0, :] += 1.0
    border[..., :, -1] -= 2.0
    assert ring_loss(border, target) == 0 and F.mse_loss(border, target) > 0


def _loss_inputs(recipe: Erasure, step: int, seed: int) -> dict[str, torch.Tensor]:
    """What ``method.loss`` trains on: x_t, the target and the loss."""
    method, seen = recipe.method, {}
    ablation_loss = type(method).ablation_loss

    def spy(self, pred, target):
        seen.update(pred=pred.detach(), target=target.detach())
        return ablation_loss(self, pred, target)

    pred = recipe.ctx.pred

    def pred_spy(x, t, c):
        seen["x"] = x.detach()
        return pred(x, t, c)

    recipe.ctx.pred = pred_spy
    method.ablation_loss = spy.__get__(method)
    try:
        seen["loss"] = method.loss(step, np.random.default_rng(seed))[0].detach()
    finally:
        del recipe.ctx.pred, method.ablation_loss
    return seen


def test_method_loss_is_the_ring_loss_unless_switched_off(tiny_sd, tmp_path):
    recipe = _ca(tiny_sd, tmp_path, hflip=False)
    seen = _loss_inputs(recipe, 0, 0)
    torch.testing.assert_close(seen["loss"], ring_loss(seen["pred"], seen["target"]))
    recipe.method.p.loss_mask = "none"
    seen = _loss_inputs(recipe, 0, 0)
    torch.testing.assert_close(seen["loss"], F.mse_loss(seen["pred"], seen["target"]))


def _expected_x(ctx, train, n: int, seed: int, hflip: bool) -> torch.Tensor:
    """x_t of step ``seed`` drawn by hand from the step's generator: timesteps, images,
    the flips (with hflip only), then the noise."""
    b = ctx.batch_size
    rng = np.random.default_rng(seed)
    t = torch.from_numpy(rng.integers(0, ctx.num_train_timesteps, b))
    idx = rng.integers(n, size=b)
    if hflip:
        idx = idx + n * (rng.random(b) < 0.5)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    noise = torch.randn((b, *train.latents.shape[1:]), generator=g)
    x0 = train.latents[torch.from_numpy(idx)]
    return ctx.noised(x0.to(ctx.device), t.to(ctx.device), noise.to(ctx.device)), idx


def test_hflip_trains_on_mirrored_images_with_the_steps_seeded_draw(tiny_sd, tmp_path):
    recipe = _ca(tiny_sd, tmp_path)
    method, ctx, bundle = recipe.method, recipe.ctx, recipe.ctx.bundle
    images, train = method.anchor["cat"], method.train_set["cat"]
    n = len(images)
    # image i + n is image i mirrored: both decoded and encoded again, one of them flipped
    pixels = bundle.decode(images.latents.to(ctx.device))
    torch.testing.assert_close(train.latents[:n].to(ctx.device), bundle.encode_images(pixels))
    mirrors = bundle.encode_images(pixels.flip(-1))
    torch.testing.assert_close(train.latents[n:].to(ctx.device), mirrors)
    assert train.prompts == images.prompts * 2
    pixel = dataclasses.replace(bundle, vae=None)  # a pixel model's images are kept and flipped
    both = with_mirrors(pixel, images).latents
    assert torch.equal(both, torch.cat([images.latents, images.latents.flip(-1)]))
    picked = []
    for seed in range(6):
        x, idx = _expected_x(ctx, train, n, seed, hflip=True)
        seen = _loss_inputs(recipe, seed, seed)
        torch.testing.assert_close(seen["x"], x, rtol=0, atol=0)
        picked += (idx >= n).tolist()
    assert 0 < sum(picked) < len(picked)  # some steps train on mirrors, some not
    plain = _ca(tiny_sd, tmp_path, hflip=False)  # draws what unsee drew before the switch
    assert plain.method.train_set["cat"] is plain.method.anchor["cat"]
    x, _ = _expected_x(plain.ctx, plain.method.anchor["cat"], n, 0, hflip=False)
    torch.testing.assert_close(_loss_inputs(plain, 0, 0)["x"], x, rtol=0, atol=0)


def test_ring_mask_on_a_latent_without_an_inside_is_one_clear_error(tiny_sd):
    bundle = load_bundle(tiny_sd)
    bundle.resolution = 2 * bundle.vae_factor  # a 2x2 latent: all border
    recipe = Erasure(
        EraseConfig(method="ca", concepts=["cat"], anchors=["animal"], model=str(tiny_sd))
    )
    with pytest.raises(UnseeError, match="leaves nothing of a 2x2 latent") as err:
        recipe.setup(bundle)
    assert "\n" not in str(err.value)


def test_mirrors_are_off_on_the_toyworld_models_and_one_switch_away(tiny_sd):
    """hflip is the official default on Stable Diffusion; ToyWorld draws each shape in one
    orientation, so its models default to no mirrors, and the user's value wins."""
    sd = validate(
        EraseConfig(method="ca", concepts=["cat"], anchors=["animal"], model=str(tiny_sd))
    )
    assert sd.params.hflip is True
    for model in ("toyworld", "toyworld-sd"):
        toy = validate(EraseConfig(method="ca", concepts=["star"], model=model))
        assert toy.params.hflip is False
        assert (toy.params.freeze_start_token, toy.params.loss_mask) == (True, "ring")
        mine = validate(
            EraseConfig(method="ca", concepts=["star"], model=model, params={"hflip": True})
        )
        assert mine.params.hflip is True
