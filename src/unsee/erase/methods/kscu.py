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
* scope and lr (``preset``): ``official``, the task's scope in the official code
  (``noxattn-linear`` for object and nudity, ``xattn`` for style and instance); ``matched``,
  the scope of the comparator ESD-x (cross-attention) at ESD-x's lr on the model family,
  so KSCU and ESD differ only in where and how often they train, except where the
  fair-tuning grid found another lr for that scope beyond noise (``MATCHED_LR``:
  toyworld-sd, 3e-4 against ESD-x's 1e-4; ``--lr 1e-4`` is ESD-x's); ``auto`` (the
  default): official on Stable Diffusion, matched on ToyWorld (issue 19: the official object
  scope at ToyWorld's tuned lr left star 0.69 where the matched one erases it).
* budget: the task's iterations are *per concept* (the official budget, for one concept):
  with several concepts at once the run has that many per concept and every concept gets
  its own Key Step Table, traversals interleaved concept by concept; with ``--sequential``
  each round trains its concept on its own table.
* noise levels (``levels``): the presets' key-step starts are SD 1.x DDIM indices (at 50
  steps); ``noise`` (default) maps them to the model's DDIM grid by log-SNR
  (:mod:`unsee.erase.timesteps`: on ToyWorld at 50 steps the object start 14 becomes 9),
  and evaluates the leakage weight at the SD 1.x timestep / index of the same noise level;
  ``index`` scales the indices to ``ddim_steps`` and uses the model's own t and s (the
  behaviour before issue 19). Both are the identity on SD 1.x's schedule at 50 steps.
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
from unsee.erase.base import Count, Fraction, Method, NonNegative, register
from unsee.erase.context import ErasureContext, mse, negative_guidance
from unsee.erase.methods.esd import ESD
from unsee.erase.timesteps import NoiseLevel, model_level
from unsee.errors import UnseeError
from unsee.models.family import STABLE_DIFFUSION, ModelFamily
from unsee.models.sampling import ddim_timesteps


@dataclass(frozen=True)
class TaskPreset:
    start: tuple[int, int]  # first key step S, SD 1.x DDIM index at 50 steps: (paper, quick)
    iterations: dict[str, int]  # model family -> iteration budget per concept
    scope: str  # the official code's scope for the task
    lr: dict[str, float] | None = None  # model family -> lr, where it differs from the method's


#: The Key Step Table presets (methods.md §2.4). ToyWorld budgets are tuned here
#: (docs/methods.md); SD budgets are the official ones.
TASKS: dict[str, TaskPreset] = {
    "nudity": TaskPreset(
        (15, 14), {"sd": 750, "toyworld": 60, "toyworld-sd": 60}, "noxattn-linear"
    ),
    "object": TaskPreset(
        (15, 14), {"sd": 750, "toyworld": 60, "toyworld-sd": 60}, "noxattn-linear"
    ),
    # cross-attention only: on ToyWorld ESD-x's lr for that scope (5e-5 left `striped` intact)
    "style": TaskPreset(
        (24, 24),
        {"sd": 500, "toyworld": 60, "toyworld-sd": 60},
        "xattn",
        {"toyworld": 3e-4, "toyworld-sd": 3e-4},
    ),
    "instance": TaskPreset(
        (40, 40),
        {"sd": 200, "toyworld": 60, "toyworld-sd": 60},
        "xattn",
        {"toyworld": 3e-4, "toyworld-sd": 3e-4},
    ),
}
#: ``preset=matched``'s lr where fair tuning of that scope (``bench/tune.py``) moved it off
#: ESD-x's: on toyworld-sd ESD-x's 1e-4 erased cross 0.812 and dotted 0.562, three times
#: it 1.000 and 0.812 with both retains within noise of the base
#: (bench/results/toyworld-sd/tuning.md)
MATCHED_LR: dict[str, float] = {"toyworld-sd": 3e-4}
#: concept kind -> task, for ``task=auto`` (ToyWorld: shapes are objects, styles and
#: colours are styles).
TASK_OF_KIND = {
    "object": "object",
    "superclass": "object",
    "text": "object",
    "style": "style",
    "colour": "style",
    "nudity": "nudity",
}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": (
        "{}",
        "a picture of {}",
        "a photo of {}",
        "an image of {}",
        "a drawing of {}",
        "{} in the centre",
        "a simple {}",
        "a small {}",
        "a large {}",
        "a clear {}",
    ),
    "style": (
        "{}",
        "{} style",
        "in the style of {}",
        "a picture, {}",
        "an image of {}",
        "{} pattern",
        "a drawing of {}",
        "art of {}",
        "{} artwork",
        "a painting of {}",
    ),
}
TEMPLATES["nudity"] = TEMPLATES["object"]
TEMPLATES["instance"] = (
    "{}",
    "a portrait of {}",
    "a photo of {}",
    "a picture of {}",
    "{} smiling",
    "a close-up of {}",
    "{} in a room",
    "an image of {}",
    "a headshot of {}",
    "{} outdoors",
)
VERSIONS = ("quick", "paper")
PRESETS = ("auto", "matched", "official")
LEVELS = ("noise", "index")
#: S_max of the quick code, ceil(0.9 E) - 1, as an SD 1.x DDIM index at E = 50
QUICK_MAX_START = math.ceil(0.9 * 50) - 1


