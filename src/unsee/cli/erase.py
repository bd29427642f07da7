"""``unsee erase``, ``export`` and ``methods``: make an erasure artifact, turn it into
files other tools load, and list the methods."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from unsee.cli.common import METHODS, app, clean_errors, examples
from unsee.errors import UnseeError


class MixedPrecision(str, Enum):
    """accelerate's ``mixed_precision``."""

    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


@app.command(
    "erase",
    epilog=examples(
        "unsee erase --model toyworld --method esd-x --concept star --out runs/star",
        "unsee erase --model sd/ --method uce --concept 'Van Gogh' --concept Monet --out art/",
        "unsee erase --config erase.yaml --seed 1 --out runs/seed1",
        "accelerate launch --num_processes 2 -m unsee.cli erase --model sd/ --method esd-x "
        "--concept 'Van Gogh' --batch-size 2 --out vg/  (data-parallel)",
    ),
)
@clean_errors
def erase_cmd(
    out: Annotated[Path, typer.Option(help="artifact folder to write")],
    method: Annotated[
        str | None,
        typer.Option(
            metavar="METHOD",
            help=f"one of {', '.join(METHODS)} (`unsee methods` lists their "
            "scopes and parameters) [required unless --config gives it]",
        ),
    ] = None,
    concept: Annotated[
        list[str] | None,
        typer.Option(help="concept to erase (repeatable) [required unless --config gives it]"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="'toyworld' (default), 'toyworld-sd', a diffusers folder, a .safetensors file "
            "or a hub id"
        ),
    ] = None,
    model_variant: Annotated[
        str | None,
        typer.Option(help="weight files saved with variant=... (fp16: *.fp16.safetensors)"),
    ] = None,
    anchor: Annotated[
        list[str] | None, typer.Option(help="anchor per concept (repeatable)")
    ] = None,
    concept_prompt: Annotated[
        list[str] | None,
        typer.Option(
            help="text per concept to erase it as, as an official script is given it "
            "(repeatable; default: the concept's prompts); it is still judged by its name"
        ),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="steps per concept round")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(help="adam or adamw (default: the method's; ca: adamw, as its official code)"),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="optimiser weight decay (default: the method's)")
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        typer.Option(help="clip the gradient to this norm before each step; 0: never"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="samples per step (default: the method's)")
    ] = None,
    scope: Annotated[
        str | None, typer.Option(help="xattn, noxattn, kv, full or re:<regex>")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="run seed: same config and seed, same artifact (default 0)")
    ] = None,
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
    mixed_precision: Annotated[
        MixedPrecision | None,
        typer.Option(help="autocast the forward passes (GPUs; default no)"),
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(help="recompute UNet activations in backward: less memory, more time"),
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="steps between resumable checkpoints (default 25)")
    ] = None,
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
    overrides: dict[str, Any] = {
        "method": method,
        "concepts": concept or None,
        "model": model,
        "model_variant": model_variant,
        "anchors": anchor or None,
        "concept_prompts": concept_prompt or None,
        "iterations": iterations,
        "lr": lr,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "batch_size": batch_size,
        "scope": scope,
        "seed": seed,
        "sequential": sequential,
        "on": [str(p) for p in on] if on else None,
        "device": device,
        "mixed_precision": None if mixed_precision is None else mixed_precision.value,
        "gradient_checkpointing": gradient_checkpointing,
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
    if os.environ.get("RANK", "0") != "0":  # data-parallel: the main process reports
        return
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


@app.command(
    "export",
    epilog=examples(
        "unsee export runs/star --out merged/",
        "unsee export runs/star --format lora --rank 8 --out lora/",
        "unsee export runs/star --format kohya --energy 0.99 --dtype fp16 --out kohya/",
    ),
)
@clean_errors
def export_cmd(
    artifact: Annotated[
        list[Path],
        typer.Argument(help="artifact folder(s) to export; several are applied together"),
    ],
    out: Annotated[Path, typer.Option(help="folder to write")],
    model: Annotated[str | None, typer.Option(help="base model (default: the card's)")] = None,
    model_variant: Annotated[
        str | None,
        typer.Option(help="weight files saved with variant=... (fp16: *.fp16.safetensors)"),
    ] = None,
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
    """Export an erasure as a merged diffusers folder, a LoRA or a kohya file.

    merged (default) is a folder plain diffusers loads; lora and kohya are a truncated SVD
    of the delta, with its residual against the full delta reported."""
    from unsee.artifacts import apply_artifacts, export_merged, read_artifacts
    from unsee.io import check_output_dir
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import resolve_id

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
    check_output_dir(out, overwrite, "export")
    read = read_artifacts(artifact)  # damaged, poisoned or foreign artifacts stop here
    base = model or resolve_id(read[0][0].base.model_id)
    bundle = load_bundle(base, device="cpu", variant=model_variant)
    if fmt_s == "merged":
        cards = apply_artifacts(bundle, artifact)
        export_merged(bundle, out, overwrite=overwrite, cards=cards)
        typer.echo(f"merged model written to {out}")
        return
    import torch

    from unsee.lora import combined_delta, export_lora, summary_line

    delta = combined_delta([d for _, d in read])
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


@app.command("methods", epilog=examples("unsee methods"))
def methods_cmd() -> None:
    """List the erasure methods and their default scopes."""
    import dataclasses

    from unsee.erase.registry import REGISTRY

    for name, cls in sorted(REGISTRY.items()):
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params))
        typer.echo(f"{name:14s} scope={cls.scope:14s} {cls.summary}  [{params}]")
