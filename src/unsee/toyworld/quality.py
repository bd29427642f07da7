"""The quality table of the shipped ToyWorld model, measured by the judge.

Each prompt gets ``num_images`` images (seeds ``seed .. seed+n-1``), DDIM sampling.
A prompt's score is the share of its images whose judged attribute matches the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unsee.models.bundle import Bundle
from unsee.models.sampling import generate
from unsee.toyworld.judge import load_judge, predict
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


def measure_quality(
    bundle: Bundle,
    num_images: int = 64,
    seed: int = 0,
    steps: int = 50,
    guidance: float | None = None,
) -> dict:
    """Returns {"prompts": [...per prompt...], "groups": {group: {"mean":, "min":, "bar":,
    "pass":}}, "settings": {...}}."""
    judge = load_judge()
    qps = quality_prompts()
    prompts = [q.prompt for q in qps for _ in range(num_images)]
    seeds = [seed + k for _ in qps for k in range(num_images)]
    g = bundle.default_guidance if guidance is None else guidance
    images = generate(bundle, prompts, seeds, steps=steps, guidance=g, description="quality")
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
            "sampler": "DDIM eta=0",
        },
    }


def quality_markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"DDIM {s['steps']} steps, guidance {s['guidance']}, {s['num_images']} images per "
        f"prompt, seeds {s['seed']}..{s['seed'] + s['num_images'] - 1}.",
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
