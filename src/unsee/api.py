"""The Python API for notebooks and scripts, re-exported as ``unsee.erase``,
``unsee.evaluate``, ``unsee.load``, ``unsee.load_model`` and :class:`unsee.Artifact`.

A model is given as ``"toyworld"``, a diffusers folder, a hub id, a loaded
:class:`~unsee.models.bundle.Bundle`, or a diffusers Stable Diffusion pipeline already in
memory; the pipeline's modules are used as they are (not copied)."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from unsee.errors import UnseeError
from unsee.models.bundle import Bundle, bundle_from_pipeline, load_bundle

if TYPE_CHECKING:
    from unsee.evaluate import EvalResult


class HasUNet(Protocol):
    """What an artifact applies to: a diffusers pipeline or a :class:`Bundle`."""

    unet: torch.nn.Module


M = TypeVar("M", bound=HasUNet)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An erasure artifact on disk: ``path`` (the folder) and ``card`` (its
    ``model_card.json``: method, concepts, base fingerprint, hyper-parameters, cost)."""

    path: Path
    card: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.card["id"])

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the UNet this artifact was made for (its real identity)."""
        return str(self.card["base"]["fingerprint"])

    def apply(self, model: M) -> M:
        """Add this artifact's delta to ``model.unet`` in place and return ``model``.

        ``model`` is a diffusers pipeline or a :class:`Bundle`. Refuses (with
        :class:`UnseeError`, nothing changed) a model whose UNet is not the base the artifact
        was made for, e.g. another model or one this artifact is already applied to.
        """
        from unsee.artifacts import apply_artifacts

        try:
            apply_artifacts(model, [self.path])
        except UnseeError as exc:
            dtype = next(model.unet.parameters()).dtype
            if "different base" not in str(exc) or dtype == torch.float32:
                raise
            # fingerprints hash the weights as loaded: fp16 weights are not the fp32 base's
            raise UnseeError(
                f"{exc}; the model is in {str(dtype).removeprefix('torch.')}: load it in "
                "float32, apply the artifact, then cast it (e.g. pipe.to(torch.float16))"
            ) from None
        return model

    def __fspath__(self) -> str:  # lets an Artifact stand wherever a path is taken
        return str(self.path)


def load(path: str | Path) -> Artifact:
    """Read and validate the artifact folder ``path`` (card and delta belong together,
    values are finite and plausible)."""
    from unsee.artifacts import read_card, read_delta

    read_delta(Path(path))
    return Artifact(Path(path), read_card(Path(path)))


def load_model(model: str | Path, device: str = "cpu", variant: str | None = None) -> Bundle:
    """Load ``"toyworld"``, a diffusers folder, a ``.safetensors`` checkpoint or a hub id as a
    :class:`Bundle` (what unsee samples and erases); ``variant`` as in diffusers (``fp16``)."""
    from unsee.models.bundle import check_device

    return load_bundle(model, device=check_device(device), variant=variant)


def as_bundle(model: str | Path | Bundle | Any, device: str = "cpu") -> Bundle:
    """``model`` as a :class:`Bundle`: loaded from a name or path, passed through, or sharing
    the modules of a diffusers pipeline."""
    if isinstance(model, Bundle):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, device)
    if hasattr(model, "unet") and hasattr(model, "text_encoder"):
        return bundle_from_pipeline(model)
    raise UnseeError(
        f"cannot use {_article(type(model).__name__)} object as a model: give 'toyworld', "
        "a diffusers folder, a hub id, a Bundle or a diffusers StableDiffusionPipeline"
    )


def _article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def erase(
    model: str | Path | Bundle | Any,
    method: str,
    concepts: str | Sequence[str],
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    **settings: Any,
) -> Artifact:
    """Erase ``concepts`` from ``model`` with ``method`` and write an artifact to ``out``
    (default: a new temporary folder); returns it.

    ``settings`` are the other keys of an erase config (``iterations``, ``lr``, ``anchors``,
    ``scope``, ``seed``, ``device``, ``params`` = method parameters, ...; see
    ``unsee erase --help``). A model given in memory (a :class:`Bundle` or a pipeline) is
    erased in place: afterwards it *is* the erased model. A model given by name or path
    is loaded for the run and released.
    """
    from unsee.erase.engine import EraseConfig, run_erasure

    known = {f.name for f in dataclasses.fields(EraseConfig)} - {"method", "concepts", "model"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UnseeError(
            f"unknown setting(s) for unsee.erase: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    bundle = None if isinstance(model, (str, Path)) else as_bundle(model)
    cfg = EraseConfig(
        method=method,
        concepts=[concepts] if isinstance(concepts, str) else list(concepts),
        model=str(model) if bundle is None else bundle.model_id,
        **settings,
    )
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="unsee-")) / "art"
    result = run_erasure(cfg, folder, overwrite=overwrite, bundle=bundle)
    return Artifact(result.out, result.card)


def evaluate(
    model: str | Path | Bundle | Any,
    erased: str | Path | Artifact | Sequence[str | Path | Artifact],
    concepts: str | Sequence[str],
    **settings: Any,
) -> EvalResult:
    """Score the base ``model`` with the artifact(s) ``erased`` applied together against
    ``model`` itself; returns the :class:`~unsee.evaluate.EvalResult` (``.scorecard``: target
    rates, retain accuracy, FID, overall, with intervals). ``model`` must be the
    *unmodified* base. ``settings`` are the fields of
    :class:`~unsee.evaluate.EvalSettings` (``num_images``, ``steps``, ``judge``, ``attacks``,
    ``cache_dir``, ...)."""
    from unsee.evaluate import EvalSettings
    from unsee.evaluate import evaluate as run_evaluation

    known = {f.name for f in dataclasses.fields(EvalSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UnseeError(
            f"unknown setting(s) for unsee.evaluate: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    arts = [erased] if isinstance(erased, (str, Path, Artifact)) else list(erased)
    paths = [a.path if isinstance(a, Artifact) else Path(a) for a in arts]
    base: str | Bundle = str(model) if isinstance(model, (str, Path)) else as_bundle(model)
    return run_evaluation(
        base,
        paths,
        [concepts] if isinstance(concepts, str) else list(concepts),
        EvalSettings(**settings),
    )
