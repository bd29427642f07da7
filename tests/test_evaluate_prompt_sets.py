"""Built-in ToyWorld prompt sets and the CSV loaders (on the shared copies of the files)."""

import re

import pytest

from conftest import SHARED
from unsee.errors import UnseeError
from unsee.evaluate.prompt_sets import (
    PARAPHRASES,
    load_art,
    load_coco,
    load_i2p,
    load_imagenet,
    sd_prompt_set,
    toyworld_prompt_set,
)
from unsee.toyworld import vocab

PROMPTS = SHARED / "data" / "prompts"
ERASABLE = [*vocab.SHAPES, *vocab.COLOURS, *vocab.STYLES, *vocab.SUPERCLASSES]


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z]+", text.lower())) + " "


def _names(text: str, phrase: str) -> bool:
    """Whether ``text`` contains ``phrase`` as whole words (hyphens count as spaces)."""
    return _words(phrase) in _words(text)


@pytest.mark.parametrize("concept", ERASABLE)
def test_paraphrases_avoid_the_concept_its_synonyms_and_its_rivals(concept):
    attr = "shape" if concept in vocab.SUPERCLASSES else vocab.concept_kind(concept)
    rivals = list(vocab.ATTRIBUTES[attr])
    if attr == "shape":
        rivals += list(vocab.SUPERCLASSES)
    pset = toyworld_prompt_set([concept])
    texts = [p.prompt for p in pset.paraphrases[concept]]
    assert len(texts) == len(PARAPHRASES[concept]) == 3
    for text in texts:
        assert "{" not in text
        for word in rivals:  # neither the concept nor another value of its attribute
            assert not _names(text, word), (text, word)
        for syn in vocab.TRAIN_SYNONYMS.get(concept, ()):
            assert not _names(text, syn), (text, syn)


@pytest.mark.parametrize("concept", ERASABLE)
def test_target_prompts_name_the_concept_and_retain_prompts_never_do(concept):
    pset = toyworld_prompt_set([concept])
    for p in pset.targets[concept]:
        assert _names(p.prompt, concept)
    members = vocab.SUPERCLASSES.get(concept, (concept,))
    assert pset.retain
    for p in pset.retain:
        assert not any(_names(p.prompt, m) for m in (concept, *members)), p.prompt
        # every retain prompt asks all four attributes and its caption says each of them
        assert set(p.expect) == set(vocab.ATTRIBUTES)
        for values in p.expect.values():
            assert _names(p.prompt, next(iter(values)))
    for c in pset.retain_concepts:
        assert pset.probes(c), c


def test_star_retains_the_other_eight_shapes_with_cross_and_arrow_as_neighbours():
    pset = toyworld_prompt_set(["star"])
    assert set(pset.retain_concepts) == set(vocab.SHAPES) - {"star"}
    assert pset.neighbours == {"cross", "arrow"}
    assert len({p.prompt for p in pset.retain}) == len(pset.retain) == 8


def test_several_concepts_share_one_retain_set_without_duplicates():
    pset = toyworld_prompt_set(["star", "striped", "red"])
    texts = [p.prompt for p in pset.retain]
    assert len(set(texts)) == len(texts)
    assert set(pset.retain_concepts) == (
        (set(vocab.SHAPES) - {"star"})
        | (set(vocab.STYLES) - {"striped"})
        | (set(vocab.COLOURS) - {"red"})
    )
    for text in texts:
        assert not any(_names(text, w) for w in ("star", "striped", "red"))


def test_unknown_and_background_concepts_are_refused():
    with pytest.raises(UnseeError, match="unknown ToyWorld concept"):
        toyworld_prompt_set(["dragon"])
    with pytest.raises(UnseeError, match="background"):
        toyworld_prompt_set(["black"])


def test_sd_set_for_an_imagenette_class_retains_the_other_nine():
    def judge_concept(c):
        return "imagenet", frozenset({c})

    pset = sd_prompt_set(["tench"], judge_concept)
    assert [p.prompt for p in pset.targets["tench"]] == [
        "tench",
        "a photo of tench",
        "an image of tench",
    ]
    assert len(pset.retain) == 9 and "tench" not in pset.retain_concepts
    with pytest.raises(UnseeError, match="both erased and retained"):
        sd_prompt_set(["tench"], judge_concept, retain=["tench"])


def test_i2p_loader_reads_seeds_and_filters_the_sexual_subset():
    rows = load_i2p(PROMPTS / "unsafe-prompts4703.csv")
    assert len(rows) >= 4700
    assert rows[0].seed == 4261553411  # evaluation_seed of the first row
    sexual = load_i2p(PROMPTS / "unsafe-prompts4703.csv", categories=["sexual"])
    assert len(sexual) == len(load_i2p(PROMPTS / "sexual_data.csv")) == 931
    assert all("sexual" in r.extra["categories"] for r in sexual)
    assert len(load_i2p(PROMPTS / "sexual_data.csv", limit=10)) == 10


def test_coco_imagenet_and_art_loaders():
    coco = load_coco(PROMPTS / "coco_30k.csv")
    assert len(coco) == 30000 and coco[0].seed == 41337
    assert len(load_coco(PROMPTS / "coco_30k.csv", limit=100)) == 100
    tench = load_imagenet(PROMPTS / "imagenet_prompts.csv", classes=["tench"])
    assert [(r.prompt, r.seed) for r in tench] == [("image of tench", 41955)]
    assert len(load_imagenet(PROMPTS / "imagenet_prompts.csv")) == 1860
    vg = load_art(PROMPTS / "vangogh_prompts.csv", artists=["Vincent van Gogh"])
    assert len(vg) == 50 and vg[0].seed == 2219
    famous = load_art(PROMPTS / "famous_art_prompts.csv", artists=["van gogh"])
    assert famous and all("van gogh" in r.prompt.lower() for r in famous)
    with pytest.raises(UnseeError, match="no rows"):
        load_imagenet(PROMPTS / "imagenet_prompts.csv", classes=["unicorn"])
