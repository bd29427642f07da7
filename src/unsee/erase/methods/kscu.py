"""KSCU: Key Step Concept Unlearning (Zhang et al., arXiv 2507.06526; methods.md §2).

ESD's negative-guidance target, trained only at the *key steps*: a contiguous late interval
``[S, E)`` of the E-step DDIM trajectory, walked in order by a deterministic table
(:func:`build_schedule`) whose start moves one step later every ``loops_before_shift``
traversals, so the latest steps get the most updates. Choices:

* x_t: partial DDIM sampling of the model being edited (concept prompt, CFG 3) to the
  table's index; with ``trajectory_reuse`` (the 2026 code) the next entry of the same
  traversal advances the same latent one DDIM step instead of sampling again from noise.
* target: ``e0(x, "") - eta (e0(x, c) - e0(x, ""))`` for the concept prompt, plus the small
  *leakage* term that moves the unconditional prediction slightly away from the concept so
  CFG with an empty negative prompt cannot bring it back:
  ``lam2 * || e(x, "") - (e0(x, "") - lam1 (e0(x, c) - e0(x, ""))) ||^2`` with
  ``version=quick``: lam2 = 1e-4, lam1 = (1000 - t) 2e-5 (t = training timestep);
  ``version=paper``: lam2 = 2e-5, lam1 = s / 10000 (s = DDIM index).
* scope per task: ``noxattn-linear`` for object and nudity, ``xattn`` for style and instance.
* prompt augmentation in the last ``augment_fraction`` of iterations: the edited model reads
  one of 10 deterministic variants of the prompt (template, then word shuffle / deletion /
  alphanumeric prefix / suffix) plus Gaussian noise in embedding space.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from unsee.concepts import Concept
from unsee.erase.base import Method, register
from unsee.erase.engine import ErasureContext, mse
from unsee.errors import UnseeError
from unsee.models.sampling import ddim_timesteps


@dataclass(frozen=True)
class TaskPreset:
    start: tuple[int, int]  # first key step S at 50 DDIM steps: (paper-era, quick) code
    iterations: dict[str, int]  # model family -> iteration budget
    scope: str
    lr: dict[str, float] | None = None  # model family -> lr, where it differs from the method's


#: The Key Step Table presets (methods.md §2.4). ToyWorld budgets are tuned here
#: (docs/methods.md); SD budgets are the official ones.
TASKS: dict[str, TaskPreset] = {
    "nudity": TaskPreset((15, 14), {"sd": 750, "toyworld": 60}, "noxattn-linear"),
    "object": TaskPreset((15, 14), {"sd": 750, "toyworld": 60}, "noxattn-linear"),
    # cross-attention only: on ToyWorld ESD-x's lr for that scope (5e-5 left `striped` intact)
    "style": TaskPreset((24, 24), {"sd": 500, "toyworld": 60}, "xattn", {"toyworld": 3e-4}),
    "instance": TaskPreset((40, 40), {"sd": 200, "toyworld": 60}, "xattn", {"toyworld": 3e-4}),
}
#: concept kind -> task, for ``task=auto`` (ToyWorld: shapes are objects, styles and
#: colours are styles).
TASK_OF_KIND = {"object": "object", "superclass": "object", "text": "object",
                "style": "style", "colour": "style", "nudity": "nudity"}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": ("{}", "a picture of {}", "a photo of {}", "an image of {}", "a drawing of {}",
               "{} in the centre", "a simple {}", "a small {}", "a large {}", "a clear {}"),
    "style": ("{}", "{} style", "in the style of {}", "a picture, {}", "an image of {}",
              "{} pattern", "a drawing of {}", "art of {}", "{} artwork", "a painting of {}"),
}
TEMPLATES["nudity"] = TEMPLATES["object"]
TEMPLATES["instance"] = ("{}", "a portrait of {}", "a photo of {}", "a picture of {}",
                         "{} smiling", "a close-up of {}", "{} in a room", "an image of {}",
                         "a headshot of {}", "{} outdoors")
VERSIONS = ("quick", "paper")


@dataclass
class KSCUParams:
    task: str = "auto"  # object | style | nudity | instance | auto (from the concept's kind)
    version: str = "quick"  # quick (2026 code) | paper (2025 code): leakage weights, S, S_max
    start: int = -1  # first key step S (DDIM index); -1: the task preset scaled to ddim_steps
    max_start: int = -1  # last value S may shift to; -1: the version's (quick 0.9 E, paper E-1)
    end: int = -1  # one past the last key step; -1: ddim_steps (ablations: early steps only)
    loops_before_shift: int = 8  # traversals of [S, E) before S moves one step later
    ddim_steps: int = 50  # E, the length of the DDIM trajectory the key steps index
    eta: float = 1.0  # negative guidance g of the main term
    start_guidance: float = 3.0  # CFG of the partial sampling that produces x_s
    trajectory_reuse: bool = True  # advance one DDIM step between consecutive key steps
    augment: bool = True  # prompt augmentation in the last augment_fraction of iterations
    augment_fraction: float = 0.05
    embedding_noise: float = 1e-5  # std of the noise added to augmented prompt states

    def __post_init__(self) -> None:
        if self.task != "auto" and self.task not in TASKS:
            raise UnseeError(f"kscu.task must be auto or one of {', '.join(TASKS)} "
                             f"(got {self.task!r})")
        if self.version not in VERSIONS:
            raise UnseeError(f"kscu.version must be quick or paper (got {self.version!r})")
        if self.ddim_steps < 2:
            raise UnseeError("kscu.ddim_steps must be at least 2")
        if self.start >= self.ddim_steps or self.max_start >= self.ddim_steps:
            raise UnseeError(f"kscu.start and kscu.max_start must be below ddim_steps "
                             f"({self.ddim_steps})")
        if self.end > self.ddim_steps or self.end == 0 or 0 <= self.end <= self.start:
            raise UnseeError(f"kscu.end must be -1 or in (start, ddim_steps] (got {self.end})")
        if self.loops_before_shift < 1:
            raise UnseeError("kscu.loops_before_shift must be at least 1")
        if not 0 <= self.augment_fraction <= 1:
            raise UnseeError("kscu.augment_fraction must be in [0, 1]")


def resolve_task(task: str, concepts: list[Concept]) -> str:
    if task != "auto":
        return task
    tasks = {TASK_OF_KIND.get(c.kind, "object") for c in concepts}
    if len(tasks) > 1:
        raise UnseeError(f"the concepts mix tasks ({', '.join(sorted(tasks))}); choose one "
                         "with -p task=object|style|nudity|instance")
    return tasks.pop()


def key_start(p: KSCUParams, preset: TaskPreset) -> int:
    """S: the explicit ``start``, else the task preset's (given at 50 steps) scaled to E."""
    if p.start >= 0:
        return p.start
    start50 = preset.start[1 if p.version == "quick" else 0]
    return min(p.ddim_steps - 1, round(start50 * p.ddim_steps / 50))