@dataclass
class KSCUParams:
    task: str = "auto"  # object | style | nudity | instance | auto (from the concept's kind)
    version: str = "quick"  # quick (2026 code) | paper (2025 code): leakage weights, S, S_max
    start: int = -1  # first key step S (DDIM index); -1: the task preset scaled to ddim_steps
    max_start: int = -1  # last value S may shift to; -1: the version's (quick 0.9 E, paper E-1)
    end: int = -1  # one past the last key step; -1: ddim_steps (ablations: early steps only)
    loops_before_shift: Count = 8  # traversals of [S, E) before S moves one step later
    ddim_steps: Count = 50  # E, the length of the DDIM trajectory the key steps index
    eta: float = 1.0  # negative guidance g of the main term
    start_guidance: NonNegative = 3.0  # CFG of the partial sampling that produces x_s
    trajectory_reuse: bool = True  # advance one DDIM step between consecutive key steps
    augment: bool = True  # prompt augmentation in the last augment_fraction of iterations
    augment_fraction: Fraction = 0.05
    embedding_noise: NonNegative = 1e-5  # std of the noise added to augmented prompt states
    preset: str = "auto"  # matched (ESD-x's scope and lr) | official (the task's) | auto
    levels: str = "noise"  # noise: SD 1.x indices mapped by log-SNR | index: scaled indices

    def __post_init__(self) -> None:
        if self.task != "auto" and self.task not in TASKS:
            raise UnseeError(
                f"kscu.task must be auto or one of {', '.join(TASKS)} (got {self.task!r})"
            )
        if self.version not in VERSIONS:
            raise UnseeError(f"kscu.version must be quick or paper (got {self.version!r})")
        if self.preset not in PRESETS:
            raise UnseeError(
                f"kscu.preset must be one of {', '.join(PRESETS)} (got {self.preset!r})"
            )
        if self.levels not in LEVELS:
            raise UnseeError(f"kscu.levels must be noise or index (got {self.levels!r})")
        if self.ddim_steps < 2:
            raise UnseeError("kscu.ddim_steps must be at least 2")
        if self.start >= self.ddim_steps or self.max_start >= self.ddim_steps:
            raise UnseeError(
                f"kscu.start and kscu.max_start must be below ddim_steps ({self.ddim_steps})"
            )
        if self.end > self.ddim_steps or self.end == 0 or 0 <= self.end <= self.start:
            raise UnseeError(f"kscu.end must be -1 or in (start, ddim_steps] (got {self.end})")
        if self.loops_before_shift < 1:
            raise UnseeError("kscu.loops_before_shift must be at least 1")
        if not 0 <= self.augment_fraction <= 1:
            raise UnseeError("kscu.augment_fraction must be in [0, 1]")


def resolved_preset(p: KSCUParams, family: ModelFamily) -> str:
    """``preset=auto``: official on Stable Diffusion, matched on ToyWorld."""
    if p.preset != "auto":
        return p.preset
    return "official" if family == STABLE_DIFFUSION else "matched"


def resolve_task(task: str, concepts: list[Concept]) -> str:
    if task != "auto":
        return task
    tasks = {TASK_OF_KIND.get(c.kind, "object") for c in concepts}
    if len(tasks) > 1:
        raise UnseeError(
            f"the concepts mix tasks ({', '.join(sorted(tasks))}); choose one "
            "with -p task=object|style|nudity|instance"
        )
    return tasks.pop()


def map_index(
    index50: int, p: KSCUParams, grid: list[int] | None, alphas_cumprod: torch.Tensor | None
) -> int:
    """An SD 1.x DDIM index at 50 steps on the model's ``p.ddim_steps``-step grid: by noise
    level (``levels=noise``; ``grid`` the model's DDIM timesteps, noisiest first) or scaled
    (``levels=index``; no model needed)."""
    if p.levels == "index" or grid is None or alphas_cumprod is None:
        return min(p.ddim_steps - 1, round(index50 * p.ddim_steps / 50))
    return NoiseLevel.from_sd1_ddim_index(index50, 50).ddim_index(grid, alphas_cumprod)


