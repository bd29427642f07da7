"""The main job on the bundled models (``unsee demo``): erase ``star`` with each method from
ToyWorld and from the same world in Stable Diffusion 1.x format (``toyworld-sd``), score
every erasure against its base model on the same prompts and seeds, and write one
comparison report per model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from unsee.errors import UnseeError
from unsee.io import MARKER, check_output_dir, write_json

#: One row per method family (ESD by esd-x; `--method esd-u` etc. add variants).
DEMO_METHODS: tuple[str, ...] = ("esd-x", "uce", "kscu", "mim-mu")
#: The bundled models the demo runs on by default, in order; the first one's report is
#: ``report.html``. Both within the main job's 10 minutes on 2 CPU cores: 8.5 minutes with
#: an empty image cache (ToyWorld 369 s, toyworld-sd 139 s; docs/toyworld.md).
DEMO_MODELS: tuple[str, ...] = ("toyworld", "toyworld-sd")
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
    models: Sequence[str] = DEMO_MODELS,
) -> Path:
    """Erase ``concept`` from each of ``models`` with each method, evaluate, and write
    ``out/report.html`` (the first model), ``out/report-<model>.html`` (the others),
    ``out/scorecards.json`` and one artifact per model and method under
    ``out/artifacts/<model>/``."""
    from unsee.erase.engine import EraseConfig, run_erasure
    from unsee.evaluate.scorecard import EvalSettings, evaluate_models
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED
    from unsee.report.html import write_report

    names = available_methods(methods)
    if num_images <= 0 or steps <= 0:
        raise UnseeError("--num-images and --steps must be positive")
    unknown = [m for m in models if m not in BUNDLED]
    if not models or unknown:
        raise UnseeError(f"the demo runs on the bundled models ({', '.join(BUNDLED)})")
    check_output_dir(out, overwrite, "demo")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"kind": "demo"})  # the folder is unsee's from now on
    t0 = time.time()
    runs = {}
    for i, model in enumerate(models):
        t_model = time.time()
        artifacts = {}
        for m in names:
            art = out / "artifacts" / model / m
            # ESD samples a trajectory every iteration: the demo draws it in 25 DDIM steps
            # instead of 50 to stay within minutes on 2 CPU cores (recorded in the card)
            params = {"ddim_steps": DEMO_ESD_TRAJECTORY} if m.startswith("esd") else {}
            run_erasure(
                EraseConfig(model=model, method=m, concepts=[concept], params=params),
                art,
                overwrite=True,
                bundle=load_bundle(model),  # erasure edits it in place: a fresh one each
            )
            artifacts[m] = [art]
        results = evaluate_models(
            model, artifacts, [concept], EvalSettings(num_images=num_images, steps=steps)
        )
        report = out / ("report.html" if i == 0 else f"report-{model}.html")
        write_report(report, results, title=f"unsee demo: erasing '{concept}' from {model}")
        runs[model] = {
            "report": report.name,
            "wall_seconds": round(time.time() - t_model, 1),
            "scorecards": [r.scorecard for r in results],
        }
    write_json(
        out / "scorecards.json",
        {
            "concept": concept,
            "methods": names,
            "models": list(models),
            "wall_seconds": round(time.time() - t0, 1),
            "runs": runs,
        },
    )
    return out
