"""An erasure run's configuration and its validation, done before any model is loaded.

:func:`validate` turns an :class:`EraseConfig` (command line, ``--config`` YAML or Python)
into a :class:`Plan`: every default resolved for the method and model family, the concepts
resolved, the ``on`` artifacts read and checked. The recipe (:mod:`unsee.erase.engine`)
runs the plan as it is.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import yaml
from pydantic import Field, TypeAdapter, ValidationError

from unsee.artifacts import read_artifacts
from unsee.concepts import Concept, as_text, resolve_concept
from unsee.erase.base import Method
from unsee.erase.registry import build_params, get_method
from unsee.erase.scopes import PRESETS
from unsee.errors import UnseeError, validation_error
from unsee.models.bundle import check_device
from unsee.models.family import ModelFamily, model_family
from unsee.models.model_ids import BUNDLED, portable_id

if TYPE_CHECKING:
    from unsee.card_schema import ModelCard

#: "onecycle" spans one round (the schedule restarts when a round starts)
LR_SCHEDULES = ("constant", "cosine", "onecycle")
#: torch's Adam (``weight_decay``: an L2 term added to the gradient) or AdamW (decoupled:
#: each step also shrinks the weights by lr x weight_decay); default betas and eps, which
#: every official script here uses
OPTIMIZERS = ("adam", "adamw")

Positive = Annotated[int, Field(gt=0)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: seeds feed numpy's SeedSequence, which takes non-negative integers
Seed = Annotated[int, Field(ge=0, lt=2**63)]


@dataclasses.dataclass
class EraseConfig:
    """Everything that defines an erasure run (also the keys of a ``--config`` YAML).

    Types and ranges are checked by :func:`check_config` (pydantic): numbers are read the way
    YAML users write them (``1e-5`` is a float, ``"5"`` an integer), anything else is one
    clear error naming the field.
    """

    method: str
    concepts: list[str]
    model: str = "toyworld"
    #: weight files saved with ``save_pretrained(variant=...)`` (``fp16``: *.fp16.safetensors)
    model_variant: str | None = None
    anchors: list[str] = dataclasses.field(default_factory=list)
    #: one text per concept to erase it as (:func:`unsee.concepts.as_text`), or none
    concept_prompts: list[str] = dataclasses.field(default_factory=list)
    iterations: Positive | None = None
    lr: PositiveFinite | None = None
    batch_size: Positive | None = None
    lr_schedule: Literal["constant", "cosine", "onecycle"] | None = None
    # the optimiser and its regularisers; None: the method's default for the model family
    # (Adam, no weight decay, no clipping unless the method's official code does otherwise)
    optimizer: Literal["adam", "adamw"] | None = None
    weight_decay: NonNegativeFinite | None = None
    max_grad_norm: NonNegativeFinite | None = None  # clip the gradient's norm; 0: never
    seed: Seed = 0
    scope: str | None = None
    sequential: bool = False
    on: list[str] = dataclasses.field(default_factory=list)
    device: str = "auto"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: Positive = 25
    # native: losses compare the model's own predictions (v on v-models); epsilon: the
    # epsilon predictions (reproduces runs made before issue 19)
    loss_space: Literal["native", "epsilon"] = "native"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_config(data: dict[str, Any], where: str = "config") -> EraseConfig:
    """An :class:`EraseConfig` from a mapping, every field type- and range-checked."""
    known = {f.name for f in dataclasses.fields(EraseConfig)}
    unknown = sorted(repr(k) if not isinstance(k, str) else k for k in data if k not in known)
    if unknown:
        hint = (
            "; YAML reads a bare on/off/yes/no as true/false: quote the key ('on':)"
            if any(isinstance(k, bool) for k in data)
            else ""
        )
        raise UnseeError(
            f"unknown key(s) in {where}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}{hint}"
        )
    for required in ("method", "concepts"):
        if required not in data:
            raise UnseeError(f"{where} needs '{required}'")
    data = dict(data)
    if isinstance(data.get("concepts"), str):
        data["concepts"] = [data["concepts"]]
    try:
        return _CONFIG.validate_python(data)
    except ValidationError as exc:
        raise validation_error(exc, where) from None


def config_from_yaml(path: Path, overrides: dict[str, Any]) -> EraseConfig:
    """Read a YAML config; ``overrides`` (from the command line, None = unset) win."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(f"cannot read config {path}: {first}") from exc
    if not isinstance(data, dict):
        raise UnseeError(f"config {path} must be a mapping of keys to values")
    for k, v in overrides.items():
        if v is not None and v != [] and v != {}:
            data[k] = v
    return check_config(data, f"config {path}")


_CONFIG = TypeAdapter(EraseConfig)


