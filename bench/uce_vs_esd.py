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
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compare import fmt, summarise  # bench/ is the script's directory
from unsee.erase.engine import EraseConfig, run_erasure
from unsee.evaluate import EvalSettings, evaluate_models
from unsee.toyworld import vocab

SCENARIOS: tuple[tuple[str, ...], ...] = (("star",), ("star", "circle", "square"))
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    preserve_others: bool = False  # UCE: preserve every shape that is not erased
    on: str | None = None  # label of the variant whose artifact this one starts from
    polish: bool = False  # a short run: --polish-iterations


VARIANTS: tuple[Variant, ...] = (
    Variant("esd-x", "esd-x"),
    Variant("uce", "uce"),
    Variant("uce-preserve", "uce", preserve_others=True),
    Variant("uce+esd-x", "esd-x", on="uce", polish=True),
)


def erase(
    variant: Variant,
    concepts: tuple[str, ...],
    arts: dict[str, Path],
    work: Path,
    model: str,
    polish_iterations: int,
    esd_iterations: int | None,
) -> dict[str, Any]:
    """Run one erasure; returns its artifact path and cost (seconds include ``on`` runs)."""
    params = dict(variant.params)
    if variant.preserve_others:
        params["preserve"] = "; ".join(s for s in vocab.SHAPES if s not in concepts)
    cfg = EraseConfig(
        method=variant.method,
        concepts=list(concepts),
        model=model,
        params=params,
        iterations=polish_iterations
        if variant.polish
        else esd_iterations
        if variant.method == "esd-x"
        else None,
        on=[str(arts[variant.on])] if variant.on else [],
    )
    out = work / "-".join(concepts) / variant.label
    card = run_erasure(cfg, out, overwrite=True).card
    arts[variant.label] = out
    cost = card["cost"]
    return {
        "artifact": str(out),
        "method": variant.method,
        "params": params,
        "iterations": cost["iterations"],
        "on": variant.on,
        "own_seconds": cost["wall_seconds"],
        "fit_seconds": cost.get("fit_seconds"),
        "parameters_changed": cost["parameters_changed"],
    }


def run_scenario(
    concepts: tuple[str, ...],
    settings: EvalSettings,
    work: Path,
    model: str,
    polish_iterations: int,
    esd_iterations: int | None,
) -> dict[str, Any]:
    arts: dict[str, Path] = {}
    rows = {}
    for v in VARIANTS:
        rows[v.label] = erase(v, concepts, arts, work, model, polish_iterations, esd_iterations)
    for row in rows.values():  # seconds of a stacked variant include its base run
        on = row["on"]
        row["seconds"] = row["own_seconds"] + (rows[on]["seconds"] if on else 0.0)
    t0 = time.time()
    results = evaluate_models(model, {lab: [arts[lab]] for lab in rows}, list(concepts), settings)
    for label, res in zip(rows, results, strict=True):
        rows[label].update(summarise(res.scorecard))
    return {
        "concepts": list(concepts),
        "rows": rows,
        "model_fingerprint": results[0].scorecard["model_fingerprint"],
        "evaluation_seconds": round(time.time() - t0, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# UCE vs ESD-x on ToyWorld",
        "",
        f"{s['num_images']} images per prompt, DDIM-{s['steps']}, seed {s['seed']}; "
        f"ESD polish {s['polish_iterations']} iterations; {report['machine']}.",
        "Erasure = 1 - share of target images judged as the concept (mean over concepts); "
        "retain / neighbour accuracy: share of asked attributes judged as asked on "
        "prompts of the other shapes / of the target's superclass siblings; FID in "
        "ToyWorld-judge feature space against renders; overall = harmonic mean of erasure "
        "and retain accuracy; seconds = erasure wall time including the model load "
        "(stacked runs summed; UCE's fit in brackets).",
        "",
    ]
    for sc in report["scenarios"]:
        rows = sc["rows"]
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
        combo = rows["uce+esd-x"]["overall"]
        alone = max(rows["uce"]["overall"], rows["esd-x"]["overall"])
        verdict = "beats" if combo > alone else "does not beat"
        lines += [
            "",
            f"UCE + ESD polish {verdict} the better of UCE and ESD-x alone on the "
            f"overall score ({combo:.3f} vs {alone:.3f}).",
            "",
        ]
    done = {tuple(sc["concepts"]) for sc in report["scenarios"]}
    missing = [", ".join(c) for c in SCENARIOS if c not in done]
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
    settings = EvalSettings(
        num_images=args.num_images,
        steps=args.steps,
        seed=args.seed,
        cache_dir=args.work / "image-cache",
    )
    t0 = time.time()
    report: dict[str, Any] = {
        "model": args.model,
        "settings": {
            "num_images": args.num_images,
            "steps": args.steps,
            "seed": args.seed,
            "polish_iterations": args.polish_iterations,
            "esd_iterations": args.esd_iterations,
        },
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "scenarios": [],
    }
    todo = (
        [tuple(c.strip() for c in sc.split(",")) for sc in args.scenario]
        if args.scenario
        else list(SCENARIOS)
    )
    out_json = args.out / "uce_vs_esd.json"
    if out_json.exists():  # keep the other scenarios of an earlier run with the same settings
        old = json.loads(out_json.read_text())
        if (old.get("model"), old.get("settings")) == (report["model"], report["settings"]):
            report["scenarios"] = [
                sc for sc in old["scenarios"] if tuple(sc["concepts"]) not in todo
            ]
    args.out.mkdir(parents=True, exist_ok=True)
    for concepts in todo:  # the tables are rewritten after each scenario
        report["scenarios"].append(
            run_scenario(
                concepts,
                settings,
                args.work,
                args.model,
                args.polish_iterations,
                args.esd_iterations,
            )
        )
        report["scenarios"].sort(key=lambda sc: len(sc["concepts"]))
        report["wall_seconds"] = round(time.time() - t0, 1)
        out_json.write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "uce_vs_esd.md").write_text(markdown(report))
        print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
