"""What MiM-MU can erase at best: the concept's share under the distribution its loss aligns to.

MiM-MU drives I(X; C) to zero by pulling the edited model's prediction for a forget prompt
onto the frozen model's prediction for the empty prompt (``off-policy``, ``on-policy``) or
for the prompt with the concept's words removed (``conditional``). At the optimum, the
forget prompt samples the *target* distribution, so the concept still appears as often as
the frozen model draws it there: the highest erasure the objective can reach is
``1 - rate_target`` (the judge's rate of the concept on the target prompts). For a concept
the prior rarely draws (a Stable Diffusion artist style) that bound is ~1; ToyWorld's
training grammar leaves styles and shapes out of many captions, so its unconditional and
concept-free distributions draw every shape and style often.

    OMP_NUM_THREADS=1 .venv/bin/python bench/mi_optimum.py --concept star --concept striped

Writes ``bench/results/mi_optimum.{md,json}`` (machine and versions noted).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
from pathlib import Path

import numpy as np
import torch

from unsee.concepts import toyworld_concept
from unsee.erase.methods.mim_mu import strip_concept
from unsee.io import atomic_write
from unsee.models.bundle import load_bundle
from unsee.models.fingerprint import library_versions
from unsee.models.sampling import generate
from unsee.toyworld.judge import load_judge, predict
from unsee.toyworld.vocab import concept_kind

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLE = JUDGE = None  # set by main()


@functools.cache
def _judged(prompts: tuple[str, ...], images: int, steps: int, seed: int) -> dict:
    """Judge labels of ``images`` images of ``prompts`` (cycled, seeds ``seed``..); shared
    by every concept whose target prompts are the same."""
    per = math.ceil(images / len(prompts))
    ps = [p for p in prompts for _ in range(per)]
    seeds = [seed + k for _ in prompts for k in range(per)]
    return predict(JUDGE, generate(BUNDLE, ps, seeds, steps=steps))


def concept_rate(
    prompts: list[str], attr: str, label: str, images: int, steps: int, seed: int
) -> float:
    """Share of the images of ``prompts`` the judge sees as ``label`` for ``attr``."""
    pred = _judged(tuple(prompts), images, steps, seed)[attr]
    return float(np.mean([p["label"] == label for p in pred]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--concept",
        action="append",
        default=None,
        help="ToyWorld concept (repeatable; default star, circle, square, striped)",
    )
    ap.add_argument("--images", type=int, default=144, help="images per rate")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    global BUNDLE, JUDGE
    BUNDLE, JUDGE = load_bundle("toyworld"), load_judge()
    rows = []
    for name in args.concept or ["star", "circle", "square", "striped"]:
        concept = toyworld_concept(name)
        attr = concept_kind(name)
        forget = list(concept.prompts)
        rate = {
            "empty prompt (off-/on-policy target)": concept_rate(
                [""], attr, name, args.images, args.steps, args.seed
            ),
            "concept words removed (conditional target)": concept_rate(
                list(dict.fromkeys(strip_concept(p, name) for p in forget)),
                attr,
                name,
                args.images,
                args.steps,
                args.seed,
            ),
        }
        rows.append({"concept": name, "attribute": attr, "forget_prompts": forget, "rates": rate})
        print(name, rate, flush=True)
    cpu = platform.processor() or platform.machine()
    report = {
        "images": args.images,
        "steps": args.steps,
        "seed": args.seed,
        "machine": f"{cpu}, {torch.get_num_threads()} torch threads",
        "versions": library_versions(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(args.out / "mi_optimum.json", lambda tmp: tmp.write_text(text))
    heads = list(rows[0]["rates"])
    lines = [
        "# MiM-MU's best possible erasure on ToyWorld",
        "",
        f"Base model, {args.images} images per rate, DDIM-{args.steps}, seeds from "
        f"{args.seed}; {report['machine']}. Rate = share the judge sees as the concept; "
        "the highest erasure MiM-MU's objective can reach is 1 - the rate of its "
        "target distribution (its optimum makes the forget prompts sample that "
        "distribution).",
        "",
        "| concept | "
        + " | ".join(f"rate: {h}" for h in heads)
        + " | best erasure off-/on-policy | best erasure conditional |",
        "|---|" + "---|" * (len(heads) + 2),
    ]
    for r in rows:
        v = list(r["rates"].values())
        lines.append(
            f"| {r['concept']} | "
            + " | ".join(f"{x:.3f}" for x in v)
            + f" | {1 - v[0]:.3f} | {1 - v[1]:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    atomic_write(args.out / "mi_optimum.md", lambda tmp: tmp.write_text(table))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
