"""On-disk cache of generated images, so the base model's evaluation images are made once.

On a CPU an evaluation costs as much as an erasure (``toyworld.md``: 336 images ~140 s), and
every erased model is compared with the same base images. An image is keyed by the
fingerprint of everything that draws it (UNet, text encoder, VAE, noise schedule) and by
(prompt, seed, steps, guidance, dtype); it is stored as a lossless PNG.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unsee.io import atomic_write, cache_root


def default_cache_dir() -> Path:
    """``$UNSEE_CACHE/eval-images``, else ``~/.cache/unsee/eval-images``."""
    return cache_root() / "eval-images"


class ImageCache:
    """PNG files under ``root/<key[:2]>/<key>.png``; ``root=None`` caches nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = None if root is None else Path(root)

    @staticmethod
    def key(
        model_fp: str, prompt: str, seed: int, steps: int, guidance: float, dtype: torch.dtype
    ) -> str:
        raw = json.dumps([model_fp, prompt, int(seed), int(steps), float(guidance), str(dtype)])
        return hashlib.sha256(raw.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str, size: int) -> np.ndarray | None:
        """The cached uint8 (size, size, 3) image, or None: a miss, and also an unreadable
        file or one of another size (damaged or planted; it is drawn again and replaced)."""
        if self.root is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with Image.open(path) as im:
                if im.size != (size, size):
                    return None
                return np.asarray(im.convert("RGB"))
        except (OSError, Image.DecompressionBombError):
            return None

    def put(self, key: str, image: np.ndarray) -> None:
        if self.root is not None:
            atomic_write(self._path(key), lambda p: Image.fromarray(image).save(p, "PNG"))
