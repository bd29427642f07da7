"""The bundled ToyWorld-SD model: a real Stable Diffusion 1.x folder that plain diffusers
loads and samples with nothing of unsee imported, drawing the shapes it is asked for; unsee
loads the same folder as the ``toyworld-sd`` family, with its CLIP for the CLIP score."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from unsee.cli import app
from unsee.evaluate.judges import ClipModel
from unsee.models.bundle import load_bundle
from unsee.models.family import MANIFEST, TOYWORLD_SD
from unsee.models.model_ids import TOYWORLD_SD_DIR
from unsee.toyworld.judge import predict
from unsee.toyworld.sd.unet import SD14_SCHEDULER_CONFIG
from unsee.toyworld.vocab import compose_caption

runner = CliRunner()
SHAPES_DRAWN = ("star", "circle", "hexagon", "square", "arrow")
PER_SHAPE = 8

PLAIN_DIFFUSERS = """
import sys, json
import numpy as np, torch
from diffusers import StableDiffusionPipeline
folder, out = sys.argv[1], sys.argv[2]
prompts, guidance = json.loads(sys.argv[3]), float(sys.argv[4])
pipe = StableDiffusionPipeline.from_pretrained(folder)
pipe.set_progress_bar_config(disable=True)
dtypes = {n: str(getattr(pipe, n).dtype) for n in ("unet", "vae", "text_encoder")}
gens = [torch.Generator().manual_seed(2000 + i) for i in range(len(prompts))]
images = pipe(prompts, num_inference_steps=20, guidance_scale=guidance, generator=gens,
              output_type="np").images
np.save(out, (np.asarray(images) * 255).round().astype(np.uint8))
loaded = sorted(m for m in sys.modules if m == "unsee" or m.startswith("unsee."))
print(json.dumps({"dtypes": dtypes, "scheduler": type(pipe.scheduler).__name__,
                  "unsee_modules": loaded}))
"""


def test_plain_diffusers_draws_the_shapes(judge, tmp_path):
    """A fresh interpreter that never imports unsee: StableDiffusionPipeline with the
    folder's own PNDM scheduler, float32 on the CPU, draws each asked shape."""
    manifest = json.loads((TOYWORLD_SD_DIR / MANIFEST).read_text())
    prompts = [compose_caption(s) for s in SHAPES_DRAWN for _ in range(PER_SHAPE)]
    out = tmp_path / "images.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN_DIFFUSERS,
            str(TOYWORLD_SD_DIR),
            str(out),
            json.dumps(prompts),
            str(manifest["default_guidance"]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["unsee_modules"] == []
    assert info["scheduler"] == SD14_SCHEDULER_CONFIG["_class_name"]
    assert set(info["dtypes"].values()) == {"torch.float32"}
    images = np.load(out)
    assert images.shape == (len(prompts), 32, 32, 3)
    said = [p["label"] for p in predict(judge, images)["shape"]]
    for i, shape in enumerate(SHAPES_DRAWN):
        hits = sum(lab == shape for lab in said[i * PER_SHAPE : (i + 1) * PER_SHAPE])
        assert hits >= PER_SHAPE - 2, (shape, said[i * PER_SHAPE : (i + 1) * PER_SHAPE])


def test_unsee_loads_it_as_toyworld_sd():
    bundle = load_bundle("toyworld-sd")
    assert bundle.family is TOYWORLD_SD and bundle.vocabulary == "toyworld"
    assert bundle.vae is not None and bundle.latent_shape == (4, 8, 8)
    assert bundle.prediction_type == "epsilon"
    assert bundle.scheduler_config["beta_schedule"] == "scaled_linear"
    assert bundle.model_id == "toyworld-sd" and bundle.portable_id == "toyworld-sd"
    res = runner.invoke(app, ["toyworld", "path", "toyworld-sd"])
    assert res.exit_code == 0 and res.output.strip() == str(TOYWORLD_SD_DIR)


def test_its_clip_scores_matching_captions_higher():
    """``--clip toyworld`` loads the CLIP the text encoder was trained with, offline."""
    from unsee.toyworld.render import render_dataset

    clip = ClipModel("toyworld")
    images, attrs = render_dataset(24, seed=31)
    img = clip.image_embeds(images)
    right = clip.text_embeds([compose_caption(a.shape) for a in attrs])
    shifted = clip.text_embeds([compose_caption(a.shape) for a in attrs[1:] + attrs[:1]])
    same = np.array([a.shape == b.shape for a, b in zip(attrs, attrs[1:] + attrs[:1], strict=True)])
    score_right = (img * right).sum(1)
    score_shifted = (img * shifted).sum(1)
    assert (score_right[~same] > score_shifted[~same]).mean() >= 0.8
