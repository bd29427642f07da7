"""ToyWorld concepts speak the caption grammar (issue 19: arrow's prompt was "a arrow")."""

from __future__ import annotations

import re

import pytest

from unsee.concepts import resolve_concept, toyworld_concept
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
