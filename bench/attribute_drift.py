"""What an erasure does to the attributes a prompt leaves open (why FID moves when retain
accuracy does not).

The scorecard's retain accuracy checks the attributes a prompt *asks for*; the Frechet
distance also sees the ones it leaves to the model. This draws "a {shape}" for retained
shapes with the base model and with each erased artifact, and tabulates the judge's shape
accuracy and the distribution of the unasked style, colour and background.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attribute_drift.py \\
        --artifact sculpt=runs/sculpt-seq --artifact frozen=runs/sculpt-frozen

Writes ``bench/results/attribute_drift.{md,json}``.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

import compare
from unsee.artifacts import apply_artifacts
from unsee.io import atomic_write
from unsee.models.bundle import load_bundle
from unsee.models.sampling import generate
from unsee.toyworld.judge import load_judge, predict
from unsee.toyworld.vocab import BACKGROUNDS, COLOURS, STYLES

RESULTS = Path(__file__).resolve().parent / "results"
OPEN = {"style": STYLES, "colour": COLOURS, "background": BACKGROUNDS}


def measure(bundle, judge, shapes: list[str], per_shape: int, steps: int) -> dict:
    prompts = [f"a {s}" for s in shapes for _ in range(per_shape)]
    seeds = [k for _ in shapes for k in range(per_shape)]
    pred = predict(judge, generate(bundle, prompts, seeds, steps=steps))
    out = {
        "shape_accuracy": float(
            np.mean(
                [p["label"] == q.split()[-1] for p, q in zip(pred["shape"], prompts, strict=True)]
            )
        )
    }
    for attr, values in OPEN.items():
        counts = collections.Counter(p["label"] for p in pred[attr])
        out[attr] = {v: counts.get(v, 0) / len(prompts) for v in values}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="an erased artifact (repeatable)",
    )
    ap.add_argument(
        "--shapes",
        default="square,triangle,circle,crescent,cross",
        help="retained shapes to prompt (default: those the sequential scenario keeps)",
    )
    ap.add_argument("--per-shape", type=int, default=24)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    arts = dict(a.split("=", 1) for a in args.artifact)
    shapes = args.shapes.split(",")
    judge = load_judge()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = {}
    for label, path in {"base": None, **arts}.items():
        bundle = load_bundle("toyworld", device=device)
        if path is not None:
            apply_artifacts(bundle, [Path(path)])
        rows[label] = measure(bundle, judge, shapes, args.per_shape, args.steps)
        print(label, rows[label], flush=True)
    report = {
        "shapes": shapes,
        "per_shape": args.per_shape,
        "steps": args.steps,
        "artifacts": arts,
        "machine": compare.machine(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(args.out / "attribute_drift.json", lambda tmp: tmp.write_text(text))
    cols = [(a, v) for a, vs in OPEN.items() for v in vs]
    lines = [
        "# Unasked attributes after erasure",
        "",
        f'"a {{shape}}" for {", ".join(shapes)}, {args.per_shape} seeds each, '
        f"DDIM-{args.steps}; shares of all {len(shapes) * args.per_shape} images. "
        "Artifacts: " + ", ".join(f"{k} = `{v}`" for k, v in arts.items()) + ".",
        "",
        "| model | shape acc. | " + " | ".join(v for _, v in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['shape_accuracy']:.3f} | "
            + " | ".join(f"{r[a][v]:.2f}" for a, v in cols)
            + " |"
        )
    table = "\n".join(lines) + "\n"
    atomic_write(args.out / "attribute_drift.md", lambda tmp: tmp.write_text(table))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
