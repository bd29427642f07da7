"""The ``unsee`` command line. User errors print one line and exit with code 2."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from unsee.errors import UnseeError

#: Erasure methods (the registry's names: tests/test_cli_help.py keeps them equal) and judge
#: forms, listed in ``--help`` without importing torch.
METHODS = (
    "esd-x",
    "esd-u",
    "esd-all",
    "esd-x-strict",
    "uce",
    "kscu",
    "mim-mu",
    "sculpt",
    "salun",
    "ca",
)
JUDGES = "toyworld, nudenet, clip:MODEL, imagenet[:MODEL|:torchvision]"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make text-to-image diffusion models forget concepts, and measure it.",
    epilog=f"Methods (erase --method): {', '.join(METHODS)}; `unsee methods` "
    f"gives scopes and parameters. Judges (eval --judge): {JUDGES}.",
)


def _print_version(value: bool) -> None:
    if value:
        from unsee import __version__

        typer.echo(f"unsee {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Make text-to-image diffusion models forget concepts, and measure it."""


toyworld_app = typer.Typer(no_args_is_help=True, help="The bundled ToyWorld model and judge.")
app.add_typer(toyworld_app, name="toyworld")


def user_error(exc: BaseException) -> UnseeError | None:
    """The one-line :class:`UnseeError` for an exception that bad input or the machine
    (a full or read-only disk, a file that is not text, an image bomb) can cause, else None:
    anything else is a bug and keeps its traceback."""
    from PIL import Image
    from pydantic import ValidationError

    from unsee.errors import validation_error

    if isinstance(exc, UnseeError):
        return exc
    if isinstance(exc, ValidationError):
        return validation_error(exc, "invalid input")
    if isinstance(exc, UnicodeDecodeError):
        return UnseeError(f"a file given is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if isinstance(exc, Image.DecompressionBombError):
        return UnseeError(f"refusing an image: {exc}")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return UnseeError(f"{exc.strerror or exc}{where}")
    return None


def _clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors (:func:`user_error`) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            err = user_error(exc)
            if err is None:
                raise
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _positive(name: str, value: int | float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise UnseeError(f"{name} must be positive and finite (got {value})")


def _sampling_options(steps: int, guidance: float | None, seed: int) -> None:
    """Checks shared by every command that samples, before any model is loaded."""
    from unsee.models.sampling import check_guidance_and_seed

    _positive("--steps", steps)
    check_guidance_and_seed(guidance, seed)


@toyworld_app.command("render")
@_clean_errors
def toyworld_render(
    n: Annotated[int, typer.Option("--n", help="number of images")],
    out: Annotated[Path, typer.Option(help="output folder")],
    seed: Annotated[int, typer.Option(help="seed; image i depends only on (seed, i)")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
) -> None:
    """Render ToyWorld images: PNGs plus labels.jsonl (caption and every attribute)."""
    from unsee.io import atomic_dir, check_output_dir
    from unsee.toyworld.render import write_dataset

    _positive("--n", n)
    check_output_dir(out, overwrite, "renders")
    atomic_dir(out, lambda tmp: write_dataset(n, seed, tmp), "renders", overwrite=True)
    typer.echo(f"wrote {n} images and labels.jsonl to {out}")


@toyworld_app.command("train-model")
@_clean_errors
def toyworld_train_model(
    work_dir: Annotated[Path, typer.Option(help="checkpoints and caches")] = Path("runs/toyworld"),
    export: Annotated[Path, typer.Option(help="where the finished model is written")] = Path(
        "runs/toyworld/export"
    ),
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 4000,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 5e-4,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[
        bool, typer.Option(help="continue from work_dir/checkpoint.safetensors")
    ] = True,
) -> None:
    """Train the ToyWorld UNet (resumable; checkpoints every 200 steps)."""
    from unsee.toyworld.model import TrainConfig, train_model

    _positive("--steps", steps)
    _positive("--batch-size", batch_size)
    _positive("--lr", lr)
    train_model(
        work_dir,
        TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed),
        export_dir=export,
        resume=resume,
    )
    typer.echo(f"model written to {export}")


@toyworld_app.command("train-judge")
@_clean_errors
def toyworld_train_judge(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/judge"),
    images: Annotated[int, typer.Option(help="training renders")] = 30_000,
    epochs: Annotated[int, typer.Option()] = 8,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Train the ToyWorld judge (one head per attribute) on augmented renders."""
    from unsee.toyworld.judge import train_judge

    _positive("--images", images)
    _positive("--epochs", epochs)
    acc = train_judge(out, n_train=images, epochs=epochs, seed=seed)
    typer.echo(json.dumps({"accuracy_clean_renders": acc}))


_SD_RUNS = Path("runs/toyworld-sd")


@toyworld_app.command("train-vae")
@_clean_errors
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
        _positive(name, v)
    train_vae(
        work_dir,
        VAEConfig(
            steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every
        ),
        export_dir=export,
        data_dir=data_dir,
    )
    typer.echo(f"VAE written to {export}")


@toyworld_app.command("train-clip")
@_clean_errors
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
        _positive(name, v)
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


@toyworld_app.command("train-sd")
@_clean_errors
def toyworld_train_sd(
    vae: Annotated[Path, typer.Option(help="exported VAE (train-vae)")] = _SD_RUNS
    / "vae"
    / "export",
    clip: Annotated[Path, typer.Option(help="exported CLIP (train-clip)")] = _SD_RUNS
    / "clip"
    / "export",
    work_dir: Annotated[Path, typer.Option(help="checkpoint and caches")] = _SD_RUNS / "unet",
    data_dir: Annotated[Path, typer.Option(help="rendered scenes cache")] = _SD_RUNS / "data",
    out: Annotated[Path, typer.Option(help="the StableDiffusionPipeline folder")] = _SD_RUNS
    / "pipeline",
    steps: Annotated[int, typer.Option(help="optimiser steps (raise it to continue)")] = 10_000,
    batch_size: Annotated[int, typer.Option(help="latents per step")] = 32,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 5e-4,
    seed: Annotated[int, typer.Option(help="data and step seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 100,
) -> None:
    """ToyWorld-SD: train the epsilon UNet on frozen CLIP states; assemble the pipeline."""
    from unsee.toyworld.sd.unet import UNetTrainConfig, train_unet

    for name, v in (
        ("--steps", steps),
        ("--batch-size", batch_size),
        ("--lr", lr),
        ("--checkpoint-every", checkpoint_every),
    ):
        _positive(name, v)
    train_unet(
        work_dir,
        UNetTrainConfig(
            steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every
        ),
        vae_dir=vae,
        clip_dir=clip,
        out_dir=out,
        data_dir=data_dir,
    )
    typer.echo(f"StableDiffusionPipeline folder written to {out}")


@toyworld_app.command("quality")
@_clean_errors
def toyworld_quality(
    model: Annotated[str, typer.Option(help="'toyworld' or a model folder")] = "toyworld",
    num_images: Annotated[int, typer.Option(help="images per prompt")] = 64,
    steps: Annotated[int, typer.Option(help="DDIM steps")] = 50,
    guidance: Annotated[float | None, typer.Option(help="CFG scale (model default)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="write JSON here (and .md beside it)")] = None,
) -> None:
    """Measure the model's quality table with the judge."""
    from unsee.io import atomic_write, write_json
    from unsee.models.bundle import load_bundle
    from unsee.toyworld.quality import measure_quality, quality_markdown

    _positive("--num-images", num_images)
    _sampling_options(steps, guidance, seed)
    bundle = load_bundle(model)
    result = measure_quality(
        bundle, num_images=num_images, seed=seed, steps=steps, guidance=guidance
    )
    md = quality_markdown(result)
    if out is not None:
        write_json(out, result)
        atomic_write(out.with_suffix(".md"), lambda p: p.write_text(md))
    typer.echo(md)


@app.command("generate")
@_clean_errors
def generate_cmd(
    model: Annotated[str, typer.Option(help="'toyworld', a diffusers folder or a hub id")],
    out: Annotated[Path, typer.Option(help="output folder")],
    prompt: Annotated[list[str] | None, typer.Option(help="a prompt (repeatable)")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="text file or CSV with a prompt column")
    ] = None,
    num_images: Annotated[int, typer.Option(help="images per prompt")] = 4,
    seed: Annotated[
        int, typer.Option(help="image k of a prompt uses seed+k (or evaluation_seed+k from a CSV)")
    ] = 0,
    steps: Annotated[int, typer.Option(help="DDIM steps")] = 50,
    guidance: Annotated[float | None, typer.Option(help="CFG scale (model default)")] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "cpu",
    erased: Annotated[list[Path] | None, typer.Option(help="erasure artifact(s) to apply")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
) -> None:
    """Generate images: PNGs plus index.json (prompt, seed, file per image)."""
    from PIL import Image

    from unsee.io import atomic_dir, check_output_dir, write_json
    from unsee.models.bundle import check_device
    from unsee.models.sampling import generate
    from unsee.prompts import PromptRow, expand_seeds, read_prompts

    if bool(prompt) == (prompts is not None):
        raise UnseeError("give either --prompt (one or more) or --prompts FILE")
    _positive("--num-images", num_images)
    _sampling_options(steps, guidance, seed)
    _positive("--batch-size", batch_size)
    check_device(device)
    rows = [PromptRow(p) for p in prompt] if prompt else read_prompts(prompts)  # type: ignore[arg-type]
    if any(not r.prompt.strip() for r in rows):
        raise UnseeError("empty prompt")
    check_output_dir(out, overwrite, "images")
    bundle = _load_with_artifacts(model, erased or [], device)
    texts, seeds = expand_seeds(rows, num_images, seed)
    images = generate(bundle, texts, seeds, steps=steps, guidance=guidance, batch_size=batch_size)

    def build(tmp: Path) -> None:
        index = []
        for i, (img, p, s) in enumerate(zip(images, texts, seeds, strict=True)):
            name = f"{i:06d}.png"
            Image.fromarray(img).save(tmp / name)
            index.append({"file": name, "prompt": p, "seed": s})
        write_json(
            tmp / "index.json",
            {
                "model": model,
                "steps": steps,
                "guidance": bundle.default_guidance if guidance is None else guidance,
                "images": index,
            },
        )

    atomic_dir(out, build, "images", overwrite=True)
    typer.echo(f"wrote {len(images)} images to {out}")


@app.command("erase")
@_clean_errors
def erase_cmd(
    out: Annotated[Path, typer.Option(help="artifact folder to write")],
    method: Annotated[
        str | None,
        typer.Option(
            metavar="METHOD",
            help=f"one of {', '.join(METHODS)} (`unsee methods` lists their "
            "scopes and parameters); needed unless --config gives it",
        ),
    ] = None,
    concept: Annotated[list[str] | None, typer.Option(help="concept to erase (repeatable)")] = None,
    model: Annotated[
        str | None, typer.Option(help="'toyworld', a diffusers folder or hub id")
    ] = None,
    anchor: Annotated[
        list[str] | None, typer.Option(help="anchor per concept (repeatable)")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="steps per concept round")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    scope: Annotated[
        str | None, typer.Option(help="xattn, noxattn, kv, full or re:<regex>")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    sequential: Annotated[bool | None, typer.Option(help="one round per concept, in order")] = None,
    on: Annotated[list[Path] | None, typer.Option(help="start from this erased artifact")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--set", help="method parameter KEY=VALUE")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="kscu: object, style, nudity or instance (same as --set task=...)"),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="mim-mu: off-policy, on-policy or conditional (same as --set variant=...)"
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (keys of EraseConfig)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    checkpoint_every: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option(help="continue a killed run from its checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing artifact")] = False,
) -> None:
    """Erase concepts and write an artifact (delta.safetensors + model card)."""
    from unsee.erase.engine import EraseConfig, config_from_yaml, run_erasure

    params = {}
    for item in param or []:
        if "=" not in item:
            raise UnseeError(f"--set needs KEY=VALUE (got {item!r})")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    for key, value in (("task", task), ("variant", variant)):
        if value is not None:
            params[key] = value
    overrides = {
        "method": method,
        "concepts": concept or None,
        "model": model,
        "anchors": anchor or None,
        "iterations": iterations,
        "lr": lr,
        "batch_size": batch_size,
        "scope": scope,
        "seed": seed,
        "sequential": sequential,
        "on": [str(p) for p in on] if on else None,
        "device": device,
        "checkpoint_every": checkpoint_every,
        "params": params or None,
    }
    if config is not None:
        cfg = config_from_yaml(config, overrides)
    else:
        if method is None or not concept:
            raise UnseeError("give --method and at least one --concept (or --config FILE)")
        cfg = EraseConfig(**{k: v for k, v in overrides.items() if v is not None})
    result = run_erasure(cfg, out, overwrite=overwrite, resume=resume)
    cost = result.card["cost"]
    typer.echo(
        f"wrote {out}: {cost['parameters_changed']:,} weights changed in "
        f"{cost['wall_seconds']:.1f} s"
    )


def _parse_value(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


class ExportFormat(str, Enum):
    """What ``unsee export`` writes."""

    merged = "merged"
    lora = "lora"
    kohya = "kohya"


@app.command("export")
@_clean_errors
def export_cmd(
    artifact: Annotated[
        list[Path],
        typer.Argument(help="artifact folder(s) to export; several are applied together"),
    ],
    out: Annotated[Path, typer.Option(help="folder to write")],
    model: Annotated[str | None, typer.Option(help="base model (default: the card's)")] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="merged: a diffusers folder with the edit merged in; lora: a "
            "diffusers/peft LoRA for pipe.load_lora_weights(folder); kohya: one .safetensors "
            "for A1111 and ComfyUI (lora_down/lora_up/alpha, .diff/.diff_b)",
        ),
    ] = ExportFormat.merged,
    rank: Annotated[
        int | None, typer.Option(help="lora/kohya: at most this rank per tensor (default: no cap)")
    ] = None,
    energy: Annotated[
        float | None,
        typer.Option(
            help="lora/kohya: smallest rank per tensor keeping this fraction of the squared "
            "singular values; 1 = exact (default 0.999 without --rank)"
        ),
    ] = None,
    dtype: Annotated[str, typer.Option(help="lora/kohya: fp32, fp16 or bf16 factors")] = "fp32",
    lora_bias: Annotated[
        bool,
        typer.Option(
            help="lora: carry bias changes in lora_B.bias (exact, but peft's fuse_lora() then "
            "fails on layers without a bias); --no-lora-bias leaves them out"
        ),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="replace an existing export folder")] = False,
) -> None:
    """Export an erasure: a merged diffusers folder (default), or a LoRA (``--format lora``
    or ``kohya``) by truncated SVD, with its residual against the full delta reported.

    Examples: ``unsee export ART --out merged/``;
    ``unsee export ART --format lora --rank 8 --out lora/``;
    ``unsee export ART --format kohya --energy 0.99 --dtype fp16 --out kohya/``.
    """
    from unsee.artifacts import apply_artifacts, export_merged, read_artifacts, read_card
    from unsee.io import check_output_dir
    from unsee.models.bundle import load_bundle

    fmt_s = fmt.value if isinstance(fmt, ExportFormat) else str(fmt)
    if fmt_s == "merged" and (
        rank is not None or energy is not None or dtype != "fp32" or not lora_bias
    ):
        raise UnseeError(
            "--rank, --energy, --dtype and --no-lora-bias apply to --format lora and kohya only"
        )
    if fmt_s != "merged":
        from unsee.lora import DEFAULT_ENERGY, DTYPES, check_rank_rule

        if dtype not in DTYPES:
            raise UnseeError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        if rank is None and energy is None:
            energy = DEFAULT_ENERGY
        check_rank_rule(rank, energy)
    base = model or read_card(artifact[0])["base"]["model_id"]
    check_output_dir(out, overwrite, "export")
    bundle = load_bundle(base, device="cpu")
    if fmt_s == "merged":
        cards = apply_artifacts(bundle, artifact)
        export_merged(bundle, out, overwrite=overwrite, cards=cards)
        typer.echo(f"merged model written to {out}")
        return
    import torch

    from unsee.lora import combined_delta, export_lora, summary_line

    delta = combined_delta([d for _, d in read_artifacts(artifact)])
    params = dict(bundle.unet.named_parameters())
    saved = {n: params[n].detach().clone() for n in delta if n in params}
    cards = apply_artifacts(bundle, artifact)  # fingerprint, ledger and shape checks
    with torch.no_grad():
        for n, v in saved.items():
            params[n].copy_(v)
    report = export_lora(
        bundle,
        cards,
        delta,
        out,
        fmt_s,
        rank=rank,
        energy=energy,
        dtype=dtype,
        lora_bias=lora_bias,
        overwrite=overwrite,
    )
    typer.echo(summary_line(out, report))


@app.command("methods")
def methods_cmd() -> None:
    """List the erasure methods and their default scopes."""
    import dataclasses

    from unsee.erase.base import REGISTRY, get_method

    get_method("esd-x")
    for name, cls in sorted(REGISTRY.items()):
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params))
        typer.echo(f"{name:14s} scope={cls.scope:14s} {cls.summary}  [{params}]")


def _load_with_artifacts(model: str, erased: list[Path], device: str):
    from unsee.models.bundle import load_bundle

    bundle = load_bundle(model, device=device)
    if erased:
        from unsee.artifacts import apply_artifacts

        apply_artifacts(bundle, erased)
    return bundle


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


@app.command("judge")
@_clean_errors
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


@app.command("demo")
@_clean_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    concept: Annotated[str, typer.Option(help="ToyWorld concept to erase")] = "star",
    method: Annotated[
        list[str] | None, typer.Option(help="methods (default: one per family)")
    ] = None,
    num_images: Annotated[int, typer.Option(help="evaluation images per prompt")] = 6,
    steps: Annotated[int, typer.Option(help="DDIM steps of the evaluation")] = 25,
) -> None:
    """The main job: erase a concept from ToyWorld with each method, score, report."""
    from unsee.demo import run_demo

    path = run_demo(out, concept=concept, methods=method, num_images=num_images, steps=steps)
    typer.echo(f"demo written to {path} (open {path / 'report.html'})")


def _register_eval() -> None:
    from unsee.evaluate.cli import eval_cmd

    app.command("eval")(_clean_errors(eval_cmd))


_register_eval()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # python -m unsee.cli
    main()
