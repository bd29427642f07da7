"""The ToyWorld judge: a small CNN with one softmax head per attribute.

It is the exact-label counterpart of the ResNet-50 / CLIP / NudeNet judges used on Stable
Diffusion. It is trained on rendered images with augmentation a generator's mistakes would
otherwise exploit: off-vocabulary background colours (the background head is not trained on
those), pixel noise and blur. Its 256-d penultimate features define judge-feature FID.

A fifth head, ``presence`` ("shape" or "none"), says whether the image holds one of the nine
shapes at all: ToyWorld-SD also draws scenes without one (:mod:`unsee.toyworld.sd.data`).
It is a small read-out trained afterwards on the *frozen* features
(:func:`unsee.toyworld.sd.presence.train_presence`), so the four attribute heads, and every
number measured with them, stay exactly as they were. The shape head still names the nearest
shape for every image.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from unsee.io import atomic_write, write_json
from unsee.progress import progress_bar
from unsee.toyworld.render import image_rng, random_attributes, render
from unsee.toyworld.vocab import ATTRIBUTES

WEIGHTS_DIR = Path(__file__).parent / "weights" / "judge"
FEATURE_DIM = 256
#: the presence head's labels: one of the nine shapes, or none of them
PRESENCE = ("shape", "none")
#: every head the judge may answer with: the four attributes, then presence
HEADS: dict[str, tuple[str, ...]] = {**ATTRIBUTES, "presence": PRESENCE}
PRESENCE_FILE = "presence.safetensors"


class ToyJudge(nn.Module):
    """Input: float images (B, 3, 32, 32) in [-1, 1]. Output: logits per attribute head."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.body = nn.Sequential(
            block(3, 32, 1),
            block(32, 64, 2),
            block(64, 64, 1),
            block(64, 128, 2),
            block(128, 128, 2),
        )
        self.neck = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, FEATURE_DIM), nn.ReLU(inplace=True)
        )
        self.heads = nn.ModuleDict(
            {k: nn.Linear(FEATURE_DIM, len(v)) for k, v in ATTRIBUTES.items()}
        )
        #: the presence read-out on the frozen features (None until trained or loaded)
        self.presence: nn.Sequential | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) -> (B, 256) penultimate features."""
        return self.neck(self.body(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head: the four attributes, and ``presence`` when the judge has it."""
        f = self.features(x)
        out = {k: head(f) for k, head in self.heads.items()}
        if self.presence is not None:
            out["presence"] = self.presence(f)
        return out


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, 32, 32, 3) or float (B, 3, 32, 32) in [-1, 1] -> float (B, 3, 32, 32)."""
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images.float()


def _augmented_batch(n: int, seed: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders with labels (B, 4); a third get random backgrounds, labelled -1 for that head."""
    imgs = np.empty((n, 32, 32, 3), np.uint8)
    labels = np.empty((n, 4), np.int64)
    for j in range(n):
        rng = image_rng(seed, start + j)
        a = random_attributes(rng)
        bg = tuple(rng.uniform(0, 255, 3)) if rng.random() < 1 / 3 else None
        imgs[j] = render(a, rng, background_rgb=bg)
        labels[j] = [
            vals.index(v) for vals, v in zip(ATTRIBUTES.values(), a.as_dict().values(), strict=True)
        ]
        if bg is not None:
            labels[j, 3] = -1
    return imgs, labels


