"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024; methods.md §4.3).

A closed-form edit of every cross-attention key and value projection ``W`` (out, D) that
reads the text states (D = text width). With erase pairs (c_i, g_i), preserve states p_j and
scales s_e, s_p, UCE minimises

    lamb ||W' - W||^2 + s_e sum_i ||W' c_i - W g_i||^2 + s_p sum_j ||W' p_j - W p_j||^2

(c_i: a text state of the concept, g_i: the matching state of its guide), whose solution is

    W' = W A M^-1,  A = lamb I + s_e G^T C + s_p P^T P,  M = lamb I + s_e C^T C + s_p P^T P

with C, G, P the stacked rows. Both A and M come from text states alone, so every layer gets
the *same* (D, D) transform ``T = A M^-1``: :meth:`UCE.fit` solves it once (float64,
``torch.linalg.solve``; a clear error when M is singular or ill-conditioned) and
:meth:`UCE.apply` right-multiplies each key/value weight by it. Biases (absent in SD) are
left unchanged: matching ``W' c`` to ``W g`` already matches the outputs ``W' c + b``.

Which token states are the rows (``token``):

* ``subject`` (default): the last token of the concept's words in the prompt (the guide's
  words in the guide prompt); a prompt with no such words (the empty guide) uses the token
  before the end token, i.e. the start token (BOS for CLIP, [CLS] for MiniLM). For SD with
  the concept at the end of the prompt this is the official 2025 code's choice.
* ``last``: the token before the end token (EOS for CLIP, [SEP] for MiniLM), literally the
  official 2025 code. On ToyWorld style prompts ("a dotted square") that is the shape word.
* ``all``: the paper-era code: every state from the subject token to the end of the sequence
  (end token and padding, which a causal or bidirectional encoder fills with the prompt),
  aligned with the guide's from its subject token; preserve prompts contribute all states.

Guides: the empty prompt for objects, the concept's anchor for ToyWorld styles (``solid``);
an explicit ``--anchor`` always wins. ``concept_type=art`` is the official
``--concept_type art`` (``uce_sd_erase.py``): the guide of a concept without another one is
the prompt "art" instead of the empty prompt (Stable Diffusion concepts have no style
kind, so an artist is an object unless this is set). Prompt expansion (``templates``)
applies each template to the concept's prompts, to the guide's matching prompts and to the
preserve prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from unsee.concepts import Concept, resolve_concept
from unsee.erase.base import ClosedFormMethod, register, split_list
from unsee.errors import UnseeError

if TYPE_CHECKING:
    from unsee.erase.context import ErasureContext

#: Named prompt expansions (the official lists, plus the bare prompt).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "object": (
        "{}",
        "image of {}",
        "photo of {}",
        "portrait of {}",
        "picture of {}",
        "painting of {}",
    ),
    "art": ("{}", "painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"),
}
TOKEN_MODES = ("subject", "last", "all")
#: the official guide for an art concept with no guide given (``uce_sd_erase.py``)
ART_GUIDE = "art"
#: The float64 solve's relative error is about cond(M) * 1e-16; above this it would exceed
#: 1e-4, far coarser than the float32 weights it writes, so the edit is refused.
MAX_CONDITION = 1e12


@dataclass
class UCEParams:
    preserve: str = ""  # concepts to keep, ';'-separated (ToyWorld: vocabulary words)
    lamb: float = 0.5  # weight of staying at the current W (the ridge term)
    erase_scale: float = 1.0  # weight of the erase rows
    preserve_scale: float = 1.0  # weight of the preserve rows
    token: str = "subject"  # which token states are used: subject | last | all
    templates: str = "{}"  # 'object', 'art', or ';'-separated templates with {} = the prompt
    # art: guide "art" where an object's would be "" (the official --concept_type art)
    concept_type: Literal["object", "art"] = "object"

    def __post_init__(self) -> None:
        if self.token not in TOKEN_MODES:
            raise UnseeError(
                f"uce.token must be one of {', '.join(TOKEN_MODES)} (got {self.token!r})"
            )
        for name in ("lamb", "erase_scale", "preserve_scale"):
            if getattr(self, name) < 0:
                raise UnseeError(f"uce.{name} must be >= 0 (got {getattr(self, name)})")
        if not all("{}" in t for t in self.template_list()):
            raise UnseeError(
                f"uce.templates must be 'object', 'art' or templates that each "
                f"contain {{}} (got {self.templates!r})"
            )

    def template_list(self) -> tuple[str, ...]:
        if self.templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[self.templates]
        return tuple(split_list(self.templates))

    def preserve_list(self) -> list[str]:
        return split_list(self.preserve)


