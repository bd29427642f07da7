"""ToyWorld-SD's VAE: a diffusers ``AutoencoderKL``, 3x32x32 images -> 4x8x8 latents.

Why 32 px with a factor-4 VAE (not SD's 64 px / factor 8): the judge reads 32 px; in the
feasibility probe (``shared/audits/feasibility-toyworld-sd.md``) the factor-4 VAE reached 2.5x
lower reconstruction error than a 64 px factor-8 one at equal CPU, and kept stripes and dots,
which the factor-8 one lost. Its scenes are 90 % shapes and 10 % no-shape scenes
(``p_none`` 0.1; the UNet's are half and half): stripes, dots and checks are what a small VAE
learns last, and the no-shape scenes are easy. Loss: pixel MSE + ``kl_weight`` x KL (KL per
image divided by the pixels per image, SD's ratio). No perceptual or GAN loss, and never the
judge as a loss.

**Latent scale folded into the weights.** SD scales latents by ``scaling_factor`` = 0.18215,
which was 1/std of its VAE's latents; official scripts hard-code that number. After training,
:func:`fold_latent_stats` measures the per-channel mean ``m`` and std ``s`` of posterior samples
and rewrites the 1x1 ``quant_conv`` (mean rows: ``a*z + b``, log-variance rows: ``+ 2 ln a``,
with ``a = 1 / (0.18215 s)``, ``b = -a m``) and ``post_quant_conv`` (its inverse) so that the
decoder sees exactly what it saw before while ``0.18215 * latent`` has mean 0 and std 1 in
every channel. The fold is exact up to float rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unsee.io import atomic_dir, write_json
from unsee.progress import progress_bar
from unsee.toyworld.sd.common import (
    Clock,
    TrainState,
    cosine_lr,
    limit_threads,
    load_checkpoint,
    save_checkpoint,
    step_rngs,
)
from unsee.toyworld.sd.data import is_shape, load_scenes, render_scenes, to_float

SCALING_FACTOR = 0.18215
VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
    "scaling_factor": SCALING_FACTOR,
}


@dataclass
class VAEConfig:
    steps: int = 5000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    kl_weight: float = 1e-6
    dataset_size: int = 40_000
    p_none: float = 0.1  # mostly shapes: fine patterns are what a small VAE learns last
    seed: int = 0
    checkpoint_every: int = 100
    stats_images: int = 2000
    stats_p_none: float = 0.5  # the fold is measured on the UNet's training scenes
    eval_images: int = 500
    eval_seed: int = 4242
    block_out_channels: tuple[int, ...] = (32, 64, 64)

    def model_info(self) -> dict:
        """Settings a checkpoint must share to be resumed (everything but the length)."""
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


def build_vae(block_out_channels: tuple[int, ...] = (32, 64, 64)):
    from diffusers import AutoencoderKL

    cfg = dict(VAE_CONFIG)
    cfg["block_out_channels"] = list(block_out_channels)
    n = len(block_out_channels)
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * n
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * n
    cfg["norm_num_groups"] = min(16, *block_out_channels)
    return AutoencoderKL(**cfg)


def vae_loss(
    vae, x: torch.Tensor, g: torch.Generator, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mse) for images ``x`` (B, 3, H, W) in [-1, 1]; the posterior is sampled with
    ``g``; KL is per image divided by the number of pixel values per image."""
    post = vae.encode(x).latent_dist
    z = post.sample(generator=g)
    rec = vae.decode(z).sample
    mse = F.mse_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    return mse + kl_weight * kl, mse


