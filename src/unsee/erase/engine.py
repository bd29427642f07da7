"""The erasure engine: loop, optimiser, devices, checkpoints, cost, artifact.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field, TypeAdapter, ValidationError

from unsee.artifacts import (
    apply_artifacts,
    compute_delta,
    fingerprint,
    ledger_entry,
    library_versions,
    read_artifacts,
    read_card,
    read_delta,
    write_artifact,
)
from unsee.concepts import Concept, resolve_concept
from unsee.erase.base import ClosedFormMethod, Method, build_params, get_method
from unsee.erase.scopes import PRESETS, describe_scope, train_only
from unsee.errors import UnseeError, validation_error
from unsee.io import check_output_dir, load_state, save_state
from unsee.models.bundle import Bundle, check_device, load_bundle
from unsee.models.sampling import (
    ddim_sample,
    denoising_target,
    eps_error_scale,
    initial_noise,
    to_loss_space,
)
from unsee.progress import progress_bar
from unsee.seeds import TRAINING_SEED_BASE, check_seeds

LR_SCHEDULES = ("constant", "cosine", "onecycle")
#: the card's ``final_loss`` is the mean of the last this many step losses
FINAL_LOSS_WINDOW = 20


Positive = Annotated[int, Field(gt=0)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
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
    anchors: list[str] = dataclasses.field(default_factory=list)
    iterations: Positive | None = None
    lr: PositiveFinite | None = None
    batch_size: Positive | None = None
    lr_schedule: Literal["constant", "cosine", "onecycle"] | None = None
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
    """A validated config with every default resolved."""

    cfg: EraseConfig
    method_cls: type[Method]
    params: Any
    iterations: int
    lr: float
    batch_size: int
    lr_schedule: str
    scope: str
    family: str  # "toyworld" or "sd": which per-family defaults applied

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.cfg)
        d.update(
            iterations=self.iterations,
            lr=self.lr,
            batch_size=self.batch_size,
            lr_schedule=self.lr_schedule,
            scope=self.scope,
            params=dataclasses.asdict(self.params),
        )
        d.pop("checkpoint_every")
        d.pop("device")
        return d


def _vocabulary(model: str) -> str | None:
    if model == "toyworld":
        return "toyworld"
    manifest = Path(model) / "unsee_model.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnseeError(f"{manifest} is not readable JSON ({exc})") from None
        if not isinstance(info, dict):
            raise UnseeError(f"{manifest} is not a model manifest (not a JSON object)")
        return info.get("vocabulary")
    return None


def validate(cfg: EraseConfig) -> Plan:
    """Check a config before any model is loaded; raises :class:`UnseeError`."""
    cfg = check_config(dataclasses.asdict(cfg))
    check_device(cfg.device)
    cls = get_method(cfg.method)
    params = build_params(cls, dict(cfg.params or {}))
    if not cfg.concepts:
        raise UnseeError("give at least one --concept")
    if cfg.anchors and len(cfg.anchors) != len(cfg.concepts):
        raise UnseeError(f"give one --anchor per concept ({len(cfg.concepts)}) or none")
    vocab = _vocabulary(cfg.model)
    concepts = [
        resolve_concept(c, vocab, cfg.anchors[i] if cfg.anchors else None)
        for i, c in enumerate(cfg.concepts)
    ]
    family = "toyworld" if vocab == "toyworld" else "sd"
    d = cls.plan_defaults(params, family, concepts, cfg.sequential)
    iterations = cfg.iterations if cfg.iterations is not None else d.get("iterations", 200)
    lr = cfg.lr if cfg.lr is not None else d.get("lr", 1e-5)
    batch = cfg.batch_size if cfg.batch_size is not None else d.get("batch_size", 1)
    sched = cfg.lr_schedule or d.get("lr_schedule", "constant")
    if not isinstance(iterations, int) or iterations <= 0:
        raise UnseeError(f"iterations must be a positive integer (got {iterations})")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UnseeError(f"learning rate must be a positive finite number (got {lr})")
    if not isinstance(batch, int) or batch <= 0:
        raise UnseeError(f"batch size must be a positive integer (got {batch})")
    if sched not in LR_SCHEDULES:
        raise UnseeError(f"unknown lr_schedule {sched!r}; use one of {', '.join(LR_SCHEDULES)}")
    scope = cfg.scope or d.get("scope", cls.scope)
    if scope not in PRESETS and not scope.startswith("re:"):
        raise UnseeError(
            f"unknown scope {scope!r}: use one of {', '.join(PRESETS)} or 're:<regex>'"
        )
    read_artifacts([Path(a) for a in cfg.on])  # damaged, foreign or repeated: refused now
    if cfg.model != "toyworld" and not Path(cfg.model).exists() and "/" not in cfg.model:
        raise UnseeError(f"unknown model {cfg.model!r}")
    return Plan(cfg, cls, params, iterations, float(lr), batch, sched, scope, family)


class ErasureContext:
    """What a method sees: the model, its frozen start, concepts and x_t sources.

    Shapes: ``x_t`` (B, C, h, w) latents; ``t`` (B,) integer timesteps; text contexts
    (B, L, D). Predictions and targets are in the run's loss space (``cfg.loss_space``):
    the model's own output (``native``: v on v-prediction models) or epsilon
    (:mod:`unsee.models.sampling`). A target combining predictions at the same x_t with
    weights summing to one is the same combination in either space.
    """

    def __init__(
        self,
        plan: Plan,
        bundle: Bundle,
        accelerator,
        concepts: list[Concept],
        params: dict[str, torch.nn.Parameter],
    ) -> None:
        self.plan = plan
        self.bundle = bundle
        self.accelerator = accelerator
        self.raw_unet = bundle.unet
        self.unet: torch.nn.Module = bundle.unet  # replaced by the accelerate-prepared module
        self.concepts = concepts
        self.explicit_anchors = bool(plan.cfg.anchors)
        self.params = params
        #: values of the trainable parameters when this run started (the frozen model)
        self.start_values = {n: p.detach().clone() for n, p in params.items()}
        self.alphas_cumprod = bundle.alphas_cumprod()
        self.device = bundle.device

    # -- schedule over concepts ------------------------------------------------------
    @property
    def iterations(self) -> int:
        return self.plan.iterations

    @property
    def total_steps(self) -> int:
        n = len(self.concepts) if self.plan.cfg.sequential else 1
        return self.plan.iterations * n

    def round_of(self, step: int) -> int:
        return step // self.plan.iterations if self.plan.cfg.sequential else 0

    def concept_for(self, step: int) -> Concept:
        """Sequential: the round's concept. Otherwise concepts take turns step by step."""
        if self.plan.cfg.sequential:
            return self.concepts[self.round_of(step)]
        return self.concepts[step % len(self.concepts)]

    # -- predictions -----------------------------------------------------------------
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.bundle.encode_prompts(prompts)

    @property
    def loss_space(self) -> str:
        """``native`` or ``epsilon``: the space predictions and targets are compared in."""
        return self.plan.cfg.loss_space

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t by DDIM-sampling the *model being edited* from noise up to index ``stop_at``,
        or from ``latents`` at index ``start_at`` (continuing an earlier trajectory).

        Returns (x_t (B, C, h, w), t (B,)). ``seeds`` (>= 0) are offsets into the training
        seed range (:mod:`unsee.seeds`): a trajectory is a training image and never shares
        its noise with an image the scorecard judges.
        """
        seeds = [TRAINING_SEED_BASE + int(s) for s in seeds]
        check_seeds(seeds, training=True)
        x, t = ddim_sample(
            self.bundle,
            prompts,
            seeds,
            steps=steps,
            guidance=guidance,
            stop_at=stop_at,
            unet=self.raw_unet,
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
    return F.mse_loss(a.float(), b.float())


@dataclasses.dataclass
class ErasureResult:
    out: Path
    card: dict[str, Any]
    bundle: Bundle


def _checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.ckpt"


def _lr_lambda(kind: str, total: int):
    if kind == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    return lambda s: 1.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    from accelerate import Accelerator

    plan = validate(cfg)
    cfg = plan.cfg
    out = Path(out)
    ckpt_dir = _checkpoint_dir(out)
    ckpt_path = ckpt_dir / "checkpoint.safetensors"
    if resume and not ckpt_path.exists():
        legacy = ckpt_dir / "checkpoint.pt"
        raise UnseeError(
            f"nothing to resume: {ckpt_path} does not exist"
            + (
                f" ({legacy} is a pickle from an older unsee and is never loaded; start over)"
                if legacy.exists()
                else ""
            )
        )
    check_output_dir(out, overwrite or resume, "artifact")
    device = check_device(cfg.device)
    if cfg.device == "auto" and bundle is not None:  # a model handed in is erased in place
        device = bundle.device.type
    if bundle is not None and bundle.device.type != torch.device(device).type:
        raise UnseeError(
            f"the model passed in is on {bundle.device.type} but the run asks "
            f"for device {device!r}: move it first or use device='auto'"
        )
    try:
        accelerator = Accelerator(cpu=device == "cpu", mixed_precision=cfg.mixed_precision)
    except ValueError as err:  # accelerate keeps one device per process
        raise UnseeError(
            f"cannot run on {device} in this process: {err.args[0].split(',')[0]}"
            "; start a new process for the other device"
        ) from err
    t_start = time.time()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if bundle is None:
        bundle = load_bundle(cfg.model, device=accelerator.device)
    base_fp = fingerprint(bundle.unet)
    prior_cards = apply_artifacts(bundle, [Path(a) for a in cfg.on]) if cfg.on else []
    prior_delta: dict[str, torch.Tensor] = {}
    for art in cfg.on:
        for n, d in read_delta(Path(art))[0].items():
            prior_delta[n] = prior_delta.get(n, 0) + d
    vocab = bundle.vocabulary
    concepts = [
        resolve_concept(c, vocab, cfg.anchors[i] if cfg.anchors else None)
        for i, c in enumerate(cfg.concepts)
    ]
    params = train_only(bundle.unet, plan.scope)
    if cfg.gradient_checkpointing:
        bundle.unet.enable_gradient_checkpointing()
    ctx = ErasureContext(plan, bundle, accelerator, concepts, params)
    method = plan.method_cls(plan.params, ctx)
    opt = torch.optim.Adam(list(params.values()), lr=plan.lr)
    total = ctx.total_steps
    if plan.lr_schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=plan.lr, total_steps=plan.iterations, anneal_strategy="cos"
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(plan.lr_schedule, total))
    ctx.unet, opt = accelerator.prepare(bundle.unet, opt)
    if method.mask is not None:
        method.mask.attach(params, opt)

    step, wall_before, updates = 0, 0.0, 0
    rounds: list[dict[str, Any]] = []  # per-round provenance for the card
    losses: list[float] = []
    if resume:
        state = load_state(ckpt_path)
        if state.get("plan") != json.loads(json.dumps(plan.as_dict())):
            raise UnseeError(
                "the checkpoint was made with a different configuration; "
                "run without --resume (and with --overwrite) to start over"
            )
        try:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(state["params"][n].to(p.device, p.dtype))
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            method.load_state_dict(state["method"])
            step, wall_before, updates = state["step"], state["wall_seconds"], state["updates"]
            rounds, losses = state["rounds"], state["recent_losses"]
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UnseeError(
                f"checkpoint {ckpt_path} is damaged ({type(exc).__name__}: {exc}); "
                "run without --resume (and with --overwrite) to start over"
            ) from exc

    def save_checkpoint() -> None:
        # safetensors + JSON: resuming never unpickles anything
        save_state(
            ckpt_path,
            {
                "step": step,
                "plan": json.loads(json.dumps(plan.as_dict())),
                "params": {n: p.detach().cpu().clone() for n, p in params.items()},
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "method": method.state_dict(),
                "updates": updates,
                "rounds": rounds,
                "recent_losses": losses[-FINAL_LOSS_WINDOW:],
                "wall_seconds": wall_before + time.time() - t_start,
            },
        )

    if isinstance(method, ClosedFormMethod):
        t_fit = time.time()
        solution = method.fit()
        t_apply = time.time()
        method.apply(solution)
        step = total = 0
        closed_form_cost = {
            "fit_seconds": round(t_apply - t_fit, 3),
            "apply_seconds": round(time.time() - t_apply, 3),
        }
    else:
        closed_form_cost = {}
    with progress_bar(
        total, f"erase {','.join(cfg.concepts)} ({cfg.method})", completed=step
    ) as bar:
        while step < total:
            r = ctx.round_of(step)
            if step == r * plan.iterations:  # a round starts (resumed rounds restore state)
                if plan.lr_schedule == "onecycle" and step:
                    # a fresh optimiser per round (Sculpting Memory's sequential code): new
                    # Adam moments and a new OneCycle
                    opt.state.clear()
                    sched = torch.optim.lr_scheduler.OneCycleLR(
                        opt, max_lr=plan.lr, total_steps=plan.iterations, anneal_strategy="cos"
                    )
                if method.mask is not None:
                    method.mask.start_round(r)
                method.start_round(r)
            rng = np.random.default_rng([cfg.seed, step])
            loss, parts = method.loss(step, rng)
            if not torch.isfinite(loss):
                kept = (
                    f"the last good checkpoint is kept in {ckpt_path}"
                    if ckpt_path.exists()
                    else "no checkpoint was written yet"
                )
                raise UnseeError(
                    f"the loss became {loss.item()} at step {step}; stopped ({kept}); "
                    "the learning rate may be too high for this model (try a lower "
                    "--lr)"
                )
            accelerator.backward(loss)
            if method.mask is None or method.mask.should_step(step):
                opt.step()
                sched.step()
                updates += 1
            opt.zero_grad(set_to_none=True)
            if method.mask is not None:
                method.mask.after_step(step)
            step += 1
            if step % plan.iterations == 0:  # the round's last step is done
                names = [concepts[r].name] if cfg.sequential else [c.name for c in concepts]
                rounds.append(
                    {
                        "round": r,
                        "concepts": names,
                        "iterations": plan.iterations,
                        **method.end_round(r),
                    }
                )
            losses.append(loss.item())
            bar.advance(loss=float(np.mean(losses[-FINAL_LOSS_WINDOW:])), **parts)
            if step % cfg.checkpoint_every == 0 and step < total:
                save_checkpoint()

    if method.mask is not None:
        method.mask.detach()
    wall = wall_before + time.time() - t_start
    delta = compute_delta(bundle.unet, ctx.start_values)
    for n, d in prior_delta.items():
        delta[n] = (delta[n] + d) if n in delta else d.clone()
    for p in params.values():
        p.requires_grad_(False)
    card = {
        "format": "unsee-artifact/1",
        "method": cfg.method,
        "summary": plan.method_cls.summary,
        "hyperparameters": plan.as_dict(),
        "concepts": [dataclasses.asdict(c) for c in concepts],
        "scope": describe_scope(plan.scope),
        "scope_parameters": int(sum(p.numel() for p in params.values())),
        "base": {"model_id": bundle.model_id, "fingerprint": base_fp},
        "seed": cfg.seed,
        "versions": library_versions(),
        "cost": {
            "wall_seconds": round(wall, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "device": str(accelerator.device),
            "processes": accelerator.num_processes,
            "iterations": total,
            "optimizer_steps": updates,
            "parameters_changed": int(sum(torch.count_nonzero(d) for d in delta.values())),
            "final_loss": float(np.mean(losses[-FINAL_LOSS_WINDOW:])) if losses else None,
            **closed_form_cost,
        },
        "rounds": rounds,
        "ledger": [
            *(e for c in prior_cards for e in c.get("ledger", [])),
            *(ledger_entry(c) for c in prior_cards),
        ],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if accelerator.is_main_process:
        write_artifact(out, delta, card, overwrite=overwrite or resume)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return ErasureResult(out, read_card(out) if out.exists() else card, bundle)
