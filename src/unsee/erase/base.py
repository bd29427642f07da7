"""What a method is: its default scope, its ``Params`` and its own loss terms.

A method subclasses :class:`Method`, sets its default ``scope`` and ``Params`` dataclass,
and implements :meth:`Method.loss` with the :class:`unsee.erase.context.ErasureContext`
helpers (x_t sources, frozen and trainable predictions and denoising targets, all in the
run's loss space: the model's native prediction or epsilon). Optional hooks: ``mask`` (a
gradient mask policy), ``start_round`` / ``end_round`` (rounds; one unless sequential),
``fresh_optimizer_per_round`` and ``state_dict`` (for checkpoints). A method registers
itself with :func:`register`; :mod:`unsee.erase.registry` looks methods up.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field

if TYPE_CHECKING:
    from unsee.concepts import Concept
    from unsee.erase.context import ErasureContext
    from unsee.erase.masks import MaskPolicy
    from unsee.models.family import ModelFamily


@dataclasses.dataclass
class NoParams:
    pass


class Method:
    """Base class of fine-tuning erasure methods."""

    name: ClassVar[str]
    scope: ClassVar[str] = "xattn"
    Params: ClassVar[type] = NoParams
    #: per model family key (:attr:`ModelFamily.key`): iterations, lr, batch_size,
    #: lr_schedule, optimizer (``adam``, the default, or ``adamw``), weight_decay (default
    #: 0), max_grad_norm (default 0: no clipping), and ``params``: the family's values of
    #: the method's own parameters (what the official recipe for that model uses), under
    #: any the user sets
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    summary: ClassVar[str] = ""
    #: new Adam moments when a round starts (Sculpting Memory's sequential code builds a
    #: fresh optimiser per concept); the OneCycle schedule restarts each round regardless
    fresh_optimizer_per_round: ClassVar[bool] = False

    def __init__(self, params: Any, ctx: ErasureContext) -> None:
        self.p = params
        self.ctx = ctx
        self.mask: MaskPolicy | None = None

    @classmethod
    def plan_defaults(
        cls, params: Any, family: ModelFamily, concepts: list[Concept], sequential: bool = False
    ) -> dict[str, Any]:
        """Defaults for iterations (per round), lr, batch_size, lr_schedule, the optimiser
        (optimizer, weight_decay, max_grad_norm) and scope on a model ``family``;
        ``sequential``: one round per concept.
        Methods whose defaults depend on their parameters or on the concepts (KSCU's task
        presets and per-concept budgets) override this; it runs before any model is
        loaded, so it is also where such choices are validated."""
        return dict(family.pick(cls.defaults, {}))

    def start_round(self, round_index: int) -> None:
        """Called before the first step of each round (one round unless sequential)."""

    def end_round(self, round_index: int) -> dict[str, Any]:
        """Called after the last step of each round, before the next round starts or the
        artifact is written; may change the parameters (e.g. restore a round's best
        checkpoint). Returns what the model card records for this round."""
        return {}

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss for global step ``step`` and its logged parts."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"mask": self.mask.state_dict() if self.mask else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mask and state.get("mask") is not None:
            self.mask.load_state_dict(state["mask"])


class ClosedFormMethod(Method):
    """A method with no training loop: :meth:`fit` collects statistics and solves,
    :meth:`apply` writes the edit into the scoped parameters (``ctx.params``) in place.

    Fitting and applying are separate so statistics can be inspected, saved or reused; the
    engine then writes the same artifact (delta + model card) as for fine-tuning methods.
    """

    def fit(self) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, solution: dict[str, Any]) -> None:
        raise NotImplementedError


REGISTRY: dict[str, type[Method]] = {}


def register(*names: str, **overrides: Any):
    """Class decorator: register a method under ``names`` (variants may override class
    attributes, e.g. ESD's scopes)."""

    def deco(cls: type[Method]) -> type[Method]:
        for n in names:
            variant = type(cls.__name__, (cls,), {"name": n, **overrides.get(n, {})})
            REGISTRY[n] = variant
        return cls

    return deco


#: Field types for ``Params`` dataclasses: ranges are checked with the types.
Count = Annotated[int, Field(ge=1)]  # a number of steps, images, loops
Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Timestep = Annotated[int, Field(ge=0, le=999)]  # an SD 1.x training timestep


def split_list(text: str) -> list[str]:
    """The items of a ``;``-separated parameter (prompts, templates), stripped, empty
    ones dropped: how every list-valued method parameter is written on the command line."""
    return [item.strip() for item in text.split(";") if item.strip()]
