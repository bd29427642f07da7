"""Shared pieces of the ToyWorld-SD recipes: pickle-free checkpoints, schedules, EMA.

A checkpoint is one ``checkpoint.safetensors`` file (written with :func:`unsee.io.atomic_write`,
so a kill -9 leaves the previous one intact) holding every tensor of the run (model weights,
optimiser moments, EMA weights) and, in its safetensors metadata, a JSON document with the
step, the optimiser's parameter groups and the loss log. A readable copy of that JSON is
written beside it as ``checkpoint.json`` (informational; never read back). Nothing is pickled,
so resuming never unpickles anything.

Every training step ``k`` draws its randomness from ``numpy.random.default_rng([seed, k])``
(and a torch generator seeded from it), so a resumed run is bit-identical to an uninterrupted
one on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unsee.errors import UnseeError
from unsee.io import atomic_write, write_json

CHECKPOINT = "checkpoint.safetensors"
_META_KEY = "unsee_checkpoint"
#: Settings a resumed run may change: the length (raise it to continue; the cosine schedule
#: stretches to the new end), how often it checkpoints, and what the export measures.
FREE_SETTINGS = frozenset(
    {"steps", "checkpoint_every", "stats_images", "stats_p_none", "eval_images", "eval_seed"}
)


def limit_threads() -> None:
    """Honour ``OMP_NUM_THREADS`` for torch's intra-op pool (background runs use 1)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def step_rngs(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of training step ``step`` (independent of history)."""
    rng = np.random.default_rng([seed, step])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, g


def cosine_lr(step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr * min_ratio``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _flat(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _optim_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{name}.state.{idx}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_restore(
    name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}.state."
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class TrainState:
    """What a checkpoint restores: the step reached, the loss log (one float a step) and the
    wall and CPU seconds spent so far over all resumes."""

    step: int = 0
    log: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


def save_checkpoint(
    work_dir: Path,
    state: TrainState,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    info: dict | None = None,
) -> Path:
    """Atomically write ``work_dir/checkpoint.safetensors`` (+ a readable ``checkpoint.json``).

    ``modules`` are saved by state dict under their name; ``extra_tensors`` (e.g. EMA weights)
    as given; ``info`` (the run's config) is recorded for checking on resume.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        tensors.update(_flat(f"model.{name}", m.state_dict()))
    optim_meta = {}
    for name, opt in optimizers.items():
        t, meta = _optim_flat(f"optim.{name}", opt)
        tensors.update(t)
        optim_meta[name] = meta
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous().clone()
    meta_doc = {
        "step": state.step,
        "log": state.log,
        "wall_s": state.wall_s,
        "cpu_s": state.cpu_s,
        "optimizers": optim_meta,
        "info": info or {},
    }
    path = Path(work_dir) / CHECKPOINT
    atomic_write(
        path, lambda p: save_file(tensors, str(p), metadata={_META_KEY: json.dumps(meta_doc)})
    )
    write_json(
        Path(work_dir) / "checkpoint.json",
        {
            "step": state.step,
            "loss_last_50": _mean_tail(state.log),
            "wall_s": round(state.wall_s, 1),
            "cpu_s": round(state.cpu_s, 1),
            "info": info or {},
        },
    )
    return path


def _mean_tail(log: list[float], n: int = 50) -> float | None:
    return float(np.mean(log[-n:])) if log else None


def load_checkpoint(
    work_dir: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    info: dict | None = None,
) -> tuple[TrainState, dict[str, torch.Tensor]] | None:
    """Restore ``modules`` and ``optimizers`` from ``work_dir`` in place; returns the state and
    the extra tensors, or ``None`` if there is no checkpoint. With ``info`` given, a checkpoint
    made under a different value of any key of ``info`` is refused (keys absent from the
    checkpoint, and :data:`FREE_SETTINGS`, which may change between resumes, are not
    compared)."""
    path = Path(work_dir) / CHECKPOINT
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta_doc = json.loads(f.metadata()[_META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    if info is not None:
        saved = meta_doc.get("info", {})
        diff = sorted(
            k for k in info if k in saved and k not in FREE_SETTINGS and saved[k] != info[k]
        )
        if diff:
            raise UnseeError(
                f"{path} was made with different settings ({', '.join(diff)}); "
                "use another work dir or the same settings"
            )
    for name, m in modules.items():
        prefix = f"model.{name}."
        m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        _optim_restore(f"optim.{name}", opt, tensors, meta_doc["optimizers"][name])
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return TrainState(
        step=int(meta_doc["step"]),
        log=list(meta_doc["log"]),
        wall_s=float(meta_doc.get("wall_s", 0.0)),
        cpu_s=float(meta_doc.get("cpu_s", 0.0)),
    ), extra


def checkpoint_info(work_dir: Path) -> dict:
    """The settings ``work_dir``'s checkpoint was made with (its ``info``), or ``{}``."""
    path = Path(work_dir) / CHECKPOINT
    if not path.exists():
        return {}
    with safe_open(str(path), framework="pt") as f:
        return dict(json.loads(f.metadata()[_META_KEY]).get("info", {}))


class EMA:
    """Exponential moving average of a module's floating-point tensors, with the usual
    warm-up ``decay = min(max_decay, 1 - (1 + step) ** -power)`` (diffusers' EMAModel form)."""

    def __init__(
        self, module: torch.nn.Module, max_decay: float = 0.999, power: float = 2 / 3
    ) -> None:
        self.max_decay, self.power = max_decay, power
        self.shadow = {
            k: v.detach().clone().float()
            for k, v in module.state_dict().items()
            if v.is_floating_point()
        }

    def decay(self, step: int) -> float:
        return min(self.max_decay, 1 - (1 + step) ** -self.power)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = self.decay(step)
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def copy_to(self, module: torch.nn.Module) -> torch.nn.Module:
        sd = module.state_dict()
        module.load_state_dict({k: self.shadow.get(k, v).to(v.dtype) for k, v in sd.items()})
        return module

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v for k, v in self.shadow.items()}

    def restore(self, extra: dict[str, torch.Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k] = extra[f"ema.{k}"].float().clone()


class Clock:
    """Adds the wall and CPU seconds since the last call to a :class:`TrainState`."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.time(), time.process_time()

    def tick(self, state: TrainState) -> None:
        wall, cpu = time.time(), time.process_time()
        state.wall_s += wall - self._wall
        state.cpu_s += cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def save_array_cache(path: Path, arrays: dict[str, np.ndarray | torch.Tensor]) -> None:
    """Write a cache of arrays as safetensors, atomically (no pickles, no npz)."""
    tensors = {
        k: (
            torch.from_numpy(np.ascontiguousarray(v))
            if isinstance(v, np.ndarray)
            else v.contiguous()
        )
        for k, v in arrays.items()
    }
    atomic_write(Path(path), lambda p: save_file(tensors, str(p)))


def load_array_cache(path: Path) -> dict[str, torch.Tensor] | None:
    path = Path(path)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
