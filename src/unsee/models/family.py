"""Model families: the one place that says what kind of model a spec or bundle is.

Everything that differs between kinds of model and is not read from the weights' own
configs lives on a :class:`ModelFamily`: the key per-family tables are indexed by (method
defaults, budgets, drawn-set sizes), the concept vocabulary the model speaks (which judge
and concept resolution apply), and whether it denoises pixels or VAE latents. What *is*
in the configs (prediction type, noise schedule, prompt encoder) is read by the loader
into the :class:`~unsee.models.bundle.Bundle`, so no family restates it.

A new family (SDXL, Flux) is one new :class:`ModelFamily` here plus a loader; tables
that lack its key fall back to the caller's default, and :meth:`ModelFamily.pick` is the
only lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from unsee.io import read_json_object
from unsee.models.model_ids import BUNDLED

V = TypeVar("V")

#: the manifest an unsee-trained model folder carries (vocabulary, family, training info)
MANIFEST = "unsee_model.json"


@dataclass(frozen=True)
class ModelFamily:
    """A kind of model: ``key`` indexes per-family tables; ``vocabulary`` is the fixed
    concept vocabulary it speaks (``"toyworld"``; None: open text, as Stable Diffusion);
    ``latent``: it denoises VAE latents (else pixels)."""

    key: str
    vocabulary: str | None
    latent: bool
    description: str

    def pick(self, table: Mapping[str, V], default: V) -> V:
        """``table``'s entry for this family, else ``default``."""
        return table.get(self.key, default)


TOYWORLD = ModelFamily("toyworld", "toyworld", False, "ToyWorld (pixel-space, v-prediction)")
TOYWORLD_SD = ModelFamily(
    "toyworld-sd",
    "toyworld",
    True,
    "ToyWorld-SD (ToyWorld's vocabulary in Stable Diffusion 1.x format: VAE latents, CLIP, "
    "epsilon, SD v1.4's schedule)",
)
STABLE_DIFFUSION = ModelFamily(
    "sd", None, True, "Stable Diffusion 1.x/2.x (VAE latents, CLIP text encoder, UNet)"
)
FAMILIES = {f.key: f for f in (TOYWORLD, TOYWORLD_SD, STABLE_DIFFUSION)}


def family_from_manifest(info: Mapping[str, object]) -> ModelFamily:
    """The family an unsee manifest (or a bundle's ``info``) declares: its ``family`` key,
    else ToyWorld for the ToyWorld vocabulary; Stable Diffusion for anything else."""
    key = info.get("family")
    if isinstance(key, str) and key in FAMILIES:
        return FAMILIES[key]
    return TOYWORLD if info.get("vocabulary") == "toyworld" else STABLE_DIFFUSION


def model_family(spec: str) -> ModelFamily:
    """The family of model ``spec`` without loading it: a bundled model's or a folder's
    manifest, else Stable Diffusion (a diffusers folder, a checkpoint or a hub id)."""
    folder = BUNDLED.get(spec, Path(spec))
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return STABLE_DIFFUSION
    return family_from_manifest(read_json_object(manifest, "a model manifest"))
