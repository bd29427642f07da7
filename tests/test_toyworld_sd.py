"""ToyWorld-SD recipes (issue 18): the real CLIP tokenizer built offline, the training scenes,
the VAE with its folded latent scale, and the CLIP recipe; tiny configurations, CPU."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from toyworld_sd_fixtures import _same_weights, _tiny_clip_cfg, _tiny_vae_cfg, clip_tokenizer_dir
from unsee.toyworld.sd import data as sd_data

__all__ = ["clip_tokenizer_dir"]  # the fixture, imported for pytest


# ------------------------------------------------------------------------------ tokenizer


def test_tokenizer_gives_openai_clip_ids(clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir), local_files_only=True)
    assert len(tok) == 49408
    assert tok.model_max_length == 77
    # Known OpenAI CLIP ids (what SD's tokenizer gives).
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("a red star").input_ids[1:3] == [320, 736]
    padded = tok("a", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[:3] == [49406, 320, 49407] and set(padded[2:]) == {49407}
    # The slow-tokenizer files ship too, and agree with the fast tokenizer.
    vocab = json.loads((clip_tokenizer_dir / "vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["a</w>"] == 320 and vocab["red</w>"] == 736
    merges = (clip_tokenizer_dir / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == 48894


def test_bpe_file_is_checked(tmp_path, monkeypatch):
    from unsee.errors import UnseeError
    from unsee.toyworld.sd.tokenizer import find_bpe_file

    fake = tmp_path / "bpe.txt.gz"
    fake.write_bytes(b"not the file")
    monkeypatch.setenv("UNSEE_CLIP_BPE", str(fake))
    with pytest.raises(UnseeError, match="not CLIP's BPE"):
        find_bpe_file()


# ------------------------------------------------------------------------------ scenes


def test_scenes_without_shapes_leave_toyworld_unchanged():
    from unsee.toyworld.render import render_dataset

    ref, _ = render_dataset(40, 3)
    imgs, codes = sd_data.render_scenes(40, 3, 0.0)
    assert np.array_equal(ref, imgs) and (codes[:, 0] < 9).all()
    # With no-shape scenes, the shape scenes are still exactly ToyWorld's renders.
    imgs, codes = sd_data.render_scenes(40, 3, 0.5)
    keep = codes[:, 0] < 9
    assert 0 < keep.sum() < 40
    assert np.array_equal(ref[keep], imgs[keep])


def test_each_shape_is_rare_unconditionally():
    n, p_none = 1800, 0.5
    _, codes = sd_data.render_scenes(n, 11, p_none)
    share = np.bincount(codes[:, 0], minlength=len(sd_data.SCENE_SHAPES)) / n
    expected = (1 - p_none) / 9
    # binomial 4-sigma band around (1 - p_none) / 9 for each of the nine shapes
    tol = 4 * np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(share[:9] - expected) < tol), share[:9]
    assert abs(share[9:].sum() - p_none) < 4 * np.sqrt(p_none * (1 - p_none) / n)


def test_captions_name_what_the_scene_shows():
    from unsee.toyworld.vocab import SHAPES, SUPERCLASSES, TRAIN_SYNONYMS

    _, codes = sd_data.render_scenes(400, 5, 0.5)
    table = sd_data.caption_constraints()
    rng = random.Random(0)
    shape_words = (
        set(SHAPES)
        | set(SUPERCLASSES)
        | {s for k, v in TRAIN_SYNONYMS.items() if k in SHAPES for s in v}
    )
    for code in codes:
        cap = sd_data.sample_scene_caption(code, rng)
        assert table[cap].matches(code[None])[0], cap
        named = any(w in cap for w in shape_words)
        assert named == sd_data.is_shape(code[0]), cap
    # a caption that names a shape matches no scene without one
    assert not table["a star"].matches(np.array([[9, 0, 0, 0]]))[0]
    assert sd_data.all_scene_captions()[-1] == ""


# ------------------------------------------------------------------------------ VAE


def test_vae_resume_after_kill_is_bit_identical(tmp_path):
    from unsee.toyworld.sd.vae import load_trained_vae, train_vae

    cfg = _tiny_vae_cfg()
    train_vae(tmp_path / "a", cfg, data_dir=tmp_path)
    train_vae(tmp_path / "b", cfg, data_dir=tmp_path, stop_after=5)  # killed after step 5
    ck = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert ck["step"] == 4  # the step-5 update was lost with the process
    train_vae(tmp_path / "b", cfg, data_dir=tmp_path)
    a = load_trained_vae(tmp_path / "a", cfg).state_dict()
    b = load_trained_vae(tmp_path / "b", cfg).state_dict()
    assert _same_weights(a, b)
    assert not list(tmp_path.glob("**/*.pt")) and not list(tmp_path.glob("**/*.pkl"))


def test_vae_checkpoint_refuses_other_settings(tmp_path):
    from unsee.errors import UnseeError
    from unsee.toyworld.sd.vae import train_vae

    train_vae(tmp_path / "w", _tiny_vae_cfg(steps=2), data_dir=tmp_path)
    with pytest.raises(UnseeError, match="different settings"):
        train_vae(tmp_path / "w", _tiny_vae_cfg(steps=4, lr=3e-4), data_dir=tmp_path)
    # the length and the checkpoint interval may change between resumes
    train_vae(tmp_path / "w", _tiny_vae_cfg(steps=3, checkpoint_every=1), data_dir=tmp_path)
    assert json.loads((tmp_path / "w" / "checkpoint.json").read_text())["step"] == 3


def test_folded_vae_has_sd_scale_and_unit_variance(tmp_path):
    from diffusers import AutoencoderKL

    from unsee.toyworld.sd.vae import (
        SCALING_FACTOR,
        export_vae,
        latent_stats,
        load_trained_vae,
        reconstruct,
        train_vae,
    )

    cfg = _tiny_vae_cfg(steps=4)
    train_vae(tmp_path / "w", cfg, data_dir=tmp_path)
    report = export_vae(tmp_path / "w", tmp_path / "export", cfg)
    folded = AutoencoderKL.from_pretrained(str(tmp_path / "export")).eval()
    assert folded.config.scaling_factor == SCALING_FACTOR == 0.18215
    # before the fold the latents are not unit-variance at 0.18215 ...
    assert any(abs(s * SCALING_FACTOR - 1) > 0.5 for s in report["latent_before_fold"]["std"])
    # ... after it every channel of 0.18215 * latent has mean 0 and std 1 on the measured set
    assert np.allclose(report["scaled_latent_after_fold"]["std"], 1.0, atol=1e-4)
    assert np.allclose(report["scaled_latent_after_fold"]["mean"], 0.0, atol=1e-4)
    # and on fresh scenes it stays close to unit variance
    fresh = sd_data.to_float(sd_data.render_scenes(200, 77, 0.5)[0])
    _, std = latent_stats(folded, fresh)
    assert torch.all((std * SCALING_FACTOR - 1).abs() < 0.25), std * SCALING_FACTOR
    # the fold changes no reconstruction
    before = reconstruct(load_trained_vae(tmp_path / "w", cfg), fresh[:32])
    after = reconstruct(folded, fresh[:32])
    assert (before - after).abs().max() < 1e-4
    q = report["quality"]
    assert set(q["style_recall_on_reconstructions"]) == {"solid", "striped", "dotted", "checkered"}
    assert q["judge_on_renders"]["colour"] == 1.0


# ------------------------------------------------------------------------------ CLIP


def test_soft_contrastive_targets_split_over_true_matches():
    from unsee.toyworld.sd.clip import soft_contrastive_loss

    logits = torch.randn(3, 3)
    diag = torch.eye(3, dtype=torch.bool)
    plain = (
        torch.nn.functional.cross_entropy(logits, torch.arange(3))
        + torch.nn.functional.cross_entropy(logits.T, torch.arange(3))
    ) / 2
    assert torch.allclose(soft_contrastive_loss(logits, diag), plain)
    # caption 0 matches images 0 and 1: its target is half on each, so raising its logit for
    # image 1 lowers the loss, where the one-hot (diagonal) target would raise it
    pos = diag.clone()
    pos[0, 1] = True
    flat = torch.zeros(3, 3)
    up = flat.clone()
    up[0, 1] = 1.0
    assert soft_contrastive_loss(up, pos) < soft_contrastive_loss(flat, pos)
    assert soft_contrastive_loss(up, diag) > soft_contrastive_loss(flat, diag)


def test_clip_resume_after_kill_is_bit_identical(tmp_path, clip_tokenizer_dir):
    from unsee.toyworld.sd.clip import export_clip, load_trained_clip, train_clip

    cfg = _tiny_clip_cfg()
    for d in ("a", "b"):  # reuse the session's tokenizer build
        (tmp_path / d).mkdir()
        (tmp_path / d / "tokenizer").symlink_to(clip_tokenizer_dir)
    train_clip(tmp_path / "a", cfg, data_dir=tmp_path)
    train_clip(tmp_path / "b", cfg, data_dir=tmp_path, stop_after=3)
    train_clip(tmp_path / "b", cfg, data_dir=tmp_path)
    a, sa = load_trained_clip(tmp_path / "a", cfg)
    b, _ = load_trained_clip(tmp_path / "b", cfg)
    assert _same_weights(a.state_dict(), b.state_dict())
    assert sa.step == 4 and len(sa.log) == 4 and all(np.isfinite(sa.log))
    report = export_clip(tmp_path / "a", tmp_path / "export", cfg)
    zs = report["zero_shot"]
    assert all(0.0 <= v <= 1.0 for k, v in zs.items() if k not in ("images", "seed"))
    from transformers import CLIPModel

    reloaded = CLIPModel.from_pretrained(str(tmp_path / "export"))
    assert _same_weights(reloaded.state_dict(), a.state_dict())
    assert (tmp_path / "export" / "tokenizer" / "vocab.json").exists()


@pytest.mark.slow
def test_clip_distillation_moves_text_tower_towards_minilm(tmp_path, clip_tokenizer_dir):
    """The distillation stage lowers the cosine loss to MiniLM's sentence embeddings."""
    from unsee.toyworld.sd.clip import distillation_fidelity, load_trained_clip, train_clip

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(
            [
                "a dog on a sofa",
                "two cats asleep",
                "a train at a station",
                "a bowl of fruit",
                "a man riding a horse",
                "a red bus",
                "a kite in the sky",
                "a plate of pasta",
            ]
        )
    )
    cfg = _tiny_clip_cfg(
        steps=1,
        distil_steps=30,
        distil_corpus=str(corpus),
        distil_max_captions=5,
        checkpoint_every=31,
        lr=3e-3,
        warmup=5,
    )
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "tokenizer").symlink_to(clip_tokenizer_dir)
    train_clip(tmp_path / "w", cfg, data_dir=tmp_path)
    _, state = load_trained_clip(tmp_path / "w", cfg)
    distil = state.log[:30]
    assert np.mean(distil[-5:]) < np.mean(distil[:5]) - 0.05, distil
    fid = distillation_fidelity(tmp_path / "w", cfg, n=5)
    assert fid["held_out_captions"] == 3 and fid["distilled_captions"] == 5
    assert all(-1 <= fid[k] <= 1 for k in ("held_out_cosine", "distilled_cosine"))


def test_cli_recipes_validate_arguments():
    from typer.testing import CliRunner

    from unsee.cli import app

    runner = CliRunner()
    for cmd in ("train-vae", "train-clip", "train-sd"):
        res = runner.invoke(app, ["toyworld", cmd, "--steps", "0"])
        assert res.exit_code == 2 and "must be positive" in res.output, res.output
    res = runner.invoke(app, ["toyworld", "train-clip", "--distil-steps", "5"])
    assert res.exit_code == 2 and "--distil-corpus" in res.output


def test_train_sd_needs_the_exports(tmp_path):
    from typer.testing import CliRunner

    from unsee.cli import app

    res = CliRunner().invoke(
        app,
        [
            "toyworld",
            "train-sd",
            "--vae",
            str(tmp_path / "no-vae"),
            "--clip",
            str(tmp_path / "no-clip"),
            "--work-dir",
            str(tmp_path / "w"),
        ],
    )
    assert res.exit_code == 2 and "train-vae" in res.output, res.output
    assert not (tmp_path / "w" / "checkpoint.safetensors").exists()
