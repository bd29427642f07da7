"""Models as users have them: fp16 variant folders, single-file checkpoints (pickles never
loaded), hub ids with no network, and pipelines unsee does not support, refused before any
weight is read. Tiny pipelines built from configs (no network)."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle


@pytest.fixture(scope="module")
def fp16_folder(tiny_sd, tmp_path_factory) -> Path:
    from diffusers import StableDiffusionPipeline

    out = tmp_path_factory.mktemp("variant") / "sd-fp16"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, torch_dtype=torch.float16)
    pipe.save_pretrained(out, variant="fp16")
    assert not list((out / "unet").glob("diffusion_pytorch_model.safetensors"))
    return out


def test_variant_folder(fp16_folder, tiny_sd):
    with pytest.raises(UnseeError, match="--variant fp16"):
        load_bundle(fp16_folder)  # only fp16 files: the error says what to pass
    bundle = load_bundle(fp16_folder, variant="fp16")
    base = load_bundle(tiny_sd)
    assert bundle.dtype == torch.float32  # read from fp16 files, run in the asked dtype
    for (n, p), (_, q) in zip(
        bundle.unet.named_parameters(), base.unet.named_parameters(), strict=True
    ):
        assert torch.equal(p, q.half().float()), n


def test_pickle_checkpoint_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for suffix in (".ckpt", ".pt", ".bin"):
        ckpt = tmp_path / f"model{suffix}"
        ckpt.write_bytes(pickle.dumps(Payload()))
        with pytest.raises(UnseeError, match=r"pickle format.*never loads"):
            load_bundle(ckpt)
    assert not marker.exists()


def test_single_file_without_configs_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, ckpt)
    with pytest.raises(UnseeError, match=r"single-file checkpoint.*offline"):
        load_bundle(ckpt)


def test_offline_hub_id_refused_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    load_bundle("toyworld")  # imports done: what is timed is the refusal
    t0 = time.monotonic()
    with pytest.raises(UnseeError, match="no network and not in the local cache"):
        load_bundle("nobody-here/not-a-cached-model")
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize(
    "cls, named",
    [
        ("StableDiffusionXLPipeline", "SDXL"),
        ("StableDiffusion3Pipeline", "SD3"),
        ("FluxPipeline", "Flux"),
        ("KandinskyV22Pipeline", "without Stable Diffusion's layout"),
    ],
)
def test_unsupported_pipelines_refused_before_loading(tmp_path, cls, named):
    folder = tmp_path / "m"
    for sub in ("unet", "transformer", "text_encoder", "text_encoder_2", "tokenizer"):
        (folder / sub).mkdir(parents=True)  # no weights at all: refusing must not read any
    index = {"_class_name": cls, "unet": ["diffusers", "UNet2DConditionModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnseeError, match=rf"{named}.*StableDiffusionPipeline"):
        load_bundle(folder)


def test_sdxl_shaped_sd_folder_refused(tiny_sd, tmp_path):
    """An SDXL index over real Stable Diffusion weights: the index decides, not the widths."""
    folder = tmp_path / "xl"
    shutil.copytree(tiny_sd, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnseeError, match="SDXL"):
        load_bundle(folder)


def test_variant_through_the_cli(fp16_folder, tmp_path):
    """`--model-variant` reaches the loader in erase and generate: the artifact is made for
    the fp16 weights and applies to them."""
    from typer.testing import CliRunner

    from unsee.artifacts import fingerprint, read_card
    from unsee.cli import app

    runner = CliRunner()
    model = ["--model", str(fp16_folder), "--model-variant", "fp16"]
    r = runner.invoke(
        app,
        ["erase", *model, "--method", "uce", "--concept", "a cat", "--out", str(tmp_path / "a")],
    )
    assert r.exit_code == 0, r.output
    base = load_bundle(fp16_folder, variant="fp16")
    assert read_card(tmp_path / "a")["base"]["fingerprint"] == fingerprint(base.unet)
    gen = ["generate", *model, "--prompt", "a cat", "--num-images", "1", "--steps", "2"]
    r = runner.invoke(app, [*gen, "--erased", str(tmp_path / "a"), "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["generate", "--model", str(fp16_folder), *gen[5:], "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "--variant fp16" in r.output


def test_variant_in_a_yaml_config(fp16_folder, tmp_path):
    """A config file names the weight variant too; the model is loaded by the run, after the
    config is checked (a bad method is refused before any weight is read)."""
    from typer.testing import CliRunner

    from unsee.artifacts import fingerprint, read_card
    from unsee.cli import app

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"method: uce\nconcepts: ['a cat']\nmodel: {fp16_folder}\nmodel_variant: fp16\n",
        encoding="utf-8",
    )
    r = CliRunner().invoke(app, ["erase", "--config", str(cfg), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    base = load_bundle(fp16_folder, variant="fp16")
    assert read_card(tmp_path / "a")["base"]["fingerprint"] == fingerprint(base.unet)
    cfg.write_text(cfg.read_text().replace("uce", "no-such-method"), encoding="utf-8")
    r = CliRunner().invoke(app, ["erase", "--config", str(cfg), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "no-such-method" in r.output