def build_schedule(start: int, end: int, iterations: int, n_concepts: int = 1,
                   loops_before_shift: int = 8, max_start: int | None = None
                   ) -> list[tuple[int, int]]:
    """The Key Step Table: ``iterations`` entries (concept index, DDIM index s).

    Each traversal walks s = start..end-1 for every concept in turn; after
    ``loops_before_shift`` traversals the start moves one step later (up to ``max_start``).
    """
    max_start = end - 1 if max_start is None else max_start
    table: list[tuple[int, int]] = []
    completed = 0
    while len(table) < iterations:
        for k in range(n_concepts):
            table += [(k, s) for s in range(start, end)]
        completed += 1
        if completed == loops_before_shift:
            start, completed = min(start + 1, max_start), 0
    return table[:iterations]


def augmented_prompts(prompt: str, concept_words: str, task: str, seed: int,
                      n: int = 10) -> list[str]:
    """``n`` deterministic variants of ``prompt``: a template, then in turn a word shuffle,
    the deletion of one word that is not the concept's, a 1-3 character alphanumeric
    prefix, or the same as a suffix (the 2026 code's rules; no network or LLM)."""
    rng = random.Random(seed)
    out = []
    keep = set(concept_words.split())
    for k in range(n):
        words = TEMPLATES[task][k % len(TEMPLATES[task])].format(prompt).split()
        op = k % 4
        if op == 0:
            rng.shuffle(words)
        elif op == 1:
            removable = [i for i, w in enumerate(words) if w not in keep]
            if removable:
                del words[rng.choice(removable)]
        else:
            noise = "".join(rng.choices(string.ascii_lowercase + string.digits,
                                        k=rng.randint(1, 3)))
            words = [noise, *words] if op == 2 else [*words, noise]
        out.append(" ".join(words))
    return out


