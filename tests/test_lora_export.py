"""LoRA (diffusers/peft) and kohya exports load in plain diffusers and reproduce the merged
model; artifact and export READMEs are Hugging Face model cards; the merged export keeps
the base's safety checker. All on a tiny SD pipeline built from configs (no network)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import build_tiny_sd
from unsee.cli import app

runner = CliRunner()
LICENSE = "creativeml-openrail-m"
KV = [
    f"{b}.attentions.0.transformer_blocks.0.attn2.to_{w}.weight"
    for b in ("down_blocks.0", "up_blocks.1")
    for w in ("k", "v")
]
# a delta of every kind: linear and conv weights (4-D 3x3 and 1x1), biases of changed
# modules, a bias whose weight did not change, and a GroupNorm weight (no LoRA holds it)
MIXED = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.bias",
    "down_blocks.0.attentions.0.proj_in.weight",
    "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.0.resnets.0.conv1.bias",
    "up_blocks.0.resnets.0.time_emb_proj.bias",
    "down_blocks.0.resnets.0.norm1.weight",
]
NORM = "down_blocks.0.resnets.0.norm1.weight"


def _add_safety_checker(folder: Path) -> None:
    """Give the tiny pipeline a (random, tiny) safety checker, as SD 1.x bases have."""
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=8,
    )
    StableDiffusionSafetyChecker(cfg).save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder / "feature_extractor")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index["requires_safety_checker"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "README.md").write_text(f"---\nlicense: {LICENSE}\n---\n\n# tiny base\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = build_tiny_sd(tmp_path_factory.mktemp("lora") / "sd")
    _add_safety_checker(folder)
    return folder


def _write(
    base: Path,
    out: Path,
    names: list[str],
    method: str,
    seed: int,
    rank1: bool = False,
    size: float = 0.05,
) -> Path:
    from unsee.artifacts import fingerprint, write_artifact
    from unsee.models.bundle import load_bundle

    bundle = load_bundle(str(base))
    params = dict(bundle.unet.named_parameters())
    g = torch.Generator().manual_seed(seed)
    delta = {}
    for n in names:
        p = params[n].detach()
        scale = 0.002 if n == NORM else size * float(p.abs().mean())
        if rank1:
            d = torch.randn(p.shape[0], 1, generator=g) @ torch.randn(1, p.shape[1], generator=g)
        else:
            d = torch.randn(p.shape, generator=g)
        delta[n] = scale * d / d.std()
    card = {
        "format": "unsee-artifact/1",
        "method": method,
        "concepts": [{"name": "a cat"}],
        "base": {"model_id": str(base), "fingerprint": fingerprint(bundle.unet)},
        "scope": "test",
        "ledger": [],
    }
    return write_artifact(out, delta, card)


@pytest.fixture(scope="module")
def art(base, tmp_path_factory) -> Path:
    return _write(base, tmp_path_factory.mktemp("art") / "mixed", MIXED, "esd-x", 1)


@pytest.fixture(scope="module")
def art_kv(base, tmp_path_factory) -> Path:
    """Rank-1 key/value edits, as UCE makes: nothing a kohya LoRA cannot hold."""
    return _write(base, tmp_path_factory.mktemp("art") / "kv", KV, "uce", 2, rank1=True, size=0.5)


def _export(art: Path, out: Path, *opts: str) -> dict:
    r = runner.invoke(app, ["export", str(art), "--out", str(out), *opts])
    assert r.exit_code == 0, r.output
    return json.loads((out / "lora_export.json").read_text()) if opts else {}


def _pipe(base: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(base))


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([999, 750, 500, 250, 100, 10])
    return x, t, torch.randn(6, 16, 32, generator=g)


@torch.no_grad()
def _out(unet, inputs) -> torch.Tensor:
    x, t, ctx = inputs
    return unet(x, t, ctx).sample.double()


@torch.no_grad()
def _unet_plus(base: Path, add: dict[str, torch.Tensor]):
    """The base UNet with ``add`` added to its parameters (what merging does)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    params = dict(unet.named_parameters())
    for n, d in add.items():
        params[n].add_(d)
    return unet


def _rel(a: torch.Tensor, b: torch.Tensor, edit: torch.Tensor) -> float:
    return float((a - b).norm() / edit.norm())


