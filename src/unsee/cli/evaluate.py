"""``unsee eval``: score erased models against their base; writes scorecard.json and
report.html. The CLI layer joins evaluation (:mod:`unsee.evaluate`) and the report
(:mod:`unsee.report`); neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unsee.cli.common import JUDGES, app, clean_errors, examples
from unsee.errors import UnseeError


@app.command(
    "eval",
    epilog=examples(
        "unsee eval --model toyworld --erased runs/star --concept star --out ev/",
        "unsee eval --model toyworld --erased runs/star-uce --erased runs/star-esd-x "
        "--compare --concept star --out ev/ (two models side by side)",
        "unsee eval --model toyworld --erased runs/star --erased runs/circle --stack "
        "--concept star --concept circle --out ev/ (both applied as one model)",
        "unsee eval --model sd/ --erased runs/cat --concept 'a cat' --judge clip:clip/ "
        "--retain 'a dog' --attacks paraphrase,unlearndiffatk --out ev/",
        "accelerate launch --num_processes 2 -m unsee.cli eval ... (sharded)",
    ),
)
@clean_errors
def eval_cmd(
    model: Annotated[
        str,
        typer.Option(help="base model: 'toyworld', 'toyworld-sd', a diffusers folder or a hub id"),
    ],
    concept: Annotated[list[str], typer.Option(help="erased concept to score (repeatable)")],
    out: Annotated[Path, typer.Option(help="output folder (scorecard.json, report.html)")],
    erased: Annotated[
        list[Path] | None,
        typer.Option(
            help="erasure artifact (repeatable; two or more need --compare or --stack); "
            "none scores the base against itself"
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="each --erased is its own model, scored side by side on the same seeds "
            "(labelled by its folder name)",
        ),
    ] = False,
    stack: Annotated[
        bool,
        typer.Option("--stack", help="all --erased applied together as one model"),
    ] = False,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="extra prompts: text file or CSV with a prompt column (I2P, COCO-30k, ...)"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="use only the first N prompts of --prompts")
    ] = None,
    num_images: Annotated[int, typer.Option(help="images per prompt")] = 8,
    seed: Annotated[
        int, typer.Option(help="image k of a prompt uses seed+k (or evaluation_seed+k from a CSV)")
    ] = 0,
    steps: Annotated[int, typer.Option(help="DDIM steps")] = 50,
    guidance: Annotated[float | None, typer.Option(help="CFG scale (model default)")] = None,
    judge: Annotated[
        str | None,
        typer.Option(help=f"one of {JUDGES} (default: toyworld for ToyWorld, nudenet for nudity)"),
    ] = None,
    retain: Annotated[
        list[str] | None,
        typer.Option(help="retain concept for Stable Diffusion models (repeatable)"),
    ] = None,
    clip: Annotated[
        str | None, typer.Option(help="CLIP folder or hub id for the CLIP score")
    ] = None,
    nudenet_threshold: Annotated[float, typer.Option(help="NudeNet detection threshold")] = 0.6,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="image cache (default $UNSEE_CACHE/eval-images or ~/.cache/unsee/eval-images)"
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not cache images")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="comma-separated attacks on the erased model: paraphrase, unlearndiffatk "
            "(official), softprompt (embedding upper bound), inversion, resurgence"
        ),
    ] = None,
    attack_budget: Annotated[
        list[str] | None,
        typer.Option(
            help="ATTACK.FIELD=VALUE budget override (repeatable), e.g. "
            "unlearndiffatk.iterations=40 or resurgence.lr=1e-4"
        ),
    ] = None,
) -> None:
    """Score erased models against their base: scorecard.json and report.html.

    Target rate, erasure, retain accuracy, FID, overall, attacks; runs sharded under
    `accelerate launch`. With --compare, scorecard.json holds one scorecard per model
    (format unsee-comparison/1, docs/evaluation.md)."""
    from accelerate import PartialState

    from unsee.evaluate import EvalSettings, evaluate, evaluate_models
    from unsee.evaluate.attacks import parse_budget
    from unsee.evaluate.cache import default_cache_dir
    from unsee.evaluate.schema import COMPARISON
    from unsee.io import atomic_dir, check_output_dir, write_json
    from unsee.report.html import write_report

    arts = list(erased or [])
    models = compared_models(arts, compare, stack)
    check_output_dir(out, overwrite, "scorecard")
    settings = EvalSettings(
        num_images=num_images,
        seed=seed,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        prompts_file=prompts,
        limit=limit,
        judge=judge,
        clip=clip,
        retain=tuple(retain or ()),
        nudenet_threshold=nudenet_threshold,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        device=device,
        attacks=tuple(a.strip() for a in (attacks or "").split(",") if a.strip()),
        attack_budget=parse_budget(attack_budget or []),
    )
    results = (
        [evaluate(model, arts, concept, settings)]
        if models is None
        else evaluate_models(model, models, concept, settings)
    )
    if not PartialState().is_main_process:
        return

    def build(tmp: Path) -> None:
        write_json(
            tmp / "scorecard.json",
            {"format": COMPARISON, "scorecards": [r.scorecard for r in results]}
            if models is not None
            else results[0].scorecard,
        )
        write_report(tmp / "report.html", results)

    atomic_dir(out, build, "scorecard", overwrite=True)
    for r in results:
        _echo_summary(r.scorecard, "" if models is None else f"{r.scorecard['label']}: ")
    typer.echo(f"wrote {out / 'scorecard.json'} and {out / 'report.html'}")


def compared_models(erased: list[Path], compare: bool, stack: bool) -> dict[str, list[Path]] | None:
    """With ``--compare``, the models ``unsee eval`` scores side by side (label -> its one
    artifact; the label is the folder name, numbered on a clash); None when every artifact
    is applied together as one model. Two or more artifacts need that choice made
    explicitly, since stacking and comparing answer different questions."""
    if compare and stack:
        raise UnseeError("--compare and --stack exclude each other: give one")
    if len(erased) > 1 and not (compare or stack):
        raise UnseeError(
            f"{len(erased)} --erased artifacts: add --compare (each its own model, side by "
            "side) or --stack (all applied together as one model)"
        )
    if not compare:
        return None
    models: dict[str, list[Path]] = {}
    for a in erased:
        name = a.resolve().name
        label, k = name, 1
        while label in models:
            k += 1
            label = f"{name}-{k}"
        models[label] = [a]
    return models


def _echo_summary(card: dict, prefix: str) -> None:
    """One model's target rates, retain accuracy, overall and attacks, a line each."""
    rates = ", ".join(
        f"{c} {_change(v, 'target_rate_base', 'target_rate')}"
        + ("" if v["probe"]["valid"] else " (probe measures nothing: excluded)")
        for c, v in card["concepts"].items()
    )
    ret = card["retain"]
    overall = "n/a" if card["overall"] is None else f"{100 * card['overall']:.0f}%"
    retain_s = (
        ""
        if ret["accuracy"] is None
        else f"; retain {_change(ret, 'accuracy_base', 'accuracy')}; overall {overall}"
    )
    typer.echo(f"{prefix}target rate {rates}{retain_s}")
    for c, by_attack in card.get("attacks", {}).items():
        typer.echo(
            f"{prefix}attacks on {c}: "
            + ", ".join(
                f"{n} {_change(a, 'target_rate_before', 'target_rate_after')} "
                f"({a['seconds']:.0f} s)"
                for n, a in by_attack.items()
            )
        )


def _change(entry: dict, before: str, after: str) -> str:
    """``40% -> 75% (beyond noise)`` for two rates of a scorecard entry and its change."""
    noise = "beyond noise" if entry["change"]["beyond_noise"] else "within noise"
    return f"{100 * entry[before]:.0f}% -> {100 * entry[after]:.0f}% ({noise})"
