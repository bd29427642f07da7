"""What the relabelling methods (Sculpting Memory, SalUn, Concept Ablation) share: their
image-set parameters, the concept's and its anchor's images drawn by the base model
(:mod:`unsee.models.image_sets`, anchor images with the concept as negative prompt), an
epoch order over a set, and noised batches.

Shapes: latents (B, C, h, w); timesteps (B,) integers in [0, T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unsee.concepts import Concept
from unsee.erase.base import Count, NonNegative, NonNegativeInt
from unsee.erase.context import ErasureContext, mse
from unsee.errors import UnseeError
from unsee.models.image_sets import DrawnSet, default_forget_cache, forget_set, generate_set
from unsee.seeds import training_seeds

#: images per set when ``forget_images`` is 0: Sculpting Memory's 100 on Stable Diffusion
#: (methods.md §1.7), fewer on ToyWorld (tuned, docs/methods.md).
DEFAULT_IMAGES = {"sd": 100, "toyworld": 16, "toyworld-sd": 16}
#: offset between the seeds of a concept's images and of its anchor's images (both are
#: training seeds, :func:`unsee.seeds.training_seeds`)
ANCHOR_SEED_OFFSET = 1_000_000


@dataclass
class DrawnSetParams:
    """What every method that trains on drawn sets sets (MiM-MU, and through
    :class:`ImageSetParams` the relabelling methods)."""

    forget_images: int = 0  # images per set (each subclass gives its default and range)
    forget_steps: Count = 50  # DDIM steps used to draw them
    cache: bool = True  # keep the sets on disk ($UNSEE_CACHE/forget-sets)


@dataclass
class ImageSetParams(DrawnSetParams):
    # images per concept and per anchor; 0: 100 on SD, 16 on ToyWorld
    forget_images: NonNegativeInt = 0
    set_guidance: NonNegative = 0.0  # CFG scale used to draw them; 0: the model's default
    anchor_guidance: NonNegative = 0.0  # CFG scale of the anchor sets; 0: as set_guidance
    # applied to every concept and anchor prompt; Sculpting Memory's Imagenette runs used
    # "a photo of {}"
    template: str = "{}"

    def check_sets(self, method: str) -> None:
        """Validation shared by the subclasses' ``__post_init__``."""
        if (
            min(self.forget_images, self.set_guidance, self.anchor_guidance) < 0
            or self.forget_steps < 1
        ):
            raise UnseeError(
                f"{method}.forget_images, {method}.set_guidance and "
                f"{method}.anchor_guidance must be >= 0 (0: the default) and "
                f"{method}.forget_steps >= 1"
            )
        if "{}" not in self.template:
            raise UnseeError(f"{method}.template must contain {{}} (got {self.template!r})")


def set_size(p: ImageSetParams, ctx: ErasureContext) -> int:
    return p.forget_images or DEFAULT_IMAGES[ctx.family.key]


def require_anchors(method: str, concepts: list[Concept]) -> None:
    """Refuse (before loading) concepts that have no anchor to be mapped onto."""
    missing = [c.name for c in concepts if not c.anchor]
    if missing:
        raise UnseeError(
            f"{method} maps each concept onto its anchor (superclass), but "
            f"{', '.join(missing)} has none; give one with --anchor"
        )


def anchor_of(p: ImageSetParams, concept: Concept) -> dict[str, str]:
    """Concept prompt -> the anchor prompt that replaces it (paired by position)."""
    return {
        p.template.format(c): p.template.format(a)
        for c, a in zip(concept.prompts, concept.anchor_prompts, strict=False)
    }


def concept_images(ctx: ErasureContext, p: ImageSetParams, concept: Concept) -> DrawnSet:
    """``set_size`` images of the concept, cycling through its (templated) prompts."""
    return prompt_images(ctx, p, concept.name, [p.template.format(q) for q in concept.prompts])


def prompt_images(
    ctx: ErasureContext, p: ImageSetParams, name: str, prompts: list[str]
) -> DrawnSet:
    """``set_size`` images cycling through ``prompts`` (already templated)."""
    cache = default_forget_cache() if p.cache else None
    return forget_set(
        ctx.bundle,
        name,
        prompts,
        set_size(p, ctx),
        ctx.seed,
        steps=p.forget_steps,
        guidance=p.set_guidance or None,
        cache_dir=cache,
    )


