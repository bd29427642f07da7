"""Erasure artifacts: a folder with ``delta.safetensors`` (erased minus base, only the
tensors that changed), ``model_card.json`` and a short ``README.md``.

Deltas are *cumulative*: an artifact made ``--on`` an earlier one holds the whole change
from the original base, and its ledger lists what it stacks on, so every artifact applies
to the base alone. Applying several independent artifacts adds their deltas.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unsee.card_schema import ModelCard, parse_card
from unsee.errors import UnseeError
from unsee.io import atomic_dir, json_text, read_json, write_json
from unsee.models.fingerprint import fingerprint

FORMAT = "unsee-delta"
FORMAT_VERSION = "1"


def compute_delta(unet: torch.nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Erased minus base for the tensors in ``base`` that changed (float32, CPU)."""
    params = dict(unet.named_parameters())
    out = {}
    for name, b in base.items():
        d = params[name].detach().float().cpu() - b.float().cpu()
        if torch.count_nonzero(d) > 0:
            out[name] = d.contiguous()
    return out


#: Largest |delta| element accepted. Diffusion UNet weights are O(1) (SD's largest are a
#: few tens); an edit a thousand times larger is a damaged or hostile file, and would
#: overflow fp16 inference into NaN images.
MAX_ABS_DELTA = 1e4


def check_delta_values(delta: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a delta with a non-finite or implausibly large entry (one clear line)."""
    for name, d in delta.items():
        if not torch.isfinite(d).all():
            bad = int((~torch.isfinite(d)).sum())
            raise UnseeError(
                f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN or "
                "infinity); the delta is damaged"
            )
        peak = float(d.abs().max()) if d.numel() else 0.0
        if peak > MAX_ABS_DELTA:
            raise UnseeError(
                f"{where}: tensor {name!r} changes a weight by {peak:.3g} (more "
                f"than {MAX_ABS_DELTA:g}); the delta is damaged"
            )


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes that depend only on the tensors and metadata: the library writes
    metadata in hash order, which changes the bytes (and the artifact id) run to run."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n  # the same content, only reordered
    return raw[:8] + text + b" " * (n - len(text)) + raw[8 + n :]


def write_artifact(
    out_dir: Path, delta: dict[str, torch.Tensor], card: dict[str, Any], overwrite: bool = False
) -> Path:
    """Write the artifact folder atomically; ``card`` gets ``id`` and ``delta`` fields.

    The id is the hash of ``delta.safetensors``, whose bytes depend only on the tensors and
    the base fingerprint: the same config and seed give the same bytes and the same id.
    """
    if not delta:
        raise UnseeError("the erasure changed no parameter; nothing to write")
    check_delta_values(delta, "refusing to write the artifact")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "base_fingerprint": card["base"]["fingerprint"],
    }
    data = canonical_safetensors({n: d.contiguous() for n, d in sorted(delta.items())}, meta)
    card["id"] = hashlib.sha256(data).hexdigest()[:16]
    card["delta"] = {
        "tensors": len(delta),
        "elements_changed": int(sum(torch.count_nonzero(d) for d in delta.values())),
        "bytes": len(data),
    }
    card_text = json_text(card)

    def build(tmp: Path) -> None:
        (tmp / "delta.safetensors").write_bytes(data)
        (tmp / "model_card.json").write_text(card_text)
        (tmp / "README.md").write_text(_readme(card))

    return atomic_dir(Path(out_dir), build, "artifact", overwrite=overwrite)


def _readme(card: dict[str, Any]) -> str:
    """The artifact's ``README.md``: a Hugging Face model card (YAML metadata block, what
    was erased, intended use, limitations, how to load it with unsee or plain diffusers)."""
    from unsee.cards import artifact_readme

    return artifact_readme(card)


def read_model_card(art: Path) -> ModelCard:
    """The model card of artifact folder ``art``, validated (:class:`ModelCard`)."""
    art = Path(art)
    if not (art / "model_card.json").is_file() or not (art / "delta.safetensors").is_file():
        raise UnseeError(
            f"{art} is not an unsee artifact (needs delta.safetensors and model_card.json)"
        )
    return parse_card(read_json(art / "model_card.json"), f"{art}/model_card.json")


def read_card(art: Path) -> dict[str, Any]:
    """The validated model card of ``art`` as the JSON object it is written as (for callers
    that copy it into another document or index it)."""
    return read_model_card(art).as_json()


def read_delta(art: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and validate ``delta.safetensors``; returns (tensors, metadata).

    Refuses a file that is not an unsee delta, whose values are non-finite or implausibly
    large, or that does not belong to the folder's model card (id and base fingerprint).
    """
    return _read_delta(art, read_model_card(art))


