"""Sculpting Memory's variants in sequence, with native and epsilon-space losses (issue 19).

Each variant of :data:`GRID` erases star, heart, hexagon, arrow one round each at
sculpt's ToyWorld budget (80 iterations a round, lr 1e-3) and is scored with
``harness.run_variant`` (paraphrase probe only, no attack) and ``harness.attribute_drift``
(5 kept shapes, 24 seeds each): erasure, retain, FD and KID in judge features and kept-shape
accuracy side by side, each rate with its Wilson interval. The variants are the paper's
method as unsee runs it (``sculpt``: dynamic mask, KD as described), the release's KD as
it runs (``kd=released``: the teacher term is computed but inert), no KD, the static
warm-up mask, and no mask; each once with the default native loss and once with the
epsilon-space loss every method used before issue 19 (``@eps``), which on this
v-prediction model weights the loss by alpha-bar (no gradient at the noisiest step). One
variant per process, so runs can share a machine:

    OMP_NUM_THREADS=1 .venv/bin/python bench/sculpt_variants.py sculpt [--out bench/results]

Writes ``sculpt_variants.{json,md}`` (merged, one row per variant).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from harness import (
    RESULTS,
    Results,
    Variant,
    fmt,
    rate_cell,
    record,
    runs_on,
)
from sculpt_sweep import KEPT, SETTINGS, sequential_with_drift

_NATIVE = (
    Variant("sculpt", "sculpt"),
    Variant("sculpt-kd-released", "sculpt", {"kd": "released"}),
    Variant("sculpt-nokd", "sculpt", {"kd": "off"}),
    Variant("sculpt-static", "sculpt", {"mask": "static"}),
    Variant("sculpt-nomask", "sculpt", {"mask": "none"}),
)
#: every variant with the native loss, then the same with the epsilon-space loss
GRID: dict[str, Variant] = {
    v.label: v
    for v in (
        *_NATIVE,
        *(dataclasses.replace(v, label=v.label + "@eps", loss_space="epsilon") for v in _NATIVE),
    )
}


def markdown(results: Results) -> str:
    """The variants table, from its results file."""
    s = results["settings"]
    rows = results["tables"]["variants"]["rows"]
    first = next(iter(rows.values()))
    n_kept = len(KEPT) * s["drift_per_shape"]
    lines = [
        "# Sculpting Memory's variants in sequence (star, heart, hexagon, arrow)",
        "",
        f"Sculpt's ToyWorld budget (80 iterations a round, lr 1e-3), one round per shape; "
        f"{s['num_images']} images per prompt, DDIM {s['steps']}, seed {s['seed']}, "
        "paraphrase probe only. `@eps` = the same variant with the epsilon-space loss of "
        "before issue 19 (`loss_space=epsilon`). Rates: value [95 % Wilson interval]; erasure "
        f"over n={first['erasure_images']} target images, retain over "
        f"n={first['retain_pairs']} (image, attribute) pairs, kept-shape accuracy = "
        f'"a {{shape}}" for the five kept shapes ({", ".join(KEPT)}), '
        f"{s['drift_per_shape']} seeds each (n={n_kept}); "
        f"{first.get('fd_name') or 'FD'} and KID (x 1e-3) over "
        f"{first.get('fd_images') or first['retain_images']} retain images against renders. "
        f"Base model: retain {fmt(first['retain_base'])}, FD {fmt(first['fid_base'], 0)}. "
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/sculpt_variants.py LABEL`; "
        "machines: " + " / ".join(sorted(runs_on(results))) + ".",
        "",
        "| variant | loss | erasure | per shape (star, heart, hexagon, arrow) | retain | "
        "kept-shape acc. | FD | KID x1e-3 | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        per = ", ".join(f"{v:.2f}" for v in r["per_concept_erasure"].values())
        kid = (
            f"{1000 * r['kid']:.0f} [{1000 * r['kid_ci95'][0]:.0f}, {1000 * r['kid_ci95'][1]:.0f}]"
        )
        lines.append(
            f"| {label} | {r['loss_space']} | "
            f"{rate_cell(r['erasure'], r['erasure_images'])} | {per} | "
            f"{rate_cell(r['retain_accuracy'], r['retain_pairs'])} | "
            f"{rate_cell(r['drift']['shape_accuracy'], n_kept)} | {r['fid']:.0f} | {kid} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("label", choices=list(GRID))
    ap.add_argument("--work", type=Path, default=Path("runs/sculpt-variants"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--iterations", type=int, default=None, help="per round (reduced runs)")
    args = ap.parse_args()
    variant = GRID[args.label]
    settings = {**SETTINGS, "iterations": args.iterations}
    # the base model's images are shared by every variant's run
    run, drift = sequential_with_drift(
        variant, args.work / "image-cache", args.work, args.iterations
    )
    row = {**run.row, "drift": drift, "loss_space": variant.loss_space}
    results = record(
        "sculpt_variants", settings, "variants", {args.label: row}, markdown, out=args.out
    )
    print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
