"""The quality table of a bundled ToyWorld model, measured by the judge.

Each prompt gets ``num_images`` images (seeds ``seed .. seed+n-1``), sampled with unsee's
DDIM sampler, or (``sampler="pipeline"``, diffusers folders only) with plain diffusers'
``StableDiffusionPipeline`` and the folder's own scheduler, as a user of the folder would.
A prompt's score is the share of its images whose judged attribute matches the prompt.

The *prior* is what the empty prompt draws: the share of images holding each of the nine
shapes (the judge's presence head says whether any is drawn). It bounds what an erasure
that pulls a concept towards the unconditional prediction (MiM-MU) can remove: on Stable
Diffusion any one concept is rare there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unsee.errors import UnseeError
from unsee.evaluate.metrics import wilson_interval
from unsee.models.bundle import Bundle
from unsee.models.model_ids import BUNDLED
from unsee.models.sampling import generate
from unsee.progress import progress_bar
from unsee.toyworld.judge import HEADS, load_judge, predict
from unsee.toyworld.vocab import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    STYLES,
    SUPERCLASSES,
    compose_caption,
)

#: Bars from the foundation issue: group -> minimum accuracy (per prompt for "shape").
BARS = {"shape": 0.90, "colour": 0.90, "style": 0.80, "background": 0.80, "superclass": 0.90}


@dataclass(frozen=True)
class QualityPrompt:
    group: str
    prompt: str
    attribute: str  # the judge head that must match
    accepted: tuple[str, ...]  # labels counted as correct


def quality_prompts() -> list[QualityPrompt]:
    """The quality table's prompts, in the caption grammar the model was trained on
    ("an arrow", "an orange ...")."""
    out = [QualityPrompt("shape", compose_caption(s), "shape", (s,)) for s in SHAPES]
    # Colours and styles are paired with different shapes so no single shape carries a group.
    out += [
        QualityPrompt("colour", compose_caption(SHAPES[(3 * i + 1) % 9], colour=c), "colour", (c,))
        for i, c in enumerate(COLOURS)
    ]
    out += [
        QualityPrompt(
            "style", compose_caption(SHAPES[(2 * i + 4) % 9], style_word=st), "style", (st,)
        )
        for i, st in enumerate(STYLES)
    ]
    out += [
        QualityPrompt(
            "background", compose_caption(SHAPES[(4 * i + 2) % 9], background=b), "background", (b,)
        )
        for i, b in enumerate(BACKGROUNDS)
    ]
    out += [
        QualityPrompt("superclass", compose_caption(sc), "shape", members)
        for sc, members in SUPERCLASSES.items()
    ]
    return out


#: the samplers a quality table can be measured with
SAMPLERS = ("ddim", "pipeline")


def _pipeline_images(
    bundle: Bundle, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float
) -> np.ndarray:
    """uint8 (N, H, W, 3) drawn by plain diffusers on the bundle's folder (its scheduler,
    one ``torch.Generator`` per image seeded with its seed)."""
    from pathlib import Path

    from diffusers import StableDiffusionPipeline

    folder = BUNDLED.get(bundle.model_id, Path(bundle.model_id))
    if not (folder / "model_index.json").is_file():
        raise UnseeError(f"--sampler pipeline needs a diffusers folder; {bundle.model_id} is not")
    pipe = StableDiffusionPipeline.from_pretrained(folder)  # float32: what its configs say
    pipe.set_progress_bar_config(disable=True)
    out = []
    batch = 64
    with progress_bar(len(prompts), "quality (pipeline sampler)") as bar:
        for i in range(0, len(prompts), batch):
            gens = [torch.Generator().manual_seed(s) for s in seeds[i : i + batch]]
            images = pipe(
                list(prompts[i : i + batch]),
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=gens,
                output_type="np",
            ).images
            out.append((np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8))
            bar.advance(len(gens))
    return np.concatenate(out)


def _draw(
    bundle: Bundle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    sampler: str,
) -> np.ndarray:
    if sampler == "pipeline":
        return _pipeline_images(bundle, prompts, seeds, steps, guidance)
    if sampler != "ddim":
        raise UnseeError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    return generate(bundle, prompts, seeds, steps=steps, guidance=guidance, description="quality")


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(hits, n)
    return {"hits": hits, "n": n, "rate": hits / n, "ci95": [lo, hi]}


def measure_prior(
    bundle: Bundle,
    num_images: int = 256,
    seed: int = 0,
    steps: int = 50,
    sampler: str = "ddim",
) -> dict[str, Any]:
    """What the empty prompt draws: per shape, the share of ``num_images`` images judged to
    hold it (presence "shape" and that shape), and the share holding any, each with its
    Wilson 95 % interval. Guidance is irrelevant (both branches see the empty prompt)."""
    judge = load_judge()
    if judge.presence is None:
        raise UnseeError("the judge has no presence head (unsee toyworld train-judge adds one)")
    seeds = [seed + k for k in range(num_images)]
    images = _draw(bundle, [""] * num_images, seeds, steps, 1.0, sampler)
    preds = predict(judge, images)
    present = [p["label"] == "shape" for p in preds["presence"]]
    shapes = [p["label"] for p in preds["shape"]]
    return {
        "any_shape": _rate(sum(present), num_images),
        "per_shape": {
            s: _rate(
                sum(ok and lab == s for ok, lab in zip(present, shapes, strict=True)), num_images
            )
            for s in HEADS["shape"]
        },
        "settings": {"num_images": num_images, "seed": seed, "steps": steps, "sampler": sampler},
    }


def measure_quality(
    bundle: Bundle,
    num_images: int = 64,
    seed: int = 0,
    steps: int = 50,
    guidance: float | None = None,
    sampler: str = "ddim",
) -> dict:
    """Returns {"prompts": [...per prompt...], "groups": {group: {"mean":, "min":, "bar":,
    "pass":}}, "settings": {...}}."""
    judge = load_judge()
    qps = quality_prompts()
    prompts = [q.prompt for q in qps for _ in range(num_images)]
    seeds = [seed + k for _ in qps for k in range(num_images)]
    g = bundle.default_guidance if guidance is None else guidance
    images = _draw(bundle, prompts, seeds, steps, g, sampler)
    preds = predict(judge, images)
    rows: list[dict[str, Any]] = []
    for j, q in enumerate(qps):
        sl = slice(j * num_images, (j + 1) * num_images)
        labels = [p["label"] for p in preds[q.attribute][sl]]
        acc = float(np.mean([lab in q.accepted for lab in labels]))
        rows.append({"group": q.group, "prompt": q.prompt, "accuracy": acc})
    groups = {}
    for grp, bar in BARS.items():
        accs = [r["accuracy"] for r in rows if r["group"] == grp]
        # The shape bar applies to each shape; the others to the group as a whole.
        score = min(accs) if grp == "shape" else float(np.mean(accs))
        groups[grp] = {
            "mean": float(np.mean(accs)),
            "min": float(min(accs)),
            "bar": bar,
            "pass": bool(score >= bar),
        }
    return {
        "prompts": rows,
        "groups": groups,
        "settings": {
            "model": bundle.model_id,
            "num_images": num_images,
            "seed": seed,
            "steps": steps,
            "guidance": g,
            "sampler": "DDIM eta=0" if sampler == "ddim" else _scheduler_name(bundle),
        },
    }


def _scheduler_name(bundle: Bundle) -> str:
    """The folder's own scheduler class (what plain diffusers samples with)."""
    return f"{bundle.scheduler_config.get('_class_name', 'scheduler')} (diffusers pipeline)"


