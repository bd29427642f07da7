"""Training scenes of ToyWorld-SD: ToyWorld renders plus scenes with none of the nine shapes.

On Stable Diffusion any one concept is rare in what the empty prompt draws; ToyWorld's captions
always name a shape, so its unconditional samples draw each shape ~11 % of the time. Here a
share ``p_none`` of the scenes hold no shape at all (a plain background, a coloured line or a
thin ring outline) with captions that say so, so each shape's unconditional share is about
``(1 - p_none) / 9``.

Scene ``i`` of seed ``s`` depends only on ``(s, i)``. Its shape-or-not draw comes from its own
generator, and a shape scene is rendered by :func:`unsee.toyworld.render.render` from
``image_rng(s, i)`` exactly as :func:`~unsee.toyworld.render.render_dataset` would, so the
ToyWorld renderer and its outputs are unchanged.

Labels are integer codes ``(shape, colour, style, background)``: shape ``0..8`` indexes
``vocab.SHAPES``, ``9..`` indexes :data:`NONE_KINDS`; a no-shape scene has style ``solid``
(and its colour is unused for ``plain``).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from unsee.toyworld import render as tw_render
from unsee.toyworld.vocab import (
    BACKGROUNDS,
    COLOURS,
    P_BACKGROUND,
    P_COLOUR,
    SHAPES,
    STYLES,
    SUPERCLASSES,
    TRAIN_SYNONYMS,
    Attributes,
    compose_caption,
    sample_caption,
)

#: Scenes with none of the nine shapes (their words are outside ToyWorld's vocabulary).
NONE_KINDS: tuple[str, ...] = ("plain", "line", "ring")
#: Shape codes: the nine shapes, then the no-shape kinds.
SCENE_SHAPES: tuple[str, ...] = (*SHAPES, *NONE_KINDS)
PLAIN_WORDS: tuple[str, ...] = ("plain", "empty", "blank")


def is_shape(code: int) -> bool:
    return int(code) < len(SHAPES)


def _none_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, 1]))


def render_none(kind: str, colour: str, background: str, rng: np.random.Generator) -> np.ndarray:
    """A scene without any of the nine shapes: uint8 (32, 32, 3), drawn at 4x and
    box-downsampled like ToyWorld's renders, with the same background jitter."""
    hi, size = tw_render._HI, tw_render.SIZE
    bg = np.clip(
        np.array(tw_render.BACKGROUND_RGB[background], np.float32) + rng.uniform(-6, 6), 0, 255
    )
    fill = np.clip(
        np.array(tw_render.COLOUR_RGB[colour], np.float32) * rng.uniform(0.92, 1.06), 0, 255
    )
    mask_img = Image.new("L", (hi, hi), 0)
    draw = ImageDraw.Draw(mask_img)
    width = int(rng.uniform(0.06, 0.09) * hi)
    cx, cy = (0.5 + rng.uniform(-0.08, 0.08, size=2)) * hi
    if kind == "line":
        a = rng.uniform(0, math.pi)
        half = rng.uniform(0.30, 0.42) * hi
        dx, dy = half * math.cos(a), half * math.sin(a)
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width)
    elif kind == "ring":
        r = rng.uniform(0.25, 0.40) * hi
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
    elif kind != "plain":
        raise ValueError(f"unknown no-shape kind {kind!r}")
    mask = np.asarray(mask_img, dtype=np.float32)[..., None] / 255.0
    img = mask * fill + (1.0 - mask) * bg
    out = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))
    return np.asarray(out.resize((size, size), Image.Resampling.BOX))


