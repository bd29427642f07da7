"""Images generated into a folder: one PNG per (prompt, seed) and ``index.json``, which says
how each image was made (prompt, seed, negative prompt, steps, guidance, size, dtype) and
by what (the base model, and each erasure artifact applied: id, folder, method, concepts,
base fingerprint), so a folder of images can be traced to the weights that drew it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unsee.errors import UnseeError
from unsee.models.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

#: ``--dtype`` names and the torch types they run in
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class Generator:
    """A model ready to draw: ``bundle`` (the base ``model`` with the artifacts applied, in
    ``dtype``), the base's fingerprint, and what ``index.json`` records of each artifact."""

    bundle: Bundle
    model: str
    base_fingerprint: str
    applied: list[dict[str, Any]]
    dtype: str = "fp32"


def load_for_generation(
    model: str,
    erased: Sequence[Path],
    device: str,
    dtype: str = "fp32",
    variant: str | None = None,
) -> Generator:
    """The base ``model`` with the artifacts ``erased`` applied, in ``dtype``. Deltas are
    checked against the base and added in float32, then the model is cast: a fp16 cast
    first would change the fingerprint the artifacts were made for."""
    from unsee.artifacts import apply_artifacts, fingerprint

    if dtype not in DTYPES:
        raise UnseeError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    bundle = load_bundle(model, device=device, variant=variant)
    base_fp = fingerprint(bundle.unet)
    cards = apply_artifacts(bundle, list(erased)) if erased else []
    applied = [
        {
            "id": card["id"],
            "path": str(path),
            "method": card["method"],
            "concepts": [c["name"] for c in card.get("concepts", [])],
            "base_fingerprint": card["base"]["fingerprint"],
        }
        for path, card in zip(erased, cards, strict=True)
    ]
    for a in applied:
        log.info("applied %s (%s, %s) to %s", a["path"], a["method"], a["id"], model)
    if dtype != "fp32":
        bundle.unet.to(dtype=DTYPES[dtype])
        bundle.text.to(dtype=DTYPES[dtype])
        if bundle.vae is not None:
            bundle.vae.to(dtype=DTYPES[dtype])
    return Generator(bundle, model, base_fp, applied, dtype)


def sized(bundle: Bundle, height: int | None, width: int | None) -> Bundle:
    """``bundle`` drawing ``height`` x ``width`` images (None: the model's own size); the
    modules are shared. Sizes must be positive multiples of the VAE's factor."""
    h = bundle.resolution if height is None else height
    w = (bundle.width or bundle.resolution) if width is None else width
    f = bundle.vae_factor
    for name, v in (("--height", h), ("--width", w)):
        if v <= 0 or v % f:
            raise UnseeError(f"{name} must be a positive multiple of {f} for this model (got {v})")
    return dataclasses.replace(bundle, resolution=h, width=None if w == h else w)


def write_gallery(
    out: Path,
    gen: Generator,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
    steps: int = 50,
    guidance: float | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Generate one image per (prompt, seed) with ``gen`` at ``height`` x ``width`` (None:
    the model's size) and write them to ``out`` atomically with ``index.json``."""
    from PIL import Image

    from unsee.io import atomic_dir, write_json
    from unsee.models.sampling import generate

    bundle = sized(gen.bundle, height, width)
    negatives = None if negative_prompt is None else [negative_prompt] * len(prompts)
    images = generate(
        bundle,
        prompts,
        seeds,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        negative_prompts=negatives,
    )
    height, width = images.shape[1:3]
    files = [f"{i:06d}.png" for i in range(len(images))]
    index = {
        "model": gen.model,
        "base_fingerprint": gen.base_fingerprint,
        "artifacts": gen.applied,
        "steps": steps,
        "guidance": bundle.default_guidance if guidance is None else guidance,
        "negative_prompt": negative_prompt,
        "height": int(height),
        "width": int(width),
        "dtype": gen.dtype,
        "images": [
            {"file": f, "prompt": p, "seed": s}
            for f, p, s in zip(files, prompts, seeds, strict=True)
        ],
    }

    def build(tmp: Path) -> None:
        for name, img in zip(files, images, strict=True):
            Image.fromarray(img).save(tmp / name)
        write_json(tmp / "index.json", index)

    return atomic_dir(Path(out), build, "images", overwrite=overwrite)
