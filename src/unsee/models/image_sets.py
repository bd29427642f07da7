"""Drawn sets: images a model draws for given prompts and seeds, kept as latents.

The dataset-based methods (MiM-MU off-policy, and Sculpting Memory and SalUn) train on
noised images of the concept (forget sets) and of its anchor rather than on self-sampled
trajectories; like the released code they draw them with the base model itself.
``negative`` lets anchor images be drawn with the concept as negative prompt (so an image
of "a shape" is not the erased star). The scorecard's resurgence attack fine-tunes on such
sets too. Images are kept as final *latents* (B, C, h, w) so latent models need no VAE
round trip, and cached on disk keyed by the model's fingerprint and every generation
setting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from unsee.errors import UnseeError
from unsee.io import atomic_write, cache_root
from unsee.models.bundle import Bundle
from unsee.models.sampling import ddim_sample
from unsee.progress import progress_bar
from unsee.seeds import training_seeds


def default_forget_cache() -> Path:
    """``$UNSEE_CACHE/forget-sets``, else ``~/.cache/unsee/forget-sets``."""
    return cache_root() / "forget-sets"


@dataclass
class DrawnSet:
    """``latents`` (N, C, h, w) final DDIM latents; ``prompts`` and ``seeds`` per image."""

    latents: torch.Tensor
    prompts: list[str]
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.prompts)


def _key(
    model_fp: str, prompts: list[str], seeds: list[int], negative: str, steps: int, guidance: float
) -> str:
    raw = json.dumps([model_fp, prompts, seeds, negative, steps, float(guidance)])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def generate_set(
    bundle: Bundle,
    prompts: list[str],
    seeds: list[int],
    *,
    negative: str = "",
    steps: int = 50,
    guidance: float | None = None,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    description: str = "forget set",
) -> DrawnSet:
    """Generate (or load from ``cache_dir``) one image latent per (prompt, seed)."""
    g = bundle.default_guidance if guidance is None else guidance
    path = None
    if cache_dir is not None:
        key = _key(bundle.fingerprint, prompts, seeds, negative, steps, g)
        path = Path(cache_dir) / f"{key}.safetensors"
        if path.is_file():
            try:
                return DrawnSet(load_file(path)["latents"].to(bundle.device), prompts, seeds)
            except Exception:  # a damaged cache entry is regenerated
                pass
    out = []
    with progress_bar(len(prompts), description) as bar:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            x, _ = ddim_sample(
                bundle,
                chunk,
                seeds[i : i + batch_size],
                steps=steps,
                guidance=g,
                negative_prompts=[negative] * len(chunk),
            )
            out.append(x.float())
            bar.advance(len(chunk))
    latents = torch.cat(out)
    if path is not None:
        meta = {
            "prompts": json.dumps(prompts),
            "seeds": json.dumps(seeds),
            "negative": negative,
            "steps": str(steps),
            "guidance": str(g),
        }
        atomic_write(
            path,
            lambda p: save_file({"latents": latents.cpu().contiguous()}, str(p), metadata=meta),
        )
    return DrawnSet(latents, prompts, seeds)


def forget_set(
    bundle: Bundle,
    name: str,
    prompts: list[str],
    n: int,
    seed: int,
    *,
    steps: int = 50,
    guidance: float | None = None,
    cache_dir: Path | None = None,
) -> DrawnSet:
    """``n`` images of concept ``name``, cycling through ``prompts``; training seeds
    ``TRAINING_SEED_BASE + seed + i`` (:func:`unsee.seeds.training_seeds`), never a seed the
    scorecard judges."""
    cycled = [prompts[i % len(prompts)] for i in range(n)]
    return generate_set(
        bundle,
        cycled,
        training_seeds(seed, n),
        steps=steps,
        guidance=guidance,
        cache_dir=cache_dir,
        description=f"forget set: {name}",
    )


#: what :func:`image_files` reads as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path, what: str) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; one clear error (naming the
    setting ``what``) when it is not a folder or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnseeError(f"{what}: {folder} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UnseeError(f"{what}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _fit(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """(3, height, width) in [-1, 1]: scaled (bicubic) to cover the size, centre-cropped,
    as SalUn's and Concept Ablation's loaders prepare real images."""
    scale = max(height / image.height, width / image.width)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - width) // 2, (h - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return pixels.permute(2, 0, 1)


@torch.no_grad()
def folder_set(
    bundle: Bundle, folder: Path, prompts: list[str], what: str, batch_size: int = 16
) -> DrawnSet:
    """Real images instead of drawn ones: every image in ``folder`` (:func:`image_files`)
    fitted to the model's size and encoded (:meth:`Bundle.encode_images`), read under
    ``prompts`` in turn; seeds are -1 (not drawn). An unreadable image is one clear error."""
    files = image_files(folder, what)
    height, width = bundle.resolution, bundle.width or bundle.resolution
    out = []
    for i in range(0, len(files), batch_size):
        batch = []
        for f in files[i : i + batch_size]:
            try:
                with Image.open(f) as im:
                    batch.append(_fit(im.convert("RGB"), height, width))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise UnseeError(f"{what}: cannot read image {f}: {exc}") from None
        out.append(bundle.encode_images(torch.stack(batch)).float())
    cycled = [prompts[i % len(prompts)] for i in range(len(files))]
    return DrawnSet(torch.cat(out), cycled, [-1] * len(files))
