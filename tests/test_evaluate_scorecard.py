"""The scorecard end to end on a tiny Stable Diffusion (random CLIP judge, known answers:
a model against itself, the cache, artifacts applied and removed) and the ``eval`` CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evaluate_fixtures import build_tiny_clip
from unsee.artifacts import fingerprint, write_artifact
from unsee.cli import app
from unsee.evaluate.scorecard import EvalSettings, evaluate, evaluate_models
from unsee.models.bundle import load_bundle
from unsee.report.html import render_report

CONCEPT, RETAIN = "tench", ("church", "golf ball")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def artifact(tiny_sd, tmp_path_factory) -> Path:
    """A hand-made erasure artifact for the tiny SD: noise on the cross-attention keys."""
    bundle = load_bundle(tiny_sd)
    g = torch.Generator().manual_seed(0)
    delta = {
        n: 0.5 * torch.randn(p.shape, generator=g)
        for n, p in bundle.unet.named_parameters()
        if "attn2.to_k" in n
    }
    card = {
        "method": "test-noise",
        "summary": "noise on attn2.to_k",
        "concepts": [{"name": CONCEPT, "anchor": ""}],
        "scope": "attn2.to_k",
        "hyperparameters": {"iterations": 0, "lr": 0, "batch_size": 1},
        "base": {"model_id": str(tiny_sd), "fingerprint": fingerprint(bundle.unet)},
        "cost": {"wall_seconds": 1.5, "device": "cpu", "peak_rss_mb": 100.0},
    }
    return write_artifact(tmp_path_factory.mktemp("art") / "noise", delta, card)


def _settings(clip: Path, cache: Path | None, **kw) -> EvalSettings:
    return EvalSettings(
        num_images=2,
        steps=3,
        seed=5,
        judge=f"clip:{clip}",
        clip=str(clip),
        retain=RETAIN,
        cache_dir=cache,
        **kw,
    )


def test_base_against_itself_has_zero_drop_and_the_cache_serves_the_rerun(
    tiny_sd, tiny_clip, tmp_path
):
    first = evaluate(str(tiny_sd), [], [CONCEPT], _settings(tiny_clip, tmp_path / "cache"))
    card = first.scorecard
    c = card["concepts"][CONCEPT]
    assert c["target_rate"] == c["target_rate_base"]
    assert c["erasure"] == pytest.approx(1 - c["target_rate"])
    # every rate carries its image count and a Wilson interval; itself vs itself is noise
    assert c["images"] == 3 * card["num_images"]
    lo, hi = c["target_rate_ci95"]
    assert lo <= c["target_rate"] <= hi and hi - lo > 0.2  # 6 images: a wide interval
    assert c["change"]["difference"] == 0 and not c["change"]["beyond_noise"]
    ret = card["retain"]
    assert ret["pairs"] >= ret["images"] and not ret["change"]["beyond_noise"]
    assert card["fid"]["name"] in ("FD, judge features", "FD, CLIP features")
    assert card["retain"]["drop"] == 0.0
    assert all(v["drop"] == 0.0 for v in card["retain"]["by_concept"].values())
    assert set(card["retain"]["by_concept"]) == set(RETAIN)
    assert card["fid"]["erased"] == pytest.approx(0.0, abs=1e-8)  # same images, same features
    assert card["clip_score"]["retain"]["drop"] == 0.0
    n_items = card["num_images"] * (3 + len(RETAIN))  # 3 target prompts, 1 per retain concept
    ev = card["cost"]["evaluation"]
    assert ev["base"]["images_generated"] == n_items
    assert ev["erased"]["images_from_cache"] == n_items  # same fingerprint: never redrawn

    second = evaluate(str(tiny_sd), [], [CONCEPT], _settings(tiny_clip, tmp_path / "cache"))
    assert second.scorecard["cost"]["evaluation"]["base"]["images_generated"] == 0
    strip = ("cost",)
    assert {k: v for k, v in second.scorecard.items() if k not in strip} == {
        k: v for k, v in card.items() if k not in strip
    }
    for a, b in zip(first.grids, second.grids, strict=True):
        np.testing.assert_array_equal(a.base, b.base)


def test_erased_model_is_scored_and_the_base_weights_are_restored(
    tiny_sd, tiny_clip, artifact, tmp_path
):
    bundle = load_bundle(tiny_sd)
    before = fingerprint(bundle.unet)
    results = evaluate_models(
        bundle,
        {"noise": [artifact], "none": []},
        [CONCEPT],
        _settings(tiny_clip, tmp_path / "cache"),
    )
    assert fingerprint(bundle.unet) == before
    noise, none = (r.scorecard for r in results)
    assert noise["erased"][0]["method"] == "test-noise"
    assert noise["erased"][0]["id"] and noise["cost"]["erasure"][0]["wall_seconds"] == 1.5
    # the artifact moved the images in the (random, nearly flat) CLIP feature space
    assert noise["fid"]["erased"] > 1e-4
    assert none["fid"]["erased"] == pytest.approx(0.0, abs=1e-8)
    assert none["retain"]["drop"] == 0.0
    # both compare against the same base numbers
    assert (
        noise["concepts"][CONCEPT]["target_rate_base"]
        == none["concepts"][CONCEPT]["target_rate_base"]
    )
    grid_noise, grid_none = results[0].grids[0], results[1].grids[0]
    np.testing.assert_array_equal(grid_noise.base, grid_none.base)
    np.testing.assert_array_equal(grid_none.erased, grid_none.base)
    assert np.abs(grid_noise.erased.astype(int) - grid_noise.base.astype(int)).max() > 10


def test_prompts_file_rows_use_their_evaluation_seed(tiny_sd, tiny_clip, tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text(
        "prompt,evaluation_seed\na photo of tench,101\na church at night,202\na golf ball,303\n"
    )
    r = evaluate(str(tiny_sd), [], [CONCEPT], _settings(tiny_clip, None, prompts_file=csv, limit=2))
    pf = r.scorecard["prompts_file"]
    assert pf["prompts"] == 2 and pf["images"] == 4  # limit 2 rows, 2 images each
    assert pf["target_rate"] == pf["target_rate_base"]
    grid = next(g for g in r.grids if g.title == "prompts file")
    assert grid.prompts == ["a photo of tench", "a church at night"]
    assert grid.seeds == [[101, 102], [202, 203]]


def _run_cli(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def test_eval_cli_writes_scorecard_and_report(tiny_sd, tiny_clip, artifact, tmp_path):
    out = tmp_path / "out"
    res = _run_cli(
        "--model",
        str(tiny_sd),
        "--erased",
        str(artifact),
        "--concept",
        CONCEPT,
        "--retain",
        RETAIN[0],
        "--retain",
        RETAIN[1],
        "--judge",
        f"clip:{tiny_clip}",
        "--num-images",
        "2",
        "--steps",
        "3",
        "--seed",
        "9",
        "--no-cache",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "scorecard.json").read_text())
    for key in (
        "model",
        "erased",
        "judge",
        "num_images",
        "seed",
        "concepts",
        "retain",
        "fid",
        "overall",
        "cost",
    ):
        assert key in card
    assert card["num_images"] == 2 and card["seed"] == 9
    assert set(card["concepts"][CONCEPT]) >= {"target_rate_base", "target_rate", "erasure"}
    assert set(card["retain"]) >= {"accuracy_base", "accuracy", "drop", "by_concept"}
    html = (out / "report.html").read_text()
    assert "test-noise" in html and "data:image/png;base64," in html
    assert "target rate" in res.output


@pytest.mark.parametrize(
    "case", ["missing artifact", "empty prompts", "unknown concept", "no judge", "bad count"]
)
def test_eval_cli_bad_inputs_fail_with_one_line(case, tiny_sd, tmp_path):
    args = [
        "--model",
        str(tiny_sd),
        "--concept",
        CONCEPT,
        "--judge",
        "nudenet",
        "--out",
        str(tmp_path / "o"),
    ]
    if case == "missing artifact":
        args += ["--erased", str(tmp_path / "nope")]
        expect = "not an unsee artifact"
    elif case == "empty prompts":
        (tmp_path / "empty.txt").write_text("\n\n")
        args += ["--prompts", str(tmp_path / "empty.txt")]
        expect = "contains no prompts"
    elif case == "unknown concept":
        args = ["--model", "toyworld", "--concept", "dragon", "--out", str(tmp_path / "o")]
        expect = "unknown ToyWorld concept 'dragon'"
    elif case == "no judge":
        args = ["--model", str(tiny_sd), "--concept", CONCEPT, "--out", str(tmp_path / "o")]
        expect = "needs a judge"
    else:
        args += ["--num-images", "0"]
        expect = "--num-images must be positive"
    res = _run_cli(*args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_nudity_on_i2p_rows_reports_nudenet_counts(tiny_sd, tmp_path):
    from conftest import SHARED

    i2p = SHARED / "data" / "prompts" / "sexual_data.csv"
    r = evaluate(
        str(tiny_sd),
        [],
        ["nudity"],
        EvalSettings(num_images=1, steps=2, prompts_file=i2p, limit=3, cache_dir=None),
    )
    card = r.scorecard
    assert card["judge"] == "nudenet"  # the default judge for nudity
    nud = card["nudity"]
    assert nud["threshold"] == 0.6 and len(nud["classes"]) == 9
    assert nud["prompts_file"]["images"] == 3
    # noise images of 16 px: nothing exposed, for the base as for the "erased" copy
    assert nud["prompts_file"]["counts_base"]["total"] == 0
    assert nud["prompts_file"]["boxes_base"]["total"] == 0  # MACE counts boxes
    assert nud["nudenet_version"] == card["judge_settings"]["nudenet_version"] != "unknown"
    assert nud["prompts_file"]["rate_base_ci95"][0] == 0.0
    assert nud["prompts_file"]["rate_erased"] == 0.0
    assert card["prompts_file"]["target_rate_base"] == 0.0
    assert card["retain"]["accuracy"] is None and card["overall"] is None
    grid = next(g for g in r.grids if g.title == "prompts file")
    assert grid.seeds[0] == [1867756129]  # the row's evaluation_seed
    html = render_report([r])
    assert "Nudity (NudeNet, threshold 0.6)" in html and "No retain prompts" in html
