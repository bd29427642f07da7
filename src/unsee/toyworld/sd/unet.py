"""ToyWorld-SD's denoiser and the assembled Stable Diffusion 1.x folder.

``UNet2DConditionModel`` on 4x8x8 latents (blocks 64/128/128, cross-attention at 8 and 4 px
and in the mid block, context 77 x 256 from the frozen CLIP text tower), **epsilon**
prediction, trained with uniform timesteps on SD v1.4's scaled-linear schedule with 10 %
caption dropout (the empty prompt, as the pipeline's unconditional branch uses) and an EMA
of the weights. The feasibility probe measured this size at ~0.45 CPU s per step at batch 32,
cheaper than ToyWorld's pixel UNet.

Latents are posterior samples of the frozen, folded VAE (:mod:`.vae`) times 0.18215: the
posterior mean and std of every training scene are cached once, and each step draws
``mean + std * eps`` from the step's generator. Text states of every training caption (77 x
256, SD's padding with EOS) are cached once too.

:func:`assemble_pipeline` writes the diffusers folder that plain
``StableDiffusionPipeline.from_pretrained`` loads: ``vae``, ``text_encoder``
(``CLIPTextModel``), ``tokenizer`` (real CLIP BPE, 77 tokens), ``unet`` and ``scheduler``
(SD v1.4's exact PNDM config).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unsee.errors import UnseeError
from unsee.io import atomic_dir, write_json
from unsee.progress import progress_bar
from unsee.toyworld.sd.common import (
    EMA,
    Clock,
    TrainState,
    checkpoint_info,
    cosine_lr,
    limit_threads,
    load_array_cache,
    load_checkpoint,
    save_array_cache,
    save_checkpoint,
    step_rngs,
)
from unsee.toyworld.sd.data import all_scene_captions, load_scenes, sample_scene_caption, to_float
from unsee.toyworld.sd.tokenizer import MAX_LENGTH, load_clip_tokenizer

#: Stable Diffusion v1.4's scheduler_config.json, key for key.
SD14_SCHEDULER_CONFIG: dict = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


@dataclass
class UNetTrainConfig:
    steps: int = 10_000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    caption_dropout: float = 0.1
    ema_max_decay: float = 0.999
    dataset_size: int = 40_000
    p_none: float = 0.5
    seed: int = 0
    checkpoint_every: int = 100
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    attention_heads: int = 8

    def model_info(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def of_run(cls, work_dir: Path) -> UNetTrainConfig:
        """The settings ``work_dir``'s checkpoint was made with (defaults where it has none):
        what an export of that run must build its UNet with."""
        names = {f.name for f in fields(cls)}
        saved = {k: v for k, v in checkpoint_info(work_dir).items() if k in names}
        if "block_out_channels" in saved:
            saved["block_out_channels"] = tuple(saved["block_out_channels"])
        return cls(**saved)


def unet_config(
    cfg: UNetTrainConfig, cross_attention_dim: int, latent_size: int = 8, latent_channels: int = 4
) -> dict:
    n = len(cfg.block_out_channels)
    return {
        "sample_size": latent_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "block_out_channels": list(cfg.block_out_channels),
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "layers_per_block": 1,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": cfg.attention_heads,  # diffusers' legacy name: number of heads
        "norm_num_groups": min(32, *cfg.block_out_channels),
    }


def build_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(SD14_SCHEDULER_CONFIG)


def _file_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def load_frozen_parts(vae_dir: Path, clip_dir: Path):
    """(vae, text_encoder, tokenizer) from the exports of train-vae and train-clip, frozen."""
    from diffusers import AutoencoderKL
    from transformers import CLIPModel, CLIPTextModel

    for p, what in ((vae_dir, "train-vae"), (clip_dir, "train-clip")):
        if not (Path(p) / "config.json").exists():
            raise UnseeError(f"{p} is not an export of `unsee toyworld {what}`")
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval().requires_grad_(False)
    if abs(vae.config.scaling_factor - 0.18215) > 1e-12:
        raise UnseeError(f"{vae_dir}: scaling_factor is not 0.18215 (not a folded VAE)")
    clip = CLIPModel.from_pretrained(str(clip_dir))
    text = CLIPTextModel(clip.text_model.config)
    text.load_state_dict(clip.text_model.state_dict())
    tok = load_clip_tokenizer(Path(clip_dir) / "tokenizer")
    return vae, text.eval().requires_grad_(False), tok


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: list[str], batch: int = 128) -> torch.Tensor:
    """SD's conditioning: last hidden states (N, 77, D) of prompts padded to 77 tokens."""
    out = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(
            prompts[i : i + batch],
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )["input_ids"]
        out.append(text_encoder(ids)[0])
    return torch.cat(out)


