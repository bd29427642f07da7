"""``scorecard.json`` (format ``unsee-scorecard/1``, ``docs/evaluation.md``) as a typed,
validated schema: :mod:`unsee.evaluate.sections` writes it, the report and the benchmark
tables read it through :class:`Scorecard`.

As with the model card (:mod:`unsee.card_schema`), keys a reader does not need are kept
(``extra="allow"``) and fields newer than some written scorecards have defaults; ``format``
is the version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from unsee.card_schema import CardCost, Document, ModelCard, parse, version_of
from unsee.errors import UnseeError
from unsee.io import read_json

FORMAT: Literal["unsee-scorecard/1"] = "unsee-scorecard/1"
#: ``scorecard.json`` of ``unsee eval --compare``: one scorecard per model, on one base
#: and one protocol (a single model's file stays a plain scorecard, as before).
COMPARISON: Literal["unsee-comparison/1"] = "unsee-comparison/1"

Interval = list[float]


class Change(Document):
    """How one rate differs from another: ``difference`` and its 95 % ``ci95``;
    ``beyond_noise`` when the interval excludes 0."""

    difference: float
    ci95: Interval
    beyond_noise: bool


class Probe(Document):
    valid: bool
    reason: str | None = None


class Rate(Document):
    """A base and an erased target rate over the same ``images``."""

    target_rate_base: float
    target_rate: float
    images: int
    target_rate_base_ci95: Interval | None = None
    target_rate_ci95: Interval | None = None
    change: Change | None = None


class Paraphrase(Rate):
    prompts: list[str] = Field(default_factory=list)
    probe: Probe = Probe(valid=True)


class ConceptScore(Rate):
    attribute: str
    labels: list[str]
    prompts: list[str]
    erasure_base: float
    erasure: float
    probe: Probe = Probe(valid=True)
    paraphrase: Paraphrase | None = None


class AccuracyPair(Document):
    """Base vs erased accuracy over ``pairs`` (image, attribute) pairs."""

    base: float
    erased: float
    drop: float
    pairs: int | None = None
    base_ci95: Interval | None = None
    erased_ci95: Interval | None = None
    change: Change | None = None


class Neighbour(Document):
    concepts: list[str]
    accuracy_base: float
    accuracy: float
    drop: float
    pairs: int | None = None
    accuracy_base_ci95: Interval | None = None
    accuracy_ci95: Interval | None = None
    change: Change | None = None


class Retain(Document):
    accuracy_base: float | None
    accuracy: float | None
    drop: float | None = None
    pairs: int | None = None
    images: int | None = None
    accuracy_base_ci95: Interval | None = None
    accuracy_ci95: Interval | None = None
    change: Change | None = None
    by_attribute: dict[str, AccuracyPair] = Field(default_factory=dict)
    by_concept: dict[str, AccuracyPair] = Field(default_factory=dict)
    neighbour: Neighbour | None = None
    prompts: list[str] = Field(default_factory=list)


class Kid(Document):
    value: float
    std: float | None = None
    ci95: Interval
    subsets: int | None = None
    subset_size: int | None = None
    feature_scale: float | None = None


class KidPair(Document):
    base: Kid | None = None
    erased: Kid | None = None


class Fid(Document):
    """Frechet distance (``base``, ``erased``) and KID in the feature space ``name`` says."""

    name: str | None = None
    kid_name: str | None = None
    base: float | None = None
    erased: float | None = None
    reference: str | None = None
    features: str | None = None
    images: int = 0
    reference_images: int = 0
    kid: KidPair | None = None


class ScorePair(Document):
    base: float
    erased: float
    drop: float


class ClipScore(Document):
    model: str
    scale: str
    target: ScorePair | None = None
    retain: ScorePair | None = None
    prompts_file: ScorePair | None = None


class PromptsFile(Rate):
    path: str
    prompts: int
    erasure: float
    by_concept: dict[str, Rate] = Field(default_factory=dict)


class NudityPart(Document):
    images: int
    counts_base: dict[str, int]
    boxes_base: dict[str, int]
    rate_base: float
    counts_erased: dict[str, int]
    boxes_erased: dict[str, int]
    rate_erased: float
    rate_base_ci95: Interval | None = None
    rate_erased_ci95: Interval | None = None
    change: Change | None = None


class Nudity(Document):
    threshold: float
    classes: list[str]
    nudenet_version: str | None = None
    target: NudityPart | None = None
    prompts_file: NudityPart | None = None


class AttackScore(Document):
    """One attack on one concept: the erased model's target rate unattacked (``before``)
    and attacked (``after``). ``images_before``: the paraphrase probe's unattacked count
    (its attacked images are other prompts); ``probe``: the paraphrase probe's."""

    target_rate_before: float
    target_rate_after: float
    images: int
    images_before: int | None = None
    target_rate_before_ci95: Interval | None = None
    target_rate_after_ci95: Interval | None = None
    change: Change | None = None
    probe: Probe | None = None
    seconds: float
    prompts: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class Erased(Document):
    """An artifact applied to the scored model, with its model card."""

    path: str
    id: str | None = None
    method: str | None = None
    concepts: list[str | None] = Field(default_factory=list)
    card: ModelCard


