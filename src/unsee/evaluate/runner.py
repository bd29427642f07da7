"""Running the plan: generate every item through the image cache and judge it, sharded
over processes under ``accelerate launch`` (each process takes a contiguous share of the
items; judgements are gathered); a plain ``python`` run is one process."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from unsee.evaluate.judges import FeatureJudge
from unsee.evaluate.plan import Context, Item
from unsee.models.bundle import Bundle
from unsee.progress import progress_bar

#: Items generated and judged at a time (bounds the images held in memory).
CHUNK = 1024


@dataclasses.dataclass
class Outputs:
    """What one model produced on (a share of) the items; rows follow ``index``."""

    index: list[int]
    labels: dict[str, list[str]]
    boxes: dict[str, list[int]]
    features: np.ndarray | None
    clip: np.ndarray | None
    images: dict[int, np.ndarray]
    generated: int
    cached: int
    generate_seconds: float
    judge_seconds: float


@contextlib.contextmanager
def applied(bundle: Bundle, arts: list[Path]) -> Iterator[None]:
    """Apply artifacts to ``bundle.unet`` for the block, then restore the exact base tensors."""
    from unsee.artifacts import apply_loaded, read_artifacts

    loaded = read_artifacts(arts)
    params = dict(bundle.unet.named_parameters())
    names = {n for _, delta in loaded for n in delta if n in params}
    saved = {n: params[n].detach().clone() for n in names}
    try:
        apply_loaded(bundle, arts, loaded)
        yield
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)


def run_model(ctx: Context, fp: str, label: str) -> Outputs:
    """Generate (through the cache) and judge every item; shards over processes."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    with state.split_between_processes(list(range(len(ctx.items)))) as mine:
        part = _run_share(ctx, fp, label, list(mine))
    if state.num_processes == 1:
        return part
    parts: list[Outputs] = gather_object([part])
    return _merge(parts)


def _run_share(ctx: Context, fp: str, label: str, index: list[int]) -> Outputs:
    """Generate (through the cache) and judge ``ctx.items[index]`` in chunks of
    :data:`CHUNK`, so a 30k-prompt run never holds more than one chunk of images."""
    labels: dict[str, list[str]] = {a: [] for a in ctx.judge.attributes}
    boxes: dict[str, list[int]] = {}
    feats: list[np.ndarray] = []
    clips: list[np.ndarray] = []
    images: dict[int, np.ndarray] = {}
    generated = cached = 0
    t_gen = t_judge = 0.0
    for c in range(0, len(index), CHUNK):
        part = index[c : c + CHUNK]
        t0 = time.time()
        found, n_new = _images(ctx, fp, label, [ctx.items[i] for i in part])
        t1 = time.time()
        generated, cached = generated + n_new, cached + len(part) - n_new
        with progress_bar(len(part), f"judge ({label})") as bar:
            for i in range(0, len(part), ctx.settings.batch_size):
                batch = found[i : i + ctx.settings.batch_size]
                judged = ctx.judge(batch)
                for a, v in judged.labels.items():
                    labels[a].extend(v)
                for a, n in (judged.boxes or {}).items():
                    boxes.setdefault(a, []).extend(int(x) for x in n)
                if ctx.clip is not None:
                    clips.append(ctx.clip.image_embeds(batch))
                if isinstance(ctx.judge, FeatureJudge):
                    feats.append(ctx.judge.features(batch))
                elif ctx.clip is not None:  # no judge features: the Frechet distance uses CLIP's
                    feats.append(clips[-1])
                bar.advance(len(batch))
        images.update({g: found[j] for j, g in enumerate(part) if g in ctx.grid_index})
        t_gen, t_judge = t_gen + t1 - t0, t_judge + time.time() - t1
    return Outputs(
        index,
        labels,
        boxes,
        np.concatenate(feats) if feats else None,
        np.concatenate(clips) if clips else None,
        images,
        generated,
        cached,
        t_gen,
        t_judge,
    )


def _images(ctx: Context, fp: str, label: str, items: list[Item]) -> tuple[np.ndarray, int]:
    """uint8 (N, H, W, 3) images of ``items`` (cache first) and how many were generated."""
    from unsee.models.sampling import generate

    s = ctx.settings
    keys = [
        ctx.cache.key(fp, it.prompt.prompt, it.seed, s.steps, ctx.guidance, ctx.bundle.dtype)
        for it in items
    ]
    found = [ctx.cache.get(k, ctx.bundle.resolution) for k in keys]
    missing = [j for j, im in enumerate(found) if im is None]
    if missing:
        made = generate(
            ctx.bundle,
            [items[j].prompt.prompt for j in missing],
            [items[j].seed for j in missing],
            steps=s.steps,
            guidance=ctx.guidance,
            batch_size=s.batch_size,
            description=f"generate ({label})",
        )
        for j, im in zip(missing, made, strict=True):
            found[j] = im
            ctx.cache.put(keys[j], im)
    return np.stack(found), len(missing)  # type: ignore[arg-type]


def _merge(parts: Sequence[Outputs]) -> Outputs:
    parts = [p for p in parts if p.index]
    order = np.argsort(np.concatenate([p.index for p in parts]), kind="stable")

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)[order]  # type: ignore

    labels = {a: [x for p in parts for x in p.labels[a]] for a in parts[0].labels}
    boxes = {a: [x for p in parts for x in p.boxes[a]] for a in parts[0].boxes}
    return Outputs(
        index=sorted(i for p in parts for i in p.index),
        labels={a: [v[i] for i in order] for a, v in labels.items()},
        boxes={a: [v[i] for i in order] for a, v in boxes.items()},
        features=cat([p.features for p in parts]),
        clip=cat([p.clip for p in parts]),
        images={k: v for p in parts for k, v in p.images.items()},
        generated=sum(p.generated for p in parts),
        cached=sum(p.cached for p in parts),
        generate_seconds=max(p.generate_seconds for p in parts),
        judge_seconds=max(p.judge_seconds for p in parts),
    )
