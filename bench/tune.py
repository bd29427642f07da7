"""Fair tuning: one protocol that picks every method's ToyWorld budget (issue 19).

Each method's ToyWorld budget used to be tuned on ``star`` alone, ESD-x the only method
at its own best, and ``star`` is also a benchmark concept. This study tunes every method
the same way, on concepts no benchmark scenario uses:

* **Tuning concepts** (:data:`TUNING`): the object ``cross`` and the style ``dotted``,
  each erased and scored on its own. :func:`check_disjoint` refuses (at import) a tuning
  set that shares a concept with any of the harness's benchmark ``SCENARIOS``.
* **Grid** (:func:`grid`), the same for every fine-tuning method: lr x {1/3, 1, 3} of the
  method's ToyWorld default x iterations {1, 2} x its default, the defaults resolved by
  the erasure config (:func:`unsee.erase.config.validate`) for each tuning concept, so a
  grid point is a pair of multipliers. A closed-form method has no lr or iterations: its
  ``erase_scale`` (UCE's weight of the erase rows) x {1/3, 1, 3} of its default when it
  has one, else its default alone. KSCU runs at its default preset (on ToyWorld
  ``matched``: ESD-x's scope and lr).
* **Scoring**: :func:`unsee.evaluate.evaluate_models` through ``harness.run_variant``,
  no attacks (the paraphrase attack off; its images are still drawn by the prompt set),
  the same seeds for every point.
* **Selection rule** (:func:`select`, :data:`RULE`): a point is *admissible* when on every
  tuning concept its retain accuracy is not below the base model's beyond noise (Newcombe's
  interval of the difference, as ``harness.rate_cell`` marks it). Among admissible points
  the best is the highest mean erasure over the tuning concepts; every admissible point
  whose pooled erasure count is within noise of the best's (Newcombe) ties with it, and
  ties go to the fewest optimizer steps (cost), then to the method's default (a default
  changes only on evidence beyond noise), then the smaller scale (lr). When no point is
  admissible the pick is the highest mean retain (then erasure, then cost), and the report
  says so.

Every grid point's row (per concept: erasure and retain with their counts, the base
model's retain, lr, iterations, optimizer steps, seconds) is merged into
``bench/results/tuning.{json,md}`` by ``harness.record`` as soon as it is scored; one
table per method, whose meta holds the method's defaults. The markdown marks each
method's pick and says whether it is the current default (with the default's values);
table ``picks`` of the JSON holds each method's pick once its grid is complete.

A run that stops resumes where it stopped: a point already recorded with the same
settings, grid and defaults is kept and not run again.

``--model toyworld-sd`` runs the same protocol on the SD-format model, around its own
family defaults, into ``bench/results/toyworld-sd/tuning.{json,md}`` (work folder
``runs/bench-tune-toyworld-sd``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/tune.py --methods esd-x,uce --num-images 4
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    SCENARIOS,
    Results,
    Scenario,
    Variant,
    fmt,
    plain,
    rate_cell,
    read,
    record,
    run_variant,
    runs_on,
)
from unsee.erase.base import ClosedFormMethod
from unsee.erase.config import EraseConfig, validate
from unsee.erase.registry import REGISTRY, build_params
from unsee.errors import UnseeError
from unsee.evaluate import EvalSettings
from unsee.evaluate.metrics import DIFFERENCE_TEST, change, hits_of

#: the methods the protocol tunes, in the report's order
METHODS = ("esd-x", "esd-u", "uce", "ca", "salun", "kscu", "mim-mu", "sculpt")
#: one object and one style that no benchmark scenario erases, each erased on its own
TUNING: tuple[Scenario, ...] = (
    Scenario("tune-cross", ("cross",)),
    Scenario("tune-dotted", ("dotted",)),
)
SCALES = (Fraction(1, 3), Fraction(1), Fraction(3))
ITERATION_SCALES = (1, 2)
#: a closed-form method's analogue of the lr: the weight of its erase terms
CLOSED_FORM_KNOB = "erase_scale"

RULE = (
    "A point is admissible when, on every tuning concept, its retain accuracy is not below "
    "the base model's beyond noise. Among admissible points the best has the highest mean "
    "erasure over the tuning concepts; admissible points whose pooled erasure is within "
    "noise of the best's tie with it, and ties go to the fewest optimizer steps, then to the "
    "method's default (a default changes only on evidence beyond noise), then the smaller "
    "scale (lr). With no admissible point the pick is the highest mean retain "
    f"(then erasure, then steps). Noise: {DIFFERENCE_TEST}."
)


def concepts_of(scenarios: Iterable[Scenario]) -> set[str]:
    return {c for s in scenarios for c in s.concepts}


def check_disjoint(tuning: Iterable[Scenario], benchmark: Iterable[Scenario]) -> None:
    """Raise :class:`UnseeError` naming the shared concepts when a tuning concept is also
    erased by a benchmark scenario (tuning on it would leak into the benchmark)."""
    shared = concepts_of(tuning) & concepts_of(benchmark)
    if shared:
        raise UnseeError(
            f"tuning concept(s) {', '.join(sorted(shared))} are also benchmark concepts; "
            "tune on held-out concepts only"
        )


check_disjoint(TUNING, SCENARIOS.values())


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: ``knob`` (``lr``, :data:`CLOSED_FORM_KNOB`, or None: the default
    alone) times ``scale`` of its default, iterations times ``iteration_scale``."""

    method: str
    knob: str | None
    scale: Fraction = Fraction(1)
    iteration_scale: int = 1

    @property
    def label(self) -> str:
        if self.knob is None:
            return f"{self.method}@default"
        its = f"@it{self.iteration_scale}x" if self.knob == "lr" else ""
        return f"{self.method}@{self.knob}{float(self.scale):.3g}x{its}"

    @property
    def is_default(self) -> bool:
        return self.scale == 1 and self.iteration_scale == 1


