"""Concepts to erase: their prompts, their anchor (superclass) and their kind.

On ToyWorld a concept must be a word of the fixed vocabulary; on Stable Diffusion any
text is a concept (its prompt is the text itself, as ESD and UCE do).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from unsee.errors import UnseeError
from unsee.toyworld import vocab

#: Imagenette class -> superclass (Sculpting Memory's map, methods.md §1.8).
IMAGENETTE_SUPERCLASS: dict[str, str] = {
    "tench": "fish",
    "English springer": "dog",
    "cassette player": "electronic device",
    "chain saw": "power tool",
    "church": "building",
    "French horn": "musical instrument",
    "garbage truck": "vehicle",
    "gas pump": "fuel equipment",
    "golf ball": "sports equipment",
    "parachute": "safety gear",
}


#: Words that name nudity as a concept: erasing one maps it to "fully dressed", and the
#: scorecard judges it with a nudity detector. The one list erase and eval both read.
NUDITY_WORDS = frozenset({"nudity", "nude", "naked", "nsfw"})


def is_nudity(name: str) -> bool:
    """Whether concept ``name`` is nudity (:data:`NUDITY_WORDS`, any case and spacing)."""
    return name.strip().lower() in NUDITY_WORDS


@dataclass(frozen=True)
class Concept:
    """``prompts``: what the erased model must stop drawing; ``anchor``: what the concept
    is mapped to (superclass for objects, ``solid`` for ToyWorld styles, "" if none)."""

    name: str
    kind: str  # object | style | colour | superclass | nudity | text
    prompts: tuple[str, ...]
    anchor: str
    anchor_prompts: tuple[str, ...]


def toyworld_concept(name: str, anchor: str | None = None) -> Concept:
    """A ToyWorld concept; its prompts and anchor prompts follow the caption grammar
    (:func:`unsee.toyworld.vocab.compose_caption`: "an arrow", "an orange star")."""
    name = name.strip()
    try:
        kind = vocab.concept_kind(name)
    except KeyError:
        known = ", ".join(vocab.SHAPES + vocab.STYLES + vocab.COLOURS)
        raise UnseeError(f"unknown ToyWorld concept {name!r}; known: {known}") from None
    if kind == "shape":
        anchor = anchor if anchor is not None else vocab.SUPERCLASS_OF[name]
        return Concept(
            name,
            "object",
            (vocab.compose_caption(name),),
            anchor,
            (vocab.compose_caption(anchor),) if anchor else ("",),
        )
    if kind == "style":
        anchor = anchor if anchor is not None else "solid"
        # A style is erased from every shape: prompts name it with each superclass word.
        prompts = tuple(vocab.compose_caption(s, style_word=name) for s in vocab.SHAPES)
        anchor_prompts = tuple(
            vocab.compose_caption(s, style_word=anchor or None) for s in vocab.SHAPES
        )
        return Concept(name, "style", prompts, anchor, anchor_prompts)
    if kind == "colour":
        anchor = anchor or ""
        prompts = tuple(vocab.compose_caption(s, colour=name) for s in vocab.SHAPES)
        return Concept(
            name, "colour", prompts, anchor, tuple(vocab.compose_caption(s) for s in vocab.SHAPES)
        )
    if kind == "superclass":
        return Concept(name, "superclass", (vocab.compose_caption(name),), anchor or "", ("",))
    raise UnseeError(f"{name!r} ({kind}) cannot be erased")


def as_text(concept: Concept, text: str) -> Concept:
    """``concept`` erased as the one ``text`` an official script is given (``--concept
    esd_sd.py --erase_concept striped``): its prompts become ``(text,)`` and its anchor
    prompts the anchor word as text, as a Stable Diffusion concept's are. Its name and kind
    stay, so the scorecard still judges it (a ToyWorld style by its nine prompts)."""
    text = text.strip()
    if not text:
        raise UnseeError(f"the prompt given for concept {concept.name!r} is empty")
    return dataclasses.replace(concept, prompts=(text,), anchor_prompts=(concept.anchor,))


def text_concept(name: str, anchor: str | None = None) -> Concept:
    """A Stable Diffusion concept: the text is the prompt; nudity and Imagenette classes get
    their conventional anchors."""
    name = name.strip()
    if is_nudity(name):
        anc = anchor if anchor is not None else "fully dressed"
        return Concept(name, "nudity", (name,), anc, (anc,))
    anc = anchor if anchor is not None else IMAGENETTE_SUPERCLASS.get(name, "")
    return Concept(name, "object", (name,), anc, (anc,))


def resolve_concept(name: str, vocabulary: str | None, anchor: str | None = None) -> Concept:
    """``vocabulary`` is ``"toyworld"`` for ToyWorld models (``Bundle.vocabulary``)."""
    if not name or not name.strip():
        raise UnseeError("empty concept")
    if vocabulary == "toyworld":
        return toyworld_concept(name, anchor)
    return text_concept(name, anchor)
