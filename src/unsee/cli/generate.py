"""``unsee generate``, ``judge`` and ``demo``: images from a model (erased or not), labels
for ToyWorld images, and the end-to-end demonstration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unsee.cli.common import app, clean_errors, examples, positive, sampling_options
from unsee.errors import UnseeError


@app.command(
    "generate",
    epilog=examples(
        "unsee generate --model toyworld --prompt 'a red star' --num-images 4 --out gen/",
        "unsee generate --model sd/ --erased runs/cat --prompts prompts.csv "
        "--negative-prompt blurry --height 512 --width 768 --dtype fp16 --device cuda --out gen/",
    ),
)
@clean_errors
def generate_cmd(
    model: Annotated[
        str, typer.Option(help="'toyworld', 'toyworld-sd', a diffusers folder or a hub id")
    ],
    out: Annotated[Path, typer.Option(help="output folder")],
    prompt: Annotated[list[str] | None, typer.Option(help="a prompt (repeatable)")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="text file or CSV with a prompt column")
    ] = None,
    negative_prompt: Annotated[
        str | None,
        typer.Option(help="what guidance steers away from, for every image (default: empty)"),
    ] = None,
    num_images: Annotated[int, typer.Option(help="images per prompt")] = 4,
    seed: Annotated[
        int, typer.Option(help="image k of a prompt uses seed+k (or evaluation_seed+k from a CSV)")
    ] = 0,
    steps: Annotated[int, typer.Option(help="DDIM steps")] = 50,
    guidance: Annotated[float | None, typer.Option(help="CFG scale (model default)")] = None,
    height: Annotated[
        int | None, typer.Option(help="image height in pixels (default: the model's)")
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="image width in pixels (default: the model's)")
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="fp32, fp16 or bf16 (artifacts are applied in fp32 first)")
    ] = "fp32",
    model_variant: Annotated[
        str | None,
        typer.Option(help="weight files saved with variant=... (fp16: *.fp16.safetensors)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "cpu",
    erased: Annotated[
        list[Path] | None, typer.Option(help="erasure artifact to apply (repeatable)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
) -> None:
    """Generate images: PNGs plus index.json.

    index.json records the prompt and seed of each image, the model, each artifact applied
    (id, folder, base fingerprint) and the settings."""
    from unsee.gallery import DTYPES, load_for_generation, write_gallery
    from unsee.io import check_output_dir
    from unsee.models.bundle import check_device
    from unsee.prompts import PromptRow, expand_seeds, read_prompts

    if bool(prompt) == (prompts is not None):
        raise UnseeError("give either --prompt (one or more) or --prompts FILE")
    positive("--num-images", num_images)
    sampling_options(steps, guidance, seed)
    positive("--batch-size", batch_size)
    for name, size in (("--height", height), ("--width", width)):
        if size is not None:
            positive(name, size)
    if dtype not in DTYPES:
        raise UnseeError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    check_device(device)
    rows = [PromptRow(p) for p in prompt] if prompt else read_prompts(prompts)  # type: ignore[arg-type]
    if any(not r.prompt.strip() for r in rows):
        raise UnseeError("empty prompt")
    check_output_dir(out, overwrite, "images")
    gen = load_for_generation(model, erased or [], device, dtype, model_variant)
    texts, seeds = expand_seeds(rows, num_images, seed)
    write_gallery(
        out,
        gen,
        texts,
        seeds,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        overwrite=True,
    )
    typer.echo(f"wrote {len(texts)} images to {out}")


#: Largest image ``judge`` opens (pixels): the judge reads 32 px, and a bigger file is
#: either a mistake or a decompression bomb.
MAX_JUDGE_PIXELS = 4096 * 4096


def _judge_input(path: Path):
    """A PNG as uint8 (32, 32, 3), the judge's input; one clear error for a file that is not
    an image or is too large to be one of a model's samples."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_JUDGE_PIXELS:
                raise UnseeError(
                    f"{path} is {im.width}x{im.height} pixels; the judge reads "
                    f"model samples (at most {MAX_JUDGE_PIXELS:,} pixels)"
                )
            return np.asarray(im.convert("RGB").resize((32, 32)))
    except (OSError, Image.DecompressionBombError) as exc:
        raise UnseeError(f"could not read image {path}: {exc}") from exc


@app.command("judge", epilog=examples("unsee judge images/ --out labels.json"))
@clean_errors
def judge_cmd(
    folder: Annotated[Path, typer.Argument(help="folder of PNG images")],
    out: Annotated[Path, typer.Option(help="JSON file to write")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing JSON file")] = False,
) -> None:
    """Judge ToyWorld images: per image, label and probability for each head."""
    import numpy as np

    from unsee.io import check_output_file, write_json
    from unsee.toyworld.judge import load_judge, predict

    check_output_file(out, overwrite)
    if not folder.is_dir():
        raise UnseeError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise UnseeError(f"no PNG images in {folder}")
    images = np.stack([_judge_input(p) for p in files])
    preds = predict(load_judge(), images)
    result = [{"file": p.name, **{k: preds[k][i] for k in preds}} for i, p in enumerate(files)]
    write_json(out, result)
    typer.echo(f"judged {len(files)} images -> {out}")


@app.command(
    "demo",
    epilog=examples(
        "unsee demo",
        "unsee demo --concept circle --method esd-x --method uce",
        "unsee demo --model toyworld-sd --method esd-x",
    ),
)
@clean_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    concept: Annotated[str, typer.Option(help="ToyWorld concept to erase")] = "star",
    method: Annotated[
        list[str] | None, typer.Option(help="method to run (repeatable; default: one per family)")
    ] = None,
    num_images: Annotated[int, typer.Option(help="evaluation images per prompt")] = 6,
    steps: Annotated[int, typer.Option(help="DDIM steps of the evaluation")] = 25,
    model: Annotated[
        list[str] | None,
        typer.Option(help="bundled model: toyworld, toyworld-sd (repeatable; default: both)"),
    ] = None,
) -> None:
    """The main job: erase a concept from the bundled models with each method, score, and
    write one report per model."""
    from unsee.demo import DEMO_MODELS, run_demo

    models = model or list(DEMO_MODELS)
    path = run_demo(
        out, concept=concept, methods=method, num_images=num_images, steps=steps, models=models
    )
    reports = ["report.html", *(f"report-{m}.html" for m in models[1:])]
    typer.echo(f"demo written to {path} (open {', '.join(str(path / r) for r in reports)})")