def grid(method: str) -> tuple[list[Point], str]:
    """The method's grid points and one line saying what is varied (or why nothing is)."""
    cls = REGISTRY[method]
    if not issubclass(cls, ClosedFormMethod):
        points = [Point(method, "lr", s, k) for k in ITERATION_SCALES for s in SCALES]
        return points, "lr x {1/3, 1, 3} x iterations {1, 2} of the defaults"
    if any(f.name == CLOSED_FORM_KNOB for f in dataclasses.fields(cls.Params)):
        points = [Point(method, CLOSED_FORM_KNOB, s) for s in SCALES]
        return points, f"closed form (no lr): {CLOSED_FORM_KNOB} x {{1/3, 1, 3}} of its default"
    return [Point(method, None)], "closed form with no scale parameter: its default only"


def defaults(method: str, scenario: Scenario) -> dict[str, Any]:
    """The method's defaults for ``scenario``'s concepts in its model, as the erasure config
    resolves them: lr, iterations, and the closed-form knob's value when it has one."""
    plan = validate(
        EraseConfig(method=method, concepts=list(scenario.concepts), model=scenario.model)
    )
    out: dict[str, Any] = {"iterations": plan.iterations, "scope": plan.scope}
    if not issubclass(plan.method_cls, ClosedFormMethod):
        return {**out, "lr": plan.lr}
    # a closed form takes no step, so its planned lr means nothing: its knob stands in
    params = build_params(plan.method_cls, {})
    if hasattr(params, CLOSED_FORM_KNOB):
        out[CLOSED_FORM_KNOB] = getattr(params, CLOSED_FORM_KNOB)
    return out


def variant(point: Point, default: Mapping[str, Any]) -> Variant:
    """The harness variant of ``point`` on a concept whose defaults are ``default``."""
    if point.knob == "lr":
        return Variant(
            point.label,
            point.method,
            iterations=default["iterations"] * point.iteration_scale,
            lr=float(default["lr"] * point.scale),
        )
    if point.knob is not None:
        return Variant(
            point.label, point.method, {point.knob: float(default[point.knob] * point.scale)}
        )
    return Variant(point.label, point.method)


# ---------------------------------------------------------------------------- selection


def _pooled(row: Mapping[str, Any], rate: str, count: str) -> tuple[int, int]:
    """(hits, n) of ``rate`` summed over the row's concepts."""
    per = row["concepts"].values()
    return sum(hits_of(c[rate], c[count]) for c in per), sum(c[count] for c in per)


def _mean(row: Mapping[str, Any], rate: str) -> float:
    per = list(row["concepts"].values())
    return sum(c[rate] for c in per) / len(per)


def retain_kept(row: Mapping[str, Any]) -> bool:
    """Retain not below the base model's beyond noise on every concept of ``row``."""
    for c in row["concepts"].values():
        n = c["retain_pairs"]
        base, erased = (hits_of(c["retain_base"], n), n), (hits_of(c["retain"], n), n)
        if change(base, erased)["ci95"][1] < 0:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Pick:
    """The selection: the chosen ``label``, whether any point was ``admissible``, the
    labels that ``tied`` with the best (the pick among them), and the best itself."""

    label: str
    admissible: bool
    best: str
    tied: tuple[str, ...]


