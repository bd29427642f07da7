"""Every method, side by side on ToyWorld scenarios, in one run with the same seeds.

Scenarios (``--scenario``): ``star`` (single object), ``striped`` (style), ``three``
(star, circle and square at once), ``sequential`` (star, heart, hexagon, arrow: four shapes
of different superclasses, one round each; issue 5). Variants (``--variants``, default every
one whose method exists):

* ``esd-x``, ``esd-u``, ``esd-all``, ``esd-x-strict``: ESD with its ToyWorld defaults (120
  iterations), on cross-attention, everything but cross-attention, every parameter, the
  cross-attention keys and values; ``esd-x@25``: ESD-x drawing its x_t from 25-step
  instead of 50-step trajectories (the demo's setting);
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
  iterations per round), all at lr 3e-4; ``sculpt-frozen``, ``sculpt-align1``,
  ``sculpt-frozen-align1`` and ``sculpt-frozen@160`` (lr 5e-4): attempts at sculpt's FID
  rise; ``salun``; ``ca`` (Concept Ablation);

Each erased model is scored by :func:`unsee.evaluate.evaluate_models` against the same
base images, with the attacks of ``--attacks`` (default the official UnlearnDiffAtk and
the soft-prompt attack at their ToyWorld budgets) run on every concept. Columns: erasure,
paraphrase erasure, post-attack erasure (1 - the target rate the strongest attack reaches,
or the unattacked rate when that is higher; mean over concepts), the erasure each attack
leaves, every rate with its 95 % Wilson interval and a mark when it falls below the
column's best row beyond noise,
retain and neighbour accuracy, judge-feature FD and KID, overall (harmonic mean of erasure and
retain), erasure seconds, attack seconds, peak RSS, optimiser steps and weights changed.
``--iterations`` overrides every variant's budget (reduced runs: the test suite's).
Each row is merged into ``bench/results/compare.{md,json}`` (and the Pareto plot of erasure
vs retain, ``compare_pareto.png``) as soon as it is scored, under a lock, so several
processes may fill one table and an interrupted run keeps its finished rows.

    OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario star --num-images 4
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unsee.erase.engine import EraseConfig, run_erasure
from unsee.erase.registry import REGISTRY
from unsee.errors import UnseeError
from unsee.evaluate import EvalSettings, evaluate_models
from unsee.evaluate.attacks import parse_budget, plan_attacks
from unsee.evaluate.metrics import DIFFERENCE_TEST, change, hits_of, wilson_interval
from unsee.evaluate.schema import parse_scorecard
from unsee.io import atomic_write
from unsee.models.fingerprint import library_versions

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
    Variant("esd-all", "esd-all"),
    Variant("esd-x-strict", "esd-x-strict"),
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
    # attempts at sculpt's FID rise (issue 5, docs/methods.md): a target that does not move
    # with the edit, a heavier superclass term, and a smaller lr over twice the iterations
    Variant("sculpt-frozen", "sculpt", {"target": "frozen"}),
    Variant("sculpt-align1", "sculpt", {"align_weight": 1.0}),
    Variant("sculpt-frozen-align1", "sculpt", {"target": "frozen", "align_weight": 1.0}),
    Variant("sculpt-frozen@160", "sculpt", {"target": "frozen"}, iterations=160, lr=5e-4),
    Variant("salun", "salun"),
    Variant("ca", "ca"),
)


def summarise(scorecard: dict[str, Any]) -> dict[str, Any]:
    """The numbers the tables show, from one scorecard (fractions, not percentages).
    ``post_attack_erasure``: per concept 1 - the highest target rate an attacker gets,
    unattacked prompts included (an attack that makes things worse is not used), over the
    attacks that ran (models, not the paraphrase probe), averaged over concepts; None when
    no attack ran."""
    card = parse_scorecard(scorecard, f"the scorecard of {scorecard.get('label')!r}")
    concepts = list(card.concepts.values())
    attacked: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    attack_seconds = 0.0
    for c, by_attack in card.attacks.items():
        runs = [a for n, a in by_attack.items() if n != "paraphrase"]
        if runs:
            attacked[c] = max([runs[0].target_rate_before] + [a.target_rate_after for a in runs])
        for n, a in by_attack.items():
            if n != "paraphrase":
                by_name.setdefault(n, []).append(1 - a.target_rate_after)
                attack_seconds += a.seconds + a.settings.get("training_images_seconds", 0)
    paras = [c.paraphrase for c in concepts if c.paraphrase]
    retain, fid = card.retain, card.fid
    neighbour = retain.neighbour
    kid = fid.kid.erased if fid.kid else None
    return {
        "target_images": card.num_images * len(concepts[0].prompts),
        "retain_images": card.num_images * len(retain.prompts),
        # image (retain: (image, attribute) pair) counts behind each mean rate, for the
        # tables' Wilson intervals: every concept has the same number of prompts
        "erasure_images": sum(c.images for c in concepts),
        "paraphrase_images": sum(p.images for p in paras) or None,
        "retain_pairs": retain.pairs,
        "neighbour_pairs": neighbour.pairs if neighbour else None,
        "post_attack_by_attack": {n: sum(v) / len(v) for n, v in by_name.items()},
        "fd_name": fid.name,
        "kid": kid.value if kid else None,
        "kid_ci95": kid.ci95 if kid else None,
        "erasure": card.erasure,
        "erasure_base": sum(c.erasure_base for c in concepts) / len(concepts),
        "per_concept_erasure": {k: v.erasure for k, v in card.concepts.items()},
        "paraphrase_rate": sum(p.target_rate for p in paras) / len(paras) if paras else None,
        "post_attack_erasure": (
            sum(1 - r for r in attacked.values()) / len(attacked) if attacked else None
        ),
        "per_concept_post_attack": {c: 1 - r for c, r in attacked.items()},
        "attack_seconds": round(attack_seconds, 1) if attacked else None,
        "paraphrase_base": (sum(p.target_rate_base for p in paras) / len(paras) if paras else None),
        "retain_accuracy": retain.accuracy,
        "retain_base": retain.accuracy_base,
        "neighbour_accuracy": neighbour.accuracy if neighbour else None,
        "neighbour_base": neighbour.accuracy_base if neighbour else None,
        "fid": fid.erased,
        "fid_base": fid.base,
        "overall": card.overall,
    }


def run_variant(
    name: str,
    v: Variant,
    settings: EvalSettings,
    work: Path,
    model: str,
    iterations: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Erase scenario ``name``'s concepts with variant ``v``, score it; returns the base
    model's fingerprint and the row."""
    sc = SCENARIOS[name]
    out = work / name / v.label
    cfg = EraseConfig(
        method=v.method,
        concepts=list(sc["concepts"]),
        model=model,
        params=dict(v.params),
        iterations=iterations or v.iterations,
        lr=v.lr,
        sequential=sc.get("sequential", False),
    )
    card = run_erasure(cfg, out, overwrite=True).card
    cost = card["cost"]
    t0 = time.time()
    (res,) = evaluate_models(model, {v.label: [out]}, list(sc["concepts"]), settings)
    return res.scorecard["model_fingerprint"], {
        "method": v.method,
        "params": card["hyperparameters"]["params"],
        "iterations": cost["iterations"],
        "optimizer_steps": cost["optimizer_steps"],
        "seconds": cost["wall_seconds"],
        "peak_rss_mb": cost["peak_rss_mb"],
        "parameters_changed": cost["parameters_changed"],
        "evaluation_seconds": round(time.time() - t0, 1),
        **summarise(res.scorecard),
    }


