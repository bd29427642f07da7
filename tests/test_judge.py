"""The shipped judge recognises fresh renders (>= 98 % per head) and is not fooled by
off-vocabulary backgrounds or noise."""

import numpy as np

from unsee.toyworld.judge import evaluate_on_renders, predict
from unsee.toyworld.render import image_rng, random_attributes, render
from unsee.toyworld.vocab import ATTRIBUTES


def test_judge_accuracy_on_fresh_renders(judge):
    acc = evaluate_on_renders(judge, n=600, seed=12345)
    for head, a in acc.items():
        assert a >= 0.98, (head, a)


def test_judge_robust_to_odd_backgrounds_and_noise(judge):
    imgs, attrs = [], []
    for i in range(300):
        rng = image_rng(999, i)
        a = random_attributes(rng)
        img = render(a, rng, background_rgb=tuple(rng.uniform(0, 255, 3))).astype(float)
        img += rng.normal(0, 10, img.shape)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        attrs.append(a)
    preds = predict(judge, np.stack(imgs))
    for head in ("shape", "colour", "style"):
        acc = np.mean(
            [p["label"] == getattr(a, head) for p, a in zip(preds[head], attrs, strict=True)]
        )
        assert acc >= 0.9, (head, acc)


def test_judge_output_is_probabilities(judge):
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    preds = predict(judge, imgs)
    assert set(preds) == {*ATTRIBUTES, "presence"}  # the shipped judge has its presence head
    for head in preds.values():
        for p in head:
            assert 0.0 <= p["prob"] <= 1.0
