"""ToyWorld concepts speak the caption grammar (issue 19: arrow's prompt was "a arrow")."""

from __future__ import annotations

import re

import pytest

from unsee.concepts import resolve_concept, toyworld_concept
from unsee.erase.config import EraseConfig
from unsee.toyworld import vocab

EVERY = vocab.SHAPES + vocab.STYLES + vocab.COLOURS + tuple(vocab.SUPERCLASSES)
CAPTIONS = set(vocab.all_training_captions())


@pytest.mark.parametrize("name", EVERY)
def test_every_prompt_and_anchor_prompt_is_a_caption_of_the_grammar(name):
    c = toyworld_concept(name)
    for prompt in (*c.prompts, *(a for a in c.anchor_prompts if a)):
        assert prompt in CAPTIONS, prompt
        for article, word in re.findall(r"\b(a|an) (\w)", prompt):
            assert article == ("an" if word in "aeiou" else "a"), prompt
    assert any(name in p for p in c.prompts)


def test_arrow_is_an_arrow_everywhere():
    assert toyworld_concept("arrow").prompts == ("an arrow",)
    assert "an arrow" in toyworld_concept("orange").anchor_prompts
    assert "a striped arrow" in toyworld_concept("striped").prompts
    assert "an orange arrow" in toyworld_concept("orange").prompts


@pytest.mark.parametrize("word", ["nudity", "nude", "naked", "nsfw", " NSFW "])
def test_erase_and_eval_agree_on_what_is_nudity(word):
    # one vocabulary: erasing maps the word to "fully dressed", and the scorecard's judge
    # scores the same word as nudity (nsfw used to be an ordinary object when erased)
    from unsee.evaluate.judges import EXPOSED_CLASSES, NudeNetJudge

    c = resolve_concept(word, None)
    assert c.kind == "nudity" and c.anchor_prompts == ("fully dressed",)
    judge = object.__new__(NudeNetJudge)  # the labels need no detector
    judge.classes = EXPOSED_CLASSES
    assert judge.concept_labels(word) == ("nudity", frozenset({"nude"}))
    assert resolve_concept("a cat", None).kind == "object"


def test_a_concept_given_as_text_keeps_its_name_and_is_erased_as_that_text():
    """``--concept-prompt`` (the conformance bench's style row: the official scripts take
    one text): the erasure trains on the text, the scorecard still judges the concept."""
    from unsee.erase.config import validate
    from unsee.errors import UnseeError

    plan = validate(
        EraseConfig(
            method="uce", concepts=["striped", "star"], concept_prompts=["striped", "a star"]
        )
    )
    striped, star = plan.concepts
    assert (striped.name, striped.kind, striped.prompts) == ("striped", "style", ("striped",))
    assert (striped.anchor, striped.anchor_prompts) == ("solid", ("solid",))
    assert star.prompts == ("a star",) and star.anchor_prompts == (star.anchor,) == ("symbol",)
    assert len(toyworld_concept("striped").prompts) == 9  # the judged prompts are untouched
    with pytest.raises(UnseeError, match="one --concept-prompt per concept"):
        validate(EraseConfig(method="uce", concepts=["star"], concept_prompts=["a", "b"]))
    with pytest.raises(UnseeError, match="empty"):
        validate(EraseConfig(method="uce", concepts=["star"], concept_prompts=[" "]))


def test_uce_pairs_a_concept_given_as_text_with_its_anchor_word():
    from unsee.erase.engine import Erasure
    from unsee.erase.methods.uce import UCE, Prompt
    from unsee.models.bundle import load_bundle

    recipe = Erasure(EraseConfig(method="uce", concepts=["striped"], concept_prompts=["striped"]))
    recipe.setup(load_bundle("toyworld"))
    assert isinstance(recipe.method, UCE)
    assert recipe.method.erase_pairs() == [(Prompt("striped", "striped"), Prompt("solid", "solid"))]
    default = Erasure(EraseConfig(method="uce", concepts=["striped"]))
    default.setup(load_bundle("toyworld"))
    assert len(default.method.erase_pairs()) == 9
