"""A model's family is read once, from its folder: a diffusers folder with an unsee manifest
is a Stable Diffusion pipeline that speaks the manifest's vocabulary (ToyWorld-SD), a
manifest alone is a pixel model, and a plain diffusers folder is Stable Diffusion."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from unsee.cli import app
from unsee.models.bundle import load_bundle
from unsee.models.family import (
    MANIFEST,
    STABLE_DIFFUSION,
    TOYWORLD,
    TOYWORLD_SD,
    family_from_manifest,
    model_family,
)
from unsee.models.model_ids import BUNDLED, TOYWORLD_DIR

runner = CliRunner()


def test_diffusers_folder_with_a_manifest_is_toyworld_sd(tiny_sd, tmp_path):
    folder = tmp_path / "tw-sd"
    shutil.copytree(tiny_sd, folder)
    assert model_family(str(folder)) is STABLE_DIFFUSION
    plain = load_bundle(folder)
    assert plain.family is STABLE_DIFFUSION and plain.vocabulary is None

    manifest = {"family": "toyworld-sd", "vocabulary": "toyworld", "default_guidance": 5.0}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert model_family(str(folder)) is TOYWORLD_SD
    bundle = load_bundle(folder)
    # loaded by the diffusers path (VAE latents, CLIP), labelled by the manifest
    assert bundle.vae is not None and bundle.latent_shape[0] == 4
    assert bundle.family is TOYWORLD_SD and bundle.vocabulary == "toyworld"
    assert bundle.default_guidance == 5.0
    assert bundle.prediction_type == plain.prediction_type == "epsilon"


def test_manifests_without_a_family_key_keep_their_meaning():
    assert family_from_manifest({"vocabulary": "toyworld"}) is TOYWORLD
    assert family_from_manifest({}) is STABLE_DIFFUSION
    assert family_from_manifest({"family": "toyworld-sd"}) is TOYWORLD_SD
    assert model_family("toyworld") is TOYWORLD


def test_toyworld_path_prints_the_bundled_folder():
    res = runner.invoke(app, ["toyworld", "path", "toyworld"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(TOYWORLD_DIR)
    res = runner.invoke(app, ["toyworld", "path", "sdxl"])
    assert res.exit_code == 2
    assert "unknown bundled model 'sdxl'" in res.output
    assert set(BUNDLED) == {"toyworld", "toyworld-sd"}
