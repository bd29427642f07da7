"""The scorecard on the bundled ToyWorld model: the base against itself, and the ESD-x
erasure of `star` (the issue's done criterion) read from `unsee eval`."""

import json

import pytest
from typer.testing import CliRunner

from unsee.cli import app
from unsee.evaluate.scorecard import EvalSettings, evaluate

STEPS = 20


def test_toyworld_base_against_itself(tmp_path):
    r = evaluate(
        "toyworld",
        [],
        ["star"],
        EvalSettings(num_images=4, steps=STEPS, cache_dir=tmp_path / "cache"),
    )
    card = r.scorecard
    star = card["concepts"]["star"]
    assert star["target_rate_base"] == star["target_rate"] >= 0.75
    assert card["retain"]["drop"] == 0.0 and card["retain"]["neighbour"]["drop"] == 0.0
    assert card["retain"]["accuracy_base"] >= 0.7
    assert card["fid"]["base"] == pytest.approx(card["fid"]["erased"], rel=1e-6)
    assert card["overall"] == pytest.approx(
        2
        * star["erasure"]
        * card["retain"]["accuracy"]
        / (star["erasure"] + card["retain"]["accuracy"])
    )
    assert [g.title for g in r.grids][:2] == [
        "star: target prompts",
        "star: paraphrases (concept not named)",
    ]


@pytest.mark.slow
def test_esd_x_star_scorecard_from_the_cli(tmp_path, esd_x_star_toyworld):
    art = esd_x_star_toyworld
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            "toyworld",
            "--erased",
            str(art),
            "--concept",
            "star",
            "--num-images",
            "6",
            "--steps",
            str(STEPS),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "scorecard.json").read_text())
    star = card["concepts"]["star"]
    assert star["target_rate_base"] >= 0.75
    assert star["target_rate"] <= 0.3 and star["erasure"] >= 0.7
    assert card["retain"]["drop"] <= 0.15
    assert card["overall"] > 0.6
    assert card["erased"][0]["method"] == "esd-x"
    assert card["fid"]["base"] is not None and card["fid"]["erased"] is not None
