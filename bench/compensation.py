"""The compensation test of MiM-MU's central claim, on ToyWorld.

Compensated methods protect what their retain set covers; MiM-MU claims to protect what no
retain set covers. For each target (``star``, ``striped``) this erases with

* ``esd-x``: plain ESD on cross-attention (no compensation);
* ``esd-x+retain``: ESD-x with a retain term on the *inside* prompts (the compensation set);
* ``mim-mu`` (and ``mim-mu-cond`` for styles): no retain data anywhere;

and scores two prompt groups that no method trains on as targets:

* **inside**: the compensation set itself (``star``: "a circle", "a square", ... for the
  other eight shapes; ``striped``: the other styles on a few shapes);
* **outside**: prompts the compensated method never saw: other colours, styles (or bare
  shapes for a style target), backgrounds and superclass words.

Per group: accuracy (share of asked attributes the judge sees as asked) and Frechet distance
in judge-feature space to renders of what the prompts ask; and the target's erasure.

    OMP_NUM_THREADS=2 .venv/bin/python bench/compensation.py --num-images 8
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from harness import RESULTS, Results, Scenario, Variant, erase, load_model, record, runs_on
from unsee.evaluate.judges import ToyWorldJudge
from unsee.evaluate.metrics import frechet_distance
from unsee.evaluate.prompt_sets import EvalPrompt
from unsee.models.bundle import Bundle
from unsee.models.sampling import generate
from unsee.toyworld import vocab
from unsee.toyworld.render import render_dataset


def _p(
    shape: str,
    colour: str | None = None,
    style: str | None = None,
    background: str | None = None,
) -> EvalPrompt:
    """A prompt asking for ``shape`` and the given attributes."""
    expect = {
        k: frozenset({v})
        for k, v in (
            ("shape", shape),
            ("colour", colour),
            ("style", style),
            ("background", background),
        )
        if v
    }
    return EvalPrompt(vocab.compose_caption(shape, colour, style, background), shape, expect)


def _superclass(superclass: str, exclude: str = "") -> EvalPrompt:
    """The superclass word as a prompt: any of its members but ``exclude`` is asked."""
    members = frozenset(m for m in vocab.SUPERCLASSES[superclass] if m != exclude)
    return EvalPrompt(f"a {superclass}", superclass, {"shape": members})


def groups(target: str) -> dict[str, list[EvalPrompt]]:
    """The target's prompts, the compensation set (inside) and the unseen retain prompts."""
    kind = vocab.concept_kind(target)
    shapes = [s for s in vocab.SHAPES if s != target]
    if kind == "shape":
        inside = [_p(s) for s in shapes]
        outside = (
            [_p(shapes[i], colour=c) for i, c in enumerate(vocab.COLOURS)]
            + [_p(shapes[i + 2], style=st) for i, st in enumerate(vocab.STYLES)]
            + [_p(shapes[i + 4], background=b) for i, b in enumerate(vocab.BACKGROUNDS)]
            + [_superclass(sc, exclude=target) for sc in vocab.SUPERCLASSES]
        )
        targets = [_p(target), _p(target, colour="blue"), _p(target, style="dotted")]
    else:  # a style
        others = [st for st in vocab.STYLES if st != target]
        inside = [_p(shapes[i % 9], style=st) for i, st in enumerate(others * 3)]
        outside = (
            [_p(s) for s in vocab.SHAPES[::2]]
            + [_p(vocab.SHAPES[i + 1], colour=c) for i, c in enumerate(vocab.COLOURS)]
            + [_p(vocab.SHAPES[i + 3], background=b) for i, b in enumerate(vocab.BACKGROUNDS)]
            + [_superclass(sc) for sc in vocab.SUPERCLASSES]
        )
        targets = [_p(s, style=target) for s in ("circle", "heart", "cross")]
    return {"target": targets, "inside": inside, "outside": outside}


def _renders(prompts: list[EvalPrompt], n: int) -> np.ndarray:
    """Renders of what each prompt asks, unasked attributes cycled (n per prompt)."""
    attrs = []
    for i, p in enumerate(prompts):
        for k in range(n):
            j = i * n + k
            pick = {
                a: sorted(p.expect[a])[j % len(p.expect[a])]
                if a in p.expect
                else vocab.ATTRIBUTES[a][j % len(vocab.ATTRIBUTES[a])]
                for a in vocab.ATTRIBUTES
            }
            attrs.append(vocab.Attributes(**pick))
    return render_dataset(len(attrs), 7, attrs)[0]


