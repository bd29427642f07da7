"""The scorecard: generate with the base model and each erased model (same prompts, same
seeds), judge every image, and compute the metrics of :mod:`unsee.evaluate.metrics`.

The stages live in their own modules: :mod:`~unsee.evaluate.plan` (settings, items, judge
and prompt set), :mod:`~unsee.evaluate.runner` (generation and judging through the cache,
sharded over processes under ``accelerate launch``), :mod:`~unsee.evaluate.attack_runs`,
:mod:`~unsee.evaluate.sections` (the JSON, typed in :mod:`~unsee.evaluate.schema`) and
:mod:`~unsee.evaluate.grids` (the report's images). Base-model images are cached on disk
(:mod:`unsee.evaluate.cache`), so comparing several erasures pays for the base once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unsee.errors import UnseeError
from unsee.evaluate import attacks as atk
from unsee.evaluate.attack_runs import attack_data, attack_jobs, run_attacks
from unsee.evaluate.grids import AttackGrid, Grid, attack_grids, before_after_grids
from unsee.evaluate.plan import EvalSettings, build_context, check_settings, file_prompts
from unsee.evaluate.prompt_sets import toyworld_prompt_set
from unsee.evaluate.runner import applied, run_model
from unsee.evaluate.sections import attack_section, build_scorecard, cost_section
from unsee.models.bundle import Bundle
from unsee.models.family import model_family
from unsee.models.fingerprint import model_fingerprint

__all__ = ["EvalResult", "EvalSettings", "Grid", "evaluate", "evaluate_models"]


@dataclasses.dataclass
class EvalResult:
    """A scorecard (JSON-ready dict), the grids the report shows and the attacks' images."""

    scorecard: dict[str, Any]
    grids: list[Grid]
    attack_grids: list[AttackGrid] = dataclasses.field(default_factory=list)


def evaluate(
    model: str | Bundle,
    erased: Sequence[Path],
    concepts: Sequence[str],
    settings: EvalSettings | None = None,
) -> EvalResult:
    """Score one erased model (the base with every artifact in ``erased`` applied) against
    the base ``model`` (``"toyworld"``, a diffusers folder, a hub id, or a loaded *unmodified*
    :class:`Bundle`). With ``erased`` empty the base is scored against itself."""
    label = "+".join(Path(a).name for a in erased) or "base (itself)"
    return evaluate_models(model, {label: list(erased)}, concepts, settings)[0]


def evaluate_models(
    model: str | Bundle,
    erased: Mapping[str, Sequence[Path]],
    concepts: Sequence[str],
    settings: EvalSettings | None = None,
) -> list[EvalResult]:
    """Score several erased models (label -> artifacts applied together) against one base,
    on the same prompts and seeds; the base images are generated (or read from the cache)
    once. Returns one :class:`EvalResult` per label, in order. Bad inputs raise
    :class:`UnseeError` before any model runs."""
    from accelerate import PartialState

    from unsee.artifacts import check_fit, fingerprint, read_artifacts, read_model_card
    from unsee.models.bundle import load_bundle

    t0 = time.time()
    s = settings or EvalSettings()
    check_settings(s, concepts)
    plan = atk.plan_attacks(s.attacks, s.attack_budget)
    if isinstance(model, str) and model_family(model).vocabulary == "toyworld":
        toyworld_prompt_set(concepts)  # refuse unknown concepts before loading anything
    cards = {lab: [read_model_card(Path(a)) for a in arts] for lab, arts in erased.items()}
    file_rows = file_prompts(s)
    if s.device == "cuda" and not torch.cuda.is_available():
        raise UnseeError("--device cuda, but no CUDA device is available")
    # cpu=True is what lets several launched CPU processes form a (gloo) process group.
    state = PartialState(cpu=s.device == "cpu" or not torch.cuda.is_available())
    device = torch.device("cpu") if s.device == "cpu" else state.device
    bundle = model if isinstance(model, Bundle) else load_bundle(model, device=device)
    for name in plan.names:  # budgets that cannot run on this model stop before any work
        if name in atk.BUDGETS:
            plan.budget(name, bundle.family)
    ctx = build_context(bundle, list(concepts), file_rows, s, str(device), plan)
    for arts in erased.values():  # fail on a mismatched artifact before any generation
        paths = [Path(a) for a in arts]
        check_fit(bundle, paths, read_artifacts(paths))
    base = run_model(ctx, model_fingerprint(bundle), "base")
    base_fp = fingerprint(bundle.unet)  # what artifact cards record as their base
    with state.split_between_processes(attack_jobs(ctx)) as mine:
        jobs = attack_data(ctx, list(mine))  # base weights: the attacks' training images
    results = []
    for lab, arts in erased.items():
        with applied(bundle, [Path(a) for a in arts]):
            out = run_model(ctx, model_fingerprint(bundle), lab)
            outcomes = run_attacks(ctx, jobs)
        card = build_scorecard(ctx, base, out, lab, [Path(a) for a in arts], cards[lab], base_fp)
        if plan.names:
            card["attacks"] = attack_section(ctx, card, out, outcomes)
        card["cost"] = cost_section(
            cards[lab], base, out, time.time() - t0, state.num_processes, str(device)
        )
        results.append(
            EvalResult(card, before_after_grids(ctx, base, out), attack_grids(ctx, out, outcomes))
        )
    return results