def key_start(
    p: KSCUParams,
    preset: TaskPreset,
    grid: list[int] | None = None,
    alphas_cumprod: torch.Tensor | None = None,
) -> int:
    """S: the explicit ``start`` (a model index), else the task preset's, mapped
    (:func:`map_index`; without a model, as ``levels=index``)."""
    if p.start >= 0:
        return p.start
    return map_index(preset.start[1 if p.version == "quick" else 0], p, grid, alphas_cumprod)


def build_schedule(
    start: int,
    end: int,
    iterations: int,
    n_concepts: int = 1,
    loops_before_shift: Count = 8,
    max_start: int | None = None,
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


def build_table(
    start: int,
    end: int,
    budgets: list[int],
    loops_before_shift: int = 8,
    max_start: int | None = None,
) -> list[tuple[int, int, int]]:
    """Entries (concept k, DDIM index s, j) for several concepts at once: concept k gets its
    own single-concept Key Step Table of ``budgets[k]`` entries (j: the entry's position in
    it), and the tables' traversals are interleaved concept by concept, as the official
    multi-concept table walks them. With equal budgets of whole traversals this is the
    official table of ``sum(budgets)`` entries; otherwise each concept's own last traversal
    is cut at its budget, where the official table cuts the last concepts short."""
    traversals = []
    for n in budgets:
        own = build_schedule(start, end, n, 1, loops_before_shift, max_start)
        runs: list[list[tuple[int, int]]] = []
        for j, (_, s) in enumerate(own):
            if not runs or s != runs[-1][-1][1] + 1:
                runs.append([])
            runs[-1].append((j, s))
        traversals.append(runs)
    table = []
    for i in range(max(len(r) for r in traversals)):
        for k, runs in enumerate(traversals):
            if i < len(runs):
                table += [(k, s, j) for j, s in runs[i]]
    return table


def split_budget(total: int, n: int) -> list[int]:
    """``total`` iterations shared by ``n`` concepts as evenly as possible (first ones +1)."""
    return [total // n + (k < total % n) for k in range(n)]


def augmented_prompts(
    prompt: str, concept_words: str, task: str, seed: int, n: int = 10
) -> list[str]:
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
            noise = "".join(
                rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 3))
            )
            words = [noise, *words] if op == 2 else [*words, noise]
        out.append(" ".join(words))
    return out