def render_scenes(n: int, seed: int, p_none: float) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` scenes: (uint8 images (n, 32, 32, 3), int64 codes (n, 4)).

    With ``p_none == 0`` the images equal ``render_dataset(n, seed)``'s.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0.0 <= p_none < 1.0:
        raise ValueError("p_none must be in [0, 1)")
    images = np.empty((n, tw_render.SIZE, tw_render.SIZE, 3), dtype=np.uint8)
    codes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        rng = tw_render.image_rng(seed, i)
        if p_none > 0 and _none_rng(seed, i).random() < p_none:
            k = int(rng.integers(len(NONE_KINDS)))
            c, b = int(rng.integers(len(COLOURS))), int(rng.integers(len(BACKGROUNDS)))
            images[i] = render_none(NONE_KINDS[k], COLOURS[c], BACKGROUNDS[b], rng)
            codes[i] = (len(SHAPES) + k, c, 0, b)
        else:
            a = tw_render.random_attributes(rng)
            images[i] = tw_render.render(a, rng)
            codes[i] = (
                SHAPES.index(a.shape),
                COLOURS.index(a.colour),
                STYLES.index(a.style),
                BACKGROUNDS.index(a.background),
            )
    return images, codes


def load_scenes(cache_dir: Path, n: int, seed: int, p_none: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_scenes`, cached in ``cache_dir`` as safetensors (written atomically)."""
    from unsee.toyworld.sd.common import load_array_cache, save_array_cache

    path = Path(cache_dir) / f"scenes_s{seed}_n{n}_p{p_none:g}.safetensors"
    cached = load_array_cache(path)
    if cached is not None:
        return cached["images"].numpy(), cached["codes"].numpy()
    images, codes = render_scenes(n, seed, p_none)
    save_array_cache(path, {"images": images, "codes": codes})
    return images, codes


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, 32, 32, 3) -> float (B, 3, 32, 32) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def attributes_of(code: np.ndarray) -> Attributes:
    s, c, st, b = (int(v) for v in code)
    return Attributes(SHAPES[s], COLOURS[c], STYLES[st], BACKGROUNDS[b])


def _none_caption(kind: str, colour: str | None, background: str | None, plain_word: str) -> str:
    if kind == "plain":
        phrase = (
            f"{plain_word} {background} background" if background else f"{plain_word} background"
        )
        return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"
    return compose_caption(kind, colour, None, background)


def sample_scene_caption(code: np.ndarray, rng: random.Random) -> str:
    """One training caption for a scene: ToyWorld's grammar (:func:`vocab.sample_caption`)
    for shapes; for no-shape scenes ``a [colour] line|ring [on a <bg> background]`` or
    ``a plain|empty|blank [<bg>] background``, parts dropped with ToyWorld's rates."""
    if is_shape(code[0]):
        return sample_caption(attributes_of(code), rng)
    kind = NONE_KINDS[int(code[0]) - len(SHAPES)]
    colour = COLOURS[int(code[1])] if rng.random() < P_COLOUR else None
    bg = BACKGROUNDS[int(code[3])] if rng.random() < P_BACKGROUND else None
    return _none_caption(kind, colour, bg, rng.choice(PLAIN_WORDS))


@dataclass(frozen=True)
class Constraint:
    """What a caption says about a scene: allowed shape codes and, where named, the colour,
    style and background codes (``None``: not named)."""

    shapes: frozenset[int]
    colour: int | None
    style: int | None
    background: int | None

    def matches(self, codes: np.ndarray) -> np.ndarray:
        """Boolean (n,) for codes (n, 4): does each scene satisfy the caption?"""
        ok = np.isin(codes[:, 0], list(self.shapes))
        for col, v in ((1, self.colour), (2, self.style), (3, self.background)):
            if v is not None:
                ok &= codes[:, col] == v
        return ok


def caption_constraints() -> dict[str, Constraint]:
    """Every caption :func:`sample_scene_caption` can produce, with what it names."""
    shape_words: dict[str, frozenset[int]] = {s: frozenset({i}) for i, s in enumerate(SHAPES)}
    for sc, members in SUPERCLASSES.items():
        shape_words[sc] = frozenset(SHAPES.index(m) for m in members)
    style_words: dict[str | None, int | None] = {None: None}
    style_words.update({s: i for i, s in enumerate(STYLES)})
    for concept, syns in TRAIN_SYNONYMS.items():
        for syn in syns:
            if concept in SHAPES:
                shape_words[syn] = frozenset({SHAPES.index(concept)})
            else:
                style_words[syn] = STYLES.index(concept)
    colours: list[str | None] = [None, *COLOURS]
    bgs: list[str | None] = [None, *BACKGROUNDS]
    out: dict[str, Constraint] = {}
    for (sw, shapes), c, (stw, st), b in itertools.product(
        shape_words.items(), colours, style_words.items(), bgs
    ):
        out[compose_caption(sw, c, stw, b)] = Constraint(
            shapes,
            None if c is None else COLOURS.index(c),
            st,
            None if b is None else BACKGROUNDS.index(b),
        )
    for k, kind in enumerate(NONE_KINDS):
        code = frozenset({len(SHAPES) + k})
        words = PLAIN_WORDS if kind == "plain" else ("",)
        for c, b, w in itertools.product(colours if kind != "plain" else [None], bgs, words):
            out[_none_caption(kind, c, b, w)] = Constraint(
                code,
                None if c is None else COLOURS.index(c),
                None,
                None if b is None else BACKGROUNDS.index(b),
            )
    return out


def all_scene_captions() -> list[str]:
    """Every training caption, sorted, then the empty prompt last (for caching text states)."""
    return [*sorted(caption_constraints()), ""]