def score(
    bundle: Bundle,
    judge: ToyWorldJudge,
    sets: dict[str, list[EvalPrompt]],
    target_attr: str,
    n: int,
    steps: int,
    seed: int,
    real: dict[str, np.ndarray],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prompts in sets.items():
        texts = [p.prompt for p in prompts for _ in range(n)]
        seeds = [seed + k for _ in prompts for k in range(n)]
        images = generate(bundle, texts, seeds, steps=steps, description=name)
        labels = judge(images).labels
        # target images count only the erased attribute ("a blue star": is it a star?)
        hits = [
            labels[a][i * n + k] in ok
            for i, p in enumerate(prompts)
            for k in range(n)
            for a, ok in p.expect.items()
            if name != "target" or a == target_attr
        ]
        row = {"accuracy": float(np.mean(hits)), "images": len(texts)}
        if name != "target":
            row["fid"] = frechet_distance(judge.features(images), real[name])
        out[name] = row
    out["erasure"] = 1 - out.pop("target")["accuracy"]
    return out


def variants(target: str) -> tuple[Variant, ...]:
    """ESD-x without and with the compensation set as its retain term, and MiM-MU (its
    conditional variant too for a style)."""
    retain = ";".join(p.prompt for p in groups(target)["inside"])
    style = vocab.concept_kind(target) == "style"
    return (
        Variant("esd-x", "esd-x"),
        Variant("esd-x+retain", "esd-x", {"retain": retain}),
        Variant("mim-mu", "mim-mu"),
        *([Variant("mim-mu-cond", "mim-mu", {"variant": "conditional"})] if style else []),
    )


def run_target(
    target: str,
    settings: dict[str, Any],
    work: Path,
    out: Path,
    labels: list[str] | None = None,
) -> None:
    """Score the base model and each variant on ``target``'s groups, recording each row
    into ``compensation.{json,md}`` as it is measured."""
    sets = groups(target)
    attr = "shape" if vocab.concept_kind(target) == "shape" else "style"
    n, steps, seed = settings["num_images"], settings["steps"], settings["seed"]
    judge = ToyWorldJudge()
    real = {g: judge.features(_renders(sets[g], max(n, 4))) for g in ("inside", "outside")}
    meta = {"prompts": {g: [p.prompt for p in ps] for g, ps in sets.items()}}

    def keep(label: str, row: dict[str, Any]) -> None:
        results = record(
            "compensation", settings, target, {label: row}, markdown, meta=meta, out=out
        )
        print(markdown(results), flush=True)

    base = load_model("toyworld")
    keep("base", {**score(base, judge, sets, attr, n, steps, seed, real), "seconds": 0.0})
    for v in variants(target):
        if labels is None or v.label in labels:
            res = erase(Scenario(target, (target,)), v, work, bundle=load_model("toyworld"))
            row = score(res.bundle, judge, sets, attr, n, steps, seed, real)
            keep(v.label, {**row, "seconds": res.card["cost"]["wall_seconds"]})


def markdown(results: Results) -> str:
    """One table per target, from the results file."""
    s = results["settings"]
    lines = [
        "# Compensation test (MiM-MU's claim) on ToyWorld",
        "",
        f"{s['num_images']} images per prompt, DDIM-{s['steps']}, seed {s['seed']}; "
        f"{' / '.join(runs_on(results))}. inside = the compensation set esd-x+retain trains "
        "to keep; "
        "outside = retain prompts no method saw (colours, styles or bare shapes, "
        "backgrounds, superclass words). accuracy = share of asked attributes judged as "
        "asked; FID in judge-feature space against renders of what the prompts ask.",
        "",
    ]
    for target, t in results["tables"].items():
        base = t["rows"]["base"]
        lines += [
            f"## {target}",
            "",
            "| model | erasure | inside acc | inside FID | outside acc | outside FID | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, r in t["rows"].items():
            lines.append(
                f"| {label} | {r['erasure']:.3f} | {r['inside']['accuracy']:.3f} | "
                f"{r['inside']['fid']:.2f} | {r['outside']['accuracy']:.3f} | "
                f"{r['outside']['fid']:.2f} | {r['seconds']:.1f} |"
            )
        lines += [
            "",
            "Drops from the base (points): "
            + "; ".join(
                f"{label}: inside "
                f"{100 * (base['inside']['accuracy'] - r['inside']['accuracy']):.1f}, outside "
                f"{100 * (base['outside']['accuracy'] - r['outside']['accuracy']):.1f}"
                for label, r in t["rows"].items()
                if label != "base"
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", action="append", default=None, help="default: star, striped")
    ap.add_argument(
        "--variants",
        default=None,
        help="comma-separated subset of esd-x, esd-x+retain, mim-mu, mim-mu-cond "
        "(default: all; mim-mu-cond only for styles)",
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench-compensation"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    settings = {"num_images": args.num_images, "steps": args.steps, "seed": args.seed}
    for target in args.target or ["star", "striped"]:
        labels = args.variants.split(",") if args.variants else None
        run_target(target, settings, args.work, args.out, labels)


if __name__ == "__main__":
    main()
