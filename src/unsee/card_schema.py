"""The artifact model card (``model_card.json``, format ``unsee-artifact/1``) as a typed,
validated schema, and the one place that turns a schema violation into a clear error.

Cards are read by unsee releases newer than the one that wrote them, so every field that
older cards lack has a default and unknown keys are kept (``extra="allow"``): a card is
refused only when a field a reader relies on is missing or of the wrong type. ``format``
is the card's version; cards written before it existed read as version 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from unsee.errors import UnseeError

CARD_FORMAT: Literal["unsee-artifact/1"] = "unsee-artifact/1"

M = TypeVar("M", bound=BaseModel)


class Document(BaseModel):
    """A JSON document, or a part of one, that keeps keys it does not declare."""

    model_config = ConfigDict(extra="allow")

    def as_json(self) -> dict[str, Any]:
        """The document as read (keys it did not have are not added)."""
        return self.model_dump(mode="json", exclude_unset=True)


def version_of(fmt: str) -> int:
    """The number after the ``/`` of a format string (``unsee-artifact/1`` -> 1)."""
    return int(fmt.rsplit("/", 1)[1])


def parse(model: type[M], data: object, where: str, what: str) -> M:
    """``data`` validated as ``model``; a violation raises :class:`UnseeError` naming
    ``where`` (the file) and the first offending field, e.g. ``x/model_card.json is not a
    model card (no base fingerprint)`` or ``(method: Input should be a valid string)``."""
    if not isinstance(data, (Mapping, BaseModel)):
        raise UnseeError(f"{where} is not {what} (not a JSON object)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"]]
        if err["type"] == "missing":
            # A missing object is named by its first required field, which says what the
            # reader needed ("no base fingerprint", not "no base").
            loc += _first_required(model, loc)
            raise UnseeError(f"{where} is not {what} (no {' '.join(loc)})") from None
        raise UnseeError(f"{where} is not {what} ({'.'.join(loc)}: {err['msg']})") from None


def _first_required(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The first required field of the object at ``loc`` in ``model``, when it is one."""
    cls: object = model
    for key in loc:
        field = _fields(cls).get(key)
        if field is None:
            return []
        cls = field.annotation
    return [n for n, f in _fields(cls).items() if f.is_required()][:1]


def _fields(cls: object) -> dict[str, FieldInfo]:
    return cls.model_fields if isinstance(cls, type) and issubclass(cls, BaseModel) else {}


class CardBase(Document):
    """The base model an artifact was made for; its deltas fit only this fingerprint.
    ``model_id`` is portable (:mod:`unsee.models.model_ids`); ``license`` is the base's,
    read when the run could still see its folder."""

    fingerprint: str
    model_id: str
    license: str | None = None


class CardConcept(Document):
    name: str
    anchor: str | None = None


class LedgerEntry(Document):
    """An earlier artifact this one stacks on (its change is included in this delta)."""

    id: str | None = None
    method: str | None = None
    concepts: list[str] = []
    created: str | None = None


class DeltaSummary(Document):
    tensors: int = 0
    elements_changed: int = 0
    bytes: int | None = None


class CardCost(Document):
    wall_seconds: float | None = None
    device: str | None = None
    peak_rss_mb: float | None = None


class ModelCard(Document):
    """``model_card.json`` of an artifact folder (written by :mod:`unsee.erase.engine`,
    ``id`` and ``delta`` added by :func:`unsee.artifacts.write_artifact`). Fields are
    declared in the order the engine writes them; a card read and dumped again
    (:meth:`as_json`) lists the keys it does not declare after them."""

    format: Literal["unsee-artifact/1"] = CARD_FORMAT
    method: str
    summary: str = ""
    hyperparameters: dict[str, Any] = {}
    concepts: list[CardConcept] = []
    scope: str | None = None
    base: CardBase
    seed: int | None = None
    cost: CardCost = CardCost()
    ledger: list[LedgerEntry] = []
    created: str | None = None
    id: str
    delta: DeltaSummary | None = None

    @property
    def version(self) -> int:
        return version_of(self.format)

    @property
    def concept_names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def ledger_entry(self) -> dict[str, Any]:
        """What a later artifact made ``--on`` this one records about it."""
        return {
            "id": self.id,
            "method": self.method,
            "concepts": self.concept_names,
            "created": self.created,
        }


def parse_card(data: object, where: str) -> ModelCard:
    """``data`` (a card as JSON, or already a :class:`ModelCard`) as a validated card."""
    return parse(ModelCard, data, where, "a model card")
