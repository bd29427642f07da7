"""The main job on the bundled ToyWorld model (``unsee demo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unsee.io import atomic_write, check_output_dir, write_json
from unsee.models.bundle import load_bundle
from unsee.models.sampling import generate
from unsee.toyworld.vocab import SHAPES


def image_grid(images: np.ndarray, cols: int, scale: int = 3) -> Image.Image:
    """uint8 (N, H, W, 3) -> one PIL grid, ``cols`` per row, nearest-upscaled by ``scale``."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = img
    grid = Image.fromarray(canvas)
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def run_demo(out: Path, num_images: int = 8, overwrite: bool = True, steps: int = 50) -> Path:
    """Sample a grid of the bundled model: one row per shape, ``num_images`` seeds."""
    check_output_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle("toyworld")
    prompts = [f"a {s}" for s in SHAPES for _ in range(num_images)]
    seeds = [k for _ in SHAPES for k in range(num_images)]
    images = generate(bundle, prompts, seeds, steps=steps, description="demo samples")
    atomic_write(out / "samples.png", lambda p: image_grid(images, num_images).save(p, "PNG"))
    write_json(out / "index.json", {"model": "toyworld", "rows": [f"a {s}" for s in SHAPES],
                                    "seeds": list(range(num_images)), "steps": steps,
                                    "guidance": bundle.default_guidance})
    return out
