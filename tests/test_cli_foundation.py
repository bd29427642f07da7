"""CLI of the foundation: render, generate, judge; bad input exits 2 and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unsee.cli import app

runner = CliRunner()


def test_render_writes_pngs_and_labels(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["toyworld", "render", "--n", "6", "--seed", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 6 and len(list(out.glob("*.png"))) == 6
    again = tmp_path / "r2"
    runner.invoke(app, ["toyworld", "render", "--n", "6", "--seed", "3", "--out", str(again)])
    assert (out / "000004.png").read_bytes() == (again / "000004.png").read_bytes()


def test_generate_index_and_determinism(tiny_sd, tmp_path):
    args = [
        "generate",
        "--model",
        str(tiny_sd),
        "--prompt",
        "a cat",
        "--prompt",
        "a dog",
        "--num-images",
        "2",
        "--steps",
        "3",
        "--seed",
        "7",
    ]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b")]).exit_code == 0
    index = json.loads((tmp_path / "a" / "index.json").read_text())["images"]
    assert [(i["prompt"], i["seed"]) for i in index] == [
        ("a cat", 7),
        ("a cat", 8),
        ("a dog", 7),
        ("a dog", 8),
    ]
    for item in index:
        a = np.asarray(Image.open(tmp_path / "a" / item["file"]))
        b = np.asarray(Image.open(tmp_path / "b" / item["file"]))
        assert a.shape == (16, 16, 3) and np.array_equal(a, b)


def test_generate_reads_csv_evaluation_seed(tiny_sd, tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("case,prompt,evaluation_seed\n0,a red car,1234\n1,a tree,\n")
    r = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(tiny_sd),
            "--prompts",
            str(csv),
            "--num-images",
            "1",
            "--steps",
            "2",
            "--seed",
            "5",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 0, r.output
    index = json.loads((tmp_path / "o" / "index.json").read_text())["images"]
    assert [(i["prompt"], i["seed"]) for i in index] == [("a red car", 1234), ("a tree", 5)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "no-such-model!", "--prompt", "x"], "unknown model"),
        (["--model", "{tiny}", "--prompts", "{empty}"], "contains no prompts"),
        (["--model", "{tiny}", "--prompts", "{missing}"], "does not exist"),
        (["--model", "{tiny}", "--prompt", "x", "--num-images", "0"], "must be positive"),
        (["--model", "{tiny}", "--prompt", "x", "--steps", "-1"], "must be positive"),
        (["--model", "{tiny}"], "give either --prompt"),
        (["--model", "{tiny}", "--prompts", "{nocol}"], "no 'prompt' column"),
    ],
)
def test_generate_bad_input(tiny_sd, tmp_path, extra, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("text\nhello\n")
    fill = {
        "{tiny}": str(tiny_sd),
        "{empty}": str(empty),
        "{missing}": str(tmp_path / "nope"),
        "{nocol}": str(nocol),
    }
    out = tmp_path / "out"
    r = runner.invoke(app, ["generate", *[fill.get(a, a) for a in extra], "--out", str(out)])
    assert r.exit_code == 2 and message in r.output, r.output
    assert r.output.strip().count("\n") == 0
    assert not out.exists()


def test_generate_refuses_non_empty_output(tiny_sd, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep")
    r = runner.invoke(
        app, ["generate", "--model", str(tiny_sd), "--prompt", "x", "--out", str(out)]
    )
    assert r.exit_code == 2 and "not empty, and it is not an unsee images folder" in r.output
    assert (out / "x").read_text() == "keep"


def test_render_bad_input(tmp_path):
    r = runner.invoke(app, ["toyworld", "render", "--n", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "must be positive" in r.output


def test_judge_cli_labels_rendered_images(tmp_path, judge):
    runner.invoke(
        app, ["toyworld", "render", "--n", "20", "--seed", "11", "--out", str(tmp_path / "r")]
    )
    r = runner.invoke(app, ["judge", str(tmp_path / "r"), "--out", str(tmp_path / "j.json")])
    assert r.exit_code == 0, r.output
    preds = json.loads((tmp_path / "j.json").read_text())
    truth = [json.loads(x) for x in (tmp_path / "r" / "labels.jsonl").read_text().splitlines()]
    hits = [
        p[h]["label"] == t[h]
        for p, t in zip(preds, truth, strict=True)
        for h in ("shape", "colour", "style", "background")
    ]
    assert np.mean(hits) >= 0.97
    assert (
        runner.invoke(
            app, ["judge", str(tmp_path / "nope"), "--out", str(tmp_path / "k.json")]
        ).exit_code
        == 2
    )
