"""Concept Ablation (Kumari et al., ICCV 2023; methods.md §4.5).

The concept's distribution is mapped onto its anchor's: anchor images ``x*`` are drawn by
the base model from the anchor prompts ``c*`` (with the concept as negative prompt, as the
other relabelling methods here do), noised at t ~ U{0..T-1}, and the edited model's
prediction *for the concept prompt* ``c`` on them is trained towards

* ``target=model`` (default): ``sg[e_0(x*_t, c*, t)]``, the frozen model's anchor prediction;
* ``target=noise``: the denoising target itself (plain denoising of anchor images under
  ``c``: the noise ``eps``, or v natively on v-prediction models).

``prior_weight`` > 0 adds prior preservation, the denoising loss on the same anchor images
under their own prompts: ``prior_weight || e(x*_t, c*, t) - eps ||^2``. Predictions and
targets are in the run's loss space (``e`` is the model's native output by default). Scope: cross-
attention keys and values (``kv``); the paper's nudity setting trains all attention
(``--scope re:attn[12]\\.``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from unsee.concepts import Concept
from unsee.erase import image_sets as sets
from unsee.erase.base import Method, register
from unsee.erase.context import ErasureContext, mse
from unsee.errors import UnseeError
from unsee.models.family import ModelFamily

TARGETS = ("model", "noise")


@dataclass
class CAParams(sets.ImageSetParams):
    target: str = "model"  # model | noise
    prior_weight: float = 0.0  # prior preservation on anchor prompts (0: off)

    def __post_init__(self) -> None:
        self.check_sets("ca")
        if self.target not in TARGETS:
            raise UnseeError(f"ca.target must be model or noise (got {self.target!r})")
        if self.prior_weight < 0:
            raise UnseeError("ca.prior_weight must be >= 0")


@register("ca")
class ConceptAblation(Method):
    scope = "kv"
    Params = CAParams
    summary = "concept prompt trained to the frozen anchor prediction on anchor images (CA)"
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
        return super().plan_defaults(params, family, concepts, sequential)

    def __init__(self, params: CAParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        self.anchor = {c.name: sets.anchor_images(ctx, params, c) for c in ctx.concepts}
        # anchor prompt -> the concept prompt the edited model reads on that image
        self.concept_prompt = {
            c.name: {a: q for q, a in sets.anchor_of(params, c).items()} for c in ctx.concepts
        }

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p, b = self.ctx, self.p, self.ctx.batch_size
        concept = ctx.concept_for(step)
        an = self.anchor[concept.name]
        t = sets.random_timesteps(ctx, rng, b)
        anchor = sets.denoising_batch(ctx, an, rng.integers(len(an), size=b), t, rng)
        x, t = anchor.x, anchor.t  # this process's share
        c = ctx.encode([self.concept_prompt[concept.name][q] for q in anchor.prompts])
        target = ctx.frozen_pred(x, t, anchor.context) if p.target == "model" else anchor.target
        if not p.prior_weight:
            return mse(ctx.pred(x, t, c), target), {}
        pred, pred_prior = ctx.pred_together((x, t, c), (x, t, anchor.context))
        prior = anchor.loss(pred_prior)
        return mse(pred, target) + p.prior_weight * prior, {"prior": prior.item()}
