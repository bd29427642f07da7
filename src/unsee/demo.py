"""The main job on the bundled ToyWorld model (``unsee demo``): erase ``star`` with each
method, score every erasure against the base model on the same prompts and seeds, and
write one comparison report."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from unsee.errors import UnseeError
from unsee.io import MARKER, check_output_dir, write_json

#: One row per method family (ESD by esd-x; `--method esd-u` etc. add variants).
DEMO_METHODS: tuple[str, ...] = ("esd-x", "uce", "kscu", "mim-mu")
#: Evaluation of the demo: fewer DDIM steps than the quality table, to stay within minutes.
DEMO_STEPS = 25
DEMO_ESD_TRAJECTORY = 25


def available_methods(requested: Sequence[str] | None) -> list[str]:
    from unsee.erase.registry import REGISTRY, get_method

    names = list(requested) if requested else [m for m in DEMO_METHODS if m in REGISTRY]
    for m in names:
        get_method(m)
    return names


def run_demo(
    out: Path,
    concept: str = "star",
    methods: Sequence[str] | None = None,
    num_images: int = 6,
    steps: int = DEMO_STEPS,
    overwrite: bool = True,
) -> Path:
    """Erase ``concept`` from ToyWorld with each method, evaluate, write ``out/report.html``,
    ``out/scorecards.json`` and one artifact per method under ``out/artifacts/``."""
    from unsee.erase.engine import EraseConfig, run_erasure
    from unsee.evaluate.scorecard import EvalSettings, evaluate_models
    from unsee.models.bundle import load_bundle
    from unsee.report.html import write_report

    names = available_methods(methods)
    if num_images <= 0 or steps <= 0:
        raise UnseeError("--num-images and --steps must be positive")
    check_output_dir(out, overwrite, "demo")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"kind": "demo"})  # the folder is unsee's from now on
    t0 = time.time()
    artifacts = {}
    for m in names:
        art = out / "artifacts" / m
        # ESD samples a trajectory every iteration: the demo draws it in 25 DDIM steps instead
        # of 50 to stay within minutes on 2 CPU cores (recorded in the model card)
        params = {"ddim_steps": DEMO_ESD_TRAJECTORY} if m.startswith("esd") else {}
        run_erasure(
            EraseConfig(method=m, concepts=[concept], params=params),
            art,
            overwrite=True,
            bundle=load_bundle("toyworld"),
        )
        artifacts[m] = [art]
    results = evaluate_models(
        "toyworld", artifacts, [concept], EvalSettings(num_images=num_images, steps=steps)
    )
    write_report(
        out / "report.html", results, title=f"unsee demo: erasing '{concept}' from ToyWorld"
    )
    write_json(
        out / "scorecards.json",
        {
            "concept": concept,
            "methods": names,
            "wall_seconds": round(time.time() - t0, 1),
            "scorecards": [r.scorecard for r in results],
        },
    )
    return out