@torch.no_grad()
def _posterior_cache(
    vae, images: np.ndarray, batch: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    with progress_bar(len(images), "encode scenes with the VAE") as bar:
        for i in range(0, len(images), batch):
            d = vae.encode(to_float(images[i : i + batch])).latent_dist
            means.append(d.mean.contiguous())  # a chunk view: strides would differ from a
            stds.append(d.std.contiguous())  # reloaded cache and change conv kernels' bits
            bar.advance(len(images[i : i + batch]))
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()


def train_unet(
    work_dir: Path,
    cfg: UNetTrainConfig,
    vae_dir: Path,
    clip_dir: Path,
    out_dir: Path | None = None,
    data_dir: Path | None = None,
    stop_after: int | None = None,
    init_unet: Path | None = None,
) -> Path:
    """Train (or resume) the UNet in ``work_dir`` on the frozen VAE and CLIP exports; at
    ``cfg.steps`` write the pipeline folder ``out_dir`` with the EMA weights.

    Step ``k`` draws from ``(cfg.seed, k)``; checkpoints every ``cfg.checkpoint_every`` steps;
    ``stop_after`` (tests) returns without checkpointing, as a kill would. ``init_unet``: a
    diffusers UNet folder whose weights start the run (online and EMA weights alike; the
    optimiser, warm-up and cosine start afresh: a warm restart); its digest is recorded, so
    a resume from another starting point is refused.
    """
    limit_threads()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    vae, text_encoder, tok = load_frozen_parts(vae_dir, clip_dir)
    images, codes = load_scenes(data_dir or work_dir, cfg.dataset_size, cfg.seed, cfg.p_none)

    info = _run_info(cfg, vae_dir, clip_dir)
    if init_unet is not None:
        info["init_from"] = _file_digest(Path(init_unet))
    vae_key, clip_key = info["vae"], info["clip"]
    lat_path = work_dir / f"latents_{vae_key}_s{cfg.seed}_n{cfg.dataset_size}.safetensors"
    lat = load_array_cache(lat_path)
    if lat is None:
        mean, std = _posterior_cache(vae, images)
        save_array_cache(lat_path, {"mean": mean, "std": std})
    else:
        mean, std = lat["mean"], lat["std"]
    captions = all_scene_captions()
    cap_index = {c: i for i, c in enumerate(captions)}
    txt_path = work_dir / f"text_states_{clip_key}.safetensors"
    txt = load_array_cache(txt_path)
    if txt is None:
        states = encode_prompts(text_encoder, tok, captions).half()
        save_array_cache(txt_path, {"states": states})
    else:
        states = txt["states"]
    empty_row = cap_index[""]
    scale = float(vae.config.scaling_factor)

    torch.manual_seed(cfg.seed)
    unet = _new_unet(cfg, vae, text_encoder)
    if init_unet is not None:
        _load_unet_weights(unet, Path(init_unet))
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    ema = EMA(unet, cfg.ema_max_decay)
    loaded = load_checkpoint(work_dir, {"unet": unet}, {"opt": opt}, info=info)
    state = TrainState()
    if loaded:
        state = loaded[0]
        ema.restore(loaded[1])
    write_json(work_dir / "train_config.json", info)
    alphas = build_scheduler().alphas_cumprod
    clock = Clock()
    unet.train()
    with progress_bar(cfg.steps, "train ToyWorld-SD UNet", completed=state.step) as bar:
        while state.step < cfg.steps:
            rng, g = step_rngs(cfg.seed, state.step)
            crng = random.Random(int(rng.integers(2**62)))
            idx = rng.integers(0, len(images), cfg.batch_size)
            rows = [
                empty_row
                if crng.random() < cfg.caption_dropout
                else cap_index[sample_scene_caption(codes[i], crng)]
                for i in idx
            ]
            z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
            noise = torch.randn(z.shape, generator=g)
            t = torch.randint(0, len(alphas), (cfg.batch_size,), generator=g)
            ab = alphas[t].view(-1, 1, 1, 1)
            xt = ab.sqrt() * z + (1 - ab).sqrt() * noise
            pred = unet(xt, t, states[rows].float()).sample
            loss = F.mse_loss(pred, noise)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {state.step}; checkpoint kept")
            for group in opt.param_groups:
                group["lr"] = cosine_lr(state.step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            ema.update(unet, state.step)
            state.step += 1
            state.log.append(float(loss.detach()))
            bar.advance(loss=float(np.mean(state.log[-50:])))
            if stop_after is not None and state.step >= stop_after:
                return work_dir
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                clock.tick(state)
                save_checkpoint(
                    work_dir,
                    state,
                    {"unet": unet},
                    {"opt": opt},
                    extra_tensors=ema.tensors(),
                    info=info,
                )
    if out_dir is not None:
        export_unet(work_dir, cfg, vae_dir, clip_dir, Path(out_dir))
    return work_dir


def _run_info(cfg: UNetTrainConfig, vae_dir: Path, clip_dir: Path) -> dict:
    """The run's settings and the digests of the frozen parts it trains on: what a
    checkpoint records and is checked against when it is resumed or exported."""
    return {**cfg.model_info(), "vae": _file_digest(vae_dir), "clip": _file_digest(clip_dir)}


def _load_unet_weights(unet, folder: Path) -> None:
    """Copy a diffusers UNet folder's weights (any stored dtype) into ``unet``, which must
    have the same architecture."""
    from diffusers import UNet2DConditionModel

    if not (folder / "config.json").is_file():
        raise UnseeError(f"{folder} is not a diffusers UNet folder (no config.json)")
    source = UNet2DConditionModel.from_pretrained(str(folder), torch_dtype=torch.float32)
    mine, theirs = unet.state_dict(), source.state_dict()
    if {k: v.shape for k, v in mine.items()} != {k: v.shape for k, v in theirs.items()}:
        raise UnseeError(f"{folder}: not this recipe's UNet architecture (other widths?)")
    unet.load_state_dict(theirs)


def unpack_pipeline(pipeline_dir: Path, dest: Path) -> tuple[Path, Path, Path]:
    """The frozen parts of a ToyWorld-SD pipeline folder as the train-vae and train-clip
    exports the UNet recipe reads, written to ``dest/vae`` and ``dest/clip`` (float32; the
    CLIP model is the pipeline's text encoder joined with its ``clip/`` part), and the
    folder's ``unet``: ``(vae_dir, clip_dir, unet_dir)``. This lets a training run restart
    from shipped weights when the run that made them is gone. Written afresh on every call
    (a few seconds; the bytes are the same for the same folder, so a resume's digests
    match), so parts unpacked from another folder are never reused."""
    import shutil

    from diffusers import AutoencoderKL

    from unsee.evaluate.judges import load_split_clip

    pipeline_dir, dest = Path(pipeline_dir), Path(dest)
    unet_dir = pipeline_dir / "unet"
    if not (pipeline_dir / "vae" / "config.json").is_file() or not unet_dir.is_dir():
        raise UnseeError(f"{pipeline_dir} is not a ToyWorld-SD pipeline folder")
    vae = AutoencoderKL.from_pretrained(str(pipeline_dir / "vae"), torch_dtype=torch.float32)
    model, _ = load_split_clip(pipeline_dir)

    def build_clip(tmp: Path) -> None:
        model.save_pretrained(tmp)
        shutil.copytree(pipeline_dir / "tokenizer", tmp / "tokenizer")

    vae_dir = atomic_dir(dest / "vae", vae.save_pretrained, "export", overwrite=True)
    clip_dir = atomic_dir(dest / "clip", build_clip, "export", overwrite=True)
    return vae_dir, clip_dir, unet_dir


def _new_unet(cfg: UNetTrainConfig, vae, text_encoder):
    """A freshly initialised UNet for ``vae``'s latents (channels, and side = the VAE's
    image size over its downsampling factor) and ``text_encoder``'s width."""
    from diffusers import UNet2DConditionModel

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return UNet2DConditionModel(
        **unet_config(
            cfg,
            text_encoder.config.hidden_size,
            latent_size=int(vae.config.sample_size) // factor,
            latent_channels=int(vae.config.latent_channels),
        )
    )


def export_unet(
    work_dir: Path,
    cfg: UNetTrainConfig,
    vae_dir: Path,
    clip_dir: Path,
    out_dir: Path,
    manifest: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Assemble the pipeline folder ``out_dir`` from the EMA weights of ``work_dir``'s
    checkpoint (also mid-training: the run is only read). ``manifest`` and ``dtype`` as
    :func:`assemble_pipeline`."""
    vae, text_encoder, _ = load_frozen_parts(vae_dir, clip_dir)
    unet = _new_unet(cfg, vae, text_encoder)
    ema = EMA(unet, cfg.ema_max_decay)
    info = _run_info(cfg, vae_dir, clip_dir)
    loaded = load_checkpoint(work_dir, {"unet": unet}, {}, info=info)
    if loaded is None:
        raise UnseeError(f"no UNet checkpoint in {work_dir}")
    state, extra = loaded
    ema.restore(extra)
    ema.copy_to(unet)
    return assemble_pipeline(
        vae_dir,
        clip_dir,
        unet.eval(),
        Path(out_dir),
        info={
            "steps": state.step,
            "wall_s": round(state.wall_s, 1),
            "cpu_s": round(state.cpu_s, 1),
            # what the run was made with (its last --steps, a warm restart's starting point)
            "config": {**info, **checkpoint_info(work_dir)},
        },
        manifest=manifest,
        dtype=dtype,
    )


def assemble_pipeline(
    vae_dir: Path,
    clip_dir: Path,
    unet,
    out_dir: Path,
    info: dict | None = None,
    dtype: torch.dtype = torch.float32,
    manifest: dict | None = None,
) -> Path:
    """Write a ``StableDiffusionPipeline`` folder (no safety checker) to ``out_dir``, plus
    ``toyworld_sd.json`` (how it was made). The tokenizer folder carries ``vocab.json`` and
    ``merges.txt`` beside ``tokenizer.json``.

    ``dtype`` is how the weights are stored; the configs still say float32, so plain
    ``from_pretrained`` (which follows a transformers config's ``dtype``) loads every part
    in float32 on the CPU. ``manifest``: written as ``unsee_model.json`` (family,
    vocabulary), which makes unsee label the folder as ToyWorld-SD, with the CLIP parts
    the pipeline lacks (``clip/``, :func:`unsee.toyworld.sd.clip.write_clip_part`) for the
    offline CLIP score."""
    import copy

    from diffusers import StableDiffusionPipeline

    from unsee.toyworld.sd.clip import write_clip_part
    from unsee.toyworld.sd.tokenizer import add_slow_files

    vae, text_encoder, tok = load_frozen_parts(vae_dir, clip_dir)
    pipe = StableDiffusionPipeline(
        vae=vae.to(dtype),
        text_encoder=text_encoder.to(dtype),
        tokenizer=tok,
        unet=copy.deepcopy(unet).to(dtype),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )

    def build(tmp: Path) -> None:
        from unsee.io import read_json_object
        from unsee.models.family import MANIFEST

        pipe.save_pretrained(tmp, safe_serialization=True)
        add_slow_files(tmp / "tokenizer", Path(clip_dir) / "tokenizer")
        te_config = tmp / "text_encoder" / "config.json"
        write_json(te_config, {**read_json_object(te_config, "a config"), "dtype": "float32"})
        write_json(
            tmp / "toyworld_sd.json", {"vae": str(vae_dir), "clip": str(clip_dir), **(info or {})}
        )
        if manifest is not None:
            write_json(tmp / MANIFEST, manifest)
            write_clip_part(clip_dir, tmp, dtype)

    return atomic_dir(Path(out_dir), build, "export", overwrite=True)
