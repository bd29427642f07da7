"""What a method sees: :class:`ErasureContext` (the model being edited, its frozen start,
the concepts, x_t sources and predictions in the run's loss space) and the loss helpers the
methods share. Methods import this module and :mod:`unsee.erase.base`, never the engine.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from unsee.concepts import Concept
from unsee.errors import UnseeError
from unsee.models.bundle import Bundle
from unsee.models.family import ModelFamily
from unsee.models.sampling import (
    ddim_sample,
    denoising_target,
    eps_error_scale,
    initial_noise,
    to_loss_space,
)
from unsee.seeds import TRAINING_SEED_BASE, check_seeds

#: what :meth:`ErasureContext.local` slices: a global batch along its first axis
Batch = TypeVar("Batch", list[Any], np.ndarray, torch.Tensor)


class _AtValues(torch.nn.Module):
    """``unet`` called with some of its tensors replaced by ``values`` (the frozen model
    without a second copy of the weights), for samplers that take a module."""

    def __init__(self, unet: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.unet, self.values = unet, values

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.unet, self.values, args, kwargs)


class ErasureContext:
    """What a method sees: the model, its frozen start, concepts and x_t sources.

    Shapes: ``x_t`` (B, C, h, w) latents; ``t`` (B,) integer timesteps; text contexts
    (B, L, D). ``batch_size`` is the *global* batch: under ``accelerate launch`` with N
    processes a method draws every random choice (prompts, seeds, timesteps, noise) for the
    global batch from the step's generator, then computes on its share
    (:meth:`local`, B/N samples); DDP averages the shares' gradients, so the update, and
    the delta, are those of one process at the same global batch.
    Predictions and targets are in the run's loss space (``loss_space``):
    the model's own output (``native``: v on v-prediction models) or epsilon
    (:mod:`unsee.models.sampling`). A target combining predictions at the same x_t with
    weights summing to one is the same combination in either space.
    """

    def __init__(
        self,
        bundle: Bundle,
        accelerator: Any,
        concepts: list[Concept],
        params: dict[str, torch.nn.Parameter],
        *,
        iterations: int,
        batch_size: int,
        seed: int,
        family: ModelFamily,
        sequential: bool = False,
        loss_space: str = "native",
        explicit_anchors: bool = False,
    ) -> None:
        self.bundle = bundle
        self.accelerator = accelerator
        self.raw_unet = bundle.unet
        self.unet: torch.nn.Module = bundle.unet  # replaced by the accelerate-prepared module
        self.concepts = concepts
        self.params = params
        #: steps per round (one round unless sequential)
        self.iterations = iterations
        self.batch_size = batch_size
        #: the run's seed: step ``k`` draws from ``(seed, k)``
        self.seed = seed
        #: the model family (:mod:`unsee.models.family`): per-family defaults and sets
        self.family = family
        #: one round per concept, in order
        self.sequential = sequential
        #: ``native`` or ``epsilon``: the space predictions and targets are compared in
        self.loss_space = loss_space
        #: the concepts' anchors were given (``--anchor``), not the defaults
        self.explicit_anchors = explicit_anchors
        #: values of the trainable parameters when this run started (the frozen model)
        self.start_values = {n: p.detach().clone() for n, p in params.items()}
        self.alphas_cumprod = bundle.alphas_cumprod()
        self.device = bundle.device
        #: data parallelism: this process is ``rank`` of ``world`` (1 without a launcher)
        self.world = int(getattr(accelerator, "num_processes", 1))
        self.rank = int(getattr(accelerator, "process_index", 0))

    # -- data parallelism ------------------------------------------------------------
    def local(self, batch: Batch) -> Batch:
        """This process's contiguous share of ``batch``, a list, array or tensor whose first
        axis is a global batch (all of it in a single process)."""
        if self.world == 1:
            return batch
        n = len(batch)
        if n % self.world:
            raise UnseeError(
                f"a batch of {n} cannot be split evenly over {self.world} processes; "
                f"use a batch size that is a multiple of {self.world}"
            )
        share = n // self.world
        return batch[self.rank * share : (self.rank + 1) * share]

    def mean_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` (any shape) averaged over the processes; itself in a single process.
        The mean of the shares' losses or gradients is the global batch's when the shares
        are equal."""
        if self.world == 1:
            return value
        return self.accelerator.reduce(value.detach().clone(), "mean")

    def global_mean(self, value: torch.Tensor) -> float:
        """A per-process scalar (e.g. the loss of this process's share) averaged over the
        processes, as a float."""
        return float(self.mean_over_processes(value.detach().float()).item())

    # -- schedule over concepts ------------------------------------------------------
    @property
    def total_steps(self) -> int:
        n = len(self.concepts) if self.sequential else 1
        return self.iterations * n

    def round_of(self, step: int) -> int:
        return step // self.iterations if self.sequential else 0

    def concept_for(self, step: int) -> Concept:
        """Sequential: the round's concept. Otherwise concepts take turns step by step."""
        if self.sequential:
            return self.concepts[self.round_of(step)]
        return self.concepts[step % len(self.concepts)]

    # -- predictions -----------------------------------------------------------------
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.bundle.encode_prompts(prompts)

    def _pred(
        self,
        unet,
        x_t: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if params is None:
            out = unet(x_t, t, context).sample
        else:
            out = torch.func.functional_call(unet, params, (x_t, t, context)).sample
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return to_loss_space(
            out.float(), x_t.float(), ab, self.bundle.prediction_type, self.loss_space
        )

    def pred(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Trainable prediction of the model being edited (gradients flow), in the loss space."""
        with self.accelerator.autocast():
            return self._pred(self.unet, x_t, t, context)

    def pred_together(
        self, *batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """:meth:`pred` of several (x_t, t, context) batches in one forward pass, split back
        per batch (a method's terms share the pass)."""
        xs, ts, cs = zip(*batches, strict=True)
        out = self.pred(torch.cat(xs), torch.cat(ts), torch.cat(cs))
        return out.split([len(x) for x in xs])

    @torch.no_grad()
    def frozen_pred(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        values: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Prediction of the model as it was when this run started, or with the trainable
        tensors set to ``values`` (e.g. a teacher snapshot taken at a round's start)."""
        with self.accelerator.autocast():
            return self._pred(
                self.raw_unet, x_t, t, context, self.start_values if values is None else values
            )

    @torch.no_grad()
    def current_pred(
        self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Prediction of the model being edited, without gradients."""
        with self.accelerator.autocast():
            return self._pred(self.raw_unet, x_t, t, context)

    def denoising_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The loss-space target (B, C, h, w) of x_t = :meth:`noised` (x0, t, noise): the
        noise in epsilon space, v = sqrt(a) noise - sqrt(1-a) x0 natively on v-models."""
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return denoising_target(
            x0.float(), noise.float(), ab, self.bundle.prediction_type, self.loss_space
        )

    def eps_error_scale(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) factors c(t): a squared epsilon error is c(t) times the loss-space one
        (:func:`unsee.models.sampling.eps_error_scale`)."""
        return eps_error_scale(self.alphas_cumprod[t], self.bundle.prediction_type, self.loss_space)

    # -- x_t sources -----------------------------------------------------------------
    @torch.no_grad()
    def trajectory(
        self,
        prompts: list[str],
        stop_at: int,
        seeds: list[int],
        guidance: float,
        steps: int,
        latents: torch.Tensor | None = None,
        start_at: int = 0,
        frozen: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t by DDIM-sampling the *model being edited* (``frozen``: the model as it was
        when this run started) from noise up to index ``stop_at``, or from ``latents`` at
        index ``start_at`` (continuing an earlier trajectory).

        Returns (x_t (B, C, h, w), t (B,)). ``seeds`` (>= 0) are offsets into the training
        seed range (:mod:`unsee.seeds`): a trajectory is a training image and never shares
        its noise with an image the scorecard judges.
        """
        seeds = [TRAINING_SEED_BASE + int(s) for s in seeds]
        check_seeds(seeds, training=True)
        # under the run's mixed precision like every other forward pass: the trajectory's
        # CFG steps are most of an ESD or KSCU iteration (the scheduler's arithmetic on x
        # stays in float32, as the output promotes to x's dtype)
        with self.accelerator.autocast():
            x, t = ddim_sample(
                self.bundle,
                prompts,
                seeds,
                steps=steps,
                guidance=guidance,
                stop_at=stop_at,
                unet=_AtValues(self.raw_unet, self.start_values) if frozen else self.raw_unet,
                latents=latents,
                start_at=start_at,
            )
        return x, torch.full((len(prompts),), t, device=self.device, dtype=torch.long)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising x_t = sqrt(a) x0 + sqrt(1-a) eps at timesteps ``t`` (B,)."""
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def noise_like(self, n: int, seeds: list[int]) -> torch.Tensor:
        assert n == len(seeds)
        return initial_noise(self.bundle, seeds).float()

    @property
    def num_train_timesteps(self) -> int:
        return int(self.bundle.scheduler_config.get("num_train_timesteps", 1000))


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error, computed in float32 (predictions may be fp16 under autocast)."""
    return F.mse_loss(a.float(), b.float())


def negative_guidance(e_base: torch.Tensor, e_concept: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's target: the base prediction moved *away* from the concept,
    ``e_base - eta (e_concept - e_base)`` (negative classifier-free guidance; weights sum
    to one, so it is the same combination in epsilon or native loss space)."""
    return e_base - eta * (e_concept - e_base)
