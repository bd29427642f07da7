"""Helpers of the ToyWorld-SD tests: the real CLIP tokenizer fixture and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory) -> Path:
    """The real CLIP tokenizer, built from the BPE file of the installed open-clip-torch."""
    from unsee.errors import UnseeError
    from unsee.toyworld.sd.tokenizer import build_clip_tokenizer, find_bpe_file

    try:
        find_bpe_file()
    except UnseeError as exc:  # the package is installed without deps; see tokenizer.py
        pytest.skip(str(exc))
    return build_clip_tokenizer(tmp_path_factory.mktemp("clip-tok"))


def _tiny_vae_cfg(**kw):
    from unsee.toyworld.sd.vae import VAEConfig

    base = {
        "steps": 6,
        "batch_size": 4,
        "dataset_size": 48,
        "checkpoint_every": 2,
        "stats_images": 48,
        "eval_images": 16,
        "block_out_channels": (8, 16, 16),
    }
    return VAEConfig(**{**base, **kw})


def _tiny_clip_cfg(**kw):
    from unsee.toyworld.sd.clip import CLIPTrainConfig

    base = {
        "steps": 4,
        "batch_size": 12,
        "dataset_size": 48,
        "checkpoint_every": 2,
        "text_hidden": 32,
        "text_layers": 1,
        "text_heads": 2,
        "vision_hidden": 32,
        "vision_layers": 1,
        "projection_dim": 16,
        "eval_images": 24,
    }
    return CLIPTrainConfig(**{**base, **kw})


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
