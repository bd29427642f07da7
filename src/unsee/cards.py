"""Hugging Face model cards (``README.md`` with a YAML metadata block) for artifacts and
exports, so ``huggingface_hub.ModelCard.load(folder)`` and the Hub read base model,
library, tags and licence, and a reader learns what was erased and how to load it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from unsee.card_schema import ModelCard, parse_card
from unsee.errors import UnseeError
from unsee.models.family import model_family
from unsee.models.model_ids import BUNDLED, is_hub_id, portable_id, resolve_id

TOYWORLD_LICENSE = "apache-2.0"  # the bundled models ship with unsee (Apache-2.0)

LIMITATIONS = (
    "Erasure is not a safety guarantee. A concept erased by fine-tuning or a closed-form "
    "edit can often be brought back: by paraphrases, by optimised adversarial prompts "
    "(UnlearnDiffAtk), by textual inversion, or by a little fine-tuning. Measure it on your "
    "own prompts with `unsee eval --attacks paraphrase,unlearndiffatk,inversion,resurgence`. "
    "The edit also shifts neighbouring concepts a little (see `retain` in a scorecard)."
)
FITS = "The weights only fit the base model with the fingerprint given here."


def hub_id(model_id: str | None) -> str | None:
    """``model_id`` when it names a Hugging Face Hub repo (``owner/name``) and is not a
    local path, else None."""
    return model_id if model_id and is_hub_id(model_id) else None


def _has_pipeline(base: str | None) -> bool:
    """Whether plain diffusers loads ``base`` as a Stable Diffusion pipeline (a pixel-space
    ToyWorld model has no diffusers pipeline)."""
    return base is None or model_family(base).latent


def _pretrained_arg(base: str | None) -> str:
    """``from_pretrained``'s argument for ``base`` in a card's code: a bundled model is a
    folder inside the installed package, which ``unsee toyworld path`` prints."""
    if base in BUNDLED:
        return f"'<the folder `unsee toyworld path {base}` prints>'"
    return repr(base)


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The YAML metadata block of a model card file (``{}`` when there is none)."""
    try:
        text = Path(readme).read_text()
    except OSError:
        return {}
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not m:
        return {}
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def base_license(model_id: str | None) -> str | None:
    """The base model's licence, when it can be known without network: ToyWorld's, the
    ``license`` of a local folder's ``README.md``, or of a hub id's cached ``README.md``."""
    if not model_id:
        return None
    if model_id in BUNDLED:
        return TOYWORLD_LICENSE
    try:
        path = Path(resolve_id(model_id)).expanduser()
    except UnseeError:  # a local folder named in the card only: its licence is unknown
        return None
    if path.is_dir():
        lic = read_front_matter(path / "README.md").get("license")
        return str(lic) if lic else None
    if hub_id(model_id):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "README.md")
        except Exception:  # an unusual cache layout must not break writing a card
            return None
        if isinstance(cached, str):
            lic = read_front_matter(Path(cached)).get("license")
            return str(lic) if lic else None
    return None


def front_matter(meta: dict[str, Any]) -> str:
    """``---\\n<yaml>---\\n`` with None values dropped, keys in the given order."""
    clean = {k: v for k, v in meta.items() if v not in (None, [], "")}
    return "---\n" + yaml.safe_dump(clean, sort_keys=False, allow_unicode=True) + "---\n"


def _concepts(cards: Sequence[ModelCard]) -> list[str]:
    return [name for card in cards for name in card.concept_names]


def _methods(cards: Sequence[ModelCard]) -> list[str]:
    return list(dict.fromkeys(c.method for c in cards if c.method))


def card_metadata(
    cards: Sequence[ModelCard],
    library_name: str,
    extra_tags: Sequence[str] = (),
    model_id: str | None = None,
) -> dict[str, Any]:
    """The YAML block shared by every card: base model, licence, library, tags.
    ``model_id``: the base as loaded (a local path is read for its licence and written
    portably); default: the first card's stored base."""
    real = model_id or (cards[0].base.model_id if cards else None)
    base = portable_id(real) if real else None
    tags = [
        "unsee",
        "concept-erasure",
        "text-to-image",
        *(["toyworld"] if base in BUNDLED else []),
        *(["stable-diffusion"] if _has_pipeline(base) else []),
        *_methods(cards),
        *extra_tags,
    ]
    stored = next((c.base.license for c in cards if c.base.license), None)
    return {
        "base_model": hub_id(base),
        "license": stored or base_license(real),
        "library_name": library_name,
        "pipeline_tag": "text-to-image",
        "tags": list(dict.fromkeys(tags)),
    }


