"""``unsee toyworld ...``: render, train and measure the bundled ToyWorld models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from unsee.cli.common import clean_errors, examples, positive, sampling_options, toyworld_app
from unsee.errors import UnseeError


@toyworld_app.command(
    "render", epilog=examples("unsee toyworld render --n 64 --seed 0 --out renders/")
)
@clean_errors
def toyworld_render(
    n: Annotated[int, typer.Option("--n", help="number of images")],
    out: Annotated[Path, typer.Option(help="output folder")],
    seed: Annotated[int, typer.Option(help="seed; image i depends only on (seed, i)")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
) -> None:
    """Render ToyWorld images: PNGs plus labels.jsonl (caption and every attribute)."""
    from unsee.io import atomic_dir, check_output_dir
    from unsee.toyworld.render import write_dataset

    positive("--n", n)
    check_output_dir(out, overwrite, "renders")

    def build(tmp: Path) -> None:
        write_dataset(n, seed, tmp)

    atomic_dir(out, build, "renders", overwrite=True)
    typer.echo(f"wrote {n} images and labels.jsonl to {out}")


@toyworld_app.command(
    "path", epilog=examples("unsee toyworld path toyworld-sd", "unsee toyworld path toyworld")
)
@clean_errors
def toyworld_path(
    name: Annotated[str, typer.Argument(help="'toyworld-sd' or 'toyworld'")] = "toyworld-sd",
) -> None:
    """Print the folder a bundled model loads from (toyworld-sd: a diffusers
    StableDiffusionPipeline folder, for plain diffusers and the official scripts)."""
    from unsee.models.family import MANIFEST
    from unsee.models.model_ids import BUNDLED

    if name not in BUNDLED:
        raise UnseeError(f"unknown bundled model {name!r}: use one of {', '.join(BUNDLED)}")
    folder = BUNDLED[name]
    if not (folder / MANIFEST).is_file():
        raise UnseeError(f"the bundled model {name!r} is not installed ({folder}); reinstall unsee")
    typer.echo(str(folder))


@toyworld_app.command("train-model", epilog=examples("unsee toyworld train-model --steps 4000"))
@clean_errors
def toyworld_train_model(
    work_dir: Annotated[Path, typer.Option(help="checkpoints and caches")] = Path("runs/toyworld"),
    export: Annotated[Path, typer.Option(help="where the finished model is written")] = Path(
        "runs/toyworld/export"
    ),
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 4000,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 32,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 5e-4,
    seed: Annotated[int, typer.Option(help="data and step seed")] = 0,
    resume: Annotated[
        bool, typer.Option(help="continue from work_dir/checkpoint.safetensors")
    ] = True,
) -> None:
    """Train the ToyWorld UNet (resumable; checkpoints every 200 steps)."""
    from unsee.toyworld.model import TrainConfig, train_model

    positive("--steps", steps)
    positive("--batch-size", batch_size)
    positive("--lr", lr)
    train_model(
        work_dir,
        TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed),
        export_dir=export,
        resume=resume,
    )
    typer.echo(f"model written to {export}")


@toyworld_app.command(
    "train-judge", epilog=examples("unsee toyworld train-judge --images 30000 --epochs 8")
)
@clean_errors
def toyworld_train_judge(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/judge"),
    images: Annotated[int, typer.Option(help="training renders")] = 30_000,
    epochs: Annotated[int, typer.Option(help="passes over the training renders")] = 8,
    seed: Annotated[int, typer.Option(help="render and training seed")] = 1,
) -> None:
    """Train the ToyWorld judge (one head per attribute) on augmented renders, then its
    presence head (shape / none) on its frozen features."""
    from unsee.toyworld.judge import train_judge
    from unsee.toyworld.sd.presence import train_presence

    positive("--images", images)
    positive("--epochs", epochs)
    acc = train_judge(out, n_train=images, epochs=epochs, seed=seed)
    presence = train_presence(out, n_train=20_000, seed=seed)
    typer.echo(json.dumps({"accuracy_clean_renders": acc, "presence": presence}))


_SD_RUNS = Path("runs/toyworld-sd")
#: the frozen parts the ToyWorld-SD UNet is trained on and assembled with
VAEExport = Annotated[Path, typer.Option(help="exported VAE (train-vae)")]
CLIPExport = Annotated[Path, typer.Option(help="exported CLIP (train-clip)")]


@toyworld_app.command(
    "train-vae", epilog=examples("unsee toyworld train-vae --steps 5000 --batch-size 32")
)
@clean_errors
def toyworld_train_vae(
    work_dir: Annotated[Path, typer.Option(help="checkpoint")] = _SD_RUNS / "vae",
    data_dir: Annotated[Path, typer.Option(help="rendered scenes cache")] = _SD_RUNS / "data",
    export: Annotated[Path, typer.Option(help="folded AutoencoderKL folder")] = _SD_RUNS
    / "vae"
    / "export",
    steps: Annotated[int, typer.Option(help="optimiser steps (raise it to continue)")] = 5000,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 32,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="data and step seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 100,
) -> None:
    """ToyWorld-SD: train the AutoencoderKL (32 px -> 8x8x4), resumable after a kill."""
    from unsee.toyworld.sd.vae import VAEConfig, train_vae

    for name, v in (
        ("--steps", steps),
        ("--batch-size", batch_size),
        ("--lr", lr),
        ("--checkpoint-every", checkpoint_every),
    ):
        positive(name, v)
    train_vae(
        work_dir,
        VAEConfig(
            steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every
        ),
        export_dir=export,
        data_dir=data_dir,
    )
    typer.echo(f"VAE written to {export}")


@toyworld_app.command(
    "train-clip",
    epilog=examples(
        "unsee toyworld train-clip --steps 3000",
        "unsee toyworld train-clip --distil-steps 500 --distil-corpus captions.txt",
    ),
)
@clean_errors
def toyworld_train_clip(
    work_dir: Annotated[Path, typer.Option(help="checkpoint")] = _SD_RUNS / "clip",
    data_dir: Annotated[Path, typer.Option(help="rendered scenes cache")] = _SD_RUNS / "data",
    export: Annotated[Path, typer.Option(help="CLIPModel + tokenizer folder")] = _SD_RUNS
    / "clip"
    / "export",
    steps: Annotated[int, typer.Option(help="contrastive steps (raise it to continue)")] = 3000,
    distil_steps: Annotated[int, typer.Option(help="MiniLM distillation steps first")] = 0,
    distil_corpus: Annotated[
        Path | None,
        typer.Option(help="CSV (column 'prompt') or text file of captions to distil MiniLM on"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="image-caption pairs per step")] = 128,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="data and step seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 50,
) -> None:
    """ToyWorld-SD: train the CLIP model (contrastive, optional MiniLM distillation first)."""
    from unsee.toyworld.sd.clip import CLIPTrainConfig, train_clip

    for name, v in (
        ("--steps", steps),
        ("--batch-size", batch_size),
        ("--lr", lr),
        ("--checkpoint-every", checkpoint_every),
    ):
        positive(name, v)
    if distil_steps < 0:
        raise UnseeError("--distil-steps must be >= 0")
    if distil_steps and distil_corpus is None:
        raise UnseeError("--distil-steps needs --distil-corpus")
    train_clip(
        work_dir,
        CLIPTrainConfig(
            steps=steps,
            distil_steps=distil_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            checkpoint_every=checkpoint_every,
            distil_corpus=str(distil_corpus) if distil_corpus else None,
        ),
        export_dir=export,
        data_dir=data_dir,
    )
    typer.echo(f"CLIP written to {export}")


@toyworld_app.command(
    "train-sd",
    epilog=examples(
        "unsee toyworld train-sd --steps 10000 --out sd/",
        "unsee toyworld train-sd --init-from src/unsee/toyworld/weights/sd --steps 4000 "
        "--work-dir runs/toyworld-sd/unet-warm",
    ),
)
@clean_errors
def toyworld_train_sd(
    vae: VAEExport = _SD_RUNS / "vae" / "export",
    clip: CLIPExport = _SD_RUNS / "clip" / "export",
    work_dir: Annotated[Path, typer.Option(help="checkpoint and caches")] = _SD_RUNS / "unet",
    data_dir: Annotated[Path, typer.Option(help="rendered scenes cache")] = _SD_RUNS / "data",
    out: Annotated[Path, typer.Option(help="the StableDiffusionPipeline folder")] = _SD_RUNS
    / "pipeline",
    steps: Annotated[int, typer.Option(help="optimiser steps (raise it to continue)")] = 10_000,
    batch_size: Annotated[int, typer.Option(help="latents per step")] = 32,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 5e-4,
    seed: Annotated[int, typer.Option(help="data and step seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 100,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="a ToyWorld-SD pipeline folder to warm-restart from: its UNet starts the run "
            "(fresh optimiser, warm-up and cosine over --steps) and its VAE and text encoder, "
            "unpacked to WORK_DIR/init/{vae,clip}, replace --vae and --clip"
        ),
    ] = None,
) -> None:
    """ToyWorld-SD: train the epsilon UNet on frozen CLIP states; assemble the pipeline."""
    from unsee.toyworld.sd.unet import UNetTrainConfig, train_unet, unpack_pipeline

    for name, v in (
        ("--steps", steps),
        ("--batch-size", batch_size),
        ("--lr", lr),
        ("--checkpoint-every", checkpoint_every),
    ):
        positive(name, v)
    init_unet = None
    if init_from is not None:
        vae, clip, init_unet = unpack_pipeline(init_from, work_dir / "init")
    train_unet(
        work_dir,
        UNetTrainConfig(
            steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every
        ),
        vae_dir=vae,
        clip_dir=clip,
        out_dir=out,
        data_dir=data_dir,
        init_unet=init_unet,
    )
    typer.echo(f"StableDiffusionPipeline folder written to {out}")


@toyworld_app.command(
    "export-sd",
    epilog=examples(
        "unsee toyworld export-sd --out runs/toyworld-sd/snapshot",
        "unsee toyworld export-sd --fp16 --guidance 3 --out src/unsee/toyworld/weights/sd",
    ),
)
@clean_errors
def toyworld_export_sd(
    out: Annotated[Path, typer.Option(help="the StableDiffusionPipeline folder to write")],
    vae: VAEExport = _SD_RUNS / "vae" / "export",
    clip: CLIPExport = _SD_RUNS / "clip" / "export",
    work_dir: Annotated[Path, typer.Option(help="the UNet run (train-sd)")] = _SD_RUNS / "unet",
    fp16: Annotated[bool, typer.Option(help="store the weights in float16")] = False,
    guidance: Annotated[
        float, typer.Option(help="the CFG scale unsee samples the model with by default")
    ] = 5.0,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier export")] = False,
) -> None:
    """ToyWorld-SD: write the pipeline from the UNet run's EMA weights (also while it
    trains), with its unsee manifest (family, vocabulary, default guidance) and CLIP parts."""
    import torch

    from unsee.io import check_output_dir
    from unsee.toyworld.sd.unet import UNetTrainConfig, export_unet

    positive("--guidance", guidance)
    check_output_dir(out, overwrite, "export")
    manifest = {
        "family": "toyworld-sd",
        "vocabulary": "toyworld",
        "resolution": 32,
        "default_guidance": guidance,
    }
    export_unet(
        work_dir,
        UNetTrainConfig.of_run(work_dir),
        vae,
        clip,
        out,
        manifest=manifest,
        dtype=torch.float16 if fp16 else torch.float32,
    )
    typer.echo(f"StableDiffusionPipeline folder written to {out}")


@toyworld_app.command(
    "quality",
    epilog=examples("unsee toyworld quality --num-images 16 --steps 25 --out quality.json"),
)
@clean_errors
def toyworld_quality(
    model: Annotated[
        str, typer.Option(help="'toyworld', 'toyworld-sd' or a model folder")
    ] = "toyworld",
    num_images: Annotated[int, typer.Option(help="images per prompt")] = 64,
    steps: Annotated[int, typer.Option(help="sampling steps")] = 50,
    guidance: Annotated[float | None, typer.Option(help="CFG scale (model default)")] = None,
    seed: Annotated[int, typer.Option(help="image k of a prompt uses seed+k")] = 0,
    sampler: Annotated[
        str,
        typer.Option(
            help="ddim (unsee's sampler) or pipeline (plain diffusers with the folder's "
            "own scheduler; diffusers folders only)"
        ),
    ] = "ddim",
    prior_images: Annotated[
        int,
        typer.Option(help="images of the empty prompt for the shape prior (0: not measured)"),
    ] = 0,
    out: Annotated[Path | None, typer.Option(help="write JSON here (and .md beside it)")] = None,
) -> None:
    """Measure the model's quality table with the judge (and the empty prompt's shape
    prior with --prior-images)."""
    from unsee.io import atomic_write, write_json
    from unsee.models.bundle import load_bundle
    from unsee.toyworld.quality import (
        SAMPLERS,
        measure_prior,
        measure_quality,
        prior_markdown,
        quality_markdown,
    )

    positive("--num-images", num_images)
    sampling_options(steps, guidance, seed)
    if sampler not in SAMPLERS:
        raise UnseeError(f"unknown --sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if prior_images < 0:
        raise UnseeError(f"--prior-images must be >= 0 (got {prior_images})")
    bundle = load_bundle(model)
    if bundle.vocabulary != "toyworld":
        raise UnseeError(
            f"{model} does not speak the ToyWorld vocabulary; the judge cannot score it"
        )
    result = measure_quality(
        bundle, num_images=num_images, seed=seed, steps=steps, guidance=guidance, sampler=sampler
    )
    md = quality_markdown(result)
    if prior_images:
        result["prior"] = measure_prior(bundle, prior_images, seed, steps, sampler)
        md += "\n" + prior_markdown(result["prior"])
    if out is not None:
        write_json(out, result)
        atomic_write(out.with_suffix(".md"), lambda p: _write_text(p, md))
    typer.echo(md)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
