"""Time per iteration and per concept of ESD variants (not a test: numbers go to a table).

    python bench/esd_speed.py [--model toyworld] [--iterations 20] [--methods esd-x,esd-u]

Writes bench/results/esd_speed.{md,json} with the machine noted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import compare
from unsee.erase.engine import EraseConfig, run_erasure
from unsee.models.bundle import load_bundle
from unsee.models.fingerprint import library_versions

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--methods", default="esd-x,esd-u,esd-x-strict")
    ap.add_argument("--concept", default="star")
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        bundle = load_bundle(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            res = run_erasure(
                EraseConfig(
                    method=method,
                    concepts=[args.concept],
                    model=args.model,
                    iterations=args.iterations,
                ),
                Path(tmp) / "art",
                bundle=bundle,
            )
            wall = time.time() - t0
        cost = res.card["cost"]
        rows.append(
            {
                "method": method,
                "iterations": cost["iterations"],
                "batch_size": res.card["hyperparameters"]["batch_size"],
                "seconds_per_iteration": round(cost["wall_seconds"] / cost["iterations"], 3),
                "seconds_per_concept": round(wall, 1),
                "peak_rss_mb": cost["peak_rss_mb"],
                "parameters_changed": cost["parameters_changed"],
            }
        )
    meta = {"machine": compare.machine(), "versions": library_versions(), "model": args.model}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "esd_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"ESD speed on `{args.model}` ({meta['machine']}; torch {torch.__version__}).",
        "",
        "| method | iterations | batch | s / iteration | s / concept (incl. load) | "
        "peak RSS MB | weights changed |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['iterations']} | {r['batch_size']} | "
        f"{r['seconds_per_iteration']} | {r['seconds_per_concept']} | {r['peak_rss_mb']} | "
        f"{r['parameters_changed']:,} |"
        for r in rows
    ]
    (RESULTS / "esd_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
