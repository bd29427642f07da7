"""The shipped ToyWorld model draws what it is asked (judged by the shipped judge)."""

import numpy as np

from unsee.models.sampling import generate
from unsee.toyworld.judge import predict


def _judged(toyworld, judge, prompt, n=16, steps=25):
    imgs = generate(toyworld, [prompt] * n, list(range(n)), steps=steps)
    return predict(judge, imgs)


def test_star_prompts_give_stars_far_above_chance(toyworld, judge):
    preds = _judged(toyworld, judge, "a star")
    star_rate = np.mean([p["label"] == "star" for p in preds["shape"]])
    assert star_rate >= 0.5  # chance is 1/9


def test_attributes_follow_the_prompt(toyworld, judge):
    preds = _judged(toyworld, judge, "a blue striped heart on a black background")
    for head, want in [
        ("shape", "heart"),
        ("colour", "blue"),
        ("style", "striped"),
        ("background", "black"),
    ]:
        rate = np.mean([p["label"] == want for p in preds[head]])
        assert rate >= 0.6, (head, rate)
