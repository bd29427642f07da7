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
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from unsee.artifacts import apply_artifacts
from unsee.evaluate.judges import ToyWorldJudge
from unsee.evaluate.metrics import frechet_distance
from unsee.evaluate.plan import toyworld_reference_features
from unsee.evaluate.prompt_sets import toyworld_prompt_set
from unsee.io import atomic_write
from unsee.models.bundle import load_bundle
from unsee.models.sampling import generate


def measure(
    bundle,
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


def markdown(report: dict) -> str:
    rows = report["rows"]
    base = rows.get("base", {}).get("fid_all")
    lines = [
        "# Judge-feature FID: sampling noise and sample size",
        "",
        f"Retain prompts of scenario `{report['scenario']}` ({report['prompts']} prompts), "
        f"{report['per_prompt']} seeds each, DDIM-{report['steps']}; reference: "
        f"{report['reference_images']} ToyWorld renders of the asked attributes. Groups: "
        f"disjoint {report['group']} seeds per prompt ({report['prompts'] * report['group']} "
        "images, the benchmark's size). Machine: " + report["machine"] + ".",
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


def _rows_measured_with(path: Path, settings: dict) -> dict:
    """The rows of the results file at ``path`` if it was measured with ``settings`` (rows
    measured otherwise do not compare), else none. Call under ``compare.locked``."""
    report = json.loads(path.read_text()) if path.exists() else {}
    return report["rows"] if all(report.get(k) == v for k, v in settings.items()) else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="an erased artifact (repeatable)",
    )
    ap.add_argument("--scenario", default="sequential", choices=list(compare.SCENARIOS))
    ap.add_argument("--per-prompt", type=int, default=64)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=compare.RESULTS)
    args = ap.parse_args()
    if args.per_prompt < 2 * args.group:
        ap.error("--per-prompt must hold at least two groups")
    arts = dict(a.split("=", 1) for a in args.artifact)
    judge = ToyWorldJudge()
    prompts = toyworld_prompt_set(compare.SCENARIOS[args.scenario]["concepts"]).retain
    reference = toyworld_reference_features(judge, prompts)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = args.out / "fid_noise.json"
    settings = {
        "scenario": args.scenario,
        "per_prompt": args.per_prompt,
        "group": args.group,
        "steps": args.steps,
    }
    with compare.locked(args.out):
        report = {"rows": _rows_measured_with(path, settings)}
    report.update(
        settings, prompts=len(prompts), reference_images=len(reference), machine=compare.machine()
    )
    # the base row is measured once per settings: it is what every artifact compares with
    todo = ({} if "base" in report["rows"] else {"base": None}) | arts
    for label, art in todo.items():
        bundle = load_bundle("toyworld", device=device)
        if art is not None:
            apply_artifacts(bundle, [Path(art)])
        report["rows"][label] = {
            **measure(bundle, judge, prompts, args.per_prompt, args.group, args.steps, reference),
            "artifact": art,
        }
        print(
            label, {k: v for k, v in report["rows"][label].items() if k != "group_fid"}, flush=True
        )
    with compare.locked(args.out):  # merge with rows other processes wrote meanwhile
        report["rows"] = _rows_measured_with(path, settings) | report["rows"]
        text = json.dumps(report, indent=1) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text))
        atomic_write(args.out / "fid_noise.md", lambda tmp: tmp.write_text(markdown(report)))
    print(markdown(report))


if __name__ == "__main__":
    main()