def select(rows: Mapping[str, Mapping[str, Any]]) -> Pick:
    """The protocol's pick among one method's grid rows (label -> row); see :data:`RULE`.
    A row needs ``concepts`` (concept -> erasure, erasure_images, retain, retain_pairs,
    retain_base), ``optimizer_steps``, ``is_default`` and ``scale``."""
    if not rows:
        raise ValueError("no grid points to select from")
    ok = [lab for lab, r in rows.items() if retain_kept(r)]

    def cost(lab: str) -> tuple[int, bool, float]:
        r = rows[lab]
        return r["optimizer_steps"], not r["is_default"], r["scale"]

    if not ok:
        label = min(
            rows,
            key=lambda lab: (-_mean(rows[lab], "retain"), -_mean(rows[lab], "erasure"), *cost(lab)),
        )
        return Pick(label, False, label, (label,))
    best = max(ok, key=lambda lab: (_mean(rows[lab], "erasure"), *(-x for x in cost(lab))))
    top = _pooled(rows[best], "erasure", "erasure_images")
    tied = tuple(
        lab
        for lab in ok
        if change(top, _pooled(rows[lab], "erasure", "erasure_images"))["ci95"][1] >= 0
    )
    return Pick(min(tied, key=cost), True, best, tied)


# ---------------------------------------------------------------------------- report


def _fraction(x: float) -> str:
    return str(Fraction(x).limit_denominator(10))


def _knob_cell(row: Mapping[str, Any]) -> str:
    if row["knob"] is None:
        return "default"
    return f"{row['knob']} x{_fraction(row['scale'])}" + (
        f", it x{row['iteration_scale']}" if row["knob"] == "lr" else ""
    )


def _setting(c: Mapping[str, Any]) -> str:
    """A concept's lr / iterations / knob value as run."""
    parts = [f"{k} {c[k]:.3g}" for k in ("lr", CLOSED_FORM_KNOB) if c.get(k) is not None]
    scope = [f"scope {c['scope']}"] if "scope" in c else []
    # a closed form takes no step: its iteration count is a placeholder
    its = [f"{c['iterations']} it"] if "lr" in c else []
    return ", ".join([*parts, *its, *scope]) or "default"


