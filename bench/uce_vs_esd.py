"""UCE against ESD-x on ToyWorld, in one run: erasure, retain accuracy, FID and seconds.

Scenarios: ``star`` alone, and three shapes at once (``star``, ``circle``, ``square``).
Variants per scenario (every erasure with seed 0 on the bundled model):

* ``esd-x``: ESD on cross-attention with its ToyWorld defaults;
* ``uce``: UCE with its defaults (guide "", no preserve list);
* ``uce-preserve``: UCE preserving the other six shapes;
* ``uce+esd-x``: a short ESD-x polish (``--polish-iterations``) started ``on`` the ``uce``
  artifact; its seconds are the sum of both runs.

Every model is scored by :func:`unsee.evaluate.evaluate_models` against the same base
images (same prompts and seeds): erasure = 1 - share of target images the judge sees as the
concept; retain accuracy on the other shapes' prompts (neighbours: siblings in the target's
superclass); Frechet distance in judge-feature space to renders of what the retain prompts
ask. Writes ``bench/results/uce_vs_esd.{md,json}``.

Run (needs the trained ToyWorld model and judge; one scenario at a time with ``--scenario``,
e.g. ``--scenario star,circle,square``, the others' results in ``--out`` being kept):
``OMP_NUM_THREADS=2 .venv/bin/python bench/uce_vs_esd.py [--num-images 8] [--steps 50]``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    SCENARIOS,
    Results,
    Scenario,
    Variant,
    fmt,
    record,
    run_variant,
    runs_on,
)
from unsee.evaluate import EvalSettings
from unsee.toyworld import vocab

#: the concepts erased together, one table each (the comparison's star and three scenarios)
CONCEPTS: tuple[tuple[str, ...], ...] = (SCENARIOS["star"].concepts, SCENARIOS["three"].concepts)


def variants(
    concepts: tuple[str, ...], polish_iterations: int, esd_iterations: int | None
) -> tuple[Variant, ...]:
    """The four variants; ``uce+esd-x`` starts from ``uce``'s artifact, so runs after it."""
    others = "; ".join(s for s in vocab.SHAPES if s not in concepts)
    return (
        Variant("esd-x", "esd-x", iterations=esd_iterations),
        Variant("uce", "uce"),
        Variant("uce-preserve", "uce", {"preserve": others}),
        Variant("uce+esd-x", "esd-x", iterations=polish_iterations, on="uce"),
    )


def markdown(results: Results) -> str:
    """One table per set of concepts, from the results file."""
    s = results["settings"]
    lines = [
        "# UCE vs ESD-x on ToyWorld",
        "",
        f"{s['num_images']} images per prompt, DDIM-{s['steps']}, seed {s['seed']}; "
        f"ESD polish {s['polish_iterations']} iterations; {' / '.join(runs_on(results))}.",
        "Erasure = 1 - share of target images judged as the concept (mean over concepts); "
        "retain / neighbour accuracy: share of asked attributes judged as asked on "
        "prompts of the other shapes / of the target's superclass siblings; FID in "
        "ToyWorld-judge feature space against renders; overall = harmonic mean of erasure "
        "and retain accuracy; seconds = erasure wall time including the model load "
        "(stacked runs summed; UCE's fit in brackets).",
        "",
    ]
    tables = sorted(results["tables"].values(), key=lambda t: len(t["meta"]["concepts"]))
    for t in tables:
        sc, rows = t["meta"], t["rows"]
        first = next(iter(rows.values()))
        lines += [
            f"## erase {', '.join(sc['concepts'])}",
            "",
            f"Base model (fingerprint `{sc['model_fingerprint']}`): erasure "
            f"{fmt(first['erasure_base'])}, retain "
            f"{fmt(first['retain_base'])}, neighbour {fmt(first['neighbour_base'])}, FID "
            f"{fmt(first['fid_base'], 2)}. Images per model: {first['target_images']} per "
            f"target concept, {first['retain_images']} retain; one target image moves "
            f"erasure by {1 / first['target_images']:.3f}.",
            "",
            "| variant | erasure | paraphrase rate | retain acc | neighbour acc | FID | "
            "overall | seconds | weights changed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            secs = f"{r['seconds']:.1f}" + (
                f" (fit {r['fit_seconds']:.2f})" if r["fit_seconds"] is not None else ""
            )
            lines.append(
                f"| {label} | {fmt(r['erasure'])} | {fmt(r['paraphrase_rate'])} | "
                f"{fmt(r['retain_accuracy'])} | {fmt(r['neighbour_accuracy'])} | "
                f"{fmt(r['fid'], 2)} | {fmt(r['overall'])} | {secs} | "
                f"{r['parameters_changed']:,} |"
            )
        if {"uce", "esd-x", "uce+esd-x"} <= rows.keys():  # the scenario's run is complete
            combo = rows["uce+esd-x"]["overall"]
            alone = max(rows["uce"]["overall"], rows["esd-x"]["overall"])
            verdict = "beats" if combo > alone else "does not beat"
            lines += [
                "",
                f"UCE + ESD polish {verdict} the better of UCE and ESD-x alone on the "
                f"overall score ({combo:.3f} vs {alone:.3f}).",
            ]
        lines.append("")
    done = {tuple(t["meta"]["concepts"]) for t in tables}
    missing = [", ".join(c) for c in CONCEPTS if c not in done]
    if missing:
        lines += [f"Not measured in this run: {'; '.join(missing)}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=8, help="images per prompt")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="toyworld", help="a ToyWorld-vocabulary model")
    ap.add_argument("--polish-iterations", type=int, default=30)
    ap.add_argument(
        "--esd-iterations",
        type=int,
        default=None,
        help="ESD-x iterations (default: its ToyWorld default)",
    )
    ap.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="comma-separated concepts to erase together (repeatable; default: "
        "every scenario). Results of the other scenarios already in --out "
        "with the same settings are kept.",
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench-uce-vs-esd"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    eval_settings = EvalSettings(
        num_images=args.num_images,
        steps=args.steps,
        seed=args.seed,
        cache_dir=args.work / "image-cache",
    )
    settings = {
        "model": args.model,
        "num_images": args.num_images,
        "steps": args.steps,
        "seed": args.seed,
        "polish_iterations": args.polish_iterations,
        "esd_iterations": args.esd_iterations,
    }
    todo = (
        [tuple(c.strip() for c in sc.split(",")) for sc in args.scenario]
        if args.scenario
        else list(CONCEPTS)
    )
    for concepts in todo:
        scenario = Scenario("-".join(concepts), concepts, model=args.model)
        rows: dict[str, dict[str, Any]] = {}
        for v in variants(concepts, args.polish_iterations, args.esd_iterations):
            run = run_variant(scenario, v, eval_settings, args.work)
            # a stacked variant's seconds include the run it starts from
            own = run.row["seconds"]
            rows[v.label] = row = {
                **run.row,
                "on": v.on,
                "own_seconds": own,
                "seconds": own + (rows[v.on]["seconds"] if v.on else 0.0),
            }
            results = record(
                "uce_vs_esd",
                settings,
                scenario.name,
                {v.label: row},
                markdown,
                meta={"concepts": concepts, "model_fingerprint": run.fingerprint},
                out=args.out,
            )
        print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
