"""Attacks on each erased model: their training images are drawn once with the base
weights, then every (concept, attack) job runs on the erased weights, shared out over
processes under ``accelerate launch``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from unsee.evaluate import attacks as atk
from unsee.evaluate.plan import Context, item_rows
from unsee.evaluate.prompt_sets import EvalPrompt
from unsee.models.bundle import Bundle
from unsee.models.image_sets import DrawnSet
from unsee.seeds import training_seeds


@dataclasses.dataclass
class AttackJob:
    """One (concept, attack) run: what it attacks, its budget, its training images (drawn
    by the base model) and the seconds they took (0 when the cache had them)."""

    name: str
    target: atk.Target
    budget: atk.Budget
    data: DrawnSet
    data_seconds: float


def attack_jobs(ctx: Context) -> list[tuple[str, str]]:
    """(concept, attack) pairs that run models; processes share them out."""
    return [(c, n) for c in ctx.concepts for n in ctx.attacks.names if n in atk.RUNNERS]


def _generation(ctx: Context) -> atk.Generation:
    return atk.Generation(ctx.settings.steps, ctx.guidance, ctx.settings.batch_size)


def attack_target(ctx: Context, concept: str) -> atk.Target:
    """The concept's target prompts and seeds exactly as the scorecard drew them, so an
    attack's rate compares with the erased model's unattacked one image for image."""
    seeds: dict[str, list[int]] = {}
    for i in item_rows(ctx, "target", concept):
        seeds.setdefault(ctx.items[i].prompt.prompt, []).append(ctx.items[i].seed)
    attr, ok = ctx.concepts[concept]
    return atk.Target(concept, attr, ok, list(seeds), list(seeds.values()))


def attack_data(ctx: Context, jobs: list[tuple[str, str]]) -> list[AttackJob]:
    """Draw (or read from the cache) each job's training images; call with base weights.
    Resurgence learns from the retain prompts (other concepts), the others from the
    concept's target prompts."""
    cache = None if ctx.settings.cache_dir is None else Path(ctx.settings.cache_dir) / "attacks"
    out = []
    for concept, name in jobs:
        budget = ctx.attacks.budget(name, ctx.bundle.family, concept)
        target = attack_target(ctx, concept)
        t0 = time.time()
        if isinstance(budget, atk.ResurgenceBudget) and budget.data == "truth":
            data = truth_set(ctx.bundle, ctx.prompt_set.retain, budget.images)
        else:
            prompts = (
                [p.prompt for p in ctx.prompt_set.retain]
                if name == "resurgence"
                else target.prompts
            )
            data = atk.training_set(
                ctx.bundle,
                prompts,
                budget.images,
                _generation(ctx),
                cache,
                f"attack images ({name}: {concept})",
            )
        out.append(AttackJob(name, target, budget, data, time.time() - t0))
    return out


def truth_set(bundle: Bundle, prompts: Sequence[EvalPrompt], per_prompt: int) -> DrawnSet:
    """Ground truth for resurgence on ToyWorld: ``per_prompt`` renders of each prompt's asked
    attributes (prompt-major), as model inputs ((P * per_prompt, C, h, w)), with render
    seeds from the training range. No model drew them, so fine-tuning on them cannot copy
    the base model's concept back in."""
    from unsee.toyworld.render import render_dataset
    from unsee.toyworld.vocab import Attributes

    asked = [Attributes(**{a: next(iter(v)) for a, v in p.expect.items()}) for p in prompts]
    seed = training_seeds(atk.TRAIN_SEED, 1)[0]
    images, _ = render_dataset(
        len(asked) * per_prompt, seed, [a for a in asked for _ in range(per_prompt)]
    )
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return DrawnSet(
        bundle.encode_images(pixels).float(),
        [p.prompt for p in prompts for _ in range(per_prompt)],
        [seed] * len(images),
    )


def run_attacks(ctx: Context, jobs: list[AttackJob]) -> list[atk.Outcome]:
    """Run this process's jobs on the bundle's current (erased) weights; returns every
    process's outcomes, in job order."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    mine = []
    for j in jobs:
        o = atk.RUNNERS[j.name](
            ctx.bundle,
            ctx.judge,
            j.target,
            j.data,
            j.budget,
            _generation(ctx),
            seed=ctx.settings.seed,
        )
        o.settings["training_images_seconds"] = round(j.data_seconds, 2)
        mine.append(o)
    if PartialState().num_processes == 1:
        return mine
    return gather_object(mine)
