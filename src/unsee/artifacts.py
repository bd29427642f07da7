"""Erasure artifacts: a folder with ``delta.safetensors`` (erased minus base, only the
tensors that changed), ``model_card.json`` and a short ``README.md``.

Deltas are *cumulative*: an artifact made ``--on`` an earlier one holds the whole change
from the original base, and its ledger lists what it stacks on, so every artifact applies
to the base alone. Applying several independent artifacts adds their deltas.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unsee.errors import UnseeError
from unsee.io import atomic_dir, write_json

FORMAT = "unsee-delta"
FORMAT_VERSION = "1"


def fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer name, shape and float32 bytes (hex, 16 chars).

    Computed in float32 so a fp16 file loaded as fp32 and the same weights saved in fp32
    agree.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import safetensors
    import transformers

    import unsee

    return {"unsee": unsee.__version__, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "safetensors": safetensors.__version__,
            "python": platform.python_version()}


def compute_delta(unet: torch.nn.Module, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Erased minus base for the tensors in ``base`` that changed (float32, CPU)."""
    params = dict(unet.named_parameters())
    out = {}
    for name, b in base.items():
        d = params[name].detach().float().cpu() - b.float().cpu()
        if torch.count_nonzero(d) > 0:
            out[name] = d.contiguous()
    return out


def write_artifact(out_dir: Path, delta: dict[str, torch.Tensor], card: dict[str, Any],
                   overwrite: bool = False) -> Path:
    """Write the artifact folder atomically; ``card`` gets ``id`` and ``delta`` fields."""
    if not delta:
        raise UnseeError("the erasure changed no parameter; nothing to write")

    def build(tmp: Path) -> None:
        meta = {"format": FORMAT, "version": FORMAT_VERSION,
                "base_fingerprint": card["base"]["fingerprint"]}
        save_file(delta, str(tmp / "delta.safetensors"), metadata=meta)
        digest = hashlib.sha256((tmp / "delta.safetensors").read_bytes()).hexdigest()[:16]
        card["id"] = digest
        card["delta"] = {"tensors": len(delta),
                         "elements_changed": int(sum(torch.count_nonzero(d) for d in
                                                     delta.values())),
                         "bytes": (tmp / "delta.safetensors").stat().st_size}
        write_json(tmp / "model_card.json", card)
        (tmp / "README.md").write_text(_readme(card))

    return atomic_dir(Path(out_dir), build, overwrite=overwrite)


def _readme(card: dict[str, Any]) -> str:
    concepts = ", ".join(c["name"] for c in card.get("concepts", []))
    lines = [f"# unsee erasure: {concepts} ({card['method']})", "",
             f"Base model `{card['base']['model_id']}` (fingerprint "
             f"`{card['base']['fingerprint']}`). Changed {card['delta']['elements_changed']:,} "
             f"weights in {card['delta']['tensors']} tensors (scope `{card.get('scope')}`).", ""]
    if card.get("ledger"):
        lines += ["Stacks on: " + " -> ".join(f"{e['method']}({', '.join(e['concepts'])})"
                                             for e in card["ledger"]), ""]
    cost = card.get("cost", {})
    if cost:
        lines += [f"Cost: {cost.get('wall_seconds', 0):.1f} s, peak RSS "
                  f"{cost.get('peak_rss_mb', 0):.0f} MB.", ""]
    lines += ["Use it:", "", "```bash",
              f"unsee generate --model {card['base']['model_id']} --erased <this folder> "
              "--prompt '...' --out images/",
              f"unsee export <this folder> --model {card['base']['model_id']} --out merged/",
              "```", "", "Every hyper-parameter is in `model_card.json`.", ""]
    return "\n".join(lines)


def read_card(art: Path) -> dict[str, Any]:
    art = Path(art)
    if not (art / "model_card.json").is_file() or not (art / "delta.safetensors").is_file():
        raise UnseeError(f"{art} is not an unsee artifact (needs delta.safetensors and "
                         "model_card.json)")
    try:
        return json.loads((art / "model_card.json").read_text())
    except json.JSONDecodeError as exc:
        raise UnseeError(f"{art}/model_card.json is not valid JSON: {exc}") from exc


def read_delta(art: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and validate ``delta.safetensors``; returns (tensors, metadata)."""
    path = Path(art) / "delta.safetensors"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnseeError(f"{path} is not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UnseeError(f"{path} is not an unsee delta (metadata format="
                         f"{meta.get('format')!r})")
    return tensors, meta


def apply_artifacts(bundle, arts: list[Path]) -> list[dict[str, Any]]:
    """Add the deltas of ``arts`` to ``bundle.unet`` in place; returns their cards.

    Every artifact must have been made for this base (same fingerprint), and none may be
    listed in another's ledger (its change is already included there).
    """
    base_fp = fingerprint(bundle.unet)
    cards, deltas = [], []
    for art in arts:
        card = read_card(art)
        delta, meta = read_delta(art)
        if meta.get("base_fingerprint") != base_fp:
            raise UnseeError(f"{art} was made for a different base model (fingerprint "
                             f"{meta.get('base_fingerprint')}, this model is {base_fp})")
        cards.append(card)
        deltas.append(delta)
    ids = {c.get("id") for c in cards}
    for art, card in zip(arts, cards, strict=True):
        included = {e.get("id") for e in card.get("ledger", [])}
        if included & ids:
            raise UnseeError(f"{art} already includes another artifact given (its ledger "
                             "lists it); pass only the last one")
    params = dict(bundle.unet.named_parameters())
    for art, delta in zip(arts, deltas, strict=True):
        for name, d in delta.items():
            if name not in params or params[name].shape != d.shape:
                raise UnseeError(f"{art}: tensor {name!r} does not fit this UNet")
    with torch.no_grad():
        for delta in deltas:
            for name, d in delta.items():
                params[name].add_(d.to(params[name].device, params[name].dtype))
    return cards


def ledger_entry(card: dict[str, Any]) -> dict[str, Any]:
    return {"id": card.get("id"), "method": card.get("method"),
            "concepts": [c["name"] for c in card.get("concepts", [])],
            "created": card.get("created")}


def export_merged(bundle, out_dir: Path, overwrite: bool = False) -> Path:
    """Write a merged diffusers folder that plain diffusers loads without unsee.

    Stable Diffusion bundles become a ``StableDiffusionPipeline`` folder; pixel-space
    ToyWorld bundles a folder with ``unet/``, ``scheduler/``, ``text_encoder/`` and
    ``tokenizer/`` (the MiniLM the model was trained with) and ``unsee_model.json``.
    """
    from diffusers import DDIMScheduler

    def build(tmp: Path) -> None:
        sched = DDIMScheduler.from_config(bundle.scheduler_config)
        if bundle.vae is not None:
            from diffusers import StableDiffusionPipeline

            pipe = StableDiffusionPipeline(vae=bundle.vae, text_encoder=bundle.text.model,
                                           tokenizer=bundle.text.tokenizer, unet=bundle.unet,
                                           scheduler=sched, safety_checker=None,
                                           feature_extractor=None,
                                           requires_safety_checker=False)
            pipe.save_pretrained(tmp, safe_serialization=True)
        else:
            bundle.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            sched.save_pretrained(tmp / "scheduler")
            bundle.text.model.save_pretrained(tmp / "text_encoder")
            bundle.text.tokenizer.save_pretrained(tmp / "tokenizer")
            write_json(tmp / "unsee_model.json", bundle.info)

    return atomic_dir(Path(out_dir), build, overwrite=overwrite)
