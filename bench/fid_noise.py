"""How much of a judge-feature FID on ToyWorld is sampling noise, and the FID at a sample
size that can carry issue 5's "+15 %" bar.

The benchmark's scorecards compute the Frechet distance on the retain images only: 5
prompts x 4 seeds = 20 images in the judge's 256-dimensional feature space for the
sequential scenario, so their covariance has rank 19 and the distance moves with the seeds.
This draws the same retain prompts with ``--per-prompt`` seeds for the base model and each
artifact and reports (reference: the scorecard's renders of the asked attributes)

* the FID of all ``5 x per-prompt`` images,
* the FID of each disjoint group of ``--group`` seeds per prompt (the benchmark's size):
  mean, standard deviation, min and max over the groups.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fid_noise.py \\
        --artifact sculpt=runs/sweep-cpu/current-lr1e-3-80/sequential/current-lr1e-3-80

Writes ``bench/results/fid_noise.{md,json}`` (rows merge by label).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness import RESULTS, SCENARIOS, Results, load_model, read, record, runs_on
from unsee.evaluate.judges import ToyWorldJudge
from unsee.evaluate.metrics import frechet_distance
from unsee.evaluate.plan import toyworld_reference_features
from unsee.evaluate.prompt_sets import toyworld_prompt_set
from unsee.models.bundle import Bundle
from unsee.models.sampling import generate


def measure(
    bundle: Bundle,
    judge: ToyWorldJudge,
    prompts: list,
    per_prompt: int,
    group: int,
    steps: int,
    reference: np.ndarray,
) -> dict:
    """FID of all images and of each seed group; images are (prompt, seed) with seeds
    ``0..per_prompt-1``, the benchmark's first group being seeds 0..group-1."""
    texts = [p.prompt for p in prompts for _ in range(per_prompt)]
    seeds = [k for _ in prompts for k in range(per_prompt)]
    feats = judge.features(generate(bundle, texts, seeds, steps=steps))
    seed_of = np.array(seeds)
    groups = [
        frechet_distance(feats[(seed_of >= g) & (seed_of < g + group)], reference)
        for g in range(0, per_prompt - group + 1, group)
    ]
    return {
        "fid_all": frechet_distance(feats, reference),
        "images": len(texts),
        "group_fid": groups,
        "group_mean": float(np.mean(groups)),
        "group_sd": float(np.std(groups, ddof=1)),
        "group_min": float(np.min(groups)),
        "group_max": float(np.max(groups)),
    }


def markdown(results: Results) -> str:
    """The noise table, from its results file."""
    s, (table,) = results["settings"], results["tables"].values()
    meta, rows = table["meta"], table["rows"]
    base = rows.get("base", {}).get("fid_all")
    lines = [
        "# Judge-feature FID: sampling noise and sample size",
        "",
        f"Retain prompts of scenario `{s['scenario']}` ({meta['prompts']} prompts), "
        f"{s['per_prompt']} seeds each, DDIM-{s['steps']}; reference: "
        f"{meta['reference_images']} ToyWorld renders of the asked attributes. Groups: "
        f"disjoint {s['group']} seeds per prompt ({meta['prompts'] * s['group']} "
        "images, the benchmark's size). Machine: " + " / ".join(runs_on(results)) + ".",
        "",
        "| model | FID, all images | vs base | FID per group: mean +- sd | min - max | groups |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        rel = f"{100 * (r['fid_all'] / base - 1):+.0f} %" if base else "n/a"
        lines.append(
            f"| {label} | {r['fid_all']:.0f} ({r['images']}) | {rel} | "
            f"{r['group_mean']:.0f} +- {r['group_sd']:.0f} | "
            f"{r['group_min']:.0f} - {r['group_max']:.0f} | {len(r['group_fid'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="an erased artifact (repeatable)",
    )
    ap.add_argument("--scenario", default="sequential", choices=list(SCENARIOS))
    ap.add_argument("--per-prompt", type=int, default=64)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.per_prompt < 2 * args.group:
        ap.error("--per-prompt must hold at least two groups")
    arts = dict(a.split("=", 1) for a in args.artifact)
    judge = ToyWorldJudge()
    prompts = toyworld_prompt_set(list(SCENARIOS[args.scenario].concepts)).retain
    reference = toyworld_reference_features(judge, prompts)
    settings = {
        "scenario": args.scenario,
        "per_prompt": args.per_prompt,
        "group": args.group,
        "steps": args.steps,
    }
    meta = {"prompts": len(prompts), "reference_images": len(reference)}
    # the base row is measured once per settings: it is what every artifact compares with
    results = read("fid_noise", args.out)
    kept = results["tables"].get("fid") if results and results["settings"] == settings else None
    has_base = kept is not None and kept["meta"] == meta and "base" in kept["rows"]
    for label, art in (({} if has_base else {"base": None}) | arts).items():
        row = measure(
            load_model("toyworld", [art] if art else []),
            judge,
            prompts,
            args.per_prompt,
            args.group,
            args.steps,
            reference,
        )
        print(label, {k: v for k, v in row.items() if k != "group_fid"}, flush=True)
        results = record(
            "fid_noise",
            settings,
            "fid",
            {label: {**row, "artifact": art}},
            markdown,
            meta=meta,
            out=args.out,
        )
    if results is not None:
        print(markdown(results))


if __name__ == "__main__":
    main()
