"""Sculpt settings between "erases" and "keeps the model" on the sequential scenario (issue 5).

Each setting (a harness ``Variant`` of ``GRID``) erases star, heart, hexagon, arrow in
sequence with ``harness.run_variant`` (paraphrase probe only, no attack), then draws
"a {shape}" for the five kept shapes (``harness.attribute_drift``, 24 seeds). One setting
per process, so several can share a GPU:

    python bench/sculpt_sweep.py frozen-lr1e-3-160 [--out bench/results]

Writes ``sculpt_sweep.json`` (merged, one entry per setting) and ``sculpt_sweep.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from harness import (
    RESULTS,
    SCENARIOS,
    Results,
    Run,
    Variant,
    attribute_drift,
    load_model,
    record,
    run_variant,
    runs_on,
)
from unsee.evaluate import EvalSettings


def _sculpt(label: str, iterations: int, lr: float, **params: Any) -> Variant:
    return Variant(label, "sculpt", params, iterations=iterations, lr=lr)


#: the settings: iterations per round, lr, sculpt parameters
GRID: dict[str, Variant] = {
    v.label: v
    for v in (
        _sculpt("frozen-lr1e-3-160", 160, 1e-3, target="frozen"),
        _sculpt("frozen-lr2e-3-80", 80, 2e-3, target="frozen"),
        _sculpt("frozen-lr2e-3-160", 160, 2e-3, target="frozen"),
        _sculpt("frozen-lr1e-3-240", 240, 1e-3, target="frozen"),
        _sculpt("current-lr5e-4-160", 160, 5e-4),
        _sculpt("current-align1-160", 160, 1e-3, align_weight=1.0),
        _sculpt("frozen-nomask-lr1e-3-160", 160, 1e-3, target="frozen", mask="none"),
        _sculpt("frozen-kd1-lr1e-3-160", 160, 1e-3, target="frozen", kd_weight=1.0),
        _sculpt("current-lr1e-3-80", 80, 1e-3),
        _sculpt("current-align0-80", 80, 1e-3, align_weight=0.0),
        _sculpt("current-align0-lr5e-4-160", 160, 5e-4, align_weight=0.0),
        _sculpt("current-n64-80", 80, 1e-3, forget_images=64),
        _sculpt("current-n64-240", 240, 1e-3, forget_images=64),
        _sculpt("current-n100-160", 160, 1e-3, forget_images=100),
        _sculpt("frozen-n64-160", 160, 1e-3, target="frozen", forget_images=64),
        _sculpt("current-g1.5-80", 80, 1e-3, set_guidance=1.5),
        _sculpt("g1.5-lr1e-3-120", 120, 1e-3, set_guidance=1.5),
        _sculpt("g1.5-lr1e-3-160", 160, 1e-3, set_guidance=1.5),
        _sculpt("g1.5-lr2e-3-80", 80, 2e-3, set_guidance=1.5),
        _sculpt("g1-lr1e-3-160", 160, 1e-3, set_guidance=1.0),
        _sculpt("g2-lr1e-3-80", 80, 1e-3, set_guidance=2.0),
        _sculpt("g2-lr1e-3-120", 120, 1e-3, set_guidance=2.0),
        _sculpt("g1.5-kd1-lr1e-3-160", 160, 1e-3, set_guidance=1.5, kd_weight=1.0),
        _sculpt("g1.5-n64-lr1e-3-240", 240, 1e-3, set_guidance=1.5, forget_images=64),
        _sculpt("g1.5-lr1e-3-200", 200, 1e-3, set_guidance=1.5),
        _sculpt("g1.5-lr1e-3-240", 240, 1e-3, set_guidance=1.5),
        _sculpt("g1.5-lr1.5e-3-120", 120, 1.5e-3, set_guidance=1.5),
        _sculpt("g1.5-lr1.5e-3-160", 160, 1.5e-3, set_guidance=1.5),
        _sculpt("g1.75-lr1e-3-120", 120, 1e-3, set_guidance=1.75),
        _sculpt("g1.75-lr1e-3-160", 160, 1e-3, set_guidance=1.75),
        _sculpt("g1.5-align0.5-lr1e-3-160", 160, 1e-3, set_guidance=1.5, align_weight=0.5),
        _sculpt("g1.5-nomask-lr1e-3-160", 160, 1e-3, set_guidance=1.5, mask="none"),
        _sculpt("g1.5-anchor3-lr1e-3-160", 160, 1e-3, set_guidance=1.5, anchor_guidance=3.0),
        _sculpt("g3-anchor1.5-lr1e-3-160", 160, 1e-3, set_guidance=3.0, anchor_guidance=1.5),
        _sculpt("align0.1-lr1e-3-80", 80, 1e-3, align_weight=0.1),
        _sculpt("align0.1-lr1e-3-160", 160, 1e-3, align_weight=0.1),
    )
}
KEPT = ["square", "triangle", "circle", "crescent", "cross"]


#: what every setting is scored with: images per prompt, DDIM steps, seed; seeds per
#: kept shape for the drift
SETTINGS = {"num_images": 4, "steps": 25, "seed": 0, "drift_per_shape": 24}


def sequential_with_drift(
    variant: Variant, cache: Path, work: Path, iterations: int | None = None
) -> tuple[Run, dict[str, Any]]:
    """Erase the sequential scenario with ``variant`` and score it with :data:`SETTINGS`
    (paraphrase probe only; base images cached in ``cache``), then draw the kept shapes:
    the run and :func:`harness.attribute_drift`'s numbers."""
    eval_settings = EvalSettings(
        num_images=SETTINGS["num_images"],
        steps=SETTINGS["steps"],
        seed=SETTINGS["seed"],
        cache_dir=cache,
        attacks=("paraphrase",),
    )
    run = run_variant(SCENARIOS["sequential"], variant, eval_settings, work, iterations)
    drift = attribute_drift(
        load_model("toyworld", [run.artifact]), KEPT, SETTINGS["drift_per_shape"], SETTINGS["steps"]
    )
    return run, drift