class ModelCost(Document):
    images_generated: int
    images_from_cache: int
    generate_seconds: float
    judge_seconds: float


class EvaluationCost(Document):
    wall_seconds: float
    base: ModelCost
    erased: ModelCost
    processes: int
    device: str
    peak_rss_mb: float | None = None


class Cost(Document):
    erasure: list[CardCost] = Field(default_factory=list)
    evaluation: EvaluationCost


class Scorecard(Document):
    format: Literal["unsee-scorecard/1"] = FORMAT
    label: str
    model: str
    model_fingerprint: str
    erased: list[Erased] = Field(default_factory=list)
    judge: str
    judge_settings: dict[str, Any] = Field(default_factory=dict)
    num_images: int
    seed: int
    steps: int
    guidance: float
    sampler: str | None = None
    concepts: dict[str, ConceptScore]
    erasure: float | None = None
    excluded_from_overall: dict[str, str | None] = Field(default_factory=dict)
    difference_test: str = ""
    retain: Retain
    fid: Fid = Fid()
    clip_score: ClipScore | None = None
    overall: float | None = None
    prompts_file: PromptsFile | None = None
    nudity: Nudity | None = None
    attacks: dict[str, dict[str, AttackScore]] = Field(default_factory=dict)
    cost: Cost

    @property
    def version(self) -> int:
        return version_of(self.format)


def parse_scorecard(data: object, where: str) -> Scorecard:
    """``data`` (a scorecard as JSON) validated; a violation is an :class:`UnseeError`
    naming ``where`` and the field."""
    return parse(Scorecard, data, where, "an unsee scorecard")


class Comparison(Document):
    """Several models' scorecards from one ``unsee eval --compare``, in ``--erased`` order."""

    format: Literal["unsee-comparison/1"]
    scorecards: list[Scorecard] = Field(min_length=1)


def read_scorecard(path: Path) -> Scorecard:
    """``scorecard.json`` of one model at ``path``, validated."""
    data = read_json(path)
    if isinstance(data, dict) and data.get("format") == COMPARISON:
        raise UnseeError(
            f"{path} holds {len(data.get('scorecards') or [])} models' scorecards "
            "(unsee eval --compare): read it with read_scorecards"
        )
    return parse_scorecard(data, str(path))


def read_scorecards(path: Path) -> list[Scorecard]:
    """Every model's scorecard in ``scorecard.json`` at ``path``: one for a single (or
    stacked) model, several for ``unsee eval --compare``; validated."""
    data = read_json(path)
    if isinstance(data, dict) and data.get("format") == COMPARISON:
        return parse(Comparison, data, str(path), "an unsee comparison").scorecards
    return [parse_scorecard(data, str(path))]
