"""MiM-MU: compensation-free unlearning by minimising mutual information
(Cheng et al., arXiv 2603.00992; methods.md §3; docs/methods.md has the derivation).

No official code exists; this is the reconstruction of methods.md §3.3, every piece of which
is marked there as published or inferred. To make the concept carry no information about
the image, the edited model's *conditional* prediction for the concept is pulled onto the
frozen pre-trained model's *unconditional* prediction on the same noisy image,

    L = E_{x0 in D_f, eps, t} w(t) || e_theta(x_t, c_f, t) - sg[e_0(x_t, "", t)] ||^2,

the term that differentiates through the sampling distribution (the U-Net Jacobian) is
dropped, only cross-attention is trained, and there is *no* retain or preservation term:
nothing in the loss looks at another concept. Variants (``variant``):

* ``off-policy`` (default): x_t is a forget-set image (drawn by the base model from the
  concept's prompts, :mod:`unsee.models.image_sets`) noised at t drawn uniformly from the
  timestep range;
* ``on-policy``: x_t from partial DDIM sampling of the model being edited, as in ESD (this
  variant is ESD with eta = 0), stopping at a DDIM index drawn uniformly among those whose
  timestep is in the range;
* ``conditional``: conditional MI I(X; C | Y) for compositional prompts: the target is the
  frozen prediction for the prompt with the concept's words removed ("a striped star" ->
  "a star") instead of the empty prompt. On a bare object prompt the rest is the article
  ("a star" -> "a"), so the target is the prediction for "a", not for "".

Timestep range (``t_min``, ``t_max``): the paper's noise levels are not published (one
summary says the method is "sensitive to the choice of noise levels"), so the range is a
parameter, given in SD 1.x training timesteps (inclusive) and mapped to the model's schedule
by log-SNR (:func:`unsee.erase.timesteps.map_sd1_range`; 0 and 999 are the schedule's ends).
The default, 0..999, is every timestep (uniform t, the inference of methods.md §3.3);
``t_min=455`` is ToyWorld's t >= 600, which took ``striped`` from 0.19 to 0.75 in the seed
review (``docs/methods.md``).

``weighting``: ``uniform`` (w = 1, the default) or ``score-matching``, the weight
beta_t / (1 - alphabar_t) of the KL bound on epsilon errors (carried to the run's loss
space: times alphabar_t for native v-prediction), normalised to mean 1 over t. Predictions
are compared in the run's loss space (the model's native output by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from unsee.erase import image_sets as sets
from unsee.erase.base import Count, Method, NonNegative, Timestep, register, split_list
from unsee.erase.context import ErasureContext
from unsee.erase.timesteps import map_sd1_range
from unsee.errors import UnseeError
from unsee.models.image_sets import DrawnSet, default_forget_cache, forget_set
from unsee.models.sampling import ddim_timesteps

VARIANTS = ("off-policy", "on-policy", "conditional")
WEIGHTINGS = ("uniform", "score-matching")


@dataclass
class MiMParams(sets.DrawnSetParams):
    variant: str = "off-policy"  # off-policy | on-policy | conditional
    weighting: str = "uniform"  # uniform | score-matching
    forget_images: Count = 32  # images per concept in the forget set (off-policy, conditional)
    ddim_steps: Count = 50  # on-policy: trajectory length
    start_guidance: NonNegative = 3.0  # on-policy: CFG of the partial sampling
    # ';'-separated templates ({} = a concept prompt) that make the forget prompts
    # compositional, e.g. "a painting of a house in {} style" for the conditional variant
    templates: str = "{}"
    # timestep range, SD 1.x training timesteps (inclusive), mapped by noise level
    t_min: Timestep = 0
    t_max: Timestep = 999

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UnseeError(
                f"mim-mu.variant must be one of {', '.join(VARIANTS)} (got {self.variant!r})"
            )
        if self.weighting not in WEIGHTINGS:
            raise UnseeError(
                f"mim-mu.weighting must be one of {', '.join(WEIGHTINGS)} (got {self.weighting!r})"
            )
        if self.forget_images < 1 or self.forget_steps < 1 or self.ddim_steps < 1:
            raise UnseeError("mim-mu.forget_images, forget_steps and ddim_steps must be >= 1")
        if not 0 <= self.t_min <= self.t_max <= 999:
            raise UnseeError(
                f"mim-mu needs 0 <= t_min <= t_max <= 999 (SD 1.x timesteps; got "
                f"{self.t_min}, {self.t_max})"
            )
        if not all("{}" in t for t in self.template_list()):
            raise UnseeError(f"mim-mu.templates must each contain {{}} (got {self.templates!r})")

    def template_list(self) -> list[str]:
        return split_list(self.templates)


def strip_concept(prompt: str, words: str) -> str:
    """``prompt`` without the concept's words, articles fixed ("an orange star" -> "a star")."""
    out = re.sub(rf"\b{re.escape(words)}\b", " ", prompt, flags=re.IGNORECASE)
    out = " ".join(out.split())
    return re.sub(
        r"\b(a|an) (\w)",
        lambda m: ("an " if m.group(2) in "aeiouAEIOU" else "a ") + m.group(2),
        out,
        flags=re.IGNORECASE,
    )


