"""The judge's "no shape" answer: its presence head tells the nine shapes from ToyWorld-SD's
scenes without one, and adding it leaves the four attribute heads (and every number measured
with them) exactly as they were."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from unsee.cli import app
from unsee.toyworld.judge import load_judge, predict, predict_probs
from unsee.toyworld.sd.data import NONE_KINDS, SCENE_SHAPES, is_shape, render_scenes
from unsee.toyworld.vocab import ATTRIBUTES

runner = CliRunner()


def test_presence_head_tells_shapes_from_scenes_without_one(judge):
    images, codes = render_scenes(400, seed=9001, p_none=0.5)  # not the head's training seed
    said = np.array([p["label"] for p in predict(judge, images)["presence"]])
    shape = np.array([is_shape(c) for c in codes[:, 0]])
    assert 150 < shape.sum() < 250
    assert (said[shape] == "shape").mean() >= 0.97
    for k, kind in enumerate(NONE_KINDS, start=len(SCENE_SHAPES) - len(NONE_KINDS)):
        assert (said[codes[:, 0] == k] == "none").mean() >= 0.95, kind


def test_presence_head_leaves_the_attribute_heads_unchanged():
    images, _ = render_scenes(64, seed=9002, p_none=0.5)
    with_head, without = load_judge(), load_judge(presence=False)
    assert with_head.presence is not None and without.presence is None
    a, b = predict_probs(with_head, images), predict_probs(without, images)
    assert set(a) == {*ATTRIBUTES, "presence"} and set(b) == set(ATTRIBUTES)
    for k in ATTRIBUTES:
        assert torch.equal(a[k], b[k]), k


def test_quality_refuses_an_unknown_sampler():
    res = runner.invoke(app, ["toyworld", "quality", "--sampler", "euler", "--num-images", "1"])
    assert res.exit_code == 2
    assert "unknown --sampler 'euler'" in res.output
