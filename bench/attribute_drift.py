"""What an erasure does to the attributes a prompt leaves open (why FID moves when retain
accuracy does not).

The scorecard's retain accuracy checks the attributes a prompt *asks for*; the Frechet
distance also sees the ones it leaves to the model. This draws "a {shape}" for retained
shapes with the base model and with each erased artifact (``harness.attribute_drift``), and
tabulates the judge's shape accuracy and the distribution of the unasked style, colour and
background.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attribute_drift.py \\
        --artifact sculpt=runs/sculpt-seq --artifact frozen=runs/sculpt-frozen

Writes ``bench/results/attribute_drift.{md,json}`` (rows merge by label).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import RESULTS, UNASKED, Results, attribute_drift, load_model, record, runs_on


def markdown(results: Results) -> str:
    """The drift table, from its results file."""
    s = results["settings"]
    rows = results["tables"]["drift"]["rows"]
    arts = {label: r["artifact"] for label, r in rows.items() if r.get("artifact")}
    cols = [(a, v) for a, vs in UNASKED.items() for v in vs]
    lines = [
        "# Unasked attributes after erasure",
        "",
        f'"a {{shape}}" for {", ".join(s["shapes"])}, {s["per_shape"]} seeds each, '
        f"DDIM-{s['steps']}; shares of all {len(s['shapes']) * s['per_shape']} images. "
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
    lines += ["", "Run on " + " / ".join(runs_on(results)) + "."]
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
    settings = {"shapes": args.shapes.split(","), "per_shape": args.per_shape, "steps": args.steps}
    for label, path in {"base": None, **arts}.items():
        row = attribute_drift(
            load_model("toyworld", [path] if path else []),
            settings["shapes"],
            args.per_shape,
            args.steps,
        )
        print(label, row, flush=True)
        results = record(
            "attribute_drift",
            settings,
            "drift",
            {label: {**row, "artifact": path}},
            markdown,
            out=args.out,
        )
    print(markdown(results))


if __name__ == "__main__":
    main()
