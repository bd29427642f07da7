"""The bench harness: what every benchmark script in ``bench/`` builds on.

* **Scenarios and variants are data.** A :class:`Scenario` is what is erased (concepts, one
  round each or at once, the model); a :class:`Variant` is how (method, parameters,
  iteration and lr overrides, an artifact to start from). :data:`SCENARIOS` and
  :data:`VARIANTS` are the method comparison's tables; a study adds its own rows of the
  same types.
* **One run.** :func:`erase` erases a scenario with a variant into
  ``work/<scenario>/<variant>``; :func:`run_variant` erases and scores it with
  :func:`unsee.evaluate.evaluate_models` and returns the row the tables show.
* **One machine line.** :func:`run_on` (:func:`machine` and :func:`versions`) says where a
  row was measured; the store stamps it on every row it records.
* **One results store.** ``bench/results/<name>.json`` holds ``settings`` (what every row
  was measured with) and ``tables`` (``name -> {"meta", "rows"}``). :func:`record` merges
  rows into it under a file lock, so several processes can fill one table and an
  interrupted run keeps its finished rows: a row of the same label is replaced, a table
  whose ``meta`` (what its rows compare against, e.g. the base model's fingerprint) differs
  starts afresh, and so does the file when the settings differ. The ``.md`` (and any
  plot) is rewritten from the merged JSON each time, so it is a function of the JSON:
  :func:`rerender` rebuilds it after a renderer changes.
* **One set of formatting helpers**: :func:`fmt`, :func:`rate_cell`, :func:`runs_on`.

This is its own module rather than ``compare.py`` because the comparison is one study
among several: ``compare.py`` is its command line and its tables' layout, and the other
studies import this module, not a script with a ``main``. Scripts import it as
``harness`` (Python puts the script's own directory, ``bench/``, on the path).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import torch

from unsee.artifacts import apply_artifacts
from unsee.erase.config import EraseConfig
from unsee.erase.engine import ErasureResult, can_resume, run_erasure
from unsee.errors import UnseeError
from unsee.evaluate import EvalSettings, evaluate_models
from unsee.evaluate.metrics import change, hits_of, wilson_interval
from unsee.evaluate.schema import parse_scorecard
from unsee.io import atomic_write
from unsee.models.bundle import Bundle, load_bundle
from unsee.models.fingerprint import library_versions
from unsee.models.sampling import generate
from unsee.toyworld.judge import load_judge, predict
from unsee.toyworld.vocab import BACKGROUNDS, COLOURS, STYLES

__all__ = [
    "RESULTS",
    "SCENARIOS",
    "UNASKED",
    "VARIANTS",
    "Results",
    "Run",
    "Scenario",
    "Table",
    "Variant",
    "attribute_drift",
    "erase",
    "fmt",
    "load_model",
    "machine",
    "rate_cell",
    "read",
    "record",
    "rerender",
    "run_on",
    "run_variant",
    "runs_on",
    "summarise",
    "versions",
]

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    """What is erased: ``concepts``, at once or one round each (``sequential``), in
    ``model``. Artifacts go to ``work/<name>/<variant label>``."""

    name: str
    concepts: tuple[str, ...]
    sequential: bool = False
    model: str = "toyworld"


@dataclass(frozen=True)
class Variant:
    """How it is erased: ``method`` with ``params`` (the method's own fields), optional
    iteration and lr overrides (None: the method's defaults), ``on``: the label of a
    variant of the same scenario whose artifact this one starts from (run that one first),
    the run's ``loss_space`` (``native``, or ``epsilon``: the losses before issue 19), and
    other engine ``settings``.
    """

    label: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    iterations: int | None = None
    lr: float | None = None
    on: str | None = None
    loss_space: Literal["native", "epsilon"] = "native"
    #: engine settings of the run (:class:`EraseConfig` fields such as ``optimizer``)
    settings: Mapping[str, Any] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("star", ("star",)),
        Scenario("striped", ("striped",)),
        Scenario("three", ("star", "circle", "square")),
        # four shapes of different superclasses, one round each (issue 5)
        Scenario("sequential", ("star", "heart", "hexagon", "arrow"), sequential=True),
    )
}

#: plain Adam, no decay or clipping: every method's optimiser before issue 21
_ADAM = {"optimizer": "adam", "weight_decay": 0.0, "max_grad_norm": 0.0}
_CA_BEFORE = {"hflip": False, "freeze_start_token": False, "loss_mask": "none"}

VARIANTS: tuple[Variant, ...] = (
    Variant("esd-x", "esd-x"),
    # the demo's setting: 25-step trajectories, half ESD's sampling cost per iteration
    Variant("esd-x@25", "esd-x", {"ddim_steps": 25}),
    # ESD-x's lr on each bundled model, run on the other (toyworld-sd's default is 1e-4:
    # ToyWorld's 3e-4 cost it 6.7 retain points on star, 1e-4 1.6)
    Variant("esd-x@lr1e-4", "esd-x", lr=1e-4),
    Variant("esd-x@lr3e-4", "esd-x", lr=3e-4),
    Variant("esd-u", "esd-u"),
    # ESD-u's ToyWorld default before fair tuning (issue 19) took lr / 3 and twice the
    # iterations
    Variant("esd-u@lr3e-4", "esd-u", lr=3e-4, iterations=120),
    Variant("esd-all", "esd-all"),
    Variant("esd-x-strict", "esd-x-strict"),
    Variant("uce", "uce"),
    Variant("kscu", "kscu"),
    Variant("kscu-noreuse", "kscu", {"trajectory_reuse": False}),
    Variant("kscu@esd", "kscu", iterations=120),
    # the style preset trains cross-attention only; ESD-x's lr on the same scope
    Variant("kscu@lr3e-4", "kscu", lr=3e-4),
    # toyworld-sd's matched preset before fair tuning there (ESD-x's lr on that model)
    Variant("kscu@lr1e-4", "kscu", lr=1e-4),
    # the paper's key-step ablation at KSCU's budget: every step, and early steps only
    Variant("kscu-all-steps", "kscu", {"start": 0, "max_start": 0}),
    Variant("kscu-early-steps", "kscu", {"start": 0, "max_start": 0, "end": 15}),
    Variant("mim-mu", "mim-mu"),
    # three times MiM-MU's budget, for several concepts at once (each gets a third of it)
    Variant("mim-mu@360", "mim-mu", iterations=360),
    # MiM-MU's toyworld-sd lr before fair tuning there (ToyWorld's)
    Variant("mim-mu@lr1e-3", "mim-mu", lr=1e-3),
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
    # CA's ToyWorld default before fair tuning (issue 19) divided it by 3
    Variant("ca@lr1e-3", "ca", lr=1e-3),
    # Concept Ablation's official training details (issue 21), at the lr they ran at
    # (1e-3): the mirrors ToyWorld's default leaves out, each detail switched back alone,
    # and all of them (unsee's CA before they became its defaults)
    Variant("ca-hflip", "ca", {"hflip": True}, lr=1e-3),  # the official's mirrors (SD's)
    Variant("ca-adam", "ca", settings=_ADAM, lr=1e-3),
    Variant("ca-nohflip", "ca", {"hflip": False}, lr=1e-3),
    Variant("ca-nofreeze", "ca", {"freeze_start_token": False}, lr=1e-3),
    Variant("ca-nomask", "ca", {"loss_mask": "none"}, lr=1e-3),
    Variant("ca-before", "ca", _CA_BEFORE, settings=_ADAM, lr=1e-3),
)


# ---------------------------------------------------------------------------- running


def erase(
    scenario: Scenario,
    variant: Variant,
    work: Path,
    iterations: int | None = None,
    bundle: Bundle | None = None,
) -> ErasureResult:
    """Erase ``scenario``'s concepts with ``variant`` into ``work/<scenario>/<label>``
    (replaced if there). ``iterations`` overrides the variant's (reduced runs); ``bundle``
    reuses a loaded, unmodified model."""
    cfg = EraseConfig(
        method=variant.method,
        concepts=list(scenario.concepts),
        model=scenario.model,
        params=dict(variant.params),
        iterations=iterations or variant.iterations,
        lr=variant.lr,
        sequential=scenario.sequential,
        on=[str(work / scenario.name / variant.on)] if variant.on else [],
        loss_space=variant.loss_space,
        **variant.settings,
    )
    out = work / scenario.name / variant.label
    # a row stopped part-way (a session's end, kill -9) continues from its checkpoint when
    # the same plan made it, and ends where an uninterrupted run would
    return run_erasure(cfg, out, overwrite=True, resume=can_resume(cfg, out), bundle=bundle)


@dataclass(frozen=True)
class Run:
    """One scored variant: the base model's fingerprint, the artifact, the table row."""

    fingerprint: str
    artifact: Path
    row: dict[str, Any]


def run_variant(
    scenario: Scenario,
    variant: Variant,
    settings: EvalSettings,
    work: Path,
    iterations: int | None = None,
) -> Run:
    """Erase (:func:`erase`) and score the artifact against the base model with
    ``settings``; the row holds the erasure's cost and :func:`summarise`'s numbers."""
    res = erase(scenario, variant, work, iterations)
    cost = res.card["cost"]
    t0 = time.time()
    (scored,) = evaluate_models(
        scenario.model, {variant.label: [res.out]}, list(scenario.concepts), settings
    )
    row = {
        "method": variant.method,
        "params": res.card["hyperparameters"]["params"],
        "iterations": cost["iterations"],
        "optimizer_steps": cost["optimizer_steps"],
        "seconds": cost["wall_seconds"],
        "fit_seconds": cost.get("fit_seconds"),
        "peak_rss_mb": cost["peak_rss_mb"],
        "parameters_changed": cost["parameters_changed"],
        "evaluation_seconds": round(time.time() - t0, 1),
        **summarise(scored.scorecard),
    }
    return Run(scored.scorecard["model_fingerprint"], res.out, row)


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
        "fd_images": fid.images,
        "fd_reference_images": fid.reference_images,
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


def load_model(model: str = "toyworld", artifacts: Sequence[str | Path] = ()) -> Bundle:
    """``model`` on the GPU when there is one, with ``artifacts`` applied."""
    bundle = load_bundle(model, device="cuda" if torch.cuda.is_available() else "cpu")
    if artifacts:
        apply_artifacts(bundle, [Path(a) for a in artifacts])
    return bundle


#: the attributes a bare "a {shape}" prompt leaves to the model, and their values
UNASKED = {"style": STYLES, "colour": COLOURS, "background": BACKGROUNDS}


def attribute_drift(bundle: Bundle, shapes: Sequence[str], per_shape: int, steps: int) -> dict:
    """Draw "a {shape}" with seeds ``0..per_shape-1`` for each of ``shapes``: the judge's
    shape accuracy, and the share of images with each value of the :data:`UNASKED`
    attributes (what an erasure shifts that retain accuracy does not see)."""
    prompts = [f"a {s}" for s in shapes for _ in range(per_shape)]
    seeds = [k for _ in shapes for k in range(per_shape)]
    pred = predict(load_judge(), generate(bundle, prompts, seeds, steps=steps))
    hits = [p["label"] == q.split()[-1] for p, q in zip(pred["shape"], prompts, strict=True)]
    out: dict[str, Any] = {"shape_accuracy": float(np.mean(hits))}
    for attr, values in UNASKED.items():
        counts = collections.Counter(p["label"] for p in pred[attr])
        out[attr] = {v: counts.get(v, 0) / len(prompts) for v in values}
    return out


# ---------------------------------------------------------------------------- machine


def machine(note: str = "") -> str:
    """This machine: CPU, cores, torch threads, GPU, and ``note`` (e.g. how many runs
    shared it) in brackets."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    where = f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {gpu}"
    return where + (f" ({note})" if note else "")


def versions() -> str:
    """The libraries a number depends on, with their versions."""
    return ", ".join(f"{k} {v}" for k, v in library_versions().items())


def run_on(note: str = "") -> str:
    """Where a row is measured now: :func:`machine` and :func:`versions`."""
    return f"{machine(note)}; {versions()}"


# ---------------------------------------------------------------------------- store


class Table(TypedDict):
    """One table of a results file: ``meta`` is what its rows compare against (the base
    model's fingerprint, the prompts); ``rows`` maps a label to its numbers and ``run_on``.
    """

    meta: dict[str, Any]
    rows: dict[str, dict[str, Any]]


class Results(TypedDict):
    """A results file: the settings every row was measured with, and its tables."""

    settings: dict[str, Any]
    tables: dict[str, Table]


Render = Callable[[Results], str]
#: extra files written with the markdown: file name -> writer(results, path)
Files = Mapping[str, Callable[[Results, Path], None]]


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so that settings and
    meta compare equal to what the file holds."""
    return json.loads(json.dumps(value))


def read(name: str, out: Path = RESULTS) -> Results | None:
    """``out/<name>.json``, or None when there is none; raises ValueError naming the file
    when it is not a results file."""
    path = out / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("settings"), dict)
        and isinstance(data.get("tables"), dict)
        and all(
            isinstance(t, dict)
            and isinstance(t.get("meta"), dict)
            and isinstance(t.get("rows"), dict)
            for t in data["tables"].values()
        )
    )
    if not ok:
        raise ValueError(f"{path} is not a bench results file (settings and tables)")
    return Results(settings=data["settings"], tables=data["tables"])


@contextlib.contextmanager
def _locked(out: Path, name: str) -> Iterator[None]:
    """Held while ``out/<name>.json`` is read, merged and written back."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _text(text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return write


def _write(out: Path, name: str, results: Results, render: Render, files: Files) -> None:
    atomic_write(out / f"{name}.json", _text(json.dumps(results, indent=2) + "\n"))
    atomic_write(out / f"{name}.md", _text(render(results)))
    for file, writer in files.items():
        atomic_write(out / file, functools.partial(writer, results))


def write_document(path: Path, text: str) -> None:
    """Write ``text``, a document derived from results files (``compare --beside``), to
    ``path`` atomically; results themselves go through :func:`record`."""
    atomic_write(path, _text(text))


def replace_between(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the markers ``start`` and ``end`` in ``path`` (markers
    included) with ``text``, atomically; raises UnseeError when the markers are not there,
    leaving the file as it was."""
    old = path.read_text()
    i, j = old.find(start), old.find(end)
    if i < 0 or j < i:
        raise UnseeError(f"{path} has no markers {start!r} ... {end!r}")
    atomic_write(path, _text(old[:i] + text + old[j + len(end) :]))


def run_logged(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path) -> int:
    """Run ``cmd`` in ``cwd`` with its output (and the command line first) in ``log``;
    returns the exit code (a study's subprocess, e.g. an official script)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write(f"$ cd {shlex.quote(str(cwd))} && {shlex.join(cmd)}\n")
        fh.flush()
        return subprocess.run(
            list(cmd), cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT
        ).returncode


def write_input(path: Path, text: str) -> None:
    """Write an input file of a study's subprocess (an official script's prompt list or
    config; not a results file: :func:`record`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_json_input(path: Path, value: Any) -> None:
    """:func:`write_input` of ``value`` as JSON."""
    write_input(path, json.dumps(value, indent=1))


def read_json(path: Path) -> Any:
    """A JSON file a study's subprocess wrote (not a results file: :func:`read`)."""
    return json.loads(path.read_text())


def record(
    name: str,
    settings: Mapping[str, Any],
    table: str,
    rows: Mapping[str, Mapping[str, Any]],
    render: Render,
    *,
    meta: Mapping[str, Any] | None = None,
    out: Path = RESULTS,
    machine_note: str = "",
    files: Files | None = None,
) -> Results:
    """Merge ``rows`` (label -> numbers) into table ``table`` of ``out/<name>.json`` under
    a file lock, each stamped with ``run_on`` (:func:`run_on` with ``machine_note``), and
    rewrite ``<name>.md`` with ``render`` (and ``files``) from the merged results.

    A row of the same label is replaced; the table's other rows are kept when its ``meta``
    is the same, and the file's other tables when its ``settings`` are (rows measured
    otherwise do not compare, so they are dropped). Returns the merged results."""
    measured_with: dict[str, Any] = plain(dict(settings))
    against: dict[str, Any] = plain(dict(meta or {}))
    stamp = run_on(machine_note)
    new = {label: {**plain(dict(row)), "run_on": stamp} for label, row in rows.items()}
    with _locked(out, name):
        old = read(name, out)
        results = (
            old
            if old is not None and old["settings"] == measured_with
            else Results(settings=measured_with, tables={})
        )
        kept = results["tables"].get(table)
        before = kept["rows"] if kept is not None and kept["meta"] == against else {}
        results["tables"][table] = Table(meta=against, rows={**before, **new})
        _write(out, name, results, render, files or {})
    return results


def rerender(name: str, render: Render, out: Path = RESULTS, files: Files | None = None) -> None:
    """Rewrite ``out/<name>.md`` (and ``files``) from ``out/<name>.json`` as it is."""
    with _locked(out, name):
        results = read(name, out)
        if results is None:
            raise FileNotFoundError(out / f"{name}.json")
        _write(out, name, results, render, files or {})


# ---------------------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, ``n/a`` for None."""
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


def runs_on(results: Results) -> list[str]:
    """The distinct machines (with library versions) the rows were measured on, in order."""
    return list(
        dict.fromkeys(r["run_on"] for t in results["tables"].values() for r in t["rows"].values())
    )
