"""When a model decides a concept: the prompt-switch curve, and where KSCU's key steps fall.

For a concept, images are drawn with the concept's prompt for the first ``k`` DDIM steps and
with another prompt (the concept's anchor, or the empty prompt) for the rest, same seeds; the
judge's share of the concept at each ``k`` says how much of the concept is already fixed
after ``k`` steps. KSCU trains only on its key steps (indices ``S..E-1``, SD 1.x's starts
mapped to this model by noise level, :mod:`unsee.erase.timesteps`); the curve shows whether
those are the steps where the concept is still being decided (issue 19). ToyWorld-vocabulary
models only (the judge reads their images).

    OMP_NUM_THREADS=1 .venv/bin/python bench/decision_steps.py --concept star [--every 5]

Writes ``bench/results/decision_steps.{md,json}`` (one table per model and concept; rows
merge by switch step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from harness import RESULTS, Results, fmt, load_model, record, runs_on
from unsee.concepts import Concept, toyworld_concept
from unsee.erase.methods.kscu import TASKS, KSCUParams, key_start, resolve_task
from unsee.errors import UnseeError
from unsee.evaluate.metrics import wilson_interval
from unsee.models.bundle import Bundle
from unsee.models.sampling import ddim_sample, ddim_timesteps, to_uint8
from unsee.toyworld.judge import load_judge, predict
from unsee.toyworld.vocab import ATTRIBUTES, concept_kind

#: where the prompt switches to, after the concept's prompt for the first k steps
SWITCHES = ("anchor", "empty")


def switch_curve(
    bundle: Bundle,
    concept: Concept,
    seeds: list[int],
    steps: int,
    guidance: float | None,
    every: int,
) -> dict[str, dict[str, float | int]]:
    """Per switch step k (0, every, ..., steps): DDIM timestep at k and, per switch target,
    the judge's hits / n of the concept (its attribute's head) with the 95 % Wilson
    interval."""
    judge = load_judge()
    attribute = concept_kind(concept.name)  # the judge's head that reads this concept
    if attribute not in ATTRIBUTES:
        raise UnseeError(f"{concept.name!r} is a {attribute}; give a shape, colour or style")
    prompt, n = concept.prompts[0], len(seeds)
    others = {"anchor": concept.anchor_prompts[0], "empty": ""}
    grid = ddim_timesteps(bundle, steps)
    rows: dict[str, dict[str, float | int]] = {}
    for k in range(0, steps + 1, every):
        head, _ = ddim_sample(bundle, [prompt] * n, seeds, steps, guidance, stop_at=k)
        row: dict[str, float | int] = {"k": k, "t": grid[k] if k < steps else 0}
        for switch in SWITCHES:
            if k < steps:
                x, _ = ddim_sample(
                    bundle, [others[switch]] * n, seeds, steps, guidance, latents=head, start_at=k
                )
            else:
                x = head
            labels = predict(judge, to_uint8(bundle.decode(x)))[attribute]
            hits = sum(v["label"] == concept.name for v in labels)
            lo, hi = wilson_interval(hits, n)
            row.update({f"{switch}_hits": hits, f"{switch}_lo": lo, f"{switch}_hi": hi})
        row["n"] = n
        rows[f"k={k}"] = row
        print(concept.name, row, flush=True)
    return rows


def kscu_key_steps(bundle: Bundle, concept: Concept, steps: int) -> dict[str, int]:
    """KSCU's first key step S (both code versions) on this model's ``steps``-step grid,
    mapped from SD 1.x by noise level; the key steps run from S to the last index."""
    grid = ddim_timesteps(bundle, steps)
    ab = bundle.alphas_cumprod()
    out = {}
    for version in ("quick", "paper"):
        p = KSCUParams(version=version, ddim_steps=steps)
        preset = TASKS[resolve_task(p.task, [concept])]
        out[version] = key_start(p, preset, grid, ab)
    return out


def markdown(results: Results) -> str:
    """The curves, one table per model and concept, from the results file."""
    s = results["settings"]
    lines = [
        "# Prompt-switch curves: when the model decides a concept",
        "",
        f"DDIM-{s['steps']} at guidance {s['guidance']}, {s['images']} seeds per point. Images "
        "are drawn with the concept's prompt for the first k steps and with the anchor's (or "
        "the empty) prompt after; the judge's share of the concept, hits/n [95 % "
        "Wilson]. KSCU trains on the key steps S..E-1 (S mapped from SD 1.x by noise level).",
    ]
    for name, table in results["tables"].items():
        meta = table["meta"]
        key = meta["kscu_start"]
        lines += [
            "",
            f"## {name}",
            "",
            f"Prompt `{meta['prompt']}`; anchor `{meta['anchor']}`. KSCU key steps start at "
            f"S = {key['quick']} (2026 code) / {key['paper']} (paper code) of {s['steps']}.",
            "",
            "| switch after k steps on the concept's prompt | t at k | then anchor | then empty "
            "| KSCU |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(table["rows"].values(), key=lambda r: int(r["k"])):
            n = int(r["n"])
            cells = [
                f"{int(r[f'{sw}_hits'])}/{n} [{fmt(r[f'{sw}_lo'], 2)}, {fmt(r[f'{sw}_hi'], 2)}]"
                for sw in SWITCHES
            ]
            k = int(r["k"])
            mark = "key step" if key["quick"] <= k < s["steps"] else ""
            lines.append(f"| k={k} | {int(r['t'])} | {cells[0]} | {cells[1]} | {mark} |")
    lines += ["", "Run on " + " / ".join(runs_on(results)) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--concept", default="star")
    ap.add_argument("--images", type=int, default=32, help="seeds per point")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (KSCU's E)")
    ap.add_argument("--every", type=int, default=5, help="distance between switch steps")
    ap.add_argument("--guidance", type=float, default=None, help="CFG (default: the model's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.manual_seed(0)
    bundle = load_model(args.model)
    if bundle.vocabulary != "toyworld":
        raise UnseeError(f"{args.model}: the judge reads ToyWorld-vocabulary models only")
    concept = toyworld_concept(args.concept)
    guidance = bundle.default_guidance if args.guidance is None else args.guidance
    seeds = [int(s) for s in np.arange(args.images)]
    settings = {"steps": args.steps, "images": args.images, "guidance": guidance}
    rows = switch_curve(bundle, concept, seeds, args.steps, guidance, args.every)
    meta = {
        "prompt": concept.prompts[0],
        "anchor": concept.anchor_prompts[0],
        "kscu_start": kscu_key_steps(bundle, concept, args.steps),
        "fingerprint": bundle.base_fingerprint,
    }
    record(
        "decision_steps",
        settings,
        f"{args.model} / {concept.name}",
        rows,
        markdown,
        meta=meta,
        out=args.out,
    )


if __name__ == "__main__":
    main()