@register("kscu")
class KSCU(Method):
    scope = "noxattn-linear"
    Params = KSCUParams
    summary = "ESD target trained only at the late key steps of the trajectory (KSCU)"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"lr": 1e-5, "batch_size": 1},
        "toyworld": {"lr": 5e-5, "batch_size": 4},
    }

    @classmethod
    def plan_defaults(cls, params: KSCUParams, family: str, concepts: list[Concept],
                      sequential: bool = False) -> dict[str, Any]:
        preset = TASKS[resolve_task(params.task, concepts)]
        start = key_start(params, preset)
        if params.end > 0 and start >= params.end:
            raise UnseeError(f"kscu: the key steps [{start}, {params.end}) are empty")
        return {**cls.defaults[family], **({"lr": preset.lr[family]}
                                            if preset.lr and family in preset.lr else {}),
                "iterations": preset.iterations[family], "scope": preset.scope}

    def __init__(self, params: KSCUParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        p, e = params, params.ddim_steps
        self.task = resolve_task(p.task, ctx.concepts)
        quick = p.version == "quick"
        self.start = key_start(p, TASKS[self.task])
        self.end = p.end if p.end > 0 else e
        default_max = math.ceil(0.9 * e) - 1 if quick else e - 1
        self.max_start = min(self.end - 1, max(self.start, p.max_start if p.max_start >= 0
                                               else default_max))
        self.table = build_schedule(self.start, self.end, ctx.total_steps, len(ctx.concepts),
                                    p.loops_before_shift, self.max_start)
        self.timesteps = ddim_timesteps(ctx.bundle, e)
        self.augment_from = math.ceil((1 - p.augment_fraction) * ctx.total_steps)
        self.aug_pool = {c.name: [a for k, prompt in enumerate(c.prompts)
                                  for a in augmented_prompts(prompt, c.name, self.task,
                                                             ctx.plan.cfg.seed + k)]
                         for c in ctx.concepts}
        # the trajectory being walked: (step it was made for, prompts, latents)
        self.walk: tuple[int, list[str], torch.Tensor] | None = None
        self.resampled = 0  # trajectories sampled from noise (the cost reuse saves)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "walk": self.walk, "resampled": self.resampled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.walk, self.resampled = state["walk"], state["resampled"]

    def x_s(self, step: int, concept: Concept, s: int,
            rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        """x at DDIM index s for this step's table entry, continuing the previous entry's
        trajectory when it is the same concept one index earlier."""
        ctx, p, b = self.ctx, self.p, self.ctx.plan.batch_size
        prev = self.table[step - 1] if step else None
        if (p.trajectory_reuse and self.walk is not None and self.walk[0] == step - 1
                and prev == (self.table[step][0], s - 1)):
            prompts = self.walk[1]
            x, _ = ctx.trajectory(prompts, s, [0] * b, p.start_guidance, p.ddim_steps,
                                  latents=self.walk[2], start_at=s - 1)
        else:
            prompts = [concept.prompts[int(i)] for i in rng.integers(len(concept.prompts),
                                                                      size=b)]
            seeds = [int(v) for v in rng.integers(0, 2**31 - 1, b)]
            x, _ = ctx.trajectory(prompts, s, seeds, p.start_guidance, p.ddim_steps)
            self.resampled += 1
        self.walk = (step, prompts, x)
        return x, prompts

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p = self.ctx, self.p
        k, s = self.table[step]
        concept = ctx.concepts[k]
        x, prompts = self.x_s(step, concept, s, rng)
        b = x.shape[0]
        t_int = self.timesteps[s]
        t = torch.full((b,), t_int, device=ctx.device, dtype=torch.long)
        c, u = ctx.encode(prompts), ctx.encode([""] * b)
        e_c, e_u = ctx.frozen_pred(x, t, c), ctx.frozen_pred(x, t, u)
        read = c
        if p.augment and step >= self.augment_from:
            pool = self.aug_pool[concept.name]
            aug = [pool[int(i)] for i in rng.integers(len(pool), size=b)]
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            read = ctx.encode(aug)
            read = read + p.embedding_noise * torch.randn(read.shape, generator=g).to(read)
        # one forward for the concept and the unconditional branch of the edited model
        e_read, e_uncond = ctx.pred(torch.cat([x, x]), torch.cat([t, t]),
                                   torch.cat([read, u])).chunk(2)
        main = mse(e_read, e_u - p.eta * (e_c - e_u))
        if p.version == "quick":
            lam2, lam1 = 1e-4, (1000 - t_int) * 2e-5
        else:
            lam2, lam1 = 2e-5, s / 10000
        leakage = mse(e_uncond, e_u - lam1 * (e_c - e_u))
        return main + lam2 * leakage, {"s": float(s), "leak": leakage.item()}
