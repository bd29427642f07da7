"""ToyWorld-SD's UNet recipe and the assembled folder: resumable, and a plain
``StableDiffusionPipeline.from_pretrained`` loads and samples it (tiny configs, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toyworld_sd_fixtures import _same_weights, _tiny_clip_cfg, _tiny_vae_cfg, clip_tokenizer_dir

__all__ = ["clip_tokenizer_dir"]  # the fixture, imported for pytest


@pytest.fixture(scope="module")
def frozen_parts(tmp_path_factory, clip_tokenizer_dir):
    """Tiny exports of the VAE and CLIP recipes (two steps each)."""
    from unsee.toyworld.sd.clip import train_clip
    from unsee.toyworld.sd.vae import train_vae

    root = tmp_path_factory.mktemp("sd-parts")
    train_vae(root / "vae", _tiny_vae_cfg(steps=2), export_dir=root / "vae-export", data_dir=root)
    (root / "clip").mkdir()
    (root / "clip" / "tokenizer").symlink_to(clip_tokenizer_dir)
    train_clip(
        root / "clip", _tiny_clip_cfg(steps=2), export_dir=root / "clip-export", data_dir=root
    )
    return root / "vae-export", root / "clip-export", root


def _tiny_unet_cfg(**kw):
    from unsee.toyworld.sd.unet import UNetTrainConfig

    base = {
        "steps": 4,
        "batch_size": 4,
        "dataset_size": 48,
        "checkpoint_every": 2,
        "block_out_channels": (16, 32, 32),
        "attention_heads": 2,
    }
    return UNetTrainConfig(**{**base, **kw})


def _unet_and_ema(work: Path, cfg, width: int):
    from diffusers import UNet2DConditionModel

    from unsee.toyworld.sd.common import load_checkpoint
    from unsee.toyworld.sd.unet import unet_config

    unet = UNet2DConditionModel(**unet_config(cfg, width))
    state, extra = load_checkpoint(work, {"unet": unet}, {})
    return unet.state_dict(), extra, state


def test_unet_resume_after_kill_is_bit_identical(tmp_path, frozen_parts):
    from unsee.toyworld.sd.unet import train_unet

    vae_dir, clip_dir, root = frozen_parts
    cfg = _tiny_unet_cfg()
    train_unet(tmp_path / "a", cfg, vae_dir, clip_dir, data_dir=root)
    train_unet(tmp_path / "b", cfg, vae_dir, clip_dir, data_dir=root, stop_after=3)
    train_unet(tmp_path / "b", cfg, vae_dir, clip_dir, data_dir=root)
    ua, ea, sa = _unet_and_ema(tmp_path / "a", cfg, 32)
    ub, eb, _ = _unet_and_ema(tmp_path / "b", cfg, 32)
    assert _same_weights(ua, ub)
    assert _same_weights(ea, eb) and ea  # the EMA too
    assert sa.step == 4 and all(np.isfinite(sa.log))


def test_assembled_folder_is_plain_stable_diffusion(tmp_path, frozen_parts):
    from diffusers import StableDiffusionPipeline

    from unsee.toyworld.sd.unet import SD14_SCHEDULER_CONFIG, train_unet

    vae_dir, clip_dir, root = frozen_parts
    out = tmp_path / "pipe"
    train_unet(
        tmp_path / "w", _tiny_unet_cfg(steps=2), vae_dir, clip_dir, out_dir=out, data_dir=root
    )
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    libs = {v[0] for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    assert libs == {"diffusers", "transformers"}  # nothing of unsee is needed to load it
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert {k: sched[k] for k in SD14_SCHEDULER_CONFIG} == SD14_SCHEDULER_CONFIG
    assert sched["prediction_type"] == "epsilon"
    assert all((out / "tokenizer" / f).exists() for f in ("vocab.json", "merges.txt"))

    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert pipe.tokenizer.model_max_length == 77 and len(pipe.tokenizer) == 49408
    assert pipe.vae.config.scaling_factor == 0.18215 and pipe.vae_scale_factor == 4
    pipe.set_progress_bar_config(disable=True)
    # the UNet was trained on exactly the conditioning the pipeline computes
    from unsee.toyworld.sd.unet import encode_prompts

    prompts = ["a red star", ""]
    ours = encode_prompts(pipe.text_encoder, pipe.tokenizer, prompts)
    theirs = torch.cat([pipe.encode_prompt(p, "cpu", 1, False)[0] for p in prompts])
    assert ours.shape == (2, 77, pipe.text_encoder.config.hidden_size)
    assert torch.equal(ours, theirs)

    def draw(seed: int) -> np.ndarray:
        return pipe(
            ["a red star", "a plain white background"],
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images

    a, b = draw(0), draw(0)
    assert a.shape == (2, 32, 32, 3) and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.array_equal(a, draw(1))


@pytest.mark.slow
def test_assembled_folder_loads_without_unsee(tmp_path, frozen_parts):
    """A fresh interpreter with plain diffusers loads and samples the folder and never
    imports unsee."""
    from unsee.toyworld.sd.unet import train_unet

    vae_dir, clip_dir, root = frozen_parts
    out = tmp_path / "pipe"
    train_unet(
        tmp_path / "w", _tiny_unet_cfg(steps=1), vae_dir, clip_dir, out_dir=out, data_dir=root
    )
    code = (
        "import sys, torch\n"
        "from diffusers import StableDiffusionPipeline\n"
        f"p = StableDiffusionPipeline.from_pretrained({str(out)!r})\n"
        "p.set_progress_bar_config(disable=True)\n"
        "im = p('a blue heart', num_inference_steps=3, output_type='np',"
        " generator=torch.Generator().manual_seed(0)).images\n"
        "assert im.shape == (1, 32, 32, 3), im.shape\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'unsee']\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def test_unet_refuses_an_unfolded_vae(tmp_path, frozen_parts):
    from diffusers import AutoencoderKL

    from unsee.errors import UnseeError
    from unsee.toyworld.sd.unet import train_unet

    vae_dir, clip_dir, root = frozen_parts
    vae = AutoencoderKL.from_pretrained(str(vae_dir))
    vae.register_to_config(scaling_factor=0.5)
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(UnseeError, match=r"0\.18215"):
        train_unet(tmp_path / "w", _tiny_unet_cfg(), tmp_path / "vae", clip_dir, data_dir=root)


def test_warm_restart_starts_from_a_shipped_folder(tmp_path, frozen_parts):
    """``train-sd --init-from``: a pipeline folder's parts unpack to the exports the recipe
    reads (the same conditioning and decoder), its UNet is where the run starts, and a resume
    from another starting point is refused."""
    from diffusers import UNet2DConditionModel

    from unsee.errors import UnseeError
    from unsee.toyworld.sd.unet import (
        UNetTrainConfig,
        _file_digest,
        encode_prompts,
        export_unet,
        load_frozen_parts,
        train_unet,
        unpack_pipeline,
    )

    vae_dir, clip_dir, root = frozen_parts
    cfg = _tiny_unet_cfg(steps=2, lr=1e-2, warmup=1)  # Adam: every weight moves ~lr a step
    train_unet(tmp_path / "cold", cfg, vae_dir, clip_dir, data_dir=root)
    shipped = tmp_path / "shipped"
    manifest = {"family": "toyworld-sd", "vocabulary": "toyworld", "resolution": 32}
    export_unet(tmp_path / "cold", cfg, vae_dir, clip_dir, shipped, manifest, dtype=torch.float16)

    vae2, clip2, unet_dir = unpack_pipeline(shipped, tmp_path / "init")
    digests = _file_digest(vae2), _file_digest(clip2)
    # unpacked afresh on every call, to the same bytes: a resumed run's digests match
    assert unpack_pipeline(shipped, tmp_path / "init")[:2] == (vae2, clip2)
    assert (_file_digest(vae2), _file_digest(clip2)) == digests
    vae_a, text_a, tok_a = load_frozen_parts(vae_dir, clip_dir)
    vae_b, text_b, tok_b = load_frozen_parts(vae2, clip2)
    prompts = ["a red star", ""]
    # float16 storage rounds the text tower and the VAE; they stay the same model
    assert torch.allclose(
        encode_prompts(text_a, tok_a, prompts), encode_prompts(text_b, tok_b, prompts), atol=2e-2
    )
    assert all(
        torch.allclose(v, vae_b.state_dict()[k], atol=1e-2) for k, v in vae_a.state_dict().items()
    )

    start = UNet2DConditionModel.from_pretrained(str(unet_dir), torch_dtype=torch.float32)
    # a learning rate too small to move anything: the weights after one step are the start
    warm = _tiny_unet_cfg(steps=1, lr=1e-12)
    out = tmp_path / "warm-pipe"
    train_unet(tmp_path / "warm", warm, vae2, clip2, data_dir=root, init_unet=unet_dir)
    trained, ema, state = _unet_and_ema(tmp_path / "warm", warm, 32)
    assert state.step == 1
    assert all(torch.allclose(v, trained[k], atol=1e-6) for k, v in start.state_dict().items())
    assert all(torch.allclose(v, ema[f"ema.{k}"], atol=1e-6) for k, v in start.state_dict().items())
    train_unet(tmp_path / "fresh", warm, vae2, clip2, data_dir=root)  # no starting point
    fresh, _, _ = _unet_and_ema(tmp_path / "fresh", warm, 32)
    assert not all(torch.allclose(v, trained[k], atol=1e-3) for k, v in fresh.items())

    # an export builds the run's UNet from the settings it was made with (lr 1e-12 here)
    assert UNetTrainConfig.of_run(tmp_path / "warm") == warm
    export_unet(tmp_path / "warm", UNetTrainConfig.of_run(tmp_path / "warm"), vae2, clip2, out)
    made = json.loads((out / "toyworld_sd.json").read_text())
    assert made["steps"] == 1 and made["config"]["init_from"] and made["config"]["lr"] == 1e-12

    other = tmp_path / "other"
    export_unet(tmp_path / "warm", warm, vae2, clip2, other)  # another starting point
    with pytest.raises(UnseeError, match="init_from"):
        train_unet(tmp_path / "warm", warm, vae2, clip2, data_dir=root, init_unet=other / "unet")
