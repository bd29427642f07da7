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
Each row is merged into ``bench/results/<model>/compare.{md,json}`` (``--out``; and the
Pareto plot of erasure vs retain, ``compare_pareto.png``) as soon as it is scored, by the
harness's results store (``harness.record``), so several processes may fill one table and
an interrupted run keeps its finished rows. The scenarios and variants are the harness's
``SCENARIOS`` and ``VARIANTS`` tables; this script is their command line and the tables'
layout.

    OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario star --num-images 4
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    SCENARIOS,
    VARIANTS,
    Results,
    fmt,
    rate_cell,
    read,
    record,
    replace_between,
    run_variant,
    runs_on,
    write_document,
)
from unsee.erase.registry import REGISTRY
from unsee.errors import UnseeError
from unsee.evaluate import EvalSettings
from unsee.evaluate.attacks import parse_budget, plan_attacks
from unsee.evaluate.metrics import DIFFERENCE_TEST, change, hits_of

DEFAULT_ATTACKS = ["unlearndiffatk", "softprompt"]


def _relative(path: Path) -> str:
    """``path`` as the repository names it (relative to the working directory if inside)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _order(scenario: str) -> int:
    """Tables in the order of the harness's scenario table."""
    return list(SCENARIOS).index(scenario) if scenario in SCENARIOS else len(SCENARIOS)


def command(scenario: str, settings: dict[str, Any], variants: list[str]) -> str:
    """The command that reproduces a scenario's table: its variants, with ``settings``."""
    s = settings
    budget = s.get("attack_budget") or {}
    return (
        f"OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario {scenario} "
        f"--variants {','.join(variants)} --num-images {s['num_images']} --steps "
        f"{s['steps']} --seed {s['seed']}"
        + (f" --model {s['model']}" if s.get("model", "toyworld") != "toyworld" else "")
        + (
            f" --attacks {shlex.quote(','.join(s['attacks']))}"
            if s.get("attacks", DEFAULT_ATTACKS) != DEFAULT_ATTACKS
            else ""
        )
        + "".join(f" --attack-budget {k}={v}" for k, v in budget.items())
        + (f" --iterations {s['iterations']}" if s.get("iterations") else "")
    )