def train_vae(
    work_dir: Path,
    cfg: VAEConfig,
    export_dir: Path | None = None,
    data_dir: Path | None = None,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume) the VAE in ``work_dir``; at ``cfg.steps`` fold and export it.

    Checkpoint: ``work_dir/checkpoint.safetensors`` every ``cfg.checkpoint_every`` steps.
    Batch ``k`` is drawn from ``(cfg.seed, k)``. ``stop_after`` (tests) returns after that
    step without checkpointing, as a kill would. The export (``export_dir``, a diffusers
    ``AutoencoderKL`` folder) happens when the run reaches ``cfg.steps``.
    """
    limit_threads()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    images, _ = load_scenes(data_dir or work_dir, cfg.dataset_size, cfg.seed, cfg.p_none)
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.block_out_channels)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    info = cfg.model_info()
    loaded = load_checkpoint(work_dir, {"vae": vae}, {"opt": opt}, info=info)
    state = loaded[0] if loaded else TrainState()
    write_json(work_dir / "train_config.json", info)
    clock = Clock()
    vae.train()
    with progress_bar(cfg.steps, "train ToyWorld-SD VAE", completed=state.step) as bar:
        while state.step < cfg.steps:
            rng, g = step_rngs(cfg.seed, state.step)
            idx = rng.integers(0, len(images), cfg.batch_size)
            x = to_float(images[idx])
            loss, mse = vae_loss(vae, x, g, cfg.kl_weight)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {state.step}; checkpoint kept")
            for group in opt.param_groups:
                group["lr"] = cosine_lr(state.step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            state.step += 1
            state.log.append(float(mse.detach()))
            bar.advance(mse=float(np.mean(state.log[-50:])))
            if stop_after is not None and state.step >= stop_after:
                return work_dir
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                clock.tick(state)
                save_checkpoint(work_dir, state, {"vae": vae}, {"opt": opt}, info=info)
    if export_dir is not None:
        export_vae(work_dir, export_dir, cfg)
    return work_dir


def load_trained_vae(work_dir: Path, cfg: VAEConfig):
    """The VAE of ``work_dir``'s checkpoint (unfolded, eval mode)."""
    vae = build_vae(cfg.block_out_channels)
    if load_checkpoint(work_dir, {"vae": vae}, {}) is None:
        from unsee.errors import UnseeError

        raise UnseeError(f"no VAE checkpoint in {work_dir}")
    return vae.eval()