def perturb(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Pixel noise and blur of random strength (per image)."""
    b = x.shape[0]
    noise_std = torch.rand(b, 1, 1, 1, generator=g) * 0.15
    x = x + noise_std * torch.randn(x.shape, generator=g)
    blur = torch.rand(b, generator=g) < 0.3
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return x.clamp(-1, 1)


def train_judge(
    out_dir: Path = WEIGHTS_DIR,
    n_train: int = 30_000,
    epochs: int = 8,
    seed: int = 1,
    batch_size: int = 128,
) -> dict[str, float]:
    """Train the judge on fresh renders; returns per-head accuracy on held-out clean renders."""
    torch.manual_seed(seed)
    imgs, labels = _augmented_batch(n_train, seed, 0)
    x_all, y_all = to_tensor(imgs), torch.from_numpy(labels)
    model = ToyJudge()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (n_train // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    with progress_bar(steps, "train ToyWorld judge") as bar:
        for _ in range(epochs):
            perm = torch.randperm(n_train, generator=g)
            for s in range(n_train // batch_size):
                idx = perm[s * batch_size : (s + 1) * batch_size]
                x = perturb(x_all[idx], g)
                out = model(x)
                loss: torch.Tensor = sum(  # type: ignore[assignment]
                    F.cross_entropy(out[k], y_all[idx, i], ignore_index=-1)
                    for i, k in enumerate(ATTRIBUTES)
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.advance(loss=loss.item())
    model.eval()
    acc = evaluate_on_renders(model, n=2000, seed=seed + 1000)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "model.safetensors", lambda p: save_file(model.state_dict(), str(p)))
    write_json(
        out_dir / "judge.json",
        {
            "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
            "feature_dim": FEATURE_DIM,
            "train_images": n_train,
            "epochs": epochs,
            "seed": seed,
            "train_seconds": round(time.time() - t0, 1),
            "accuracy_clean_renders": acc,
        },
    )
    return acc


def presence_head() -> nn.Sequential:
    """The presence read-out: a one-hidden-layer MLP on the 256-d features (a linear one
    left 9-14 % of rings and lines judged "shape": the frozen features were trained to
    call a ring a circle)."""
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, 128), nn.ReLU(inplace=True), nn.Linear(128, len(PRESENCE))
    )


@torch.no_grad()
def evaluate_on_renders(model: ToyJudge, n: int, seed: int) -> dict[str, float]:
    """Per-head accuracy on ``n`` fresh clean renders of ``seed``."""
    from unsee.toyworld.render import render_dataset

    imgs, attrs = render_dataset(n, seed)
    preds = predict(model, imgs)
    return {
        k: float(
            np.mean([p["label"] == getattr(a, k) for p, a in zip(preds[k], attrs, strict=True)])
        )
        for k in ATTRIBUTES
    }


def load_judge(path: Path = WEIGHTS_DIR, presence: bool = True) -> ToyJudge:
    """The shipped judge (CPU, eval mode), with its presence head when ``path`` holds one
    and ``presence`` is true."""
    from unsee.errors import UnseeError

    file = Path(path) / "model.safetensors"
    if not file.exists():
        raise UnseeError(f"ToyWorld judge weights not found at {file}")
    model = ToyJudge()
    model.load_state_dict(load_file(str(file)))
    if presence and (Path(path) / PRESENCE_FILE).exists():
        head = presence_head()
        head.load_state_dict(load_file(str(Path(path) / PRESENCE_FILE)))
        model.presence = head
    return model.eval()


@torch.no_grad()
def predict_probs(
    model: ToyJudge, images: np.ndarray | torch.Tensor, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    """Softmax probabilities per head: {attribute: (B, n_classes)}, on the CPU; ``images``
    may live on any device."""
    device = next(model.parameters()).device
    x = to_tensor(images)
    outs: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(x), batch_size):
        for k, logits in model(x[i : i + batch_size].to(device)).items():
            outs.setdefault(k, []).append(logits.softmax(-1).cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def predict(model: ToyJudge, images: np.ndarray | torch.Tensor) -> dict[str, list[dict]]:
    """Per head (:data:`HEADS` the judge has), per image: ``{"label": str, "prob": float}``
    (argmax and its probability)."""
    probs = predict_probs(model, images)
    return {
        k: [
            {"label": HEADS[k][int(j)], "prob": float(p[j])}
            for p, j in zip(probs[k], probs[k].argmax(-1), strict=True)
        ]
        for k in probs
    }


@torch.no_grad()
def features(
    model: ToyJudge, images: np.ndarray | torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Judge-feature embedding (B, 256) used for judge-feature FID."""
    x = to_tensor(images)
    return torch.cat([model.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