@register("kscu")
class KSCU(Method):
    scope = "noxattn-linear"
    Params = KSCUParams
    summary = "ESD target trained only at the late key steps of the trajectory (KSCU)"
    #: the official preset's lr (SD: the official code's; ToyWorld: tuned here)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"lr": 1e-5, "batch_size": 1},
        "toyworld": {"lr": 5e-5, "batch_size": 4},
        "toyworld-sd": {"lr": 5e-5, "batch_size": 4},
    }

    @classmethod
    def plan_defaults(
        cls,
        params: KSCUParams,
        family: ModelFamily,
        concepts: list[Concept],
        sequential: bool = False,
    ) -> dict[str, Any]:
        """Iterations per round: the task's per-concept budget, times the number of concepts
        unless sequential (one concept per round); scope and lr of the ``preset``."""
        preset = TASKS[resolve_task(params.task, concepts)]
        if (
            params.end > 0
            and (params.start >= 0 or params.levels == "index")
            and key_start(params, preset) >= params.end
        ):
            raise UnseeError(
                f"kscu: the key steps [{key_start(params, preset)}, {params.end}) are empty"
            )
        per_round = preset.iterations[family.key] * (1 if sequential else len(concepts))
        out = {**cls.defaults[family.key], "iterations": per_round}
        if resolved_preset(params, family) == "matched":
            lr = MATCHED_LR.get(family.key, ESD.defaults[family.key]["lr"])
            return {**out, "scope": ESD.scope, "lr": lr}
        return {
            **out,
            **({"lr": preset.lr[family.key]} if preset.lr and family.key in preset.lr else {}),
            "scope": preset.scope,
        }

    def __init__(self, params: KSCUParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        p, e = params, params.ddim_steps
        self.task = resolve_task(p.task, ctx.concepts)
        self.timesteps = ddim_timesteps(ctx.bundle, e)
        ab = ctx.alphas_cumprod
        self.start = key_start(p, TASKS[self.task], self.timesteps, ab)
        self.end = p.end if p.end > 0 else e
        if self.start >= self.end:
            raise UnseeError(f"kscu: the key steps [{self.start}, {self.end}) are empty")
        if p.version == "paper":
            default_max = e - 1
        elif p.levels == "index":
            default_max = math.ceil(0.9 * e) - 1
        else:
            default_max = map_index(QUICK_MAX_START, p, self.timesteps, ab)
        self.max_start = min(
            self.end - 1, max(self.start, p.max_start if p.max_start >= 0 else default_max)
        )
        self.table = self._table()
        #: per concept, the number of its entries and the position its augmentation starts
        counts = [sum(k == c for k, _, _ in self.table) for c in range(len(ctx.concepts))]
        if ctx.sequential:
            counts = [ctx.iterations] * len(ctx.concepts)
        self.augment_from = [math.ceil((1 - p.augment_fraction) * n) for n in counts]
        self.aug_pool = {
            c.name: [
                a
                for k, prompt in enumerate(c.prompts)
                for a in augmented_prompts(prompt, c.name, self.task, ctx.seed + k)
            ]
            for c in ctx.concepts
        }
        # the trajectory being walked: (step it was made for, prompts, latents)
        self.walk: tuple[int, list[str], torch.Tensor] | None = None
        self.resampled = 0  # trajectories sampled from noise (the cost reuse saves)

    def _table(self) -> list[tuple[int, int, int]]:
        """The run's table, one entry (concept, DDIM index, position in the concept's own
        table) per step: sequential, one single-concept table per round; otherwise every
        concept's table of an even share of the iterations, interleaved (:func:`build_table`)."""
        ctx, p = self.ctx, self.p
        n, it = len(ctx.concepts), ctx.iterations
        if ctx.sequential:
            own = build_schedule(self.start, self.end, it, 1, p.loops_before_shift, self.max_start)
            return [(r, s, j) for r in range(n) for j, (_, s) in enumerate(own)]
        if it < n:
            raise UnseeError(f"kscu needs at least one iteration per concept ({n}); got {it}")
        return build_table(
            self.start, self.end, split_budget(it, n), p.loops_before_shift, self.max_start
        )

    def leakage_lambda(self, t_int: int, s: int) -> tuple[float, float]:
        """(lam2, lam1) of the leakage term at training timestep ``t_int`` / DDIM index ``s``,
        read at the SD 1.x timestep or index of the same noise level (``levels=noise``)."""
        if self.p.levels == "noise":
            level = model_level(t_int, self.ctx.alphas_cumprod)
            t_int, s = level.sd1_timestep(), level.sd1_ddim_index(50)
        if self.p.version == "quick":
            return 1e-4, (1000 - t_int) * 2e-5
        return 2e-5, s / 10000

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "walk": self.walk, "resampled": self.resampled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.walk, self.resampled = state["walk"], state["resampled"]

    def x_s(
        self, step: int, concept: Concept, s: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, list[str]]:
        """x at DDIM index s for this step's table entry, continuing the previous entry's
        trajectory when it is the same concept one index earlier."""
        ctx, p, b = self.ctx, self.p, self.ctx.batch_size
        prev = self.table[step - 1][:2] if step else None
        if (
            p.trajectory_reuse
            and self.walk is not None
            and self.walk[0] == step - 1
            and prev == (self.table[step][0], s - 1)
        ):
            prompts = self.walk[1]
            x, _ = ctx.trajectory(
                prompts,
                s,
                [0] * len(prompts),  # unused: the walk's latents carry its noise
                p.start_guidance,
                p.ddim_steps,
                latents=self.walk[2],
                start_at=s - 1,
            )
        else:
            prompts = ctx.local(
                [concept.prompts[int(i)] for i in rng.integers(len(concept.prompts), size=b)]
            )
            seeds = ctx.local([int(v) for v in rng.integers(0, 2**31 - 1, b)])
            x, _ = ctx.trajectory(prompts, s, seeds, p.start_guidance, p.ddim_steps)
            self.resampled += 1
        self.walk = (step, prompts, x)
        return x, prompts

    def loss(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p = self.ctx, self.p
        k, s, j = self.table[step]
        concept = ctx.concepts[k]
        x, prompts = self.x_s(step, concept, s, rng)
        b = x.shape[0]
        t_int = self.timesteps[s]
        t = torch.full((b,), t_int, device=ctx.device, dtype=torch.long)
        c, u = ctx.encode(prompts), ctx.encode([""] * b)
        e_c, e_u = ctx.frozen_pred(x, t, c), ctx.frozen_pred(x, t, u)
        read = c
        if p.augment and j >= self.augment_from[k]:
            pool = self.aug_pool[concept.name]
            b_global = ctx.batch_size
            aug = ctx.local([pool[int(i)] for i in rng.integers(len(pool), size=b_global)])
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            read = ctx.encode(aug)
            noise = torch.randn((b_global, *read.shape[1:]), generator=g)
            read = read + p.embedding_noise * ctx.local(noise).to(read)
        # one forward for the concept and the unconditional branch of the edited model
        e_read, e_uncond = ctx.pred(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([read, u])
        ).chunk(2)
        main = mse(e_read, negative_guidance(e_u, e_c, p.eta))
        lam2, lam1 = self.leakage_lambda(t_int, s)
        leakage = mse(e_uncond, e_u - lam1 * (e_c - e_u))
        return main + lam2 * leakage, {"s": float(s), "leak": leakage.item()}
