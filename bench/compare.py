"""Every method, side by side on ToyWorld scenarios, in one run with the same seeds.

Scenarios (``--scenario``): ``star`` (single object), ``striped`` (style), ``three``
(star, circle and square at once), ``sequential`` (star, heart, hexagon, arrow: four shapes
of different superclasses, one round each; issue 5). Variants (``--variants``, default every
one whose method exists):

* ``esd-x``, ``esd-u``: ESD with its ToyWorld defaults (120 iterations); ``esd-x@25``:
  ESD-x drawing its x_t from 25-step instead of 50-step trajectories (the demo's setting);
* ``uce``: closed form;
* ``kscu``: key steps with its task preset and trajectory reuse; ``kscu-noreuse``: the same
  table re-sampling every x_s from noise (the paper-era code), to measure what reuse saves;
  ``kscu@esd``: KSCU at ESD's iteration budget; ``kscu-all-steps`` and
  ``kscu-early-steps`` (DDIM indices 0-14, high noise): the key-step ablation;
* ``mim-mu``, ``mim-mu-on``, ``mim-mu-cond``: the three MiM-MU variants; ``mim-mu@360``:
  three times MiM-MU's budget (for the three-concept scenario);
* ``sculpt`` (dynamic mask, KD as described) and its ablations ``sculpt-static`` (the
  warm-up mask kept all round), ``sculpt-nomask``, ``sculpt-nokd`` and ``sculpt-kd-released``
  (the released code's inert KD), ``sculpt@lr3e-4`` and ``sculpt@160`` (twice the
  iterations per round), all at lr 3e-4; ``salun``; ``ca`` (Concept Ablation);

Each erased model is scored by :func:`unsee.evaluate.evaluate_models` against the same
base images. Columns: erasure, paraphrase target rate, retain and neighbour accuracy,
judge-feature FID, overall (harmonic mean of erasure and retain), erasure seconds, peak RSS,
optimiser steps and weights changed. Writes ``bench/results/compare.{md,json}`` and a Pareto
plot of erasure vs retain (``compare_pareto.png``).

    OMP_NUM_THREADS=2 .venv/bin/python bench/compare.py --scenario star --num-images 8
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

from unsee.artifacts import library_versions
from unsee.erase.base import REGISTRY, get_method
from unsee.erase.engine import EraseConfig, run_erasure
from unsee.evaluate import EvalSettings, evaluate_models

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS: dict[str, dict[str, Any]] = {
    "star": {"concepts": ["star"]},
    "striped": {"concepts": ["striped"]},
    "three": {"concepts": ["star", "circle", "square"]},
    "sequential": {"concepts": ["star", "heart", "hexagon", "arrow"], "sequential": True},
}


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    iterations: int | None = None
    lr: float | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("esd-x", "esd-x"),
    # the demo's setting: 25-step trajectories, half ESD's sampling cost per iteration
    Variant("esd-x@25", "esd-x", {"ddim_steps": 25}),
    Variant("esd-u", "esd-u"),
    Variant("uce", "uce"),
    Variant("kscu", "kscu"),
    Variant("kscu-noreuse", "kscu", {"trajectory_reuse": False}),
    Variant("kscu@esd", "kscu", iterations=120),
    # the style preset trains cross-attention only; ESD-x's lr on the same scope
    Variant("kscu@lr3e-4", "kscu", lr=3e-4),
    # the paper's key-step ablation at KSCU's budget: every step, and early steps only
    Variant("kscu-all-steps", "kscu", {"start": 0, "max_start": 0}),
    Variant("kscu-early-steps", "kscu", {"start": 0, "max_start": 0, "end": 15}),
    Variant("mim-mu", "mim-mu"),
    # three times MiM-MU's budget, for several concepts at once (each gets a third of it)
    Variant("mim-mu@360", "mim-mu", iterations=360),
    Variant("mim-mu-on", "mim-mu", {"variant": "on-policy"}),
    Variant("mim-mu-cond", "mim-mu", {"variant": "conditional"}),
    Variant("sculpt", "sculpt"),
    # the ablations ran at the first ToyWorld lr, 3e-4 (docs/methods.md)
    Variant("sculpt@lr3e-4", "sculpt", lr=3e-4),
    Variant("sculpt@160", "sculpt", iterations=160, lr=3e-4),
    Variant("sculpt-static", "sculpt", {"mask": "static"}, lr=3e-4),
    Variant("sculpt-nomask", "sculpt", {"mask": "none"}, lr=3e-4),
    Variant("sculpt-nokd", "sculpt", {"kd": "off"}, lr=3e-4),
    Variant("sculpt-kd-released", "sculpt", {"kd": "released"}, lr=3e-4),
    Variant("salun", "salun"),
    Variant("ca", "ca"),
)


def summarise(card: dict[str, Any]) -> dict[str, Any]:
    """The numbers the tables show, from one scorecard (fractions, not percentages)."""
    concepts = list(card["concepts"].values())
    para = [c["paraphrase"]["target_rate"] for c in concepts if c["paraphrase"]]
    para_base = [c["paraphrase"]["target_rate_base"] for c in concepts if c["paraphrase"]]
    retain, fid = card["retain"], card["fid"]
    neighbour = retain["neighbour"] or {}
    return {"target_images": card["num_images"] * len(concepts[0]["prompts"]),
            "retain_images": card["num_images"] * len(retain["prompts"]),
            "erasure": card["erasure"],
            "erasure_base": sum(c["erasure_base"] for c in concepts) / len(concepts),
            "per_concept_erasure": {k: v["erasure"] for k, v in card["concepts"].items()},
            "paraphrase_rate": sum(para) / len(para) if para else None,
            "paraphrase_base": sum(para_base) / len(para_base) if para_base else None,
            "retain_accuracy": retain["accuracy"], "retain_base": retain["accuracy_base"],
            "neighbour_accuracy": neighbour.get("accuracy"),
            "neighbour_base": neighbour.get("accuracy_base"),
            "fid": fid["erased"], "fid_base": fid["base"], "overall": card["overall"]}


def run_scenario(name: str, variants: list[Variant], settings: EvalSettings, work: Path,
                 model: str) -> dict[str, Any]:
    sc = SCENARIOS[name]
    rows: dict[str, dict[str, Any]] = {}
    arts: dict[str, list[Path]] = {}
    for v in variants:
        out = work / name / v.label
        cfg = EraseConfig(method=v.method, concepts=list(sc["concepts"]), model=model,
                          params=dict(v.params), iterations=v.iterations, lr=v.lr,
                          sequential=sc.get("sequential", False))
        card = run_erasure(cfg, out, overwrite=True).card
        cost = card["cost"]
        arts[v.label] = [out]
        rows[v.label] = {"method": v.method, "params": card["hyperparameters"]["params"],
                         "iterations": cost["iterations"],
                         "optimizer_steps": cost["optimizer_steps"],
                         "seconds": cost["wall_seconds"], "peak_rss_mb": cost["peak_rss_mb"],
                         "parameters_changed": cost["parameters_changed"]}
    t0 = time.time()
    results = evaluate_models(model, arts, list(sc["concepts"]), settings)
    for label, res in zip(rows, results, strict=True):
        rows[label].update(summarise(res.scorecard))
    return {"scenario": name, "concepts": sc["concepts"],
            "sequential": sc.get("sequential", False), "rows": rows,
            "model_fingerprint": results[0].scorecard["model_fingerprint"],
            "evaluation_seconds": round(time.time() - t0, 1)}


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# Method comparison on ToyWorld", "",
             f"{s['num_images']} images per prompt, DDIM-{s['steps']}, seed {s['seed']}; "
             f"{report['machine']}; {report['versions']}.",
             "erasure = 1 - share of target images judged as the concept (mean over concepts); "
             "paraphrase = target rate on prompts without the concept word; retain / neighbour "
             "= share of asked attributes judged as asked on the other concepts' prompts / on "
             "the target's superclass siblings; FID in judge-feature space against renders; "
             "overall = harmonic mean of erasure and retain; seconds = erasure wall time "
             "(model load included); steps = optimiser steps.", ""]
    for sc in report["scenarios"]:
        rows = sc["rows"]
        first = next(iter(rows.values()))
        how = "one round each, in order" if sc["sequential"] else "at once"
        lines += [f"## {sc['scenario']}: erase {', '.join(sc['concepts'])} ({how})", "",
                  f"Base model (`{sc['model_fingerprint']}`): erasure "
                  f"{fmt(first['erasure_base'])}, retain {fmt(first['retain_base'])}, neighbour "
                  f"{fmt(first['neighbour_base'])}, FID {fmt(first['fid_base'], 2)}.", "",
                  *([f"Reproduce: `{sc['command']}`", ""] if "command" in sc else []),
                  "| variant | erasure | paraphrase rate | retain | neighbour | FID | overall "
                  "| seconds | peak RSS MB | steps | weights changed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in rows.items():
            lines.append(f"| {label} | {fmt(r['erasure'])} | {fmt(r['paraphrase_rate'])} | "
                         f"{fmt(r['retain_accuracy'])} | {fmt(r['neighbour_accuracy'])} | "
                         f"{fmt(r['fid'], 2)} | {fmt(r['overall'])} | {r['seconds']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['optimizer_steps']} | "
                         f"{r['parameters_changed']:,} |")
        if len(sc["concepts"]) > 1:
            lines += ["", "Erasure per concept (after the last round when sequential):", "",
                      "| variant | " + " | ".join(sc["concepts"]) + " |",
                      "|---|" + "---|" * len(sc["concepts"])]
            lines += [f"| {label} | " + " | ".join(fmt(r["per_concept_erasure"][c])
                                                 for c in sc["concepts"]) + " |"
                      for label, r in rows.items()]
        lines.append("")
    return "\n".join(lines)


def pareto_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for sc in report["scenarios"]:
        xs = [r["retain_accuracy"] for r in sc["rows"].values()]
        ys = [r["erasure"] for r in sc["rows"].values()]
        ax.scatter(xs, ys, label=sc["scenario"])
        for label, x, y in zip(sc["rows"], xs, ys, strict=True):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("retain accuracy")
    ax.set_ylabel("erasure")
    ax.set_title("erasure vs retain (up and right is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=8, help="images per prompt")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="toyworld", help="a ToyWorld-vocabulary model")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), default=None,
                    help="repeatable; default every scenario. Results already in --out with "
                         "the same model and settings are kept; rows of the variants run "
                         "now are replaced.")
    ap.add_argument("--variants", default=None,
                    help="comma-separated labels (default: every variant whose method exists)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-compare"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    get_method("esd-x")  # fills the registry
    by_label = {v.label: v for v in VARIANTS}
    labels = args.variants.split(",") if args.variants else \
        [v.label for v in VARIANTS if v.method in REGISTRY]
    unknown = [lab for lab in labels if lab not in by_label]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(by_label)}")
    variants = [by_label[lab] for lab in labels]
    settings = EvalSettings(num_images=args.num_images, steps=args.steps, seed=args.seed,
                            cache_dir=args.work / "image-cache")
    versions = library_versions()
    report: dict[str, Any] = {
        "model": args.model,
        "settings": {"num_images": args.num_images, "steps": args.steps, "seed": args.seed},
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "scenarios": []}
    todo = args.scenario or list(SCENARIOS)
    out_json = args.out / "compare.json"
    if out_json.exists():
        old = json.loads(out_json.read_text())
        if (old.get("model"), old.get("settings")) == (report["model"], report["settings"]):
            report["scenarios"] = old["scenarios"]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in todo:  # results are rewritten after each scenario
        fresh = run_scenario(name, variants, settings, args.work, args.model)
        kept = [sc for sc in report["scenarios"] if sc["scenario"] == name]
        if kept and kept[0]["model_fingerprint"] == fresh["model_fingerprint"]:
            # rows of variants not re-run this time stay (same model, seeds and settings)
            fresh["rows"] = {**{k: v for k, v in kept[0]["rows"].items()
                                if k not in fresh["rows"]}, **fresh["rows"]}
        fresh["command"] = (f"OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario "
                            f"{name} --variants {','.join(fresh['rows'])} "
                            f"--num-images {args.num_images} --steps {args.steps} "
                            f"--seed {args.seed}")
        report["scenarios"] = [sc for sc in report["scenarios"] if sc["scenario"] != name]
        report["scenarios"].append(fresh)
        report["scenarios"].sort(key=lambda sc: list(SCENARIOS).index(sc["scenario"]))
        out_json.write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "compare.md").write_text(markdown(report))
        pareto_plot(report, args.out / "compare_pareto.png")
        print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
