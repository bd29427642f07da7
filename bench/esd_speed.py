"""Time per iteration and per concept of ESD variants (not a test: numbers go to a table).

    python bench/esd_speed.py [--model toyworld] [--iterations 20] [--methods esd-x,esd-u]

Writes bench/results/esd_speed.{md,json} (rows merge by method), the machine noted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import RESULTS, Results, Scenario, Variant, erase, load_model, record, runs_on


def markdown(results: Results) -> str:
    """The speed table, from its results file."""
    rows = results["tables"]["speed"]["rows"]
    lines = [
        f"ESD speed on `{results['settings']['model']}` ({' / '.join(runs_on(results))}).",
        "",
        "| method | iterations | batch | s / iteration | s / concept (incl. load) | "
        "peak RSS MB | weights changed |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {method} | {r['iterations']} | {r['batch_size']} | "
        f"{r['seconds_per_iteration']} | {r['seconds_per_concept']} | {r['peak_rss_mb']} | "
        f"{r['parameters_changed']:,} |"
        for method, r in rows.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--methods", default="esd-x,esd-u,esd-x-strict")
    ap.add_argument("--concept", default="star")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    scenario = Scenario(args.concept, (args.concept,), model=args.model)
    settings = {"model": args.model, "concept": args.concept, "iterations": args.iterations}
    for method in args.methods.split(","):
        bundle = load_model(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            res = erase(scenario, Variant(method, method), Path(tmp), args.iterations, bundle)
            wall = time.time() - t0
        cost = res.card["cost"]
        row = {
            "iterations": cost["iterations"],
            "batch_size": res.card["hyperparameters"]["batch_size"],
            "seconds_per_iteration": round(cost["wall_seconds"] / cost["iterations"], 3),
            "seconds_per_concept": round(wall, 1),
            "peak_rss_mb": cost["peak_rss_mb"],
            "parameters_changed": cost["parameters_changed"],
        }
        results = record("esd_speed", settings, "speed", {method: row}, markdown, out=args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
