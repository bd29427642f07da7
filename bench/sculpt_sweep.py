"""Sculpt settings between "erases" and "keeps the model" on the sequential scenario (issue 5).

Each setting erases star, heart, hexagon, arrow in sequence with ``bench/compare.py``'s
``run_variant`` (paraphrase probe only, no attack), then draws "a {shape}" for the five
kept shapes (``bench/attribute_drift.py``'s measure, 24 seeds). One setting per process,
so several can share a GPU:

    python bench/sculpt_sweep.py frozen-lr1e-3-160 [--out bench/results]

Writes ``sculpt_sweep.json`` (merged, one entry per setting) and ``sculpt_sweep.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import attribute_drift
import compare
from unsee.artifacts import apply_artifacts
from unsee.evaluate import EvalSettings
from unsee.io import atomic_write
from unsee.models.bundle import load_bundle
from unsee.toyworld.judge import load_judge

#: label -> (sculpt parameters, iterations per round, lr)
GRID: dict[str, tuple[dict, int, float]] = {
    "frozen-lr1e-3-160": ({"target": "frozen"}, 160, 1e-3),
    "frozen-lr2e-3-80": ({"target": "frozen"}, 80, 2e-3),
    "frozen-lr2e-3-160": ({"target": "frozen"}, 160, 2e-3),
    "frozen-lr1e-3-240": ({"target": "frozen"}, 240, 1e-3),
    "current-lr5e-4-160": ({}, 160, 5e-4),
    "current-align1-160": ({"align_weight": 1.0}, 160, 1e-3),
    "frozen-nomask-lr1e-3-160": ({"target": "frozen", "mask": "none"}, 160, 1e-3),
    "frozen-kd1-lr1e-3-160": ({"target": "frozen", "kd_weight": 1.0}, 160, 1e-3),
    "current-lr1e-3-80": ({}, 80, 1e-3),
    "current-align0-80": ({"align_weight": 0.0}, 80, 1e-3),
    "current-align0-lr5e-4-160": ({"align_weight": 0.0}, 160, 5e-4),
    "current-n64-80": ({"forget_images": 64}, 80, 1e-3),
    "current-n64-240": ({"forget_images": 64}, 240, 1e-3),
    "current-n100-160": ({"forget_images": 100}, 160, 1e-3),
    "frozen-n64-160": ({"target": "frozen", "forget_images": 64}, 160, 1e-3),
    "current-g1.5-80": ({"set_guidance": 1.5}, 80, 1e-3),
    "g1.5-lr1e-3-120": ({"set_guidance": 1.5}, 120, 1e-3),
    "g1.5-lr1e-3-160": ({"set_guidance": 1.5}, 160, 1e-3),
    "g1.5-lr2e-3-80": ({"set_guidance": 1.5}, 80, 2e-3),
    "g1-lr1e-3-160": ({"set_guidance": 1.0}, 160, 1e-3),
    "g2-lr1e-3-80": ({"set_guidance": 2.0}, 80, 1e-3),
    "g2-lr1e-3-120": ({"set_guidance": 2.0}, 120, 1e-3),
    "g1.5-kd1-lr1e-3-160": ({"set_guidance": 1.5, "kd_weight": 1.0}, 160, 1e-3),
    "g1.5-n64-lr1e-3-240": ({"set_guidance": 1.5, "forget_images": 64}, 240, 1e-3),
    "g1.5-lr1e-3-200": ({"set_guidance": 1.5}, 200, 1e-3),
    "g1.5-lr1e-3-240": ({"set_guidance": 1.5}, 240, 1e-3),
    "g1.5-lr1.5e-3-120": ({"set_guidance": 1.5}, 120, 1.5e-3),
    "g1.5-lr1.5e-3-160": ({"set_guidance": 1.5}, 160, 1.5e-3),
    "g1.75-lr1e-3-120": ({"set_guidance": 1.75}, 120, 1e-3),
    "g1.75-lr1e-3-160": ({"set_guidance": 1.75}, 160, 1e-3),
    "g1.5-align0.5-lr1e-3-160": ({"set_guidance": 1.5, "align_weight": 0.5}, 160, 1e-3),
    "g1.5-nomask-lr1e-3-160": ({"set_guidance": 1.5, "mask": "none"}, 160, 1e-3),
    "g1.5-anchor3-lr1e-3-160": ({"set_guidance": 1.5, "anchor_guidance": 3.0}, 160, 1e-3),
    "g3-anchor1.5-lr1e-3-160": ({"set_guidance": 3.0, "anchor_guidance": 1.5}, 160, 1e-3),
    "align0.1-lr1e-3-80": ({"align_weight": 0.1}, 80, 1e-3),
    "align0.1-lr1e-3-160": ({"align_weight": 0.1}, 160, 1e-3),
}
KEPT = ["square", "triangle", "circle", "crescent", "cross"]


def markdown(rows: dict[str, dict]) -> str:
    lines = [
        "# Sculpt settings on the sequential scenario (star, heart, hexagon, arrow)",
        "",
        "4 images per prompt, DDIM 25, seed 0, paraphrase probe only; shape acc. = "
        '"a {shape}" for the five kept shapes, 24 seeds each (base 0.983); base FID '
        "347, measured on the benchmark's 20 retain images (its seed noise: "
        "`fid_noise.md`). Command: `python bench/sculpt_sweep.py LABEL`; machines: "
        + " / ".join(sorted({r["run_on"] for r in rows.values()}))
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
    ap.add_argument("--out", type=Path, default=compare.RESULTS)
    args = ap.parse_args()
    params, iterations, lr = GRID[args.label]
    variant = compare.Variant(args.label, "sculpt", params, iterations=iterations, lr=lr)
    work = args.work / args.label
    settings = EvalSettings(
        num_images=4, steps=25, seed=0, cache_dir=work / "cache", attacks=("paraphrase",)
    )
    _, row = compare.run_variant("sequential", variant, settings, work, "toyworld")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_bundle("toyworld", device=device)
    apply_artifacts(bundle, [work / "sequential" / args.label])
    row["drift"] = attribute_drift.measure(bundle, load_judge(), KEPT, 24, 25)
    entry = {
        **row,
        "params": params,
        "iterations_per_round": iterations,
        "lr": lr,
        "run_on": f"{platform.machine()}, "
        + (torch.cuda.get_device_name(0) if device == "cuda" else "CPU"),
    }
    with compare.locked(args.out):
        path = args.out / "sculpt_sweep.json"
        rows = json.loads(path.read_text()) if path.exists() else {}
        # a CPU row keeps its own key: sampling on a GPU is not bit-identical to the CPU's
        rows[args.label + ("" if device == "cuda" else "@cpu")] = entry
        text = json.dumps(rows, indent=1) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text))
        atomic_write(args.out / "sculpt_sweep.md", lambda tmp: tmp.write_text(markdown(rows)))
    print(markdown({args.label: entry}), flush=True)


if __name__ == "__main__":
    main()
