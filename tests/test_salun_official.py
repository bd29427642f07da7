"""SalUn against the official recipe (issue 21): on Stable Diffusion 5 epochs at batch 8 over
a forget set of the official size (about 950 Imagenette images: 595 steps), ToyWorld's tuned
budget unchanged, and ``forget_dir`` trains on a folder of real images as the official
does (a bad folder is one clear line, before any model loads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unsee.erase.engine import EraseConfig, Erasure, validate
from unsee.errors import UnseeError


def _plan(model: str, concepts: list[str], sequential: bool = False, **params):
    return validate(
        EraseConfig(
            method="salun", concepts=concepts, model=model, sequential=sequential, params=params
        )
    )


def test_sd_plan_is_the_official_five_epochs_at_batch_8(tiny_sd):
    sd = _plan(str(tiny_sd), ["tench"])
    assert (sd.iterations, sd.batch_size, sd.lr) == (595, 8, 1e-5)
    assert sd.params.forget_images == 950  # 5 * ceil(950 / 8) = 595
    assert _plan(str(tiny_sd), ["tench"], forget_images=100).iterations == 5 * 13
    # concepts take turns: one epoch is every concept's images; a round is one concept's
    assert _plan(str(tiny_sd), ["tench", "church"]).iterations == 5 * 238
    assert _plan(str(tiny_sd), ["tench", "church"], sequential=True).iterations == 595
    toy = _plan("toyworld", ["star"])  # ToyWorld keeps its tuned budget
    assert (toy.iterations, toy.batch_size, toy.lr, toy.params.forget_images) == (80, 4, 1e-4, 0)


def _images(folder, n: int) -> list[np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):  # not square and not the model's size: fitted on loading
        pixels = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        out.append(pixels)
    (folder / "notes.txt").write_text("not an image")
    return out


def test_forget_dir_trains_on_the_folders_images(tiny_sd, tmp_path):
    _images(tmp_path / "tench", 5)
    plan = _plan(str(tiny_sd), ["tench"], forget_dir=str(tmp_path / "tench"))
    assert plan.iterations == 5  # 5 epochs of ceil(5 / 8) batches
    recipe = Erasure(
        EraseConfig(
            method="salun",
            concepts=["tench"],
            model=str(tiny_sd),
            iterations=1,
            batch_size=2,
            params={
                "forget_dir": str(tmp_path / "tench"),
                "forget_images": 2,
                "forget_steps": 2,
                "cache": False,
            },
        )
    )
    recipe.setup()
    bundle, forget = recipe.bundle, recipe.method.forget["tench"]
    assert len(forget) == 5 and forget.prompts == ["tench"] * 5
    # the first image, scaled to cover 16 x 16 (27 x 16) and centre-cropped, then encoded
    first = Image.open(tmp_path / "tench" / "0.png").resize((27, 16), Image.Resampling.BICUBIC)
    pixels = np.asarray(first.crop((5, 0, 21, 16)), dtype=np.float32) / 127.5 - 1.0
    expected = bundle.encode_images(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    torch.testing.assert_close(forget.latents[:1], expected.float())
    recipe.train()  # the saliency pass and a step run on the real images


@pytest.mark.parametrize(
    ("folder", "match"),
    [
        ("missing", "salun.forget_dir: .*missing is not a folder"),
        ("empty", "salun.forget_dir: .*empty holds no images"),
    ],
)
def test_a_bad_forget_dir_is_one_line_before_loading(tiny_sd, tmp_path, folder, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    for model in (str(tiny_sd), "toyworld"):
        with pytest.raises(UnseeError, match=match) as err:
            _plan(
                model,
                ["tench" if model != "toyworld" else "star"],
                forget_dir=str(tmp_path / folder),
            )
        assert "\n" not in str(err.value)


def test_an_unreadable_image_or_two_concepts_are_refused(tiny_sd, tmp_path):
    _images(tmp_path / "tench", 2)
    (tmp_path / "tench" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UnseeError, match="one concept"):
        _plan(str(tiny_sd), ["tench", "church"], forget_dir=str(tmp_path / "tench"))
    recipe = Erasure(
        EraseConfig(
            method="salun",
            concepts=["tench"],
            model=str(tiny_sd),
            params={"forget_dir": str(tmp_path / "tench"), "forget_steps": 2, "cache": False},
        )
    )
    with pytest.raises(UnseeError, match=r"cannot read image .*2\.jpg") as err:
        recipe.setup()
    assert "\n" not in str(err.value)