def anchor_images(
    ctx: ErasureContext,
    p: ImageSetParams,
    concept: Concept,
    pairs: list[tuple[str, str]] | None = None,
) -> DrawnSet:
    """``set_size`` images of the anchor, each drawn with the concept prompt it replaces as
    negative prompt (so a "symbol" image is not a star), cycling through the (concept
    prompt, anchor prompt) ``pairs`` (default: :func:`anchor_of`); a pair beyond the
    ``set_size``-th gets no image."""
    cache = default_forget_cache() if p.cache else None
    pairs = pairs or list(anchor_of(p, concept).items())
    n = set_size(p, ctx)
    every = training_seeds(ctx.seed + ANCHOR_SEED_OFFSET, n)
    parts = []
    for k, (c_prompt, a_prompt) in enumerate(pairs):
        seeds = every[k :: len(pairs)]
        if seeds:
            parts.append(
                generate_set(
                    ctx.bundle,
                    [a_prompt] * len(seeds),
                    seeds,
                    negative=c_prompt,
                    steps=p.forget_steps,
                    guidance=p.anchor_guidance or p.set_guidance or None,
                    cache_dir=cache,
                    description=f"anchor set: {concept.anchor}",
                )
            )
    return DrawnSet(
        torch.cat([s.latents for s in parts]),
        [q for s in parts for q in s.prompts],
        [v for s in parts for v in s.seeds],
    )


def epoch_indices(
    seed: int, stream: int, epoch: int, n: int, batch: int, position: int
) -> np.ndarray:
    """Indices (batch,) of batch ``position`` of ``epoch`` in a fresh permutation of ``n``
    items per (seed, stream, epoch), wrapping around when ``batch`` does not divide ``n``;
    resumable because it depends on nothing but its arguments."""
    order = np.random.default_rng([seed, stream, epoch]).permutation(n)
    return order[(position * batch + np.arange(batch)) % n]


def noised_batch(
    ctx: ErasureContext,
    images: DrawnSet,
    idx: np.ndarray,
    t: torch.Tensor,
    rng: np.random.Generator,
    *,
    shard: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(x_t, t, target, prompts) for images ``idx`` (B,) noised at ``t`` (B,) with fresh
    noise from ``rng``; ``target`` is the denoising target in the run's loss space (the
    noise, or v natively on v-prediction models: :meth:`ErasureContext.denoising_target`).
    ``idx`` and ``t`` are a global batch and the noise is drawn for all of it; what is
    returned is this process's share (:meth:`ErasureContext.local`), or all of it with
    ``shard=False`` (a pass every process repeats)."""
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    shape = (len(idx), *images.latents.shape[1:])
    noise = torch.randn(shape, generator=g)
    if shard:
        idx, t, noise = ctx.local(idx), ctx.local(t), ctx.local(noise)
    x0 = images.latents[torch.from_numpy(idx).to(images.latents.device)].to(ctx.device)
    noise = noise.to(ctx.device)
    return (
        ctx.noised(x0, t, noise),
        t,
        ctx.denoising_target(x0, noise, t),
        [images.prompts[int(i)] for i in idx],
    )


@dataclass
class DenoisingBatch:
    """Images of a set noised at ``t``, read under their own prompts (``context``), with
    their denoising ``target``: the anchor-denoising term that keeps what a concept is
    mapped to (Concept Ablation's prior term, Sculpting Memory's superclass alignment,
    SalUn's retain term; DreamBooth's prior preservation) is ``mse(pred(x, t, context),
    target)``."""

    x: torch.Tensor
    t: torch.Tensor
    context: torch.Tensor
    target: torch.Tensor
    prompts: list[str]

    def loss(self, pred: torch.Tensor) -> torch.Tensor:
        """The term, given the trainable prediction on (x, t, context)."""
        return mse(pred, self.target)


def denoising_batch(
    ctx: ErasureContext,
    images: DrawnSet,
    idx: np.ndarray,
    t: torch.Tensor,
    rng: np.random.Generator,
) -> DenoisingBatch:
    """:func:`noised_batch` (this process's share) with the prompts encoded: one
    anchor-denoising term's batch."""
    x, t, target, prompts = noised_batch(ctx, images, idx, t, rng)
    return DenoisingBatch(x, t, ctx.encode(prompts), target, prompts)


def random_timesteps(ctx: ErasureContext, rng: np.random.Generator, b: int) -> torch.Tensor:
    """(b,) training timesteps drawn uniformly from {0..T-1}."""
    return torch.from_numpy(rng.integers(0, ctx.num_train_timesteps, b)).to(ctx.device)