def markdown(results: Results) -> str:
    """The sweep table, from its results file."""
    s = results["settings"]
    rows = results["tables"]["sweep"]["rows"]
    lines = [
        "# Sculpt settings on the sequential scenario (star, heart, hexagon, arrow)",
        "",
        f"{s['num_images']} images per prompt, DDIM {s['steps']}, seed {s['seed']}, "
        'paraphrase probe only; shape acc. = "a {shape}" for the five kept shapes, '
        f"{s['drift_per_shape']} seeds each (base 0.983); base FID "
        "347, measured on the benchmark's 20 retain images (its seed noise: "
        "`fid_noise.md`). Command: `python bench/sculpt_sweep.py LABEL`; machines: "
        + " / ".join(sorted(runs_on(results)))
        + " (labels ending in `@cpu` ran on the CPU).",
        "",
        "| setting | params | it/round | lr | erasure (star, heart, hexagon, arrow) | "
        "retain | FID | shape acc. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        per = ", ".join(f"{v:.2f}" for v in r["per_concept_erasure"].values())
        lines.append(
            f"| {label} | {r['params']} | {r['iterations_per_round']} | {r['lr']:g} | "
            f"{r['erasure']:.3f} ({per}) | {r['retain_accuracy']:.3f} | "
            f"{r['fid']:.0f} | {r['drift']['shape_accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("label", choices=list(GRID))
    ap.add_argument("--work", type=Path, default=Path("runs/sculpt-sweep"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    variant = GRID[args.label]
    work = args.work / args.label
    run, drift = sequential_with_drift(variant, work / "cache", work)
    row = {
        **run.row,
        "drift": drift,
        "params": dict(variant.params),
        "iterations_per_round": variant.iterations,
        "lr": variant.lr,
    }
    # a CPU row keeps its own key: sampling on a GPU is not bit-identical to the CPU's
    label = args.label + ("" if torch.cuda.is_available() else "@cpu")
    results = record("sculpt_sweep", SETTINGS, "sweep", {label: row}, markdown, out=args.out)
    print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
