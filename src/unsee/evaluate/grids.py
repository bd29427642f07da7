"""The report's image grids: before/after images of each section and each attack's
attacked images beside the unattacked ones, captioned with what the judge said."""

from __future__ import annotations

import dataclasses

import numpy as np

from unsee.evaluate import attacks as atk
from unsee.evaluate.attack_runs import attack_target
from unsee.evaluate.plan import GRID_SEEDS, Context, item_rows
from unsee.evaluate.runner import Outputs

#: What the judge said about one image, as the report captions it: the label of the
#: attribute the grid is about, and whether it counts as an evaluated concept.
Caption = tuple[str, bool]


@dataclasses.dataclass
class Grid:
    """Before/after images for the report: rows = prompts, columns = seeds.
    ``base`` / ``erased``: uint8 (rows, cols, H, W, 3); ``base_captions`` /
    ``erased_captions``: (rows, cols) :data:`Caption` of each image."""

    title: str
    prompts: list[str]
    seeds: list[list[int]]
    base: np.ndarray
    erased: np.ndarray
    base_captions: list[list[Caption]] = dataclasses.field(default_factory=list)
    erased_captions: list[list[Caption]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class AttackGrid:
    """One attack's images for the report: rows = target prompts, columns = seeds.
    ``before``: the erased model unattacked; ``after``: attacked (uint8 (rows, cols, H, W,
    3)); ``prompts``: what the attack generated (soft tokens as ``<nearest tokens>``)."""

    title: str
    prompts: list[str]
    seeds: list[list[int]]
    before: np.ndarray
    after: np.ndarray
    before_captions: list[list[Caption]] = dataclasses.field(default_factory=list)
    after_captions: list[list[Caption]] = dataclasses.field(default_factory=list)


def before_after_grids(ctx: Context, base: Outputs, out: Outputs) -> list[Grid]:
    groups: dict[str, list[int]] = {}
    for i in sorted(ctx.grid_index):
        it = ctx.items[i]
        title = {
            "target": f"{it.prompt.concept}: target prompts",
            "paraphrase": f"{it.prompt.concept}: paraphrases (concept not named)",
            "retain": "retain: other concepts",
            "file": "prompts file",
        }[it.section]
        groups.setdefault(title, []).append(i)
    grids = []
    for title, idx in groups.items():
        prompts = list(dict.fromkeys(ctx.items[i].prompt.prompt for i in idx))
        by_prompt = {p: [i for i in idx if ctx.items[i].prompt.prompt == p] for p in prompts}
        cols = min(len(v) for v in by_prompt.values())
        rows_b = [[base.images[i] for i in by_prompt[p][:cols]] for p in prompts]
        rows_e = [[out.images[i] for i in by_prompt[p][:cols]] for p in prompts]
        grids.append(
            Grid(
                title,
                prompts,
                [[ctx.items[i].seed for i in by_prompt[p][:cols]] for p in prompts],
                np.array(rows_b),
                np.array(rows_e),
                [[_caption(ctx, base, i) for i in by_prompt[p][:cols]] for p in prompts],
                [[_caption(ctx, out, i) for i in by_prompt[p][:cols]] for p in prompts],
            )
        )
    return grids


def attack_grids(ctx: Context, out: Outputs, outcomes: list[atk.Outcome]) -> list[AttackGrid]:
    """Unattacked vs attacked images of each attack (the paraphrase images are already in
    the before/after grids)."""
    grids = []
    for o in outcomes:
        target = attack_target(ctx, o.concept)
        cols = min(GRID_SEEDS, len(target.seeds[0]))
        rows = item_rows(ctx, "target", o.concept)
        idx = [[i for i in rows if ctx.items[i].prompt.prompt == p][:cols] for p in target.prompts]
        k = len(target.seeds[0])
        after = [
            [(o.labels[r * k + j], o.labels[r * k + j] in target.labels) for j in range(cols)]
            for r in range(len(target.prompts))
        ]
        grids.append(
            AttackGrid(
                f"{o.concept}: {o.name}",
                o.prompts,
                [s[:cols] for s in target.seeds],
                np.array([[out.images[i] for i in r] for r in idx]),
                o.images[:, :cols],
                [[_caption(ctx, out, i) for i in r] for r in idx],
                after,
            )
        )
    return grids


def _caption(ctx: Context, out: Outputs, i: int) -> Caption:
    """What the judge said about item ``i``: the label of its concept's attribute (retain
    and prompts-file images: the first evaluated concept's) and whether that label counts
    as the concept (as any evaluated concept, for retain and prompts-file images)."""
    concept = ctx.items[i].prompt.concept
    attr, ok = ctx.concepts.get(concept) or next(iter(ctx.concepts.values()))
    label = out.labels[attr][i]
    hit = (
        label in ok
        if concept in ctx.concepts
        else any(out.labels[a][i] in o for a, o in ctx.concepts.values())
    )
    return label, hit
