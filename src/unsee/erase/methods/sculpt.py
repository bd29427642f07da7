"""Sculpting Memory: Dynamic Mask + Concept-Aware Loss (Li et al., ICCV 2025; methods.md §1).

Sequential multi-concept forgetting (``--sequential``: one round per concept, each from the
last). Per round k, on images of the concept (``x_t^f``, prompt ``p_f``) and of its
superclass anchor (``x_t^s``, prompt ``p_s``, drawn with the concept as negative prompt),
both noised at the same t ~ U{0..T-1}:

    L = || e(x_t^f, p_f) - sg[target(x_t^f, p_s)] ||^2        (concept -> superclass)
        + align_weight || e(x_t^s, p_s) - eps' ||^2            (keep the superclass)
        + kd_weight L_KD                                        (kd=described)

``target=current`` (as released) queries the model being edited, ``frozen`` the run's
start. ``kd``: ``described`` distils the round's teacher (the parameters at the round's
start) on noised images and prompts of every concept forgotten in an earlier round, so they
stay forgotten (no-op in round 0 and without --sequential); ``released`` reproduces the
released code, which computes its KD term (teacher on the superclass batch) and then
overwrites it: the value is logged, the gradient is exactly ``kd=off``'s.

``mask``: ``dynamic`` (:class:`unsee.erase.masks.DynamicMask`; the first ``warmup``
iterations of a round are plain denoising on the forget images with no optimiser step,
only to accumulate mask gradients), ``static`` (the warm-up mask kept all round) or
``none`` (no warm-up, every entry trained). Each round keeps the parameters of the epoch
with the lowest mean forget term and restores them at its end (as released). Predictions
``e`` and the data target ``eps'`` are in the run's loss space (by default the model's native
output: v and the velocity target on v-prediction models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from unsee.concepts import Concept
from unsee.erase import image_sets as sets
from unsee.erase.base import Fraction, Method, NonNegativeInt, register
from unsee.erase.context import ErasureContext, mse
from unsee.erase.masks import DynamicMask
from unsee.errors import UnseeError
from unsee.models.family import ModelFamily

MASKS = ("dynamic", "static", "none")
#: (warm-up, mask update interval) in iterations when the parameters say 0: the released
#: config on Stable Diffusion (methods.md §1.7), a fifth of it on ToyWorld's shorter rounds
SCHEDULE = {"sd": (50, 100), "toyworld": (10, 20), "toyworld-sd": (10, 20)}
TARGETS = ("current", "frozen")
KD_MODES = ("described", "released", "off")


@dataclass
class SculptParams(sets.ImageSetParams):
    mask: str = "dynamic"  # dynamic | static | none
    density: Fraction = 0.5  # trainable fraction of each masked matrix (release: update_percent)
    # iterations per round of gradient accumulation only; 0: family default
    warmup: NonNegativeInt = 0
    interval: NonNegativeInt = 0  # iterations between prune-and-regrow updates; 0: family default
    turnover: Fraction = 0.2  # initial turnover fraction f0
    decay: bool = True  # cosine decay of the turnover over the round's epochs
    update_until: Fraction = 0.8  # masks change only while epoch < floor(update_until * epochs)
    reset_optimizer_state: bool = False  # zero Adam moments at masked entries (hard freeze)
    target: str = "current"  # current (released) | frozen
    align_weight: float = 0.25
    kd: str = "described"  # described | released | off
    kd_weight: float = 0.25
    keep_best: bool = True  # restore the epoch with the lowest mean forget loss per round

    def __post_init__(self) -> None:
        self.check_sets("sculpt")
        for key, value, allowed in (
            ("mask", self.mask, MASKS),
            ("target", self.target, TARGETS),
            ("kd", self.kd, KD_MODES),
        ):
            if value not in allowed:
                raise UnseeError(
                    f"sculpt.{key} must be one of {', '.join(allowed)} (got {value!r})"
                )
        if (
            not 0 < self.density <= 1
            or not 0 <= self.turnover <= 1
            or not 0 <= self.update_until <= 1
        ):
            raise UnseeError(
                "sculpt.density must be in (0, 1], sculpt.turnover and "
                "sculpt.update_until in [0, 1]"
            )
        if self.interval < 0 or self.warmup < 0:
            raise UnseeError(
                "sculpt.interval and sculpt.warmup must be >= 1, or 0 for the "
                "model family's default"
            )
        if self.align_weight < 0 or self.kd_weight < 0:
            raise UnseeError("sculpt.align_weight and sculpt.kd_weight must be >= 0")


@register("sculpt")
class Sculpt(Method):
    scope = "xattn"
    Params = SculptParams
    fresh_optimizer_per_round = True  # the released code builds a new optimiser per concept
    summary = (
        "concept mapped to its superclass under a dynamic gradient mask, superclass "
        "kept, earlier rounds distilled (Sculpting Memory)"
    )
    # SD: the released config (10 epochs of 100 images at batch 2, lr 3e-6, OneCycle);
    # ToyWorld: tuned here (docs/methods.md).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"iterations": 500, "lr": 3e-6, "batch_size": 2, "lr_schedule": "onecycle"},
        "toyworld": {"iterations": 80, "lr": 1e-3, "batch_size": 4, "lr_schedule": "onecycle"},
        "toyworld-sd": {
            "iterations": 80,
            "lr": 1e-3,
            "batch_size": 4,
            "lr_schedule": "onecycle",
        },
    }

    @classmethod
    def plan_defaults(
        cls,
        params: SculptParams,
        family: ModelFamily,
        concepts: list[Concept],
        sequential: bool = False,
    ) -> dict[str, Any]:
        sets.require_anchors("sculpt", concepts)
        return super().plan_defaults(params, family, concepts, sequential)

    def __init__(self, params: SculptParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        warmup, interval = SCHEDULE[ctx.family.key]
        self.warmup = 0 if params.mask == "none" else params.warmup or warmup
        if self.warmup >= ctx.iterations:
            raise UnseeError(
                f"sculpt.warmup ({self.warmup}) must be below the iterations "
                f"per round ({ctx.iterations})"
            )
        self.forget = {c.name: sets.concept_images(ctx, params, c) for c in ctx.concepts}
        self.anchor = {c.name: sets.anchor_images(ctx, params, c) for c in ctx.concepts}
        self.superclass = {c.name: sets.anchor_of(params, c) for c in ctx.concepts}
        # an epoch is one pass over the set of each concept the round trains
        self.per_round = 1 if ctx.sequential else len(ctx.concepts)
        self.batches = max(1, sets.set_size(params, ctx) // ctx.batch_size)
        if params.mask != "none":
            self.mask = DynamicMask(
                round_length=ctx.iterations,
                steps_per_epoch=self.batches * self.per_round,
                density=params.density,
                warmup=self.warmup,
                interval=params.interval or interval,
                turnover=params.turnover,
                decay=params.decay,
                update_until=params.update_until,
                regrow=params.mask == "dynamic",
                reset_optimizer_state=params.reset_optimizer_state,
            )
        self.teacher: dict[str, torch.Tensor] | None = None  # the round's start (KD)
        self.epoch = 0  # local epoch of the round being trained
        self.epoch_losses: list[float] = []  # forget terms of that epoch so far
        self.history: list[tuple[int, float]] = []  # (epoch, mean forget term) this round
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def start_round(self, round_index: int) -> None:
        p = self.p
        needs_teacher = p.kd == "released" or (p.kd == "described" and round_index > 0)
        self.teacher = (
            {n: v.detach().clone() for n, v in self.ctx.params.items()} if needs_teacher else None
        )
        self.epoch, self.epoch_losses, self.history, self.best = 0, [], [], None

    def _close_epoch(self) -> None:
        """Score the epoch just finished (the parameters now are its end state)."""
        if not self.epoch_losses:  # a warm-up epoch has no forget term
            return
        mean = float(np.mean(self.epoch_losses))
        self.history.append((self.epoch, mean))
        if self.p.keep_best and (self.best is None or mean < self.best[0]):
            self.best = (
                mean,
                self.epoch,
                {n: v.detach().clone() for n, v in self.ctx.params.items()},
            )
        self.epoch_losses = []

    def end_round(self, round_index: int) -> dict[str, Any]:
        self._close_epoch()
        info: dict[str, Any] = {"epoch_forget_loss": [round(v, 6) for _, v in self.history]}
        if self.best is not None:
            with torch.no_grad():
                for n, v in self.best[2].items():
                    self.ctx.params[n].copy_(v)
            info.update(best_epoch=self.best[1], best_forget_loss=round(self.best[0], 6))
            self.best = None
        if self.mask is not None:
            dens = self.mask.density()
            info["mask_density"] = round(float(np.mean(list(dens.values()))), 4) if dens else None
        return info

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p, b = self.ctx, self.p, self.ctx.batch_size
        r, local = ctx.round_of(step), step % ctx.iterations
        concept = ctx.concept_for(step)
        visit = local // self.per_round
        epoch, position = divmod(visit, self.batches)
        if epoch != self.epoch:
            self._close_epoch()
            self.epoch = epoch
        k = ctx.concepts.index(concept)
        fs, an = self.forget[concept.name], self.anchor[concept.name]
        t_global = sets.random_timesteps(ctx, rng, b)
        idx = sets.epoch_indices(ctx.seed, 2 * k, epoch, len(fs), b, position)
        x_f, t, target_f, prompts = sets.noised_batch(ctx, fs, idx, t_global, rng)
        c_f = ctx.encode(prompts)
        if local < self.warmup:
            return mse(ctx.pred(x_f, t, c_f), target_f), {"warmup": 1.0}
        c_s = ctx.encode([self.superclass[concept.name][q] for q in prompts])
        target = (ctx.current_pred if p.target == "current" else ctx.frozen_pred)(x_f, t, c_s)
        idx_s = sets.epoch_indices(ctx.seed, 2 * k + 1, epoch, len(an), b, position)
        anchor = sets.denoising_batch(ctx, an, idx_s, t_global, rng)
        batches = [(x_f, t, c_f), (anchor.x, t, anchor.context)]
        kd_batch = (
            self._kd_batch(r, t_global, rng)
            if p.kd == "described" and self.teacher is not None
            else None
        )
        if kd_batch is not None:
            batches.append((kd_batch[0], t, kd_batch[1]))
        # one forward for the forget, superclass (and KD) batches
        preds = ctx.pred_together(*batches)
        forget, align = mse(preds[0], target), anchor.loss(preds[1])
        self.epoch_losses.append(ctx.global_mean(forget))  # every process keeps the same best
        loss = forget + p.align_weight * align
        parts = {"forget": forget.item(), "align": align.item()}
        if kd_batch is not None:
            kd = mse(preds[2], ctx.frozen_pred(kd_batch[0], t, kd_batch[1], values=self.teacher))
            loss = loss + p.kd_weight * kd
            parts["kd"] = kd.item()
        elif p.kd == "released":
            # computed as the released code does, then dropped from the loss (methods.md §1.3)
            parts["kd_inert"] = mse(
                preds[1].detach(), ctx.frozen_pred(anchor.x, t, anchor.context, values=self.teacher)
            ).item()
        return loss, parts

    def _kd_batch(
        self, r: int, t: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, prompt context) for ``len(t)`` images (``t``: the global batch's
        timesteps), each of a concept forgotten in a round before ``r`` (chosen uniformly),
        noised at ``t`` by :func:`~unsee.erase.image_sets.noised_batch`; this process's
        share."""
        picks = []
        for j in rng.integers(r, size=len(t)):
            fs = self.forget[self.ctx.concepts[int(j)].name]
            picks.append((fs, int(rng.integers(len(fs)))))
        kd_set = sets.DrawnSet(
            torch.stack([fs.latents[i] for fs, i in picks]),
            [fs.prompts[i] for fs, i in picks],
            [fs.seeds[i] for fs, i in picks],
        )
        x_t, _, _, prompts = sets.noised_batch(self.ctx, kd_set, np.arange(len(picks)), t, rng)
        return x_t, self.ctx.encode(prompts)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "teacher": self.teacher,
            "epoch": self.epoch,
            "epoch_losses": self.epoch_losses,
            "history": self.history,
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        dev = self.ctx.device
        self.teacher = (
            {n: v.to(dev) for n, v in state["teacher"].items()}
            if state["teacher"] is not None
            else None
        )
        self.epoch, self.epoch_losses = state["epoch"], state["epoch_losses"]
        self.history = state["history"]
        best = state["best"]
        self.best = (
            None if best is None else (best[0], best[1], {n: v.to(dev) for n, v in best[2].items()})
        )
