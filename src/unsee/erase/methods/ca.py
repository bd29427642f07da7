"""Concept Ablation (Kumari et al., ICCV 2023; methods.md §4.5).

The concept's distribution is mapped onto its anchor's: anchor images ``x*`` are drawn by
the base model from anchor captions ``c*`` (with the matching concept caption as negative
prompt, as the other relabelling methods here do), noised at t ~ U{0..T-1}, and the edited
model's prediction *for the concept caption* ``c`` (the anchor caption with the concept in
the anchor's place) on them is trained towards

* ``target=model`` (default): ``sg[e(x*_t, c*, t)]``, the anchor prediction of
  ``target_model``: ``training`` (default, the official ``diffusers/train.py``: the model
  being trained, under ``no_grad``) or ``frozen`` (the model as the run started; unsee's
  before issue 21). The frozen target is kept because with the official one nothing holds
  the anchor's own prediction: the key/value update that moves ``c`` also moves ``c*``,
  and the target follows it;
* ``target=noise``: the denoising target itself (plain denoising of anchor images under
  ``c``: the noise ``eps``, or v natively on v-prediction models).

Captions (``captions``): ``many`` (default) trains on many caption pairs as the official
code does (hundreds of captions naming the anchor, ``utils.py`` replacing the anchor word
by the concept): ``caption_file`` (one anchor caption per line, the official
``--class_prompt`` file such as ``assets/finetune_prompts/fish.txt``; for nudity the
concept is added to each caption the official's three ways); else on ToyWorld every
caption of the grammar naming the anchor (:func:`unsee.toyworld.vocab.substituted_captions`)
and on Stable Diffusion objects :data:`SD_CAPTION_TEMPLATES` (the official asks a language
model, or reads its own fixed files for fish, cat, dog and robot, neither shipped here);
nudity on SD without a file keeps its one pair. ``single`` trains the concept's own prompt
pairs ("tench" <-> "fish"), unsee's before issue 21. Images cycle through the pairs in a
seeded order, one image per pair until every pair has one.

``prior_weight`` > 0 adds prior preservation, the denoising loss on the same anchor images
under their own captions: ``prior_weight || e(x*_t, c*, t) - eps ||^2``. Predictions and
targets are in the run's loss space (``e`` is the model's native output by default). Scope:
cross-attention keys and values (``kv``); the paper's nudity setting trains all attention
(``--scope re:attn[12]\\.``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from unsee.concepts import Concept
from unsee.erase import image_sets as sets
from unsee.erase.base import Method, register
from unsee.erase.context import ErasureContext, mse
from unsee.errors import UnseeError
from unsee.models.family import ModelFamily
from unsee.toyworld import vocab

TARGETS = ("model", "noise")
#: Stable Diffusion anchor captions without a ``caption_file``: photo templates from CLIP's
#: ImageNet prompt list (Radford et al., 2021), each filled with the anchor and the concept
SD_CAPTION_TEMPLATES = (
    "a photo of a {}",
    "a photo of the {}",
    "a close-up photo of a {}",
    "a bright photo of a {}",
    "a dark photo of a {}",
    "a blurry photo of a {}",
    "a cropped photo of a {}",
    "a good photo of a {}",
    "a photo of a large {}",
    "a photo of a small {}",
    "a photo of my {}",
    "a photo of one {}",
    "a black and white photo of a {}",
    "a low resolution photo of a {}",
    "a painting of a {}",
    "a drawing of a {}",
    "a rendering of a {}",
    "a sketch of a {}",
)
#: how the official code adds a nudity-like concept to an anchor caption (``utils.py``,
#: ``__getprompt__``, drawn at random there, in turn here)
INSERTIONS = ("{c}, {a}", "in {c} style, {a}", "{a}, {c}")


@dataclass
class CAParams(sets.ImageSetParams):
    target: str = "model"  # model | noise
    prior_weight: float = 0.0  # prior preservation on anchor prompts (0: off)
    # whose anchor prediction target=model uses: the model being trained (official) or frozen
    target_model: Literal["training", "frozen"] = "training"
    captions: Literal["many", "single"] = "many"  # many caption pairs (official) or one
    caption_file: str = ""  # anchor captions, one per line (captions=many)

    def __post_init__(self) -> None:
        self.check_sets("ca")
        if self.target not in TARGETS:
            raise UnseeError(f"ca.target must be model or noise (got {self.target!r})")
        if self.prior_weight < 0:
            raise UnseeError("ca.prior_weight must be >= 0")
        if self.caption_file and self.captions == "single":
            raise UnseeError("ca.caption_file needs ca.captions=many")


def read_captions(path: str) -> list[str]:
    """The non-empty lines of a caption file; one clear error when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UnseeError(f"ca.caption_file: cannot read {path}: {reason}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UnseeError(f"ca.caption_file {path} has no captions")
    return lines


def caption_pairs(p: CAParams, concept: Concept, vocabulary: str | None) -> list[tuple[str, str]]:
    """(concept caption, anchor caption) pairs the ablation trains on, templated (see the
    module docstring)."""
    if p.captions == "single" or (
        not p.caption_file and vocabulary != "toyworld" and concept.kind != "object"
    ):
        return list(sets.anchor_of(p, concept).items())
    if p.caption_file:
        lines = read_captions(p.caption_file)
        if concept.kind == "nudity":
            pairs = [
                (INSERTIONS[i % len(INSERTIONS)].format(c=concept.name, a=a), a)
                for i, a in enumerate(lines)
            ]
        else:  # the official replaces the anchor word; a caption without it carries nothing
            pairs = [
                (a.replace(concept.anchor, concept.name), a) for a in lines if concept.anchor in a
            ]
            if not pairs:
                raise UnseeError(
                    f"ca.caption_file {p.caption_file}: no caption contains the anchor "
                    f"{concept.anchor!r}"
                )
    elif vocabulary == "toyworld":
        pairs = vocab.substituted_captions(concept.name, concept.anchor)
    else:
        pairs = [(t.format(concept.name), t.format(concept.anchor)) for t in SD_CAPTION_TEMPLATES]
    return [(p.template.format(c), p.template.format(a)) for c, a in pairs]


@register("ca")
class ConceptAblation(Method):
    scope = "kv"
    Params = CAParams
    summary = "concept captions trained to the anchor captions' predictions on anchor images (CA)"
    # SD: the object setting (lr 2e-6 scaled by the batch of 4 as --scale_lr does on one GPU,
    # 200 steps on one GPU); ToyWorld: tuned here (docs/methods.md).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"iterations": 200, "lr": 8e-6, "batch_size": 4},
        "toyworld": {"iterations": 80, "lr": 1e-3, "batch_size": 4},
        "toyworld-sd": {"iterations": 80, "lr": 1e-3, "batch_size": 4},
    }

    @classmethod
    def plan_defaults(
        cls,
        params: CAParams,
        family: ModelFamily,
        concepts: list[Concept],
        sequential: bool = False,
    ) -> dict[str, Any]:
        sets.require_anchors("ca", concepts)
        for c in concepts:  # a bad caption file is refused before loading
            caption_pairs(params, c, family.vocabulary)
        return super().plan_defaults(params, family, concepts, sequential)

    def __init__(self, params: CAParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        self.anchor: dict[str, sets.DrawnSet] = {}
        # anchor caption -> the concept caption the edited model reads on that image
        self.concept_prompt: dict[str, dict[str, str]] = {}
        for k, c in enumerate(ctx.concepts):
            pairs = caption_pairs(params, c, ctx.family.vocabulary)
            if params.captions == "many":  # the first set_size pairs get the images
                order = np.random.default_rng([ctx.seed, k, 0xCA]).permutation(len(pairs))
                pairs = [pairs[i] for i in order]
            self.anchor[c.name] = sets.anchor_images(ctx, params, c, pairs)
            self.concept_prompt[c.name] = {a: q for q, a in pairs}

    def model_target(
        self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """``sg[e(x*_t, c*, t)]`` of ``target_model``: the model being trained or frozen."""
        pred = self.ctx.current_pred if self.p.target_model == "training" else self.ctx.frozen_pred
        return pred(x_t, t, context)

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p, b = self.ctx, self.p, self.ctx.batch_size
        concept = ctx.concept_for(step)
        an = self.anchor[concept.name]
        t = sets.random_timesteps(ctx, rng, b)
        anchor = sets.denoising_batch(ctx, an, rng.integers(len(an), size=b), t, rng)
        x, t = anchor.x, anchor.t  # this process's share
        c = ctx.encode([self.concept_prompt[concept.name][q] for q in anchor.prompts])
        target = self.model_target(x, t, anchor.context) if p.target == "model" else anchor.target
        if not p.prior_weight:
            return mse(ctx.pred(x, t, c), target), {}
        pred, pred_prior = ctx.pred_together((x, t, c), (x, t, anchor.context))
        prior = anchor.loss(pred_prior)
        return mse(pred, target) + p.prior_weight * prior, {"prior": prior.item()}
