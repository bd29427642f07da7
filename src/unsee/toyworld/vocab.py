"""The fixed ToyWorld vocabulary and its caption grammar.

The words here are a contract: tests, benchmarks and reports use them verbatim
(see ``shared/toyworld.md``). Synonyms used in *training* are listed explicitly so
that evaluation paraphrases can be checked to avoid them.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "polygon": ("square", "triangle", "hexagon"),
    "rounded shape": ("circle", "heart", "crescent"),
    "symbol": ("star", "cross", "arrow"),
}
SHAPES: tuple[str, ...] = tuple(s for members in SUPERCLASSES.values() for s in members)
SUPERCLASS_OF: dict[str, str] = {s: sc for sc, members in SUPERCLASSES.items() for s in members}
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
STYLES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS: tuple[str, ...] = ("white", "gray", "black")

#: attribute name -> its classes, in the order the judge's heads use.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "style": STYLES,
    "background": BACKGROUNDS,
}

#: The only synonyms the model sees in training. Evaluation paraphrases must avoid them.
TRAIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "star": ("five-pointed star",),
    "cross": ("plus sign",),
    "square": ("box",),
    "crescent": ("crescent moon",),
    "dotted": ("polka-dot",),
    "checkered": ("checkerboard",),
}

# Probabilities of the caption grammar (each part is sometimes left out).
P_COLOUR = 0.7
P_STYLE = 0.6
P_BACKGROUND = 0.6
P_SUPERCLASS_WORD = 0.12
P_SYNONYM = 0.15


@dataclass(frozen=True)
class Attributes:
    """The ground truth of one ToyWorld image."""

    shape: str
    colour: str
    style: str
    background: str

    def as_dict(self) -> dict[str, str]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "style": self.style,
            "background": self.background,
        }


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def compose_caption(
    shape_word: str,
    colour: str | None = None,
    style_word: str | None = None,
    background: str | None = None,
) -> str:
    """Caption grammar: ``a [colour] [style] <shape> [on a <background> background]``."""
    words = [w for w in (colour, style_word, shape_word) if w]
    phrase = " ".join(words)
    caption = f"{_article(phrase)} {phrase}"
    if background:
        caption += f" on a {background} background"
    return caption


def sample_caption(attrs: Attributes, rng: random.Random) -> str:
    """Draw one training caption for ``attrs`` (parts dropped, superclass words, synonyms)."""
    if rng.random() < P_SUPERCLASS_WORD:
        shape_word = SUPERCLASS_OF[attrs.shape]
    elif attrs.shape in TRAIN_SYNONYMS and rng.random() < P_SYNONYM:
        shape_word = rng.choice(TRAIN_SYNONYMS[attrs.shape])
    else:
        shape_word = attrs.shape
    style_word = None
    if rng.random() < P_STYLE:
        style_word = attrs.style
        if attrs.style in TRAIN_SYNONYMS and rng.random() < P_SYNONYM:
            style_word = rng.choice(TRAIN_SYNONYMS[attrs.style])
    return compose_caption(
        shape_word,
        attrs.colour if rng.random() < P_COLOUR else None,
        style_word,
        attrs.background if rng.random() < P_BACKGROUND else None,
    )


def all_training_captions() -> list[str]:
    """Every caption :func:`sample_caption` can produce (for one-off text encoding)."""
    shape_words = set(SHAPES) | set(SUPERCLASSES)
    style_words: set[str | None] = {None, *STYLES}
    for concept, syns in TRAIN_SYNONYMS.items():
        (shape_words if concept in SHAPES else style_words).update(syns)
    colours: list[str | None] = [None, *COLOURS]
    bgs: list[str | None] = [None, *BACKGROUNDS]
    return sorted(
        {
            compose_caption(s, c, st, b)
            for s, c, st, b in itertools.product(sorted(shape_words), colours, style_words, bgs)
        }
    )


def concept_kind(name: str) -> str:
    """Which attribute a ToyWorld concept word belongs to (``shape``, ``colour``, ...)."""
    for attr, values in ATTRIBUTES.items():
        if name in values:
            return attr
    if name in SUPERCLASSES:
        return "superclass"
    raise KeyError(name)


def substituted_captions(word: str, anchor: str) -> list[tuple[str, str]]:
    """Caption pairs (with ``word``, with ``anchor``): every caption of the grammar that
    names ``anchor`` in ``word``'s slot (shape and superclass words fill the shape slot),
    the other attributes each left out or set to each of their words (a style or colour
    is drawn on every shape), and the same caption with ``word`` in the anchor's place.
    Concept Ablation's anchor captions, built from the grammar instead of a language model."""
    slot = "shape" if concept_kind(word) in ("shape", "superclass") else concept_kind(word)
    colours: list[str | None] = [None, *COLOURS]
    styles: list[str | None] = [None, *STYLES]
    bgs: list[str | None] = [None, *BACKGROUNDS]
    if slot == "shape":
        return [
            (compose_caption(word, c, st, b), compose_caption(anchor, c, st, b))
            for c, st, b in itertools.product(colours, styles, bgs)
        ]
    if slot == "style":
        return [
            (compose_caption(s, c, word, b), compose_caption(s, c, anchor, b))
            for s, c, b in itertools.product(SHAPES, colours, bgs)
        ]
    return [
        (compose_caption(s, word, st, b), compose_caption(s, anchor, st, b))
        for s, st, b in itertools.product(SHAPES, styles, bgs)
    ]