@torch.no_grad()
def latent_stats(
    vae, x: torch.Tensor, seed: int = 0, batch: int = 250
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (each (C,)) of posterior samples of images ``x``."""
    g = torch.Generator().manual_seed(seed)
    zs = torch.cat(
        [
            vae.encode(x[i : i + batch]).latent_dist.sample(generator=g)
            for i in range(0, len(x), batch)
        ]
    )
    zs = zs.transpose(0, 1).reshape(zs.shape[1], -1).double()
    return zs.mean(1).float(), zs.std(1).float()


@torch.no_grad()
def fold_latent_stats(
    vae, mean: torch.Tensor, std: torch.Tensor, scaling_factor: float = SCALING_FACTOR
):
    """Rewrite ``quant_conv`` / ``post_quant_conv`` in place so that latents ``z'`` satisfy
    ``scaling_factor * z' = (z - mean) / std`` per channel while ``decode(z')`` equals the old
    ``decode(z)``; sets ``config.scaling_factor``. Returns ``vae``."""
    c = mean.numel()
    a = 1.0 / (scaling_factor * std.double())
    b = -a * mean.double()
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias  # (2C, 2C', 1, 1), (2C,)
    w, bias = qw.double(), qb.double()
    w[:c] *= a.view(-1, 1, 1, 1)
    bias[:c] = bias[:c] * a + b
    bias[c:] = bias[c:] + 2 * torch.log(a)
    qw.copy_(w.float())
    qb.copy_(bias.float())
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias  # (C, C, 1, 1), (C,)
    w2 = pw.double()[:, :, 0, 0]
    new_w = w2 / a.view(1, -1)
    new_b = pb.double() - (w2 * (b / a).view(1, -1)).sum(1)
    pw.copy_(new_w.float()[:, :, None, None])
    pb.copy_(new_b.float())
    vae.register_to_config(scaling_factor=scaling_factor)
    return vae


def export_vae(work_dir: Path, export_dir: Path, cfg: VAEConfig) -> dict:
    """Fold the latent statistics measured on the first ``cfg.stats_images`` scenes of the
    UNet's training set (``cfg.stats_p_none``) into the checkpoint's VAE, save it as a diffusers
    folder in ``export_dir`` and write ``export_dir/vae_report.json`` (latent statistics
    before and after the fold, judge on reconstructions). Returns that report."""
    vae = load_trained_vae(work_dir, cfg)
    # the first scenes of the UNet's training set (same seed, its share of no-shape scenes)
    x = to_float(render_scenes(cfg.stats_images, cfg.seed, cfg.stats_p_none)[0])
    mean, std = latent_stats(vae, x)
    fold_latent_stats(vae, mean, std)
    mean2, std2 = latent_stats(vae, x)
    scaled = std2 * SCALING_FACTOR
    report = {
        "latent_before_fold": {"mean": mean.tolist(), "std": std.tolist()},
        "scaled_latent_after_fold": {
            "mean": (mean2 * SCALING_FACTOR).tolist(),
            "std": scaled.tolist(),
        },
        "scaling_factor": SCALING_FACTOR,
        "quality": evaluate_vae(vae, cfg.eval_images, cfg.eval_seed),
        "config": cfg.model_info(),
    }
    state = load_checkpoint(work_dir, {"vae": build_vae(cfg.block_out_channels)}, {})
    if state is not None:
        report["steps"] = state[0].step
        report["wall_s"] = round(state[0].wall_s, 1)
        report["cpu_s"] = round(state[0].cpu_s, 1)

    def build(tmp: Path) -> None:
        vae.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / "vae_report.json", report)

    atomic_dir(Path(export_dir), build, "export", overwrite=True)
    return report


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """Decode of the posterior mode: (B, 3, H, W) in [-1, 1] -> same, clamped."""
    out = [
        vae.decode(vae.encode(x[i : i + batch]).latent_dist.mode()).sample
        for i in range(0, len(x), batch)
    ]
    return torch.cat(out).clamp(-1, 1)


@torch.no_grad()
def evaluate_vae(vae, n: int = 500, seed: int = 4242) -> dict:
    """Judge on reconstructions of ``n`` fresh ToyWorld renders (shape scenes only), per
    attribute and per style, beside the judge on the renders themselves; PSNR in dB on
    [-1, 1] images (peak-to-peak 2)."""
    from unsee.toyworld.judge import load_judge, predict
    from unsee.toyworld.vocab import ATTRIBUTES, STYLES

    t0 = time.time()
    images, codes = render_scenes(n, seed, 0.0)
    assert all(is_shape(c) for c in codes[:, 0])
    x = to_float(images)
    rec = reconstruct(vae.eval(), x)
    mse = float(F.mse_loss(rec, x))
    judge = load_judge()
    rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    p_rec, p_ref = predict(judge, rec_u8.numpy()), predict(judge, images)
    truth = {k: [v[int(c)] for c in codes[:, j]] for j, (k, v) in enumerate(ATTRIBUTES.items())}

    def acc(preds: dict, mask: np.ndarray | None = None) -> dict[str, float]:
        m = np.ones(n, bool) if mask is None else mask
        return {
            k: float(
                np.mean(
                    [
                        p["label"] == t
                        for p, t, keep in zip(preds[k], truth[k], m, strict=True)
                        if keep
                    ]
                )
            )
            for k in ATTRIBUTES
        }

    per_style = {s: acc(p_rec, codes[:, 2] == i)["style"] for i, s in enumerate(STYLES)}
    return {
        "images": n,
        "seed": seed,
        "mse": mse,
        "psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12)),
        "judge_on_reconstructions": acc(p_rec),
        "judge_on_renders": acc(p_ref),
        "style_recall_on_reconstructions": per_style,
        "seconds": round(time.time() - t0, 1),
    }