def _about(cards: Sequence[ModelCard], base: str) -> list[str]:
    lines = []
    for card in cards:
        lines.append(
            f"- `{card.method}` erasing **{', '.join(card.concept_names)}** (artifact "
            f"`{card.id}`, base fingerprint `{card.base.fingerprint}`, scope "
            f"`{card.scope}`)"
        )
        if card.ledger:
            lines.append(
                "  - stacks on: "
                + " -> ".join(f"{e.method}({', '.join(e.concepts)})" for e in card.ledger)
            )
    return [f"Base model: `{base}`.", "", *lines, ""]


def _sections(intended: str, fits: bool = True) -> list[str]:
    limits = f"{LIMITATIONS} {FITS}" if fits else LIMITATIONS
    return ["## Intended use", "", intended, "", "## Limitations", "", limits, ""]


INTENDED = (
    "Research on concept erasure and its evaluation, and generation with a model that "
    "should not draw the erased concepts on ordinary prompts."
)


def artifact_readme(data: ModelCard | Mapping[str, Any]) -> str:
    """Card of an erasure artifact (``delta.safetensors`` + ``model_card.json``) from its
    model card (as written, or read)."""
    card = parse_card(data, "the artifact's model card")
    base = card.base.model_id
    concepts = ", ".join(_concepts([card]))
    meta = card_metadata([card], "unsee", ("unsee-delta",))
    lines = [front_matter(meta), f"# unsee erasure: {concepts} ({card.method})", ""]
    lines += _about([card], base)
    d = card.delta
    if d:
        lines += [
            f"Changed {d.elements_changed:,} weights in {d.tensors} "
            "UNet tensors; `delta.safetensors` holds erased minus base for those "
            "tensors (float32, diffusers parameter names).",
            "",
        ]
    cost = card.cost
    if cost.as_json():
        lines += [
            f"Cost: {cost.wall_seconds or 0:.1f} s, peak RSS {cost.peak_rss_mb or 0:.0f} MB.",
            "",
        ]
    lines += _sections(INTENDED)
    lines += [
        "## How to use",
        "",
        "With unsee:",
        "",
        "```bash",
        f"unsee generate --model {base} --erased <this folder> --prompt '...' --out images/",
        f"unsee export <this folder> --model {base} --out merged/           # diffusers folder",
        f"unsee export <this folder> --model {base} --format lora --out lora/  "
        "# pipe.load_lora_weights",
        "```",
        "",
    ]
    if _has_pipeline(base):
        lines += [
            "In plain diffusers (no unsee), add the delta to the base UNet:",
            "",
            "```python",
            "import torch",
            "from diffusers import StableDiffusionPipeline",
            "from safetensors.torch import load_file",
            "",
            f"pipe = StableDiffusionPipeline.from_pretrained({_pretrained_arg(base)})",
            "params = dict(pipe.unet.named_parameters())",
            "with torch.no_grad():",
            "    for name, d in load_file('delta.safetensors').items():",
            "        params[name].add_(d.to(params[name].dtype))",
            "```",
            "",
        ]
    lines += ["Every hyper-parameter, the seed and library versions are in `model_card.json`.", ""]
    return "\n".join(lines)


def merged_readme(
    cards: Sequence[ModelCard], base: str, pipeline: bool, safety_checker: bool
) -> str:
    """Card of a merged export (a diffusers folder with the erasure applied)."""
    meta = card_metadata(cards, "diffusers", model_id=base)
    base = portable_id(base)
    concepts = ", ".join(_concepts(cards))
    lines = [
        front_matter(meta),
        f"# {concepts} erased ({', '.join(_methods(cards))})",
        "",
        "The base model with these unsee erasures merged into its UNet:",
        "",
    ]
    lines += _about(cards, base)
    lines += [f"Safety checker: {'kept from the base' if safety_checker else 'none'}.", ""]
    lines += _sections(INTENDED, fits=False)
    lines += ["## How to use", ""]
    if pipeline:
        lines += [
            "```python",
            "from diffusers import StableDiffusionPipeline",
            "",
            "pipe = StableDiffusionPipeline.from_pretrained('<this folder>')",
            "image = pipe('a photo').images[0]",
            "```",
            "",
        ]
    else:
        lines += [
            "ToyWorld is unsee's bundled pixel-space model; its UNet loads with "
            "`UNet2DConditionModel.from_pretrained('<this folder>/unet')` and unsee "
            "samples it: `unsee generate --model <this folder> --prompt '...' "
            "--out images/`.",
            "",
        ]
    return "\n".join(lines)


