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

Writes ``bench/results/mi_optimum.{md,json}`` (rows merge by concept; machine and versions
noted).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from harness import RESULTS, Results, load_model, record, runs_on
from unsee.concepts import toyworld_concept
from unsee.erase.methods.mim_mu import strip_concept
from unsee.models.bundle import Bundle
from unsee.models.sampling import generate
from unsee.toyworld.judge import ToyJudge, load_judge, predict
from unsee.toyworld.vocab import concept_kind


class BaseRates:
    """Rates of a concept on the base model's images of some prompts; the images of one
    prompt list are drawn and judged once, for every concept whose target it is."""

    def __init__(self, bundle: Bundle, judge: ToyJudge, images: int, steps: int, seed: int):
        self.bundle, self.judge = bundle, judge
        self.images, self.steps, self.seed = images, steps, seed
        self._labels: dict[tuple[str, ...], dict] = {}

    def _judged(self, prompts: tuple[str, ...]) -> dict:
        """Judge labels of ``images`` images of ``prompts`` (cycled, seeds ``seed``..)."""
        if prompts not in self._labels:
            per = math.ceil(self.images / len(prompts))
            ps = [p for p in prompts for _ in range(per)]
            seeds = [self.seed + k for _ in prompts for k in range(per)]
            images = generate(self.bundle, ps, seeds, steps=self.steps)
            self._labels[prompts] = predict(self.judge, images)
        return self._labels[prompts]

    def rate(self, prompts: list[str], attr: str, label: str) -> float:
        """Share of the images of ``prompts`` the judge sees as ``label`` for ``attr``."""
        pred = self._judged(tuple(prompts))[attr]
        return float(np.mean([p["label"] == label for p in pred]))


def markdown(results: Results) -> str:
    """The bound table, from its results file."""
    s = results["settings"]
    rows = results["tables"]["rates"]["rows"]
    heads = list(next(iter(rows.values()))["rates"])
    lines = [
        "# MiM-MU's best possible erasure on ToyWorld",
        "",
        f"Base model, {s['images']} images per rate, DDIM-{s['steps']}, seeds from "
        f"{s['seed']}; {' / '.join(runs_on(results))}. Rate = share the judge sees as the "
        "concept; the highest erasure MiM-MU's objective can reach is 1 - the rate of its "
        "target distribution (its optimum makes the forget prompts sample that "
        "distribution).",
        "",
        "| concept | "
        + " | ".join(f"rate: {h}" for h in heads)
        + " | best erasure off-/on-policy | best erasure conditional |",
        "|---|" + "---|" * (len(heads) + 2),
    ]
    for concept, r in rows.items():
        v = list(r["rates"].values())
        lines.append(
            f"| {concept} | "
            + " | ".join(f"{x:.3f}" for x in v)
            + f" | {1 - v[0]:.3f} | {1 - v[1]:.3f} |"
        )
    return "\n".join(lines) + "\n"


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
    base = BaseRates(load_model("toyworld"), load_judge(), args.images, args.steps, args.seed)
    settings = {"images": args.images, "steps": args.steps, "seed": args.seed}
    for name in args.concept or ["star", "circle", "square", "striped"]:
        concept = toyworld_concept(name)
        attr = concept_kind(name)
        forget = list(concept.prompts)
        conditional = list(dict.fromkeys(strip_concept(p, name) for p in forget))
        rate = {
            "empty prompt (off-/on-policy target)": base.rate([""], attr, name),
            "concept words removed (conditional target)": base.rate(conditional, attr, name),
        }
        print(name, rate, flush=True)
        row = {"attribute": attr, "forget_prompts": forget, "rates": rate}
        results = record("mi_optimum", settings, "rates", {name: row}, markdown, out=args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