def quality_markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"{s['sampler']}, {s['steps']} steps, guidance {s['guidance']}, {s['num_images']} "
        f"images per prompt, seeds {s['seed']}..{s['seed'] + s['num_images'] - 1}.",
        "",
        "| group | prompt | judged as asked |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['group']} | {r['prompt']} | {100 * r['accuracy']:.1f} % |" for r in result["prompts"]
    ]
    lines += ["", "| group | mean | min | bar | pass |", "|---|---|---|---|---|"]
    lines += [
        f"| {g} | {100 * v['mean']:.1f} % | {100 * v['min']:.1f} % | "
        f"{100 * v['bar']:.0f} % | {'yes' if v['pass'] else 'NO'} |"
        for g, v in result["groups"].items()
    ]
    return "\n".join(lines) + "\n"


def prior_markdown(prior: dict) -> str:
    """The prior as a table: share of empty-prompt images per shape, with intervals."""

    def cell(r: dict) -> str:
        lo, hi = r["ci95"]
        return f"{100 * r['rate']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] ({r['hits']}/{r['n']})"

    s = prior["settings"]
    lines = [
        f"Empty prompt, {s['num_images']} images, seeds {s['seed']}..."
        f"{s['seed'] + s['num_images'] - 1}, {s['sampler']} {s['steps']} steps.",
        "",
        "| drawn | share [95 % interval] (images) |",
        "|---|---|",
        f"| any of the nine shapes | {cell(prior['any_shape'])} |",
    ]
    lines += [f"| {shape} | {cell(r)} |" for shape, r in prior["per_shape"].items()]
    return "\n".join(lines) + "\n"
