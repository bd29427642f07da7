"""The evaluation plan: settings, the items to draw (prompt, seed, section), and the judge
and prompt set chosen for the model and concepts. Everything here is decided, and every
bad input refused, before any image is generated."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from unsee.errors import UnseeError
from unsee.evaluate import attacks as atk
from unsee.evaluate.cache import ImageCache, default_cache_dir
from unsee.evaluate.judges import (
    ClipModel,
    FeatureJudge,
    Judge,
    check_nudenet_threshold,
    make_judge,
)
from unsee.evaluate.prompt_sets import EvalPrompt, PromptSet, sd_prompt_set, toyworld_prompt_set
from unsee.models.bundle import Bundle, check_device
from unsee.models.sampling import check_guidance_and_seed
from unsee.seeds import check_seeds
from unsee.toyworld.vocab import ATTRIBUTES

#: Columns (seeds) of each before/after grid in the report; rows are prompts.
GRID_SEEDS = 8
#: Prompts of a --prompts file shown in the report.
GRID_FILE_ROWS = 8
#: Rendered reference images for the ToyWorld Frechet distance (at least this many).
MIN_REAL_IMAGES = 512
_REAL_SEED = 777_000


@dataclasses.dataclass
class EvalSettings:
    """How to evaluate. ``num_images``: images per prompt; image ``k`` of a prompt uses seed
    ``seed + k`` (or ``evaluation_seed + k`` for a CSV row that has one). ``judge``: a spec
    for :func:`~unsee.evaluate.judges.make_judge` (default: ``toyworld`` for ToyWorld models,
    ``nudenet`` for nudity) or any :class:`~unsee.evaluate.judges.Judge`. ``clip``: a CLIP
    folder or hub id for the CLIP score.
    ``retain``: retain concepts for Stable Diffusion models (ToyWorld picks its own).
    ``cache_dir``: image cache (None: no cache). ``device``: auto, cpu or cuda.
    ``attacks``: names from :data:`~unsee.evaluate.attacks.ATTACKS`; ``attack_budget``:
    overrides ``"attack.field" -> value`` of their budgets
    (:func:`~unsee.evaluate.attacks.plan_attacks`)."""

    num_images: int = 8
    seed: int = 0
    steps: int = 50
    guidance: float | None = None
    batch_size: int = 64
    prompts_file: Path | None = None
    limit: int | None = None
    judge: str | Judge | None = None
    clip: str | None = None
    retain: tuple[str, ...] = ()
    nudenet_threshold: float = 0.6
    cache_dir: Path | None = dataclasses.field(default_factory=default_cache_dir)
    device: str = "auto"
    attacks: tuple[str, ...] = ()
    attack_budget: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to make: ``section`` is target, paraphrase, retain or file."""

    section: str
    prompt: EvalPrompt
    seed: int


@dataclasses.dataclass
class Context:
    """Everything one evaluation fixed before any model runs: the model, judge, prompt set,
    the items (image ``i`` is ``items[i]``), which of them the report shows, and the
    resolved concepts (name -> (judge attribute, labels that count as it))."""

    bundle: Bundle
    judge: Judge
    clip: ClipModel | None
    prompt_set: PromptSet
    file_rows: list[EvalPrompt]
    items: list[Item]
    grid_index: frozenset[int]
    settings: EvalSettings
    guidance: float
    cache: ImageCache
    concepts: dict[str, tuple[str, frozenset[str]]]
    feature_source: str | None
    real_features: np.ndarray | None
    attacks: atk.AttackPlan


def item_rows(ctx: Context, section: str, concept: str | None = None) -> list[int]:
    return [
        i
        for i, it in enumerate(ctx.items)
        if it.section == section and (concept is None or it.prompt.concept == concept)
    ]


def check_settings(s: EvalSettings, concepts: Sequence[str]) -> None:
    if not concepts:
        raise UnseeError("give at least one --concept")
    for name, v in (
        ("--num-images", s.num_images),
        ("--steps", s.steps),
        ("--batch-size", s.batch_size),
    ):
        if v <= 0:
            raise UnseeError(f"{name} must be positive (got {v})")
    if s.limit is not None and s.limit <= 0:
        raise UnseeError(f"--limit must be positive (got {s.limit})")
    check_guidance_and_seed(s.guidance, s.seed)
    check_device(s.device)
    check_nudenet_threshold(s.nudenet_threshold)


