"""The erasure recipe: load, train, save.

:class:`Erasure` runs a validated :class:`~unsee.erase.config.Plan` in three seams, as
torchtune's recipes do: :meth:`~Erasure.setup` (load the model, apply the ``on`` artifacts,
scope the trainable tensors, build the method's context, the method, the optimiser and the
schedule, resume), :meth:`~Erasure.train` (the loop: gradient clipping, optimiser,
schedule, NaN stop, mask hooks, checkpoints) and :meth:`~Erasure.save` (the delta and its
model card).

A run is deterministic given its config: step ``k`` draws all its randomness from
``(seed, k)``, so a run killed and resumed from its last checkpoint ends where an
uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from unsee.artifacts import apply_loaded, compute_delta, read_card, write_artifact
from unsee.cards import base_license
from unsee.erase.base import ClosedFormMethod, Method
from unsee.erase.config import EraseConfig, Plan, config_from_yaml, validate
from unsee.erase.context import ErasureContext
from unsee.erase.scopes import describe_scope, train_only
from unsee.errors import UnseeError
from unsee.io import check_output_dir, load_state, save_state
from unsee.models.bundle import Bundle, check_device, load_bundle
from unsee.models.fingerprint import library_versions
from unsee.progress import progress_bar

__all__ = [
    "EraseConfig",
    "Erasure",
    "ErasureResult",
    "Plan",
    "config_from_yaml",
    "run_erasure",
    "validate",
]

#: the card's ``final_loss`` is the mean of the last this many step losses
FINAL_LOSS_WINDOW = 20


@dataclasses.dataclass
class ErasureResult:
    out: Path
    card: dict[str, Any]
    bundle: Bundle


def _checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.ckpt"


def _checkpoint_file(out: Path) -> Path:
    return _checkpoint_dir(out) / "checkpoint.safetensors"


def _plan_json(plan: Plan) -> Any:
    """``plan`` as its checkpoint stores it (JSON types), to compare with a stored one."""
    return json.loads(json.dumps(plan.as_dict()))


def can_resume(cfg: EraseConfig, out: Path) -> bool:
    """Whether a run of ``cfg`` into ``out`` stopped part-way with a readable checkpoint
    made by this same plan, so that ``resume=True`` continues it (to the same end as an
    uninterrupted run); False when there is none, it is damaged, or another plan made it."""
    ckpt = _checkpoint_file(Path(out))
    if not ckpt.exists():
        return False
    try:
        state = load_state(ckpt)
    except UnseeError:  # load_state's one error for a damaged or foreign file
        return False
    return bool(state.get("plan") == _plan_json(validate(cfg)))


def _lr_lambda(kind: str, total: int) -> Callable[[int], float]:
    if kind == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    return lambda s: 1.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Erasure:
    """One erasure run of ``cfg`` (validated here, before any model is loaded) writing its
    artifact to ``out`` (None: a run that is set up and trained but never saved, e.g. to
    inspect a method in a test)."""

    def __init__(
        self,
        cfg: EraseConfig,
        out: Path | None = None,
        *,
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        self.plan = validate(cfg)
        self.cfg = self.plan.cfg
        self.out = None if out is None else Path(out)
        self.overwrite, self.resume = overwrite, resume
        self.ckpt_path: Path | None = None
        if self.out is not None:
            self.ckpt_path = _checkpoint_file(self.out)
            if resume and not self.ckpt_path.exists():
                legacy = self.ckpt_path.parent / "checkpoint.pt"
                raise UnseeError(
                    f"nothing to resume: {self.ckpt_path} does not exist"
                    + (
                        f" ({legacy} is a pickle from an older unsee and is never loaded; "
                        "start over)"
                        if legacy.exists()
                        else ""
                    )
                )
            check_output_dir(self.out, overwrite or resume, "artifact")
        elif resume:
            raise UnseeError("resume needs the artifact folder the run writes to")
        self.step, self.updates, self.wall_before = 0, 0, 0.0
        self.rounds: list[dict[str, Any]] = []  # per-round provenance for the card
        self.losses: list[float] = []
        self.closed_form_cost: dict[str, float] = {}

    # -- setup -----------------------------------------------------------------------
    def setup(self, bundle: Bundle | None = None) -> None:
        """Load the model (or take ``bundle``, an already-loaded *unmodified* model, which
        is then edited in place), apply the ``on`` artifacts, and build the context, the
        method, the optimiser and its schedule; resume from the checkpoint if asked."""
        plan, cfg = self.plan, self.cfg
        self.accelerator = self._accelerator(bundle)
        world = self.accelerator.num_processes
        splits = world == 1 or issubclass(plan.method_cls, ClosedFormMethod)
        if not splits and plan.batch_size % world:
            raise UnseeError(
                f"batch size {plan.batch_size} cannot be split over {world} processes: "
                f"use a multiple of {world} (--batch-size)"
            )
        self.t_start = time.time()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if bundle is None:
            bundle = load_bundle(
                cfg.model, device=self.accelerator.device, variant=cfg.model_variant
            )
        elif bundle.family != plan.family:
            raise UnseeError(
                f"the model passed in is not {cfg.model!r} (it is {bundle.family.description}); "
                "pass the model the config names"
            )
        self.bundle = bundle
        self.base_fingerprint = bundle.base_fingerprint
        apply_loaded(bundle, [Path(a) for a in cfg.on], plan.priors)
        self.params = train_only(bundle.unet, plan.scope)
        if cfg.gradient_checkpointing:
            cast(Any, bundle.unet).enable_gradient_checkpointing()  # a diffusers model
        self.ctx = ErasureContext(
            bundle,
            self.accelerator,
            plan.concepts,
            self.params,
            iterations=plan.iterations,
            batch_size=plan.batch_size,
            seed=cfg.seed,
            family=plan.family,
            sequential=cfg.sequential,
            loss_space=cfg.loss_space,
            explicit_anchors=bool(cfg.anchors),
        )
        self.method: Method = plan.method_cls(plan.params, self.ctx)
        self.opt = self._optimizer()
        self.sched = self._scheduler()
        self.ctx.unet, self.opt = self.accelerator.prepare(bundle.unet, self.opt)
        if self.method.mask is not None:
            self.method.mask.attach(self.params, self.opt, self.ctx.mean_over_processes)
        if self.resume:
            self._load_checkpoint()

    def _accelerator(self, bundle: Bundle | None) -> Any:
        from accelerate import Accelerator

        device = check_device(self.cfg.device)
        if self.cfg.device == "auto" and bundle is not None:  # a model handed in stays put
            device = bundle.device.type
        if bundle is not None and bundle.device.type != torch.device(device).type:
            raise UnseeError(
                f"the model passed in is on {bundle.device.type} but the run asks "
                f"for device {device!r}: move it first or use device='auto'"
            )
        try:
            return Accelerator(cpu=device == "cpu", mixed_precision=self.cfg.mixed_precision)
        except ValueError as err:  # accelerate keeps one device and precision per process
            raise UnseeError(
                f"cannot run on {device} with mixed precision "
                f"{self.cfg.mixed_precision!r} in this process: {err.args[0].split(',')[0]}"
                " (an earlier run set them); start a new process for other settings"
            ) from err

    def _optimizer(self) -> torch.optim.Optimizer:
        """The plan's optimiser over the scoped tensors: Adam (weight decay as an L2 term)
        or AdamW (decoupled decay), torch's default betas and eps, which the official
        scripts use."""
        plan = self.plan
        kind = torch.optim.AdamW if plan.optimizer == "adamw" else torch.optim.Adam
        return kind(list(self.params.values()), lr=plan.lr, weight_decay=plan.weight_decay)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        plan = self.plan
        if plan.lr_schedule == "onecycle":  # one cycle per round
            return torch.optim.lr_scheduler.OneCycleLR(
                self.opt, max_lr=plan.lr, total_steps=plan.iterations, anneal_strategy="cos"
            )
        return torch.optim.lr_scheduler.LambdaLR(
            self.opt, _lr_lambda(plan.lr_schedule, self.ctx.total_steps)
        )

    def _load_checkpoint(self) -> None:
        assert self.ckpt_path is not None
        state = load_state(self.ckpt_path)
        if state.get("plan") != _plan_json(self.plan):
            raise UnseeError(
                "the checkpoint was made with a different configuration; "
                "run without --resume (and with --overwrite) to start over"
            )
        try:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(state["params"][n].to(p.device, p.dtype))
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            self.method.load_state_dict(state["method"])
            self.step, self.wall_before = state["step"], state["wall_seconds"]
            self.updates = state["updates"]
            self.rounds, self.losses = state["rounds"], state["recent_losses"]
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UnseeError(
                f"checkpoint {self.ckpt_path} is damaged ({type(exc).__name__}: {exc}); "
                "run without --resume (and with --overwrite) to start over"
            ) from exc

    def save_checkpoint(self) -> None:
        """safetensors + JSON: resuming never unpickles anything. Under data parallelism
        the processes hold the same state and the main one writes it."""
        if self.ckpt_path is None or not self.accelerator.is_main_process:
            return
        save_state(
            self.ckpt_path,
            {
                "step": self.step,
                "plan": _plan_json(self.plan),
                "params": {n: p.detach().cpu().clone() for n, p in self.params.items()},
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "method": self.method.state_dict(),
                "updates": self.updates,
                "rounds": self.rounds,
                "recent_losses": self.losses[-FINAL_LOSS_WINDOW:],
                "wall_seconds": self.wall_before + time.time() - self.t_start,
            },
        )

    # -- train -----------------------------------------------------------------------
    def train(self) -> None:
        """Fit and apply a closed-form method, or run the loop to the last step."""
        if isinstance(self.method, ClosedFormMethod):
            t_fit = time.time()
            solution = self.method.fit()
            t_apply = time.time()
            self.method.apply(solution)
            self.closed_form_cost = {
                "fit_seconds": round(t_apply - t_fit, 3),
                "apply_seconds": round(time.time() - t_apply, 3),
            }
            return
        plan, ctx, method = self.plan, self.ctx, self.method
        total = ctx.total_steps
        label = f"erase {','.join(self.cfg.concepts)} ({self.cfg.method})"
        with progress_bar(total, label, completed=self.step) as bar:
            while self.step < total:
                step = self.step
                r = ctx.round_of(step)
                if step == r * plan.iterations:  # a round starts (resumed rounds restore state)
                    self._start_round(r)
                rng = np.random.default_rng([self.cfg.seed, step])
                loss, parts = method.loss(step, rng)
                self._check_finite(loss, step)
                self.accelerator.backward(loss)
                if method.mask is None or method.mask.should_step(step):
                    if plan.max_grad_norm:  # accelerate's: unscales fp16 gradients first
                        self.accelerator.clip_grad_norm_(
                            list(self.params.values()), plan.max_grad_norm
                        )
                    self.opt.step()
                    self.sched.step()
                    self.updates += 1
                self.opt.zero_grad(set_to_none=True)
                if method.mask is not None:
                    method.mask.after_step(step)
                self.step = step = step + 1
                if step % plan.iterations == 0:  # the round's last step is done
                    self._end_round(r)
                self.losses.append(ctx.global_mean(loss))
                bar.advance(loss=float(np.mean(self.losses[-FINAL_LOSS_WINDOW:])), **parts)
                if step % self.cfg.checkpoint_every == 0 and step < total:
                    self.save_checkpoint()

    def _start_round(self, r: int) -> None:
        if r:
            if self.method.fresh_optimizer_per_round:
                self.opt.state.clear()
            if self.plan.lr_schedule == "onecycle":
                self.sched = self._scheduler()
        if self.method.mask is not None:
            self.method.mask.start_round(r)
        self.method.start_round(r)

    def _end_round(self, r: int) -> None:
        concepts = self.plan.concepts
        names = [concepts[r].name] if self.cfg.sequential else [c.name for c in concepts]
        self.rounds.append(
            {
                "round": r,
                "concepts": names,
                "iterations": self.plan.iterations,
                **self.method.end_round(r),
            }
        )

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if torch.isfinite(loss):
            return
        kept = (
            f"the last good checkpoint is kept in {self.ckpt_path}"
            if self.ckpt_path is not None and self.ckpt_path.exists()
            else "no checkpoint was written yet"
        )
        raise UnseeError(
            f"the loss became {loss.item()} at step {step}; stopped ({kept}); "
            "the learning rate may be too high for this model (try a lower --lr)"
        )

    # -- save ------------------------------------------------------------------------
    def save(self) -> ErasureResult:
        """Write the artifact (delta from the original base, including the ``on``
        artifacts' deltas, and its model card) to ``out``."""
        assert self.out is not None, "a run made without out= is never saved"
        plan, cfg, method = self.plan, self.cfg, self.method
        if method.mask is not None:
            method.mask.detach()
        wall = self.wall_before + time.time() - self.t_start
        delta = compute_delta(self.bundle.unet, self.ctx.start_values)
        for _, prior in plan.priors:
            for n, d in prior.items():
                delta[n] = delta[n] + d if n in delta else d.clone()
        for p in self.params.values():
            p.requires_grad_(False)
        prior_cards = [card for card, _ in plan.priors]
        card = {
            "format": "unsee-artifact/1",
            "method": cfg.method,
            "summary": plan.method_cls.summary,
            "hyperparameters": plan.as_dict(),
            "concepts": [dataclasses.asdict(c) for c in plan.concepts],
            "scope": describe_scope(plan.scope),
            "scope_parameters": int(sum(p.numel() for p in self.params.values())),
            "base": {
                "model_id": self.bundle.portable_id,
                "fingerprint": self.base_fingerprint,
                "license": base_license(self.bundle.model_id),
            },
            "seed": cfg.seed,
            "versions": library_versions(),
            "cost": {
                "wall_seconds": round(wall, 2),
                "peak_rss_mb": round(_peak_rss_mb(), 1),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                if torch.cuda.is_available()
                else None,
                "device": str(self.accelerator.device),
                "processes": self.accelerator.num_processes,
                "iterations": 0 if self.closed_form_cost else self.ctx.total_steps,
                "optimizer_steps": self.updates,
                "parameters_changed": int(sum(torch.count_nonzero(d) for d in delta.values())),
                "final_loss": float(np.mean(self.losses[-FINAL_LOSS_WINDOW:]))
                if self.losses
                else None,
                **self.closed_form_cost,
            },
            "rounds": self.rounds,
            "ledger": [
                *(e.as_json() for c in prior_cards for e in c.ledger),
                *(c.ledger_entry() for c in prior_cards),
            ],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        out = self.out
        if self.accelerator.is_main_process:
            write_artifact(out, delta, card, overwrite=self.overwrite or self.resume)
            shutil.rmtree(_checkpoint_dir(out), ignore_errors=True)
        return ErasureResult(out, read_card(out) if out.exists() else card, self.bundle)


def run_erasure(
    cfg: EraseConfig,
    out: Path,
    overwrite: bool = False,
    resume: bool = False,
    bundle: Bundle | None = None,
) -> ErasureResult:
    """Validate, load, erase, write the artifact to ``out``; returns it with the erased
    bundle. ``bundle`` reuses an already-loaded *unmodified* model (it is edited in place).
    """
    recipe = Erasure(cfg, out, overwrite=overwrite, resume=resume)
    recipe.setup(bundle)
    recipe.train()
    return recipe.save()
