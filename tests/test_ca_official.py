"""Concept Ablation against the official code (issue 21): the model-based target is the
anchor prediction of the model being trained (``diffusers/train.py``), with the frozen
model's one switch away; the ablation trains on many caption pairs, the anchor word
replaced by the concept as ``utils.py`` does, with the single pair one switch away."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unsee.concepts import text_concept, toyworld_concept
from unsee.erase.engine import EraseConfig, Erasure, validate
from unsee.erase.methods.ca import SD_CAPTION_TEMPLATES, CAParams, caption_pairs
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
