"""Shared fixtures: the bundled ToyWorld model and judge, and a tiny Stable Diffusion
folder assembled from configs (no download)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("UNSEE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "OMP_NUM_THREADS" not in os.environ:  # an explicit thread count (shared machines) wins
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def toyworld():
    from unsee.models.bundle import load_bundle

    return load_bundle("toyworld")


@pytest.fixture(scope="session")
def judge():
    from unsee.toyworld.judge import load_judge

    return load_judge()


@pytest.fixture(scope="session")
def esd_x_star_toyworld(tmp_path_factory) -> Path:
    """The artifact of :func:`toyworld_rates.reduced_esd_x` on ToyWorld: one erasure shared
    by the test of ESD's guarantee and the test of its scorecard from the CLI."""
    from toyworld_rates import reduced_esd_x
    from unsee.erase.engine import run_erasure

    art = tmp_path_factory.mktemp("esd-x-star") / "art"
    run_erasure(reduced_esd_x("toyworld"), art)
    return art


def _write_clip_tokenizer(folder: Path) -> None:
    """A real CLIPTokenizer with a character-level vocabulary (no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 16,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )


def build_tiny_sd(folder: Path, text_width: int = 32, prediction_type: str = "epsilon") -> Path:
    """Save a tiny SD-architecture pipeline (UNet, CLIP text encoder, VAE, DDIM) to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=200,
            hidden_size=text_width,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    _write_clip_tokenizer(folder / "_tok")
    tok = CLIPTokenizer.from_pretrained(folder / "_tok")
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "sd")