def test_lora_full_rank_loads_in_diffusers_and_reproduces_merged(base, art, tmp_path):
    delta = load_file(str(art / "delta.safetensors"))
    report = _export(art, tmp_path / "lora", "--format", "lora", "--energy", "1")
    s = report["summary"]
    # a LoRA cannot hold a GroupNorm weight: it is left out, and the share is stated
    assert s["left_out"] == [NORM]
    total = math.sqrt(sum(float(d.double().norm()) ** 2 for d in delta.values()))
    assert s["left_out_norm_fraction"] == pytest.approx(float(delta[NORM].norm()) / total, rel=1e-5)
    kinds = {r["tensor"]: r["kind"] for r in report["tensors"]}
    assert kinds["up_blocks.0.resnets.0.time_emb_proj.bias"] == "lora_bias"

    pipe = _pipe(base)
    pipe.load_lora_weights(str(tmp_path / "lora"))  # plain diffusers + peft
    inputs = _inputs()
    base_out = _out(_unet_plus(base, {}), inputs)
    held = _out(_unet_plus(base, {n: d for n, d in delta.items() if n != NORM}), inputs)
    got = _out(pipe.unet, inputs)
    # everything but the left-out norm is reproduced to float precision
    assert _rel(got, held, held - base_out) < 1e-4
    # and the left-out norm is the whole gap to the merged model
    merged = _out(_unet_plus(base, delta), inputs)
    assert _rel(got, merged, merged - base_out) > 1e-3


def _probe(base: Path, report: dict):
    """The export's own probe inputs (its prompts through the base's text encoder)."""
    from unsee.lora import probe_inputs
    from unsee.models.bundle import load_bundle

    bundle = load_bundle(str(base))
    ctx = bundle.encode_prompts(report["output_residual"]["prompts"])
    return probe_inputs(bundle.unet, ctx, bundle.latent_shape, 1000)


def test_lora_truncated_residual_is_what_diffusers_gives(base, art, tmp_path):
    delta = load_file(str(art / "delta.safetensors"))
    report = _export(art, tmp_path / "lora2", "--format", "lora", "--energy", "0.9")
    rows = {r["tensor"]: r for r in report["tensors"]}
    ranks = set()
    for n, d in delta.items():
        if rows[n]["kind"] != "lora":
            continue
        # each rank is the smallest keeping 90 % of the energy, and its residual is the
        # best any matrix of that rank can do (Eckart-Young): the SVD tail
        s = torch.linalg.svdvals(d.double().reshape(d.shape[0], -1))
        r = rows[n]["rank"]
        kept = (s**2).cumsum(0) / (s**2).sum()
        assert kept[r - 1] >= 0.9 > (kept[r - 2] if r > 1 else 0)
        assert rows[n]["rel_error"] == pytest.approx(float(s[r:].norm() / s.norm()), abs=1e-6)
        ranks.add(r)
    assert len(ranks) > 1  # per-module ranks (peft rank_pattern) are exercised
    # the stated UNet output residual is the one plain diffusers gives, on the same inputs
    probe = _probe(base, report)
    pipe = _pipe(base)
    pipe.load_lora_weights(str(tmp_path / "lora2"))
    base_out = _out(_unet_plus(base, {}), probe)
    merged = _out(_unet_plus(base, delta), probe)
    measured = _rel(_out(pipe.unet, probe), merged, merged - base_out)
    stated = report["output_residual"]["relative"]
    assert stated > 0.05  # a truncated random edit is far from exact
    assert measured == pytest.approx(stated, rel=1e-3, abs=1e-5)


def test_no_lora_bias_leaves_biases_out_and_fuses(base, art, tmp_path):
    delta = load_file(str(art / "delta.safetensors"))
    report = _export(art, tmp_path / "nb", "--format", "lora", "--energy", "1", "--no-lora-bias")
    biases = sorted(n for n in delta if n.endswith(".bias"))
    assert sorted(report["summary"]["left_out"]) == sorted([*biases, NORM])
    assert report["summary"]["fuse_lora_works"]
    pipe = _pipe(base)
    pipe.load_lora_weights(str(tmp_path / "nb"))
    pipe.fuse_lora()  # peft merges it into the base weights
    pipe.unload_lora_weights()
    inputs = _inputs()
    base_out = _out(_unet_plus(base, {}), inputs)
    held = _out(
        _unet_plus(base, {n: d for n, d in delta.items() if n.endswith(".weight") and n != NORM}),
        inputs,
    )
    assert _rel(_out(pipe.unet, inputs), held, held - base_out) < 1e-4