def markdown(results: Results) -> str:
    """The tuning report, from its results file: the picks, then every method's grid."""
    s = results["settings"]
    concepts = s["tuning_concepts"]
    runs = runs_on(results)
    grids = {m: t for m, t in results["tables"].items() if m != "picks"}
    order = sorted(grids, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
    lines = [
        f"# Fair tuning on `{s['model']}`",
        "",
        f"Tuning concepts: {', '.join(concepts)} (each erased and scored on its own; no "
        f"benchmark scenario uses them). {s['num_images']} images per prompt, DDIM-"
        f"{s['steps']}, seed {s['seed']}, no attacks; "
        + (runs[0] if len(runs) == 1 else "rows ran on several machines")
        + ".",
        "",
        "Grid: lr x {1/3, 1, 3} x iterations {1, 2} of each fine-tuning method's "
        f"`{s['model']}` default; closed-form methods: {CLOSED_FORM_KNOB} x {{1/3, 1, 3}} "
        "when they have it.",
        f"Selection rule: {RULE}",
        "Every rate: value [95 % Wilson interval]; retain † = below the base model's beyond "
        "noise; mean erasure † = below the best admissible point's beyond noise.",
        "",
        "Reproduce: `OMP_NUM_THREADS=1 .venv/bin/python bench/tune.py "
        + ("" if s["model"] == "toyworld" else f"--model {s['model']} ")
        + f"--methods {','.join(order)} --num-images {s['num_images']} --steps {s['steps']} "
        f"--seed {s['seed']}`",
        "",
        "## Picks",
        "",
        "| method | pick | setting per concept | admissible | = default | "
        "default: erasure / retain per concept | points |",
        "|---|---|---|---|---|---|---|",
    ]
    picks = {m: select(grids[m]["rows"]) for m in order}
    for m in order:
        rows, pick = grids[m]["rows"], picks[m]
        chosen = rows[pick.label]
        default = next((r for r in rows.values() if r["is_default"]), None)
        default_cell = (
            "not run"
            if default is None
            else "; ".join(
                f"{c} {fmt(default['concepts'][c]['erasure'])} / "
                f"{fmt(default['concepts'][c]['retain'])}"
                for c in concepts
            )
        )
        n_points = len(grid(m)[0]) if m in REGISTRY else len(rows)
        lines.append(
            f"| {m} | {_knob_cell(chosen)} | "
            + "; ".join(f"{c}: {_setting(chosen['concepts'][c])}" for c in concepts)
            + f" | {'yes' if pick.admissible else 'NONE admissible: highest retain'} | "
            f"{'yes' if chosen['is_default'] else 'no'} | {default_cell} | "
            f"{len(rows)} of {n_points}"
            + ("" if len(rows) >= n_points else " (grid incomplete)")
            + " |"
        )
    for m in order:
        table, pick = grids[m], picks[m]
        rows = table["rows"]
        lines += [
            "",
            f"## {m}",
            "",
            f"{table['meta']['grid']}. Defaults: "
            + "; ".join(f"{c}: {_setting(table['meta']['defaults'][c])}" for c in concepts)
            + ". Base retain: "
            + ", ".join(
                f"{c} {fmt(next(iter(rows.values()))['concepts'][c]['retain_base'])}"
                for c in concepts
            )
            + ".",
            "",
            "| point | "
            + " | ".join(f"{c} erasure | {c} retain" for c in concepts)
            + " | mean erasure | admissible | steps | erasure s | evaluation s | |",
            "|---|" + "---|" * (2 * len(concepts) + 6),
        ]
        top = rows[pick.best]
        top_k, top_n = _pooled(top, "erasure", "erasure_images")
        for lab, r in rows.items():
            k, n = _pooled(r, "erasure", "erasure_images")
            cells = []
            for c in concepts:
                pc = r["concepts"][c]
                cells.append(rate_cell(pc["erasure"], pc["erasure_images"]))
                cells.append(rate_cell(pc["retain"], pc["retain_pairs"], pc["retain_base"]))
            mark = (
                "**pick**"
                if lab == pick.label
                else "tie"
                if pick.admissible and lab in pick.tied
                else ""
            )
            best = top_k / top_n if pick.admissible else None
            lines.append(
                f"| {_knob_cell(r)}{' (default)' if r['is_default'] else ''} (`{lab}`) | "
                + " | ".join(cells)
                + f" | {rate_cell(k / n, n, best)} | {'yes' if retain_kept(r) else 'no'} | "
                f"{r['optimizer_steps']} | {r['seconds']:.0f} | "
                f"{r['evaluation_seconds']:.0f} | {mark} |"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- running


def tuning_on(model: str) -> tuple[Scenario, ...]:
    """:data:`TUNING`'s scenarios erased in ``model``."""
    return tuple(dataclasses.replace(s, model=model) for s in TUNING)


def run_point(
    point: Point,
    settings: EvalSettings,
    work: Path,
    default: Mapping[str, Mapping[str, Any]],
    scenarios: tuple[Scenario, ...] = TUNING,
) -> tuple[str, dict[str, Any]]:
    """Erase and score ``point`` on every tuning concept of ``scenarios``; (base
    fingerprint, row)."""
    per: dict[str, dict[str, Any]] = {}
    fingerprint = ""
    for scenario in scenarios:
        (concept,) = scenario.concepts
        v = variant(point, default[concept])
        run = run_variant(scenario, v, settings, work)
        fingerprint, r = run.fingerprint, run.row
        per[concept] = {
            **({"lr": v.lr} if v.lr is not None else {}),
            "iterations": r["iterations"],
            **({CLOSED_FORM_KNOB: v.params[CLOSED_FORM_KNOB]} if v.params else {}),
            "optimizer_steps": r["optimizer_steps"],
            "seconds": r["seconds"],
            "evaluation_seconds": r["evaluation_seconds"],
            "erasure": r["erasure"],
            "erasure_images": r["erasure_images"],
            "erasure_base": r["erasure_base"],
            "retain": r["retain_accuracy"],
            "retain_pairs": r["retain_pairs"],
            "retain_base": r["retain_base"],
        }
    row = {
        "method": point.method,
        "knob": point.knob,
        "scale": float(point.scale),
        "iteration_scale": point.iteration_scale,
        "is_default": point.is_default,
        "optimizer_steps": sum(c["optimizer_steps"] for c in per.values()),
        "seconds": round(sum(c["seconds"] for c in per.values()), 1),
        "evaluation_seconds": round(sum(c["evaluation_seconds"] for c in per.values()), 1),
        "concepts": per,
    }
    return fingerprint, row


def recorded(
    out: Path, settings: Mapping[str, Any], method: str, meta: Mapping[str, Any]
) -> Results | None:
    """The results file when it already holds ``method``'s table measured with these
    ``settings``, grid and defaults (its points are kept, not run again: a tuning run
    that stops resumes at the first missing point), else None."""
    results = read("tuning", out)
    if results is None or results["settings"] != plain(dict(settings)):
        return None
    table = results["tables"].get(method)
    if table is None:
        return None
    kept = {k: v for k, v in table["meta"].items() if k != "model_fingerprint"}
    return results if kept == plain(dict(meta)) else None


def _line(label: str, row: Mapping[str, Any]) -> str:
    return (
        f"{label}: "
        + "; ".join(
            f"{c} erasure {fmt(p['erasure'])}, retain {fmt(p['retain'])} (base "
            f"{fmt(p['retain_base'])})"
            for c, p in row["concepts"].items()
        )
        + (
            f"; {row['optimizer_steps']} steps, erasure {row['seconds']:.0f} s, evaluation "
            f"{row['evaluation_seconds']:.0f} s"
        )
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated (default: all eight)"
    )
    ap.add_argument("--num-images", type=int, default=4, help="images per prompt")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model",
        default="toyworld",
        choices=("toyworld", "toyworld-sd"),
        help="the bundled model tuned on, around its own family's defaults",
    )
    ap.add_argument("--work", type=Path, default=None, help="default runs/bench-tune[-MODEL]")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results, toyworld-sd: bench/results/toyworld-sd)",
    )
    ap.add_argument("--machine-note", default="", help="appended to the machine line")
    ap.add_argument(
        "--points",
        default="",
        help="comma-separated point labels to run (default: every point of the grid); "
        "processes that split a grid this way merge into one results file",
    )
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown or not methods:
        ap.error(f"unknown method(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
    if args.num_images < 1 or args.steps < 1:
        ap.error("--num-images and --steps must be positive")
    toyworld = args.model == "toyworld"
    if args.work is None:
        args.work = Path("runs/bench-tune" + ("" if toyworld else f"-{args.model}"))
    if args.out is None:
        args.out = RESULTS if toyworld else RESULTS / args.model
    scenarios = tuning_on(args.model)
    only = {p for p in args.points.split(",") if p}
    labels = {p.label for m in methods for p in grid(m)[0]}
    if only - labels:
        ap.error(f"unknown point(s) {sorted(only - labels)}; the grid has {sorted(labels)}")
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
        "tuning_concepts": sorted(concepts_of(TUNING)),
        "scales": [str(s) for s in SCALES],
        "iteration_scales": list(ITERATION_SCALES),
    }
    for method in methods:
        points, what = grid(method)
        default = {s.concepts[0]: defaults(method, s) for s in scenarios}
        merged = recorded(args.out, settings, method, {"grid": what, "defaults": default})
        for point in points:
            if only and point.label not in only:
                continue
            if merged is not None and point.label in merged["tables"][method]["rows"]:
                print(f"{point.label}: already recorded with these settings, kept", flush=True)
                continue
            t0 = time.time()
            fingerprint, row = run_point(point, eval_settings, args.work, default, scenarios)
            merged = record(
                "tuning",
                settings,
                method,
                {point.label: row},
                markdown,
                meta={"grid": what, "defaults": default, "model_fingerprint": fingerprint},
                out=args.out,
                machine_note=args.machine_note,
            )
            print(_line(point.label, row) + f" ({time.time() - t0:.0f} s wall)", flush=True)
        # with the points other processes recorded under the same settings and defaults
        merged = recorded(args.out, settings, method, {"grid": what, "defaults": default})
        rows = {} if merged is None else merged["tables"][method]["rows"]
        if set(rows) != {p.label for p in points}:
            print(f"{method}: {len(rows)} of {len(points)} points recorded; no pick yet")
            continue
        pick = select(rows)
        chosen = rows[pick.label]
        record(
            "tuning",
            settings,
            "picks",
            {method: {**dataclasses.asdict(pick), "is_default": chosen["is_default"]}},
            markdown,
            out=args.out,
            machine_note=args.machine_note,
        )
        print(f"{method}: pick {pick.label}" + ("" if pick.admissible else " (none admissible)"))


if __name__ == "__main__":
    main()