def markdown(results: Results) -> str:
    """The comparison's tables, from its results file."""
    s = results["settings"]
    attacks = ", ".join(s.get("attacks", [])) or "none"
    runs = runs_on(results)
    lines = [
        f"# Method comparison on `{s.get('model', 'toyworld')}`",
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
    for name, table in sorted(results["tables"].items(), key=lambda kv: _order(kv[0])):
        sc, rows = table["meta"], table["rows"]
        first = next(iter(rows.values()))
        how = "one round each, in order" if sc["sequential"] else "at once"
        para_base = first["paraphrase_base"]
        lines += [
            f"## {name}: erase {', '.join(sc['concepts'])} ({how})",
            "",
            f"Base model (`{sc['model_fingerprint']}`): erasure "
            f"{fmt(first['erasure_base'])}, paraphrase erasure "
            f"{fmt(None if para_base is None else 1 - para_base)}, retain "
            f"{fmt(first['retain_base'])}, neighbour {fmt(first['neighbour_base'])}, "
            f"{first.get('fd_name') or 'FD'} {fmt(first['fid_base'], 2)}.",
            "",
            f"Reproduce: `{command(name, s, list(rows))}`",
            "",
        ]
        lines += _rows_table(sc["concepts"], rows)
        by_machine: dict[str, list[str]] = {}
        for label, r in rows.items():
            by_machine.setdefault(r["run_on"], []).append(label)
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


def _value(r: dict[str, Any], col: str) -> float | None:
    """A row's rate in column ``col`` (``attack:NAME``: the erasure that attack leaves)."""
    if col == "paraphrase":
        return None if r["paraphrase_rate"] is None else 1 - r["paraphrase_rate"]
    if col.startswith("attack:"):
        return r.get("post_attack_by_attack", {}).get(col[7:])
    return r.get(col)


def _count(r: dict[str, Any], col: str, n_concepts: int) -> int | None:
    """The images (retain, neighbour: (image, attribute) pairs) behind a row's rate."""
    if col in ("retain_accuracy", "neighbour_accuracy"):
        return r.get("retain_pairs" if col == "retain_accuracy" else "neighbour_pairs")
    if col == "paraphrase":
        return r.get("paraphrase_images")
    return r.get("erasure_images") or r["target_images"] * n_concepts


def _best(rows: Iterable[dict[str, Any]], cols: list[str]) -> dict[str, float | None]:
    """Each column's highest rate over ``rows`` (what the noise marks compare with)."""
    rows = list(rows)
    return {
        c: max((v for r in rows if (v := _value(r, c)) is not None), default=None) for c in cols
    }


def _kid_cell(r: dict[str, Any], digits: int) -> str:
    """A row's KID x 1e-3 with its subset range, ``digits`` decimals; n/a without one."""
    if r.get("kid") is None:
        return "n/a"
    lo, hi = (1000 * v for v in r["kid_ci95"])
    return f"{1000 * r['kid']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _rows_table(concepts: list[str], rows: dict[str, dict[str, Any]]) -> list[str]:
    """One scenario's main table: rates with intervals and noise marks, distances, cost."""
    attacks = list(
        dict.fromkeys(n for r in rows.values() for n in r.get("post_attack_by_attack", {}))
    )
    n_concepts = len(concepts)

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
    best = _best(rows.values(), cols)
    head = [f"{names[c]} (n={_count(first, c, n_concepts) or '?'})" for c in cols]
    fd = first.get("fd_name") or "FD"
    n_fd = first.get("fd_images") or first["retain_images"]  # FD compares the retain images
    out = [
        "| variant | " + " | ".join(head) + f" | {fd} (n={n_fd}) | KID x1e-3 (n={n_fd}) | "
        "overall | seconds | "
        "attack s | peak RSS MB | steps | weights changed |",
        "|---|" + "---|" * (len(cols) + 8),
    ]
    for label, r in rows.items():
        kid = _kid_cell(r, 1)
        cells = [rate_cell(_value(r, c), _count(r, c, n_concepts), best[c]) for c in cols]
        out.append(
            f"| {label} | " + " | ".join(cells) + f" | {fmt(r['fid'], 0)} | {kid} | "
            f"{fmt(r['overall'])} | {r['seconds']:.1f} | "
            f"{fmt(r.get('attack_seconds'), 1)} | {r['peak_rss_mb']:.0f} | "
            f"{r['optimizer_steps']} | {r['parameters_changed']:,} |"
        )
    return out


#: The README's headline table: each method's default variant (and sculpt as released),
#: label -> name shown, in the order shown
HEADLINE = {
    "esd-x": "ESD-x",
    "esd-u": "ESD-u",
    "uce": "UCE",
    "ca": "CA",
    "salun": "SalUn",
    "kscu": "KSCU",
    "mim-mu": "MiM-MU",
    "sculpt": "Sculpting Memory",
    "sculpt-kd-released": "Sculpting Memory, KD as released, lr 3e-4",
}
HEADLINE_START = "<!-- headline: written by `bench/compare.py --headline README.md`; edit there -->"
HEADLINE_END = "<!-- end of headline -->"
HEADLINE_COLUMNS = [
    "erasure",
    "attack:unlearndiffatk",
    "attack:softprompt",
    "retain_accuracy",
]


def headline(results: Results, source: str) -> str:
    """The README's headline: for every scenario, each :data:`HEADLINE` method's erasure,
    the erasure left by each attack, retain (each with its Wilson interval, dagger = below
    the scenario's best headline row beyond noise), KID and erasure seconds; ``source``
    names the results file it is written from."""
    s = results["settings"]
    lines = [
        HEADLINE_START,
        "",
        f"From `{source}` ({s['num_images']} images per prompt, DDIM-{s['steps']}, seed "
        f"{s['seed']}, every row on {'; '.join(runs_on(results))}). Rates are 1 - the share "
        "of target images the judge reads as the concept (erasure; after each attack: the "
        "attacked prompt), and the share of asked attributes drawn as asked on the other "
        "prompts (retain), each with its 95 % Wilson interval over n images (retain: "
        "image-attribute pairs); † = below the scenario's best row here beyond noise; "
        "KID x 1e-3 in judge features against renders, with the 2.5-97.5 % range of its "
        "subset values (the spread of one KID at that size, not the mean's uncertainty); "
        "seconds = the erasure's wall time, model load included, one torch thread.",
        "",
    ]
    cols = HEADLINE_COLUMNS
    names = ["erasure", "after UnlearnDiffAtk", "after soft prompt", "retain"]
    for name, table in sorted(results["tables"].items(), key=lambda kv: _order(kv[0])):
        sc = table["meta"]
        rows = {HEADLINE[k]: table["rows"][k] for k in HEADLINE if k in table["rows"]}
        if not rows:
            continue
        n_concepts = len(sc["concepts"])
        first = next(iter(rows.values()))
        best = _best(rows.values(), cols)
        how = "one round each, in order" if sc["sequential"] else "at once"
        lines += [
            f"**{name}** (erase {', '.join(sc['concepts'])}, {how}; base model: retain "
            f"{fmt(first['retain_base'])}, erasure {fmt(first['erasure_base'])})",
            "",
            "| method | "
            + " | ".join(
                f"{h} (n={_count(first, c, n_concepts)})" for h, c in zip(names, cols, strict=True)
            )
            + " | KID x1e-3 [subset range] | seconds |",
            "|---|" + "---|" * (len(cols) + 2),
        ]
        for label, r in rows.items():
            kid = _kid_cell(r, 0)
            cells = [rate_cell(_value(r, c), _count(r, c, n_concepts), best[c]) for c in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {kid} | {r['seconds']:.0f} |")
        lines.append("")
    return "\n".join([*lines, HEADLINE_END])


def write_headline(readme: Path, results: Results, source: str) -> None:
    """Replace the text between :data:`HEADLINE_START` and :data:`HEADLINE_END` in
    ``readme`` with :func:`headline` (atomically); the markers must be there."""
    replace_between(readme, HEADLINE_START, HEADLINE_END, headline(results, source))


def _rate_change(r: dict[str, Any], col: str, base_col: str, n: int) -> dict[str, Any]:
    """A row's rate in ``col`` against its own base model's (``base_col``), as
    :func:`unsee.evaluate.metrics.change` gives it: erased minus base."""
    return change((hits_of(r[base_col], n), n), (hits_of(r[col], n), n))


def _change_cell(c: dict[str, Any]) -> str:
    """A change (:func:`unsee.evaluate.metrics.change`) as ``-0.125 [-0.27, +0.01]``, with
    ``*`` when its interval excludes 0."""
    lo, hi = c["ci95"]
    return f"{c['difference']:+.3f} [{lo:+.2f}, {hi:+.2f}]" + (" *" if c["beyond_noise"] else "")


def beside(results: Results, other: Results, source: str, other_source: str) -> str:
    """Each variant run on both models, scenario by scenario: erasure on each (Wilson),
    their difference (Newcombe; both count the same concept's images through the same judge),
    and each model's retain against its own base (the bases differ, so retain is compared
    as the change an erasure makes). A row *disagrees* when the erasures differ beyond
    noise, or the two retain changes' 95 % intervals do not overlap (a conservative test of
    a difference of differences; one change beyond noise and the other not is no evidence).
    ``results`` is this model's comparison, ``other`` the one it is set beside."""
    name, other_name = results["settings"]["model"], other["settings"]["model"]
    lines = [
        f"# `{name}` beside `{other_name}`: the same variants, the same scenarios",
        "",
        f"From `{source}` and `{other_source}` (each row at its own model's settings:"
        f" {name}: {results['settings']['num_images']} images per prompt, DDIM-"
        f"{results['settings']['steps']}; {other_name}: {other['settings']['num_images']},"
        f" DDIM-{other['settings']['steps']}). Erasure with its 95 % Wilson interval over n"
        " target images; Δ = erasure on the first model minus the second, with Newcombe's"
        " 95 % interval; retain change = retain minus the model's own base retain over its"
        " (image, attribute) pairs, with Newcombe's 95 % interval, * = beyond noise. differ:"
        " the erasures differ beyond noise, or the two retain changes' intervals do not"
        " overlap."
        " Attacks are left out: only the rates both runs measured are compared.",
        "",
    ]
    for sc_name, table in sorted(results["tables"].items(), key=lambda kv: _order(kv[0])):
        peer = other["tables"].get(sc_name)
        if peer is None:
            continue
        shared = [v for v in table["rows"] if v in peer["rows"]]
        if not shared:
            continue
        sc = table["meta"]
        n_concepts = len(sc["concepts"])
        lines += [
            f"## {sc_name}: erase {', '.join(sc['concepts'])}",
            "",
            f"| variant | erasure, {name} | erasure, {other_name} | Δ erasure | retain change,"
            f" {name} | retain change, {other_name} | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in shared:
            a, b = table["rows"][v], peer["rows"][v]
            na, nb = _count(a, "erasure", n_concepts), _count(b, "erasure", n_concepts)
            assert na and nb
            d = change((hits_of(b["erasure"], nb), nb), (hits_of(a["erasure"], na), na))
            keep = [
                _rate_change(r, "retain_accuracy", "retain_base", r["retain_pairs"]) for r in (a, b)
            ]
            (lo_a, hi_a), (lo_b, hi_b) = keep[0]["ci95"], keep[1]["ci95"]
            apart = hi_a < lo_b or hi_b < lo_a
            verdict = "differ" if d["beyond_noise"] or apart else "within noise"
            lo, hi = d["ci95"]
            lines.append(
                f"| {v} | {rate_cell(a['erasure'], na)} | {rate_cell(b['erasure'], nb)} | "
                f"{d['difference']:+.3f} [{lo:+.2f}, {hi:+.2f}] | {_change_cell(keep[0])} | "
                f"{_change_cell(keep[1])} | {verdict} |"
            )
        lines.append("")
    return "\n".join(lines)


def pareto_plot(results: Results, path: Path) -> None:
    """Erasure against retain accuracy, one point per row, one colour per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, table in sorted(results["tables"].items(), key=lambda kv: _order(kv[0])):
        rows = table["rows"]
        xs = [r["retain_accuracy"] for r in rows.values()]
        ys = [r["erasure"] for r in rows.values()]
        ax.scatter(xs, ys, label=name)
        for label, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("retain accuracy")
    ax.set_ylabel("erasure")
    ax.set_title("erasure vs retain (up and right is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # path may be a temporary name
    plt.close(fig)


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
        default=",".join(DEFAULT_ATTACKS),
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
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results/<model name>, so each model's "
        "table is its own and the printed Reproduce commands write back to it)",
    )
    ap.add_argument(
        "--machine-note",
        default="",
        help="appended to the machine line, e.g. how many runs shared it",
    )
    ap.add_argument(
        "--beside",
        type=Path,
        default=None,
        metavar="RESULTS",
        help="run nothing: write --out's rows beside another model's results folder "
        "(e.g. bench/results/toyworld) to --out/beside_<folder>.md",
    )
    ap.add_argument(
        "--headline",
        type=Path,
        default=None,
        metavar="README",
        help="run nothing: rewrite README's headline table from --out's results",
    )
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / Path(args.model).name
    if args.beside is not None:
        try:
            mine, theirs = read("compare", args.out), read("compare", args.beside)
            if mine is None or theirs is None:
                raise UnseeError(
                    f"no comparison results in {args.out if mine is None else args.beside}"
                )
            text = beside(
                mine,
                theirs,
                _relative(args.out / "compare.md"),
                _relative(args.beside / "compare.md"),
            )
            write_document(args.out / f"beside_{args.beside.name}.md", text)
        except (OSError, ValueError, UnseeError) as err:
            ap.error(str(err))
        return
    if args.headline is not None:
        try:
            results = read("compare", args.out)
            if results is None:
                raise UnseeError(f"no comparison results in {args.out}")
            write_headline(args.headline, results, _relative(args.out / "compare.md"))
        except (OSError, ValueError, UnseeError) as err:
            ap.error(str(err))
        return
    by_label = {v.label: v for v in VARIANTS}
    labels = (
        args.variants.split(",")
        if args.variants
        else [v.label for v in VARIANTS if v.method in REGISTRY]
    )
    unknown = [lab for lab in labels if lab not in by_label]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(by_label)}")
    attacks = [a for a in args.attacks.split(",") if a]
    try:  # checked before any model runs
        budget = parse_budget(args.attack_budget)
        plan_attacks(("paraphrase", *attacks), budget)
    except UnseeError as err:
        ap.error(str(err))
    eval_settings = EvalSettings(
        num_images=args.num_images,
        steps=args.steps,
        seed=args.seed,
        cache_dir=args.work / "image-cache",
        attacks=("paraphrase", *attacks),
        attack_budget=budget,
    )
    settings = {
        "model": args.model,
        "num_images": args.num_images,
        "steps": args.steps,
        "seed": args.seed,
        "attacks": attacks,
        "attack_budget": budget,
        "iterations": args.iterations,
    }
    for name in args.scenario or list(SCENARIOS):
        scenario = dataclasses.replace(SCENARIOS[name], model=args.model)
        for label in labels:
            run = run_variant(scenario, by_label[label], eval_settings, args.work, args.iterations)
            merged = record(
                "compare",
                settings,
                name,
                {label: run.row},
                markdown,
                meta={
                    "concepts": scenario.concepts,
                    "sequential": scenario.sequential,
                    "model_fingerprint": run.fingerprint,
                },
                out=args.out,
                machine_note=args.machine_note,
                files={"compare_pareto.png": pareto_plot},
            )
        print(markdown(merged), flush=True)


if __name__ == "__main__":
    main()