def _apply_kohya(base: Path, sd: dict[str, torch.Tensor]):
    """The kohya format's meaning, as A1111 and ComfyUI apply it: W += up @ down * alpha / r,
    W += diff, bias += diff_b (module names: ``lora_unet_`` + diffusers name with ``_``)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    by_kohya = {"lora_unet_" + n.replace(".", "_"): n for n, _ in unet.named_modules() if n}
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key, v in sd.items():
            module, _, what = key.partition(".")
            name = by_kohya[module]
            if what == "lora_down.weight":
                up = sd[f"{module}.lora_up.weight"]
                r = v.shape[0]
                scale = float(sd[f"{module}.alpha"]) / r
                w = (up.reshape(up.shape[0], r) @ v.reshape(r, -1)) * scale
                params[name + ".weight"].add_(w.reshape(params[name + ".weight"].shape))
            elif what == "diff":
                params[name + ".weight"].add_(v)
            elif what == "diff_b":
                params[name + ".bias"].add_(v)
    return unet


def test_kohya_file_means_the_delta_and_loads_in_diffusers(base, art, art_kv, tmp_path):
    from unsee.lora import kohya_for_diffusers

    delta = load_file(str(art / "delta.safetensors"))
    report = _export(art, tmp_path / "k", "--format", "kohya", "--energy", "0.9")
    s = report["summary"]
    assert s["left_out"] == []  # kohya holds norms and biases as full differences
    assert s["rank_min"] < s["rank_max"]  # one alpha for all must still mean each rank
    sd = load_file(str(tmp_path / "k" / report["file"]))
    assert all(k.startswith("lora_unet_") for k in sd)
    # full-difference entries are the delta itself, bit for bit
    assert torch.equal(sd["lora_unet_down_blocks_0_resnets_0_norm1.diff"], delta[NORM])
    assert torch.equal(
        sd["lora_unet_up_blocks_0_resnets_0_time_emb_proj.diff_b"],
        delta["up_blocks.0.resnets.0.time_emb_proj.bias"],
    )
    probe = _probe(base, report)
    base_out = _out(_unet_plus(base, {}), probe)
    merged = _out(_unet_plus(base, delta), probe)
    # applied as A1111/ComfyUI read the format, the file misses what the report says
    assert _rel(_out(_apply_kohya(base, sd), probe), merged, merged - base_out) == pytest.approx(
        report["output_residual"]["relative"], rel=1e-3, abs=1e-5
    )
    # diffusers' kohya loader takes the LoRA part (it refuses .diff keys) and means the same
    lora_part = kohya_for_diffusers(sd)
    pipe = _pipe(base)
    pipe.load_lora_weights(dict(lora_part))
    ref = _out(_apply_kohya(base, lora_part), probe)
    assert _rel(_out(pipe.unet, probe), ref, ref - base_out) < 1e-4

    # a kohya export with nothing but LoRA entries loads by path and is the merged model
    kv = load_file(str(art_kv / "delta.safetensors"))
    rep = _export(art_kv, tmp_path / "kv", "--format", "kohya")
    assert {r["rank"] for r in rep["tensors"]} == {1}  # UCE-like edits stay rank 1
    pipe = _pipe(base)
    pipe.load_lora_weights(str(tmp_path / "kv"), weight_name=rep["file"])
    merged = _out(_unet_plus(base, kv), probe)
    assert _rel(_out(pipe.unet, probe), merged, merged - base_out) < 1e-4


@pytest.mark.parametrize(
    "opts, message",
    [
        (["--format", "lora", "--rank", "0"], "--rank must be a positive integer"),
        (["--format", "kohya", "--energy", "1.5"], "--energy must be in (0, 1]"),
        (["--rank", "4"], "apply to --format lora and kohya only"),
        (["--format", "lora", "--dtype", "fp8"], "unknown --dtype"),
    ],
)
def test_export_bad_options(art, tmp_path, opts, message):
    r = runner.invoke(app, ["export", str(art), "--out", str(tmp_path / "o"), *opts])
    assert r.exit_code == 2
    assert message in r.output
    assert not (tmp_path / "o").exists()


def test_artifact_card_is_a_hub_model_card(art, base):
    from huggingface_hub import ModelCard

    from unsee.cards import artifact_readme

    data = ModelCard.load(art / "README.md").data.to_dict()
    assert data["license"] == LICENSE  # inherited from the base's card
    assert data["library_name"] == "unsee"
    assert {"concept-erasure", "text-to-image", "esd-x"} <= set(data["tags"])
    assert "base_model" not in data  # a local path is not a hub id
    text = (art / "README.md").read_text()
    assert "## Limitations" in text and "load_file('delta.safetensors')" in text
    # a hub base is named as base_model; ToyWorld's licence is unsee's
    card = json.loads((art / "model_card.json").read_text())
    card["base"]["model_id"] = "CompVis/stable-diffusion-v1-4"
    path = art.parent / "hub.md"
    path.write_text(artifact_readme(card))
    assert ModelCard.load(path).data.base_model == "CompVis/stable-diffusion-v1-4"
    card["base"]["model_id"] = "toyworld"
    path.write_text(artifact_readme(card))
    assert ModelCard.load(path).data.license == "apache-2.0"


def test_merged_export_keeps_safety_checker_and_has_a_card(art, base, tmp_path):
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import ModelCard

    _export(art, tmp_path / "merged")
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "merged"))
    assert pipe.safety_checker is not None and pipe.feature_extractor is not None
    data = ModelCard.load(tmp_path / "merged" / "README.md").data.to_dict()
    assert data["library_name"] == "diffusers" and data["license"] == LICENSE
    assert "from_pretrained('<this folder>')" in (tmp_path / "merged" / "README.md").read_text()
    delta = load_file(str(art / "delta.safetensors"))
    inputs = _inputs()
    assert torch.allclose(_out(pipe.unet, inputs), _out(_unet_plus(base, delta), inputs), atol=1e-6)


def test_lora_export_card(art, tmp_path):
    from huggingface_hub import ModelCard

    _export(art, tmp_path / "l", "--format", "lora")
    data = ModelCard.load(tmp_path / "l" / "README.md").data.to_dict()
    assert data["library_name"] == "diffusers" and "lora" in data["tags"]
    assert data["license"] == LICENSE
    text = (tmp_path / "l" / "README.md").read_text()
    assert "pipe.load_lora_weights('<this folder>')" in text
    assert NORM in text  # what is left out is said
    # every file follows the umask, like the README (safetensors alone would create it 0600)
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "l").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_toyworld_lora_loads_into_its_unet(toyworld, tmp_path):
    """ToyWorld has no diffusers pipeline: its card says `unet.load_lora_adapter(folder,
    prefix='unet', weight_name=...)`, which must give the stated residual."""
    from diffusers import UNet2DConditionModel

    from unsee.artifacts import fingerprint, write_artifact
    from unsee.models.model_ids import TOYWORLD_DIR

    params = dict(toyworld.unet.named_parameters())
    g = torch.Generator().manual_seed(5)
    names = [n for n in params if ".attn2." in n and n.endswith(".weight")][:6]
    delta = {
        n: 0.1 * float(params[n].abs().mean()) * torch.randn(params[n].shape, generator=g)
        for n in names
    }
    card = {
        "format": "unsee-artifact/1",
        "method": "esd-x",
        "concepts": [{"name": "star"}],
        "base": {"model_id": "toyworld", "fingerprint": fingerprint(toyworld.unet)},
        "scope": "test",
        "ledger": [],
    }
    art = write_artifact(tmp_path / "art", delta, card)
    report = _export(art, tmp_path / "lora", "--format", "lora", "--rank", "8")
    assert "load_lora_adapter" in (tmp_path / "lora" / "README.md").read_text()
    from unsee.lora import probe_inputs

    probe = probe_inputs(
        toyworld.unet,
        toyworld.encode_prompts(report["output_residual"]["prompts"]),
        toyworld.latent_shape,
        1000,
    )

    def unet_plus(add):
        unet = UNet2DConditionModel.from_pretrained(
            TOYWORLD_DIR / "unet", torch_dtype=torch.float32
        )
        with torch.no_grad():
            p = dict(unet.named_parameters())
            for n, d in add.items():
                p[n].add_(d)
        return unet

    base_out, merged = _out(unet_plus({}), probe), _out(unet_plus(delta), probe)
    unet = unet_plus({})
    unet.load_lora_adapter(str(tmp_path / "lora"), prefix="unet", weight_name=report["file"])
    measured = _rel(_out(unet, probe), merged, merged - base_out)
    assert measured == pytest.approx(report["output_residual"]["relative"], rel=1e-3, abs=1e-5)