@dataclass(frozen=True)
class Prompt:
    """A prompt and the words whose last token is its subject ("" = none)."""

    text: str
    words: str


def uce_transform(
    erase: torch.Tensor,
    guide: torch.Tensor,
    preserve: torch.Tensor,
    lamb: float,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """The shared right factor T (D, D), float64, with ``W_new = W_old @ T`` for every layer.

    ``erase`` (N, D) and ``guide`` (N, D) are paired rows, ``preserve`` (P, D); N or P may be
    0. Returns (T, condition number of M). Raises :class:`UnseeError` when M is singular or
    too ill-conditioned to solve in float64.
    """
    c, g, p = erase.double(), guide.double(), preserve.double()
    eye = torch.eye(c.shape[1], dtype=torch.float64, device=c.device)
    keep = preserve_scale * (p.T @ p)
    m = lamb * eye + erase_scale * (c.T @ c) + keep
    a = lamb * eye + erase_scale * (g.T @ c) + keep
    eig = torch.linalg.eigvalsh(m)  # M is symmetric positive semi-definite
    cond = float(eig[-1] / eig[0]) if eig[0] > 0 else float("inf")
    if not cond <= MAX_CONDITION:
        raise UnseeError(
            f"UCE's system is singular or ill-conditioned (condition number "
            f"{cond:.3g}, limit {MAX_CONDITION:.0e}): raise uce.lamb above 0 "
            "or add preserve concepts"
        )
    # T M = A and M = M^T, so T^T = M^-1 A^T: one solve, no explicit inverse.
    return torch.linalg.solve(m, a.T).T.contiguous(), cond


def subject_index(ids: list[int], length: int, words: list[int]) -> int:
    """Position of the last token of the last occurrence of ``words`` in the prompt
    ``ids[:length]`` (``length`` = real tokens, start and end token included).

    With no ``words`` returns ``length - 2``, the token before the end token. Raises
    :class:`UnseeError` when the words are not among the prompt's tokens (truncated away).
    """
    if not words:
        return length - 2
    n = len(words)
    for start in range(length - 1 - n, 0, -1):  # skip the start and the end token
        if ids[start : start + n] == words:
            return start + n - 1
    raise UnseeError(
        "cannot find a concept's tokens in its prompt (truncated?); use uce.token=last"
    )


@register("uce")
class UCE(ClosedFormMethod):
    scope = "kv"
    Params = UCEParams
    summary = "closed-form edit of cross-attention keys and values (UCE)"
    # One solve, no loop: the iteration count only fills the plan (no step is taken).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "sd": {"iterations": 1},
        "toyworld": {"iterations": 1},
        "toyworld-sd": {"iterations": 1},
    }

    def __init__(self, params: UCEParams, ctx: ErasureContext) -> None:
        super().__init__(params, ctx)
        width = ctx.bundle.text.hidden_size
        for name, p in ctx.params.items():
            kv = re.search(r"attn2\.to_[kv]\.(weight|bias)$", name)
            if not kv or (kv.group(1) == "weight" and p.shape[-1] != width):
                raise UnseeError(
                    f"UCE edits only the cross-attention keys and values that read "
                    f"the text states (scope kv); the scope selected {name}"
                )

    def _guide(self, concept: Concept) -> tuple[str, tuple[str, ...]]:
        """(guide words, guide prompts parallel to the concept's prompts or one prompt)."""
        if self.ctx.explicit_anchors or concept.kind == "style":
            return concept.anchor, concept.anchor_prompts
        if self.p.concept_type == "art":
            return ART_GUIDE, (ART_GUIDE,)
        return "", ("",)

    def erase_pairs(self) -> list[tuple[Prompt, Prompt]]:
        """(concept prompt, guide prompt) for every concept, prompt and template."""
        pairs: dict[tuple[Prompt, Prompt], None] = {}  # ordered, without duplicates
        for concept in self.ctx.concepts:
            words, guides = self._guide(concept)
            for i, prompt in enumerate(concept.prompts):
                guide = guides[i] if len(guides) == len(concept.prompts) else guides[0]
                for t in self.p.template_list():
                    pairs[
                        (
                            Prompt(t.format(prompt), concept.name),
                            Prompt(t.format(guide) if guide else "", words),
                        )
                    ] = None
        return list(pairs)

    def preserve_prompts(self) -> list[Prompt]:
        vocab = self.ctx.bundle.vocabulary
        out: dict[Prompt, None] = {}
        for name in self.p.preserve_list():
            concept = resolve_concept(name, vocab)
            for prompt in concept.prompts:
                for t in self.p.template_list():
                    out[Prompt(t.format(prompt), concept.name)] = None
        return list(out)

    def _states(self, prompts: list[Prompt]) -> dict[Prompt, tuple[torch.Tensor, int]]:
        """Per prompt: its token states (L, D) float64 and its subject token position."""
        text = self.ctx.bundle.text
        texts = sorted({p.text for p in prompts})
        states = text.encode(texts).double().cpu()
        tokens = text.tokenize(texts)
        row = {t: i for i, t in enumerate(texts)}
        out = {}
        for p in prompts:
            i = row[p.text]
            words = (
                []
                if self.p.token == "last" or not p.words
                else text.tokenizer(p.words, add_special_tokens=False)["input_ids"]
            )
            pos = subject_index(
                tokens["input_ids"][i].tolist(), int(tokens["attention_mask"][i].sum()), words
            )
            out[p] = (states[i], pos)
        return out

    def fit(self) -> dict[str, Any]:
        """Collect the rows and solve. Returns ``transform`` (D, D) float64 on the CPU, the
        ``condition_number`` of M and the row counts."""
        pairs, keep = self.erase_pairs(), self.preserve_prompts()
        st = self._states([p for pair in pairs for p in pair] + keep)
        c_rows, g_rows, p_rows = [], [], []
        for erased, guide in pairs:
            (se, ie), (sg, ig) = st[erased], st[guide]
            n = len(se) - max(ie, ig) if self.p.token == "all" else 1
            c_rows.append(se[ie : ie + n])
            g_rows.append(sg[ig : ig + n])
        for q in keep:
            s, i = st[q]
            p_rows.append(s if self.p.token == "all" else s[i : i + 1])
        width = self.ctx.bundle.text.hidden_size
        empty = torch.zeros(0, width, dtype=torch.float64)
        c = torch.cat(c_rows) if c_rows else empty
        g = torch.cat(g_rows) if g_rows else empty
        p = torch.cat(p_rows) if p_rows else empty
        t, cond = uce_transform(c, g, p, self.p.lamb, self.p.erase_scale, self.p.preserve_scale)
        return {
            "transform": t,
            "condition_number": cond,
            "erase_rows": len(c),
            "preserve_rows": len(p),
        }

    @torch.no_grad()
    def apply(self, solution: dict[str, Any]) -> None:
        """``W <- W @ T`` for every key/value weight in scope (computed in float64)."""
        t = solution["transform"]
        for name, w in self.ctx.params.items():
            if name.endswith(".weight"):
                w.copy_((w.double() @ t.to(w.device)).to(w.dtype))
