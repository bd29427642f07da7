"""Tiny random CLIP and ResNet folders for judge tests (no weights can be downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import _write_clip_tokenizer


def build_tiny_clip(folder: Path, image_size: int = 32) -> Path:
    """A random CLIPModel + CLIPProcessor saved to ``folder`` (loads with from_pretrained)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": 200,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=16,
    )
    CLIPModel(cfg).eval().save_pretrained(folder)
    _write_clip_tokenizer(folder / "_tok")
    tok = CLIPTokenizer.from_pretrained(folder / "_tok", model_max_length=64)
    img = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=img, tokenizer=tok).save_pretrained(folder)
    return folder


IMAGENET_LABELS = (
    "tench, Tinca tinca",
    "goldfish, Carassius auratus",
    "English springer, English springer spaniel",
    "chain saw, chainsaw",
    "church, church building",
    "golf ball",
)


def build_tiny_resnet(folder: Path) -> Path:
    """A random transformers ResNet classifier over :data:`IMAGENET_LABELS` + processor."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=len(IMAGENET_LABELS),
        id2label=dict(enumerate(IMAGENET_LABELS)),
        label2id={v: i for i, v in enumerate(IMAGENET_LABELS)},
    )
    ResNetForImageClassification(cfg).eval().save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(folder)
    return folder
