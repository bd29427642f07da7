"""bench/decision_steps.py: a switch after every step is the concept's own prompt, a switch
at step 0 is the other prompt's own image, so the curve's ends are the two plain drawings."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from unsee.concepts import toyworld_concept
from unsee.models.sampling import generate
from unsee.toyworld.judge import load_judge, predict

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("decision_steps")
    finally:
        sys.path.remove(str(BENCH))


def test_curve_ends_are_the_plain_drawings(study, toyworld):
    concept, seeds, steps = toyworld_concept("star"), [3, 4, 5, 6], 4
    rows = study.switch_curve(toyworld, concept, seeds, steps, 3.0, every=2)
    assert [r["k"] for r in rows.values()] == [0, 2, 4]
    judge = load_judge()

    def hits(prompt: str) -> int:
        images = generate(toyworld, [prompt] * len(seeds), seeds, steps=steps, guidance=3.0)
        return sum(s["label"] == "star" for s in predict(judge, images)["shape"])

    assert rows["k=4"]["anchor_hits"] == rows["k=4"]["empty_hits"] == hits(concept.prompts[0])
    assert rows["k=0"]["anchor_hits"] == hits(concept.anchor_prompts[0])
    assert rows["k=0"]["empty_hits"] == hits("")
    assert all(r["anchor_lo"] <= r["anchor_hits"] / r["n"] <= r["anchor_hi"] for r in rows.values())
    key = study.kscu_key_steps(toyworld, concept, 50)
    assert 0 < key["quick"] < 50 and 0 < key["paper"] < 50