def machine() -> str:
    """This machine for a results table: CPU, torch threads, GPU."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}"


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def rate_cell(x: float | None, n: int | None, best: float | None = None) -> str:
    """A rate over ``n`` images with its 95 % Wilson interval, ``0.875 [0.64, 0.96]``, and
    a dagger when it is below the column's ``best`` beyond noise (Newcombe, same ``n``)."""
    if x is None or not n:
        return fmt(x)
    k = hits_of(x, n)
    lo, hi = wilson_interval(k, n)
    worse = best is not None and change((hits_of(best, n), n), (k, n))["ci95"][1] < 0
    return f"{x:.3f} [{lo:.2f}, {hi:.2f}]" + (" †" if worse else "")


def _run_on(report: dict[str, Any]) -> str:
    """Where a report's run happened: machine and library versions."""
    return f"{report['machine']}; {report['versions']}"


def _runs_on(report: dict[str, Any]) -> list[str]:
    """The distinct machines (and library versions) the report's rows ran on."""
    return list(
        dict.fromkeys(
            r.get("run_on", _run_on(report))
            for sc in report["scenarios"]
            for r in sc["rows"].values()
        )
    )


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    attacks = ", ".join(s.get("attacks", [])) or "none"
    runs = _runs_on(report) or [_run_on(report)]
    lines = [
        "# Method comparison on ToyWorld",
        "",
        f"{s['num_images']} images per prompt, DDIM-{s['steps']}, seed {s['seed']}; "
        f"attacks: {attacks} at the ToyWorld budget"
        + (f" with {s['attack_budget']}" if s.get("attack_budget") else "")
        + "; "
        + (runs[0] if len(runs) == 1 else "rows ran on several machines (below each table)")
        + ".",
        "erasure = 1 - share of target images judged as the concept (mean over concepts); "
        "paraphrase = the same on prompts without the concept word; post-attack = the "
        "same on the attacked prompts (the strongest attack per concept, the unattacked "
        "prompts when they do better); retain / "
        "neighbour = share of asked attributes judged as asked on the other concepts' "
        "prompts / on the target's superclass siblings; one column per attack gives the "
        "erasure it leaves (unlearndiffatk: the official typed-prompt attack; "
        "softprompt: free embeddings, a white-box upper bound); FD = Frechet distance "
        "and KID (x 1e-3, unbiased, subset 2.5-97.5 % range) in the judge's feature "
        "space against renders; overall = harmonic mean of erasure and retain; seconds "
        "= erasure wall time (model load included), attack s = the attacks' wall time "
        "(their base-model training images included); steps = optimiser steps.",
        "Every rate: value [95 % Wilson interval] over the n in the column header "
        "(retain, neighbour: (image, attribute) pairs); † = below the column's best row "
        f"beyond noise ({DIFFERENCE_TEST}); no mark = within noise of the best.",
        "",
    ]
    for sc in report["scenarios"]:
        rows = sc["rows"]
        first = next(iter(rows.values()))
        how = "one round each, in order" if sc["sequential"] else "at once"
        para_base = first["paraphrase_base"]
        lines += [
            f"## {sc['scenario']}: erase {', '.join(sc['concepts'])} ({how})",
            "",
            f"Base model (`{sc['model_fingerprint']}`): erasure "
            f"{fmt(first['erasure_base'])}, paraphrase erasure "
            f"{fmt(None if para_base is None else 1 - para_base)}, retain "
            f"{fmt(first['retain_base'])}, neighbour {fmt(first['neighbour_base'])}, "
            f"FID {fmt(first['fid_base'], 2)}.",
            "",
            *([f"Reproduce: `{sc['command']}`", ""] if "command" in sc else []),
        ]
        lines += _rows_table(sc)
        by_machine: dict[str, list[str]] = {}
        for label, r in rows.items():
            by_machine.setdefault(r.get("run_on", _run_on(report)), []).append(label)
        if len(runs) > 1:  # rows filled in by runs on different machines
            lines += [""] + [
                f"Run on {m}: {', '.join(labels)}." for m, labels in by_machine.items()
            ]
        if len(sc["concepts"]) > 1:
            lines += [
                "",
                "Erasure per concept (after the last round when sequential), "
                "post-attack in brackets:",
                "",
                "| variant | " + " | ".join(sc["concepts"]) + " |",
                "|---|" + "---|" * len(sc["concepts"]),
            ]
            lines += [
                f"| {label} | "
                + " | ".join(
                    fmt(r["per_concept_erasure"][c])
                    + (
                        f" ({fmt(r['per_concept_post_attack'][c])})"
                        if c in r.get("per_concept_post_attack", {})
                        else ""
                    )
                    for c in sc["concepts"]
                )
                + " |"
                for label, r in rows.items()
            ]
        lines.append("")
    return "\n".join(lines)


