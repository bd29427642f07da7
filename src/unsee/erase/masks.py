"""Gradient mask policies: which entries of the trainable tensors an optimiser step may move.

A policy is attached to the scoped parameters (name -> Parameter) and the optimiser. It
registers one gradient hook per masked tensor that (1) adds the *raw* gradient to an
accumulator ``G`` while the policy collects saliency, then (2) returns ``grad * M``. The
engine calls ``start_round(r)`` when a round starts, asks ``should_step(step)`` before each
optimiser step (False: no step, e.g. during a warm-up) and calls ``after_step(step)`` after
it, where a policy may change its masks.

Optimiser state. Masking the gradient alone makes a *gradient* mask, not a weight freeze:
Adam's moments from steps before an entry was masked keep moving it for a while (its update
``m / (sqrt(v) + eps)`` decays with beta1 but is not zero). This is how Sculpting Memory's
released code behaves, and the default. ``reset_optimizer_state=True`` zeroes Adam's
``exp_avg`` and ``exp_avg_sq`` at masked entries every time the masks are set, so a masked
entry's update is exactly ``0 / (0 + eps) = 0`` until it is regrown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from unsee.errors import UnseeError

#: Sculpting Memory masks the four Linear weight matrices of every cross-attention block.
XATTN_LINEAR_WEIGHT = re.compile(r"attn2\.(to_q|to_k|to_v|to_out\.0)\.weight$")


class MaskPolicy:
    """Base policy: hooks, the accumulator ``G`` and optimiser-state handling.

    ``masks`` maps a parameter name to a bool tensor of the parameter's shape (True =
    trainable); a masked parameter without an entry (before its mask is set) and every
    parameter the policy does not mask get their gradient unchanged.
    """

    def __init__(self, reset_optimizer_state: bool = False) -> None:
        self.reset_optimizer_state = reset_optimizer_state
        self.params: dict[str, torch.nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.collecting = False
        self.optimizer: Any = None
        #: averages a tensor over data-parallel processes (identity in one process)
        self.sync: Callable[[torch.Tensor], torch.Tensor] = lambda g: g
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def maskable(self, name: str, param: torch.Tensor) -> bool:
        """Whether ``name`` carries a mask (others are updated densely)."""
        return True

    def attach(
        self,
        params: dict[str, torch.nn.Parameter],
        optimizer: Any = None,
        sync: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Hook the maskable tensors of ``params``; ``optimizer`` (a torch optimiser, or
        accelerate's wrapper) is needed for ``reset_optimizer_state``. The hooks see each
        process's own gradient (before DDP averages it), so under data parallelism ``sync``
        averages ``G`` over the processes before a mask is chosen: every process then
        picks the mask one process at the same global batch would."""
        if sync is not None:
            self.sync = sync
        self.params = {n: p for n, p in params.items() if self.maskable(n, p)}
        if not self.params:
            raise UnseeError(f"{type(self).__name__}: no parameter in scope can carry a mask")
        if self.reset_optimizer_state and optimizer is None:
            raise UnseeError("reset_optimizer_state needs the optimiser")
        self.optimizer = optimizer
        self._hooks = [p.register_hook(partial(self._hook, n)) for n, p in self.params.items()]

    def detach(self) -> None:
        """Remove the hooks (the engine calls this when training ends, so the edited model
        can be trained again without this run's masks)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        if self.collecting:
            g = grad.detach().float()
            acc = self.grad_sum.get(name)
            self.grad_sum[name] = g.clone() if acc is None else acc.add_(g)
        m = self.masks.get(name)
        return grad if m is None else grad * m

    def collect(self) -> None:
        """Start accumulating raw gradients from zero."""
        self.grad_sum, self.collecting = {}, True

    def sync_scores(self) -> None:
        """Average ``G`` over the processes (before a mask is chosen from it)."""
        self.grad_sum = {n: self.sync(g) for n, g in self.grad_sum.items()}

    def scores(self, name: str) -> torch.Tensor:
        """|G| of ``name`` (zeros if it received no gradient since the last reset)."""
        g = self.grad_sum.get(name)
        return torch.zeros_like(self.params[name], dtype=torch.float32) if g is None else g.abs()

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Install new masks and, with ``reset_optimizer_state``, zero Adam's moments at the
        entries they mask."""
        self.masks = masks
        if not self.reset_optimizer_state:
            return
        for n, m in masks.items():
            state = self.optimizer.state.get(self.params[n], {})
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in state:
                    state[key].mul_(m)

    def density(self) -> dict[str, float]:
        """Fraction of trainable entries per masked tensor."""
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def start_round(self, round_index: int) -> None:
        """Called before a round's first step."""

    def should_step(self, step: int) -> bool:
        """Whether the optimiser steps after global step ``step``'s backward."""
        return True

    def after_step(self, step: int) -> None:
        """Called after global step ``step`` (whether or not the optimiser stepped)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {n: m.cpu() for n, m in self.masks.items()},
            "grad_sum": {n: g.cpu() for n, g in self.grad_sum.items()},
            "collecting": self.collecting,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = {n: p.device for n, p in self.params.items()}
        self.masks = {n: m.to(dev[n]) for n, m in state["masks"].items()}
        self.grad_sum = {n: g.to(dev[n]) for n, g in state["grad_sum"].items()}
        self.collecting = state["collecting"]


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of ``scores``' shape with exactly its ``k`` largest entries set (ties broken
    by position, so the density is exact)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[scores.flatten().topk(k).indices] = True
    return mask.view_as(scores)


class DynamicMask(MaskPolicy):
    """Sculpting Memory's dynamic mask (methods.md §1.5), re-initialised every round.

    Per round of ``round_length`` iterations (local iteration ``i`` = step mod round_length,
    ``n = i + 1`` iterations done): the first ``warmup`` iterations take no optimiser step
    and only accumulate G; at ``n = warmup`` each matrix's mask becomes the top
    ``floor(density * numel)`` of |G|. Then every ``interval`` iterations, while the epoch
    ``e = i // steps_per_epoch`` is below ``floor(update_until * E)``, the ``n_e = max(1,
    floor(f(e) |active|))`` active entries with the smallest |G| are dropped and the ``n_e``
    inactive ones with the largest |G| grown, with ``f(e) = turnover * (1 + cos(pi e / E)) / 2``
    (``decay``) or ``turnover``; density is preserved. G restarts from zero at every update.
    ``regrow=False`` keeps the warm-up mask for the whole round (the static ablation).
    """

    def __init__(
        self,
        *,
        round_length: int,
        steps_per_epoch: int,
        density: float = 0.5,
        warmup: int = 50,
        interval: int = 100,
        turnover: float = 0.2,
        decay: bool = True,
        update_until: float = 0.8,
        regrow: bool = True,
        reset_optimizer_state: bool = False,
    ) -> None:
        super().__init__(reset_optimizer_state)
        self.round_length, self.steps_per_epoch = round_length, steps_per_epoch
        self.epochs = math.ceil(round_length / steps_per_epoch)
        self.density_target, self.warmup, self.interval = density, warmup, interval
        self.turnover, self.decay, self.regrow = turnover, decay, regrow
        self.last_update_epoch = math.floor(update_until * self.epochs)  # exclusive

    def maskable(self, name: str, param: torch.Tensor) -> bool:
        return param.dim() == 2 and bool(XATTN_LINEAR_WEIGHT.search(name))

    def turnover_at(self, epoch: int) -> float:
        if not self.decay:
            return self.turnover
        return self.turnover * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))

    def start_round(self, round_index: int) -> None:
        self.set_masks({})
        self.collect()

    def should_step(self, step: int) -> bool:
        return step % self.round_length >= self.warmup

    def after_step(self, step: int) -> None:
        i = step % self.round_length
        n = i + 1
        if n == self.warmup:
            self.sync_scores()
            self.set_masks(
                {
                    name: top_k_mask(
                        self.scores(name), max(1, int(self.density_target * p.numel()))
                    )
                    for name, p in self.params.items()
                }
            )
            self.collecting = self.regrow
        elif (
            self.regrow
            and n > self.warmup
            and n % self.interval == 0
            and i // self.steps_per_epoch < self.last_update_epoch
        ):
            f = self.turnover_at(i // self.steps_per_epoch)
            self.sync_scores()
            self.set_masks(
                {
                    name: self._prune_regrow(m, self.scores(name), f)
                    for name, m in self.masks.items()
                }
            )
        else:
            return
        self.grad_sum = {}

    @staticmethod
    def _prune_regrow(mask: torch.Tensor, scores: torch.Tensor, fraction: float) -> torch.Tensor:
        flat, g = mask.flatten(), scores.flatten()
        active, inactive = flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)
        n = min(max(1, int(fraction * active.numel())), inactive.numel())
        new = flat.clone()
        # grown entries are chosen among those inactive *before* the drop (RigL), so an
        # entry just dropped cannot come straight back
        new[active[g[active].topk(n, largest=False).indices]] = False
        new[inactive[g[inactive].topk(n).indices]] = True
        return new.view_as(mask)


class StaticMask(MaskPolicy):
    """SalUn's weight saliency mask (methods.md §4.2): one global threshold over every scoped
    tensor, fixed once computed. The method accumulates the saliency gradient (``collect``,
    then its backward passes) and calls :meth:`fix`."""

    def start_round(self, round_index: int) -> None:
        # a new round's saliency is measured without the previous round's mask
        self.set_masks({})

    def fix(self, fraction: float) -> None:
        """Keep the ``fraction`` of all scoped entries with the largest |G| (ties at the
        threshold are kept, as SalUn's ``>= median``); stops collecting."""
        self.sync_scores()
        flat = torch.cat([self.scores(n).flatten().cpu() for n in self.params])
        k = max(1, int(fraction * flat.numel()))
        threshold = flat.kthvalue(flat.numel() - k + 1).values
        self.set_masks(
            {n: self.scores(n) >= threshold.to(self.scores(n).device) for n in self.params}
        )
        self.grad_sum, self.collecting = {}, False