def score_matching_weights(
    alphas_cumprod: torch.Tensor, eps_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """w(t) = beta_t / (1 - alphabar_t) (g^2 / 2 sigma^2 up to a constant) on squared epsilon
    errors, times ``eps_scale`` (T,) (the factor from loss-space to epsilon errors,
    :meth:`ErasureContext.eps_error_scale`) so it weighs the same errors in the loss space;
    normalised to mean 1; (T,)."""
    ab = alphas_cumprod.double()
    beta = 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    w = beta / (1 - ab).clamp_min(1e-12)
    if eps_scale is not None:
        w = w * eps_scale.to(w)
    return (w / w.mean()).float()


@register("mim-mu")
class MiMMU(Method):
    scope = "xattn"
    Params = MiMParams
    summary = (
        "compensation-free unlearning: concept prediction aligned to the frozen "
        "unconditional one, no retain term (MiM-MU, reconstructed)"
    )
    # SD: "small lr", 30 epochs of a ~60-image set at batch 4 (methods.md §3.4, inferred);
    # ToyWorld: tuned here (docs/methods.md); toyworld-sd: fair tuning (bench/tune.py) found
    # ToyWorld's 1e-3 costs dotted's retain beyond noise (0.833 against 1.000), a third of
    # it keeps both retains (bench/results/toyworld-sd/tuning.md)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"iterations": 450, "lr": 1e-5, "batch_size": 4},
        "toyworld": {"iterations": 120, "lr": 1e-3, "batch_size": 4},
        "toyworld-sd": {"iterations": 120, "lr": 1e-3 / 3, "batch_size": 4},
    }

    def __init__(self, params: MiMParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        self.prompts = {
            c.name: [t.format(q) for q in c.prompts for t in params.template_list()]
            for c in ctx.concepts
        }
        self.sets: dict[str, DrawnSet] = {}
        if params.variant != "on-policy":
            cache = default_forget_cache() if params.cache else None
            for c in ctx.concepts:
                self.sets[c.name] = forget_set(
                    ctx.bundle,
                    c.name,
                    self.prompts[c.name],
                    params.forget_images,
                    ctx.seed,
                    steps=params.forget_steps,
                    cache_dir=cache,
                )
        #: the range on the model's schedule (inclusive) and, on-policy, the DDIM indices in it
        self.t_range = map_sd1_range(params.t_min, params.t_max, ctx.alphas_cumprod)
        lo, hi = self.t_range
        self.indices = [
            i for i, t in enumerate(ddim_timesteps(ctx.bundle, params.ddim_steps)) if lo <= t <= hi
        ]
        if not self.indices:
            raise UnseeError(
                f"mim-mu: no DDIM step of {params.ddim_steps} falls in the "
                f"timestep range {lo}..{hi} of this model"
            )
        every_t = torch.arange(len(ctx.alphas_cumprod), device=ctx.device)
        self.weights = (
            score_matching_weights(ctx.alphas_cumprod, ctx.eps_error_scale(every_t)).to(ctx.device)
            if params.weighting == "score-matching"
            else None
        )

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p, b = self.ctx, self.p, self.ctx.batch_size
        concept = ctx.concept_for(step)
        if p.variant == "on-policy":
            pool = self.prompts[concept.name]
            prompts = ctx.local([pool[int(i)] for i in rng.integers(len(pool), size=b)])
            seeds = ctx.local([int(s) for s in rng.integers(0, 2**31 - 1, b)])
            stop_at = self.indices[int(rng.integers(0, len(self.indices)))]
            x_t, t = ctx.trajectory(prompts, stop_at, seeds, p.start_guidance, p.ddim_steps)
        else:
            fs = self.sets[concept.name]
            idx = rng.integers(len(fs), size=b)
            lo, hi = self.t_range
            t = torch.from_numpy(rng.integers(lo, hi + 1, b)).to(ctx.device)
            x_t, t, _, prompts = sets.noised_batch(ctx, fs, idx, t, rng)
        rest = [
            strip_concept(q, concept.name) if p.variant == "conditional" else "" for q in prompts
        ]
        target = ctx.frozen_pred(x_t, t, ctx.encode(rest))
        err = (ctx.pred(x_t, t, ctx.encode(prompts)) - target).pow(2).mean(dim=(1, 2, 3))
        w = self.weights[t] if self.weights is not None else torch.ones_like(err)
        return (w * err).mean(), {"t": float(t.float().mean())}