@dataclasses.dataclass
class Plan:
    """A validated config with every default resolved, and what was worked out to check it
    (the concepts, the model family, the artifacts it stacks on), carried to the run so
    nothing is worked out twice."""

    cfg: EraseConfig
    method_cls: type[Method]
    params: Any
    iterations: int
    lr: float
    batch_size: int
    lr_schedule: str
    scope: str
    family: ModelFamily  # which per-family defaults applied
    concepts: list[Concept]
    optimizer: str
    weight_decay: float
    max_grad_norm: float  # 0: no clipping
    #: the ``on`` artifacts' cards and deltas, read and checked once
    priors: list[tuple[ModelCard, dict[str, torch.Tensor]]] = dataclasses.field(
        default_factory=list
    )

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.cfg)
        d.update(
            iterations=self.iterations,
            lr=self.lr,
            batch_size=self.batch_size,
            lr_schedule=self.lr_schedule,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            scope=self.scope,
            params=dataclasses.asdict(self.params),
            model=portable_id(self.cfg.model),  # a card never keeps a local path as typed
        )
        d.pop("checkpoint_every")
        d.pop("device")
        return d


def validate(cfg: EraseConfig) -> Plan:
    """Check a config before any model is loaded; raises :class:`UnseeError`."""
    cfg = check_config(dataclasses.asdict(cfg))
    check_device(cfg.device)
    cls = get_method(cfg.method)
    chosen = dict(cfg.params or {})
    params = build_params(cls, chosen)
    if not cfg.concepts:
        raise UnseeError("give at least one --concept")
    if cfg.anchors and len(cfg.anchors) != len(cfg.concepts):
        raise UnseeError(f"give one --anchor per concept ({len(cfg.concepts)}) or none")
    if cfg.concept_prompts and len(cfg.concept_prompts) != len(cfg.concepts):
        raise UnseeError(f"give one --concept-prompt per concept ({len(cfg.concepts)}) or none")
    family = model_family(cfg.model)
    concepts = [
        resolve_concept(c, family.vocabulary, cfg.anchors[i] if cfg.anchors else None)
        for i, c in enumerate(cfg.concepts)
    ]
    if cfg.concept_prompts:
        concepts = [as_text(c, t) for c, t in zip(concepts, cfg.concept_prompts, strict=True)]
    d = cls.plan_defaults(params, family, concepts, cfg.sequential)
    if d.get("params"):  # the family's parameter values under the ones the user chose
        params = build_params(cls, {**d["params"], **chosen})
    iterations = cfg.iterations if cfg.iterations is not None else d.get("iterations", 200)
    lr = cfg.lr if cfg.lr is not None else d.get("lr", 1e-5)
    batch = cfg.batch_size if cfg.batch_size is not None else d.get("batch_size", 1)
    sched = cfg.lr_schedule or d.get("lr_schedule", "constant")
    optimizer = cfg.optimizer or d.get("optimizer", "adam")
    decay = cfg.weight_decay if cfg.weight_decay is not None else d.get("weight_decay", 0.0)
    clip = cfg.max_grad_norm if cfg.max_grad_norm is not None else d.get("max_grad_norm", 0.0)
    if not isinstance(iterations, int) or iterations <= 0:
        raise UnseeError(f"iterations must be a positive integer (got {iterations})")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UnseeError(f"learning rate must be a positive finite number (got {lr})")
    if not isinstance(batch, int) or batch <= 0:
        raise UnseeError(f"batch size must be a positive integer (got {batch})")
    if sched not in LR_SCHEDULES:
        raise UnseeError(f"unknown lr_schedule {sched!r}; use one of {', '.join(LR_SCHEDULES)}")
    if optimizer not in OPTIMIZERS:
        raise UnseeError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    for name, value in (("weight_decay", decay), ("max_grad_norm", clip)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UnseeError(f"{name} must be a finite number >= 0 (got {value})")
    scope = cfg.scope or d.get("scope", cls.scope)
    if scope not in PRESETS and not scope.startswith("re:"):
        raise UnseeError(
            f"unknown scope {scope!r}: use one of {', '.join(PRESETS)} or 're:<regex>'"
        )
    priors = read_artifacts([Path(a) for a in cfg.on])  # damaged, foreign, repeated: refused
    if cfg.model not in BUNDLED and not Path(cfg.model).exists() and "/" not in cfg.model:
        raise UnseeError(f"unknown model {cfg.model!r}")
    return Plan(
        cfg,
        cls,
        params,
        iterations,
        float(lr),
        batch,
        sched,
        scope,
        family,
        concepts,
        optimizer,
        float(decay),
        float(clip),
        priors,
    )