def _rows_table(sc: dict[str, Any]) -> list[str]:
    """One scenario's main table: rates with intervals and noise marks, distances, cost."""
    rows = sc["rows"]
    attacks = list(
        dict.fromkeys(n for r in rows.values() for n in r.get("post_attack_by_attack", {}))
    )
    n_concepts = len(sc["concepts"])

    def value(r: dict[str, Any], col: str) -> float | None:
        if col == "paraphrase":
            return None if r["paraphrase_rate"] is None else 1 - r["paraphrase_rate"]
        if col.startswith("attack:"):
            return r.get("post_attack_by_attack", {}).get(col[7:])
        return r.get(col)

    def count(r: dict[str, Any], col: str) -> int | None:
        if col in ("retain_accuracy", "neighbour_accuracy"):
            return r.get("retain_pairs" if col == "retain_accuracy" else "neighbour_pairs")
        if col == "paraphrase":
            return r.get("paraphrase_images")
        return r.get("erasure_images") or r["target_images"] * n_concepts

    cols = [
        "erasure",
        "paraphrase",
        "post_attack_erasure",
        *[f"attack:{n}" for n in attacks],
        "retain_accuracy",
        "neighbour_accuracy",
    ]
    names = {
        "erasure": "erasure",
        "paraphrase": "paraphrase",
        "post_attack_erasure": "post-attack (strongest)",
        "retain_accuracy": "retain",
        "neighbour_accuracy": "neighbour",
        **{f"attack:{n}": n for n in attacks},
    }
    first = next(iter(rows.values()))
    best = {
        c: max((v for r in rows.values() if (v := value(r, c)) is not None), default=None)
        for c in cols
    }
    head = [f"{names[c]} (n={count(first, c) or '?'})" for c in cols]
    fd = first.get("fd_name") or "FD"
    out = [
        "| variant | " + " | ".join(head) + f" | {fd} | KID x1e-3 | overall | seconds | "
        "attack s | peak RSS MB | steps | weights changed |",
        "|---|" + "---|" * (len(cols) + 8),
    ]
    for label, r in rows.items():
        kid = (
            "n/a"
            if r.get("kid") is None
            else f"{1000 * r['kid']:.1f} [{1000 * r['kid_ci95'][0]:.1f}, "
            f"{1000 * r['kid_ci95'][1]:.1f}]"
        )
        cells = [rate_cell(value(r, c), count(r, c), best[c]) for c in cols]
        out.append(
            f"| {label} | " + " | ".join(cells) + f" | {fmt(r['fid'], 0)} | {kid} | "
            f"{fmt(r['overall'])} | {r['seconds']:.1f} | "
            f"{fmt(r.get('attack_seconds'), 1)} | {r['peak_rss_mb']:.0f} | "
            f"{r['optimizer_steps']} | {r['parameters_changed']:,} |"
        )
    return out


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
    fig.savefig(path, dpi=120, format="png")  # path may be a temporary name
    plt.close(fig)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Several bench processes may share ``--out``: each row is merged under a lock."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".compare.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record(
    out: Path,
    report: dict[str, Any],
    name: str,
    fingerprint: str,
    label: str,
    row: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    """Merge one row into ``out/compare.json`` (rows of the same model, settings and base
    fingerprint are kept; a row of the same label is replaced) and rewrite the markdown and
    the plot. Returns the merged report."""
    out_json = out / "compare.json"
    with locked(out):
        merged = dict(report, scenarios=[])
        if out_json.exists():
            old = json.loads(out_json.read_text())
            if (old.get("model"), old.get("settings")) == (report["model"], report["settings"]):
                merged["scenarios"] = old["scenarios"]
                for old_sc in merged["scenarios"]:  # rows from before rows said where
                    for r in old_sc["rows"].values():
                        r.setdefault("run_on", _run_on(old))
        sc = next((x for x in merged["scenarios"] if x["scenario"] == name), None)
        if sc is None or sc["model_fingerprint"] != fingerprint:
            sc = {
                "scenario": name,
                "concepts": SCENARIOS[name]["concepts"],
                "sequential": SCENARIOS[name].get("sequential", False),
                "rows": {},
                "model_fingerprint": fingerprint,
            }
        sc["rows"] = {**sc["rows"], label: {**row, "run_on": _run_on(report)}}
        sc["command"] = command.replace("{variants}", ",".join(sc["rows"]))
        merged["scenarios"] = sorted(
            [x for x in merged["scenarios"] if x["scenario"] != name] + [sc],
            key=lambda x: list(SCENARIOS).index(x["scenario"]),
        )
        text = json.dumps(merged, indent=2) + "\n"
        atomic_write(out_json, lambda tmp: tmp.write_text(text))
        atomic_write(out / "compare.md", lambda tmp: tmp.write_text(markdown(merged)))
        atomic_write(out / "compare_pareto.png", lambda tmp: pareto_plot(merged, tmp))
    return merged


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=8, help="images per prompt")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="toyworld", help="a ToyWorld-vocabulary model")
    ap.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        default=None,
        help="repeatable; default every scenario. Results already in --out with "
        "the same model and settings are kept; rows of the variants run "
        "now are replaced, one by one as they finish.",
    )
    ap.add_argument(
        "--variants",
        default=None,
        help="comma-separated labels (default: every variant whose method exists)",
    )
    ap.add_argument(
        "--attacks",
        default="unlearndiffatk,softprompt",
        help="comma-separated attacks run on every concept of every row ('' for "
        "none); the paraphrase probe always runs",
    )
    ap.add_argument(
        "--attack-budget",
        action="append",
        default=[],
        metavar="ATTACK.FIELD=V",
        help="override an attack's ToyWorld budget (repeatable)",
    )
    ap.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="override every variant's iterations (reduced runs)",
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench-compare"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--machine-note",
        default="",
        help="appended to the machine line, e.g. how many runs shared it",
    )
    args = ap.parse_args(argv)
    by_label = {v.label: v for v in VARIANTS}
    labels = (
        args.variants.split(",")
        if args.variants
        else [v.label for v in VARIANTS if v.method in REGISTRY]
    )
    unknown = [lab for lab in labels if lab not in by_label]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(by_label)}")
    attacks = tuple(a for a in args.attacks.split(",") if a)
    try:  # checked before any model runs
        budget = parse_budget(args.attack_budget)
        plan_attacks(("paraphrase", *attacks), budget)
    except UnseeError as err:
        ap.error(str(err))
    settings = EvalSettings(
        num_images=args.num_images,
        steps=args.steps,
        seed=args.seed,
        cache_dir=args.work / "image-cache",
        attacks=("paraphrase", *attacks),
        attack_budget=budget,
    )
    versions = library_versions()
    report: dict[str, Any] = {
        "model": args.model,
        "settings": {
            "num_images": args.num_images,
            "steps": args.steps,
            "seed": args.seed,
            "attacks": list(attacks),
            "attack_budget": budget,
            "iterations": args.iterations,
        },
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
        + (f" ({args.machine_note})" if args.machine_note else ""),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "scenarios": [],
    }
    extra = "".join(
        [
            f" --attacks {args.attacks}" if args.attacks != "unlearndiffatk,softprompt" else "",
            *(f" --attack-budget {b}" for b in args.attack_budget),
            f" --iterations {args.iterations}" if args.iterations else "",
        ]
    )
    for name in args.scenario or list(SCENARIOS):
        command = (
            f"OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario {name} "
            f"--variants {{variants}} --num-images {args.num_images} --steps "
            f"{args.steps} --seed {args.seed}{extra}"
        )
        for label in labels:
            fingerprint, row = run_variant(
                name, by_label[label], settings, args.work, args.model, args.iterations
            )
            merged = record(args.out, report, name, fingerprint, label, row, command)
        print(markdown(merged), flush=True)


if __name__ == "__main__":
    main()