def file_prompts(s: EvalSettings) -> list[EvalPrompt]:
    from unsee.prompts import read_prompts

    if s.prompts_file is None:
        return []
    rows = read_prompts(s.prompts_file, limit=s.limit)
    return [EvalPrompt(r.prompt, "", {}, r.seed) for r in rows]


def _default_judge(bundle: Bundle, concepts: Sequence[str]) -> str:
    from unsee.evaluate.judges import NUDITY_WORDS

    if bundle.vocabulary == "toyworld":
        return "toyworld"
    if all(c.strip().lower() in NUDITY_WORDS for c in concepts):
        return "nudenet"
    raise UnseeError(
        "this model needs a judge for its concepts: give --judge clip:MODEL "
        "or --judge imagenet[:MODEL] (or --judge nudenet for nudity)"
    )


def build_context(
    bundle: Bundle,
    concepts: list[str],
    file_rows: list[EvalPrompt],
    s: EvalSettings,
    device: str,
    plan: atk.AttackPlan,
) -> Context:
    if bundle.vocabulary == "toyworld":
        pset = toyworld_prompt_set(concepts)
        if s.retain:
            raise UnseeError("ToyWorld picks its retain concepts itself; drop --retain")
    if s.judge is None or isinstance(s.judge, str):
        judge = make_judge(
            s.judge or _default_judge(bundle, concepts),
            labels=[*concepts, *s.retain],
            device=device,
            nudenet_threshold=s.nudenet_threshold,
        )
    else:
        judge = s.judge
    if bundle.vocabulary != "toyworld":
        pset = sd_prompt_set(concepts, judge.concept_labels, s.retain)
    elif not set(ATTRIBUTES) <= set(judge.attributes):
        raise UnseeError(
            f"judge {judge.name} cannot see the ToyWorld attributes "
            f"({', '.join(ATTRIBUTES)}); use --judge toyworld"
        )
    resolved = {c: judge.concept_labels(c) for c in concepts}
    if "paraphrase" in plan.names and not all(pset.paraphrases[c] for c in concepts):
        raise UnseeError(
            "the paraphrase attack needs paraphrase prompts, which only the "
            "ToyWorld prompt sets have; drop it from --attacks"
        )
    if "resurgence" in plan.names and not pset.retain:
        raise UnseeError("the resurgence attack fine-tunes on other concepts: give --retain")
    clip = ClipModel(s.clip, device=device) if s.clip else None
    items: list[Item] = []
    grid: set[int] = set()

    def add(section: str, prompts: Sequence[EvalPrompt], grid_rows: int | None) -> None:
        for r, p in enumerate(prompts):
            base_seed = p.seed if p.seed is not None else s.seed
            for k in range(s.num_images):
                if (grid_rows is None or r < grid_rows) and k < GRID_SEEDS:
                    grid.add(len(items))
                items.append(Item(section, p, base_seed + k))

    for c in concepts:
        add("target", pset.targets[c], None)
        add("paraphrase", pset.paraphrases[c], None)
    add("retain", pset.retain, None)
    add("file", file_rows, GRID_FILE_ROWS)
    check_seeds((it.seed for it in items), training=False)
    guidance = bundle.default_guidance if s.guidance is None else float(s.guidance)
    feature_source = (
        judge.feature_space
        if isinstance(judge, FeatureJudge)
        else f"CLIP image embeddings ({clip.source})"
        if clip
        else None
    )
    real = None
    if bundle.vocabulary == "toyworld" and isinstance(judge, FeatureJudge) and pset.retain:
        real = toyworld_reference_features(
            judge, [i.prompt for i in items if i.section == "retain"]
        )
    return Context(
        bundle,
        judge,
        clip,
        pset,
        file_rows,
        items,
        frozenset(grid),
        s,
        guidance,
        ImageCache(s.cache_dir),
        resolved,
        feature_source,
        real,
        plan,
    )


def toyworld_reference_features(judge: FeatureJudge, prompts: Sequence[EvalPrompt]) -> np.ndarray:
    """Judge features of ToyWorld renders drawn with the attributes the retain prompts ask
    (cycled to at least :data:`MIN_REAL_IMAGES`): the "real images" of the Frechet distance."""
    from unsee.toyworld.render import render_dataset
    from unsee.toyworld.vocab import Attributes

    asked = [Attributes(**{a: next(iter(v)) for a, v in p.expect.items()}) for p in prompts]
    n = max(len(asked), MIN_REAL_IMAGES)
    images, _ = render_dataset(n, _REAL_SEED, [asked[i % len(asked)] for i in range(n)])
    return judge.features(images)