def lora_readme(
    cards: Sequence[ModelCard], base: str, fmt: str, file_name: str, report: dict[str, Any]
) -> str:
    """Card of a LoRA export, with its fidelity against the full delta."""
    meta = card_metadata(
        cards, "diffusers", ("lora", "kohya" if fmt == "kohya" else "peft"), model_id=base
    )
    base = portable_id(base)
    meta["base_model_relation"] = "adapter" if meta.get("base_model") else None
    s = report["summary"]
    concepts = ", ".join(_concepts(cards))
    lines = [
        front_matter(meta),
        f"# {concepts} erased ({', '.join(_methods(cards))}), as a "
        f"{'diffusers/peft' if fmt == 'lora' else 'kohya'} LoRA",
        "",
    ]
    lines += _about(cards, base)
    out = report.get("output_residual") or {}
    lines += [
        "## Fidelity",
        "",
        f"Truncated SVD per tensor ({report['rank_rule']}): ranks {s['rank_min']}-"
        f"{s['rank_max']} over {s['lora_modules']} modules, "
        f"{s['file_parameters']:,} parameters, {report['file_bytes']:,} bytes.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| weight residual, relative Frobenius, all tensors | {s['rel_error_total']:.3g} |",
        f"| worst LoRA tensor | {s['rel_error_lora_worst']:.3g} "
        f"(`{s['rel_error_lora_worst_tensor']}`) |",
        f"| left out (share of the edit's norm) | {s['left_out_norm_fraction']:.3g} |",
        f"| held as full differences (share of the edit's norm) | "
        f"{s['full_difference_norm_fraction']:.3g} |",
    ]
    if out:
        lines.append(
            f"| UNet output residual / the edit's output change | "
            f"{out['relative']:.3g} (max abs {out['max_abs']:.3g} vs edit "
            f"{out['edit_max_abs']:.3g}, {out['inputs']} probe inputs) |"
        )
    lines.append("")
    if s["left_out"]:
        lines += [
            "Left out (this format cannot hold them): "
            + ", ".join(f"`{t}`" for t in s["left_out"])
            + ".",
            "",
        ]
    lines += ["Per-tensor ranks and residuals: `lora_export.json`.", ""]
    lines += _sections(INTENDED)
    lines += ["## How to use", ""]
    if fmt == "lora":
        lines += [
            "Needs `peft` installed.",
            "",
            "```python",
            "from diffusers import StableDiffusionPipeline",
            "",
            f"pipe = StableDiffusionPipeline.from_pretrained({_pretrained_arg(base)})",
            "pipe.load_lora_weights('<this folder>')",
            "image = pipe('a photo').images[0]",
            "```",
            "",
        ]
        if not s.get("fuse_lora_works", True):
            lines += [
                "Bias changes ride in peft's `lora_B.bias`, so `pipe.fuse_lora()` "
                "fails on layers without a bias; export with `--no-lora-bias` to fuse "
                "(the biases are then left out, and the table says how much that is).",
                "",
            ]
        if not _has_pipeline(base):
            lines += [
                "ToyWorld has no diffusers pipeline; load into its UNet with "
                "`unet.load_lora_adapter('<this folder>', prefix='unet', "
                f"weight_name='{file_name}')`.",
                "",
            ]
    else:
        lines += [
            f"A1111: copy `{file_name}` to `models/Lora` and prompt with "
            f"`<lora:{Path(file_name).stem}:1>`. ComfyUI: `models/loras`, "
            "LoraLoader with strength 1.",
            "",
            "diffusers (needs `peft`) loads the LoRA part; its Stable Diffusion "
            "loader refuses the full-difference `.diff`/`.diff_b` entries, so drop "
            "them first; the model then misses what they hold (the table above):",
            "",
            "```python",
            "from safetensors.torch import load_file",
            "sd = load_file('<this folder>/" + file_name + "')",
            "pipe.load_lora_weights({k: v for k, v in sd.items() "
            "if not k.endswith(('.diff', '.diff_b'))})",
            "```",
            "",
        ]
    return "\n".join(lines)
