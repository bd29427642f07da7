"""Cards name their base portably: no path as typed, a hub id for a Hub-cache folder, a
path under $UNSEE_MODEL_ROOT that another machine resolves under its own root; the
fingerprint stays the identity."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from unsee.cli import app
from unsee.errors import UnseeError
from unsee.models.model_ids import MODEL_ROOT_ENV, portable_id, resolve_id

runner = CliRunner()


def test_names_that_are_not_paths_stay(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert portable_id("toyworld") == "toyworld"
    assert portable_id("CompVis/stable-diffusion-v1-4") == "CompVis/stable-diffusion-v1-4"
    assert resolve_id("CompVis/stable-diffusion-v1-4") == "CompVis/stable-diffusion-v1-4"


def test_local_paths_never_reach_the_card(monkeypatch, tmp_path):
    monkeypatch.delenv(MODEL_ROOT_ENV, raising=False)
    (tmp_path / "work" / "models" / "sd15").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    for typed in ("models/sd15", "./models/sd15/", str(tmp_path / "work" / "models" / "sd15")):
        assert portable_id(typed) == "local:sd15"
    with pytest.raises(UnseeError, match="local folder named 'sd15'; pass it with --model"):
        resolve_id("local:sd15")


def test_hub_cache_folder_is_its_hub_id(tmp_path):
    snap = tmp_path / "hub" / "models--CompVis--stable-diffusion-v1-4" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert portable_id(str(snap)) == "CompVis/stable-diffusion-v1-4"


def test_model_root_is_portable_across_machines(monkeypatch, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    (here / "sd" / "v15").mkdir(parents=True)
    monkeypatch.setenv(MODEL_ROOT_ENV, str(here))
    stored = portable_id(str(here / "sd" / "v15"))
    assert stored == f"${MODEL_ROOT_ENV}/sd/v15"
    monkeypatch.setenv(MODEL_ROOT_ENV, str(there))  # another machine, its own root
    assert resolve_id(stored) == str(there / "sd" / "v15")
    monkeypatch.delenv(MODEL_ROOT_ENV)
    with pytest.raises(UnseeError, match=f"set {MODEL_ROOT_ENV} to the folder"):
        resolve_id(stored)


def test_artifact_moves_to_another_root_and_exports(monkeypatch, tmp_path, tiny_sd):
    """erase stores $UNSEE_MODEL_ROOT/<rel>; on a 'second machine' whose root holds a copy
    of the base, export finds it without --model and the fingerprint check passes; a card
    naming a local folder asks for --model in one line."""
    root = tmp_path / "root"
    shutil.copytree(tiny_sd, root / "sd")
    monkeypatch.setenv(MODEL_ROOT_ENV, str(root))
    art = tmp_path / "art"
    r = runner.invoke(
        app,
        ["erase", "--model", str(root / "sd"), "--method", "uce", "--concept", "a cat",
         "--device", "cpu", "--out", str(art)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    card = json.loads((art / "model_card.json").read_text())
    assert card["base"]["model_id"] == f"${MODEL_ROOT_ENV}/sd"
    assert str(tmp_path) not in (art / "model_card.json").read_text()
    assert str(tmp_path) not in (art / "README.md").read_text()

    other = tmp_path / "other"
    shutil.copytree(root, other)
    shutil.rmtree(root)
    monkeypatch.setenv(MODEL_ROOT_ENV, str(other))
    r = runner.invoke(app, ["export", str(art), "--out", str(tmp_path / "merged")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "merged" / "unet").is_dir()

    card["base"]["model_id"] = "local:sd"
    (art / "model_card.json").write_text(json.dumps(card))
    r = runner.invoke(app, ["export", str(art), "--out", str(tmp_path / "again")])
    assert r.exit_code == 2
    assert "local folder named 'sd'; pass it with --model" in r.output
    assert not (tmp_path / "again").exists()
