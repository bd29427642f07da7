import json

import numpy as np

from unsee.toyworld.render import render_dataset, write_dataset
from unsee.toyworld.vocab import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    STYLES,
    SUPERCLASSES,
    TRAIN_SYNONYMS,
    all_training_captions,
)


def test_vocabulary_is_the_fixed_one():
    assert SUPERCLASSES == {
        "polygon": ("square", "triangle", "hexagon"),
        "rounded shape": ("circle", "heart", "crescent"),
        "symbol": ("star", "cross", "arrow"),
    }
    assert len(SHAPES) == 9
    assert COLOURS == ("red", "orange", "yellow", "green", "blue", "purple")
    assert STYLES == ("solid", "striped", "dotted", "checkered")
    assert BACKGROUNDS == ("white", "gray", "black")


def test_render_is_deterministic_by_seed_and_index():
    a, la = render_dataset(16, seed=3)
    b, lb = render_dataset(16, seed=3)
    c, _ = render_dataset(16, seed=4)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8


def test_background_colour_matches_label():
    imgs, labels = render_dataset(60, seed=0)
    for img, lab in zip(imgs, labels, strict=True):
        corner = img[0, 0].astype(int)
        expected = {"white": 245, "gray": 128, "black": 12}[lab.background]
        assert abs(int(corner.mean()) - expected) <= 8


def test_training_captions_cover_grammar():
    caps = all_training_captions()
    assert "a star" in caps and "a red striped star on a black background" in caps
    assert "an orange symbol" in caps  # article follows the first word
    for syns in TRAIN_SYNONYMS.values():
        for s in syns:
            assert any(s in c for c in caps)


def test_write_dataset_labels(tmp_path):
    write_dataset(5, 7, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and len(list(tmp_path.glob("*.png"))) == 5
    for rec in lines:
        assert set(rec) == {"file", "caption", "shape", "colour", "style", "background"}