def _read_delta(art: Path, card: ModelCard) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(art) / "delta.safetensors"
    try:
        from safetensors import safe_open

        data = path.read_bytes()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnseeError(f"{path} is not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UnseeError(f"{path} is not an unsee delta (metadata format={meta.get('format')!r})")
    if (
        hashlib.sha256(data).hexdigest()[:16] != card.id
        or meta.get("base_fingerprint") != card.base.fingerprint
    ):
        raise UnseeError(
            f"{art}: model_card.json does not belong to delta.safetensors (id or "
            "base fingerprint differ)"
        )
    check_delta_values(tensors, str(path))
    return tensors, meta


def read_artifacts(arts: list[Path]) -> list[tuple[ModelCard, dict[str, torch.Tensor]]]:
    """Cards and deltas of ``arts``, validated, refusing the same artifact twice (by id: a
    copy in another folder is the same artifact) and one that another already includes."""
    loaded = []
    seen: dict[str, Path] = {}
    for art in arts:
        card = read_model_card(art)
        delta, _ = _read_delta(art, card)
        if card.id in seen:
            raise UnseeError(
                f"{art} is the same artifact as {seen[card.id]} (id "
                f"{card.id}); applying it twice would double the edit"
            )
        seen[card.id] = Path(art)
        loaded.append((card, delta))
    ids = set(seen)
    for art, (card, _) in zip(arts, loaded, strict=True):
        if {e.id for e in card.ledger} & ids:
            raise UnseeError(
                f"{art} already includes another artifact given (its ledger "
                "lists it); pass only the last one"
            )
    return loaded


def apply_artifacts(bundle, arts: list[Path]) -> list[dict[str, Any]]:
    """Add the deltas of ``arts`` to ``bundle.unet`` in place; returns their cards (as
    written: the erase recipe copies their ledgers into the new card).

    Every artifact must have been made for this base (same fingerprint), appear once, and
    none may be listed in another's ledger (its change is already included there).
    """
    loaded = read_artifacts(arts)
    apply_loaded(bundle, arts, loaded)
    return [card.as_json() for card, _ in loaded]


def apply_loaded(
    bundle, arts: list[Path], loaded: list[tuple[ModelCard, dict[str, torch.Tensor]]]
) -> None:
    """Add the deltas of ``arts``, already read by :func:`read_artifacts` (``loaded``), to
    ``bundle.unet`` in place, after checking they fit its base, shapes and dtype."""
    check_fit(bundle, arts, loaded)
    params = dict(bundle.unet.named_parameters())
    with torch.no_grad():
        for _, delta in loaded:
            for name, d in delta.items():
                params[name].add_(d.to(params[name].device, params[name].dtype))


def check_fit(
    bundle, arts: list[Path], loaded: list[tuple[ModelCard, dict[str, torch.Tensor]]]
) -> None:
    """Refuse artifacts (read by :func:`read_artifacts`) made for another base, or whose
    tensors do not fit ``bundle.unet``'s names and shapes or overflow its dtype; the
    weights are not touched."""
    base_fp = fingerprint(bundle.unet)
    for art, (card, _) in zip(arts, loaded, strict=True):
        if card.base.fingerprint != base_fp:
            raise UnseeError(
                f"{art} was made for a different base model (fingerprint "
                f"{card.base.fingerprint}, this model is {base_fp})"
            )
    params = dict(bundle.unet.named_parameters())
    for art, (_, delta) in zip(arts, loaded, strict=True):
        for name, d in delta.items():
            if name not in params or params[name].shape != d.shape:
                raise UnseeError(f"{art}: tensor {name!r} does not fit this UNet")
            if not torch.isfinite(d.to(params[name].dtype)).all():
                raise UnseeError(
                    f"{art}: tensor {name!r} overflows the model's {params[name].dtype}"
                )


def ledger_entry(card: dict[str, Any]) -> dict[str, Any]:
    """What an artifact made ``--on`` ``card``'s artifact records about it."""
    return parse_card(card, "a prior artifact's card").ledger_entry()


def _base_safety_checker(model_id: str) -> tuple[Any, Any, bool] | None:
    """(safety checker, feature extractor, requires_safety_checker) of a Stable Diffusion
    base whose ``model_index.json`` lists a safety checker, else None.

    Raises :class:`UnseeError` when the base has one that cannot be loaded: an export must
    not drop it silently.
    """
    from diffusers import DiffusionPipeline

    path = Path(model_id).expanduser()
    local = path.is_dir()
    src = str(path) if local else model_id
    try:
        index = dict(DiffusionPipeline.load_config(src, local_files_only=local))
    except (OSError, ValueError):
        return None
    entry = index.get("safety_checker")
    if not isinstance(entry, (list, tuple)) or not entry or entry[0] is None:
        return None
    try:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import AutoImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(
            src, subfolder="safety_checker", local_files_only=local
        )
        extractor = AutoImageProcessor.from_pretrained(
            src, subfolder="feature_extractor", local_files_only=local
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(
            f"the base model {model_id!r} has a safety checker, which could not "
            f"be loaded to keep it in the export: {first}"
        ) from exc
    return checker, extractor, bool(index.get("requires_safety_checker", True))


def export_merged(
    bundle,
    out_dir: Path,
    overwrite: bool = False,
    cards: Sequence[Mapping[str, Any] | ModelCard] | None = None,
) -> Path:
    """Write a merged diffusers folder that plain diffusers loads without unsee.

    Stable Diffusion bundles become a ``StableDiffusionPipeline`` folder, keeping the
    base's safety checker and feature extractor when it had them; pixel-space ToyWorld
    bundles a folder with ``unet/``, ``scheduler/``, ``text_encoder/`` and ``tokenizer/``
    (the MiniLM the model was trained with) and ``unsee_model.json``. ``cards`` (the
    applied artifacts' model cards) make a Hugging Face ``README.md`` (see
    :mod:`unsee.cards`).
    """
    from unsee.cards import merged_readme

    safety = _base_safety_checker(str(bundle.model_id)) if bundle.vae is not None else None

    def build(tmp: Path) -> None:
        sched = bundle.scheduler()  # unsee's sampler, so the folder draws what unsee draws
        if bundle.vae is not None:
            from diffusers import StableDiffusionPipeline

            checker, extractor, requires = safety or (None, None, False)
            pipe = StableDiffusionPipeline(
                vae=bundle.vae,
                text_encoder=bundle.text.model,
                tokenizer=bundle.text.tokenizer,
                unet=bundle.unet,
                scheduler=sched,
                safety_checker=checker,
                feature_extractor=extractor,
                requires_safety_checker=requires,
            )
            pipe.save_pretrained(tmp, safe_serialization=True)
        else:
            bundle.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            sched.save_pretrained(tmp / "scheduler")
            bundle.text.model.save_pretrained(tmp / "text_encoder")
            bundle.text.tokenizer.save_pretrained(tmp / "tokenizer")
            write_json(tmp / "unsee_model.json", bundle.info)
        (tmp / "README.md").write_text(
            merged_readme(
                [parse_card(c, "an applied artifact's card") for c in cards or []],
                str(bundle.model_id),  # as loaded: its licence is read, its name made portable
                pipeline=bundle.vae is not None,
                safety_checker=safety is not None,
            )
        )

    return atomic_dir(Path(out_dir), build, "export", overwrite=overwrite)
