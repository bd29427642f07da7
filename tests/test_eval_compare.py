"""``unsee eval`` with several ``--erased``: ``--compare`` scores each artifact as its own
model beside the others (one base, generated once, the same seeds), ``--stack`` applies
them together as one model (the behaviour before the choice existed), and neither is
refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unsee.models.sampling as sampling
from unsee.cli import app
from unsee.errors import UnseeError
from unsee.evaluate.runner import applied
from unsee.evaluate.schema import read_scorecard, read_scorecards
from unsee.evaluate.scorecard import EvalSettings, evaluate
from unsee.models.bundle import load_bundle
from unsee.models.fingerprint import model_fingerprint

#: What is checked here is bookkeeping (which weights drew which image, and how often), so
#: one image per prompt in one DDIM step suffices and keeps this file near 30 s on 2 CPUs.
STEPS = 1
IMAGES = 1


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    from unsee.erase.engine import EraseConfig, run_erasure

    tmp = tmp_path_factory.mktemp("compare")
    star, circle = tmp / "star-uce", tmp / "circle-uce"
    run_erasure(EraseConfig(method="uce", concepts=["star"]), star)
    run_erasure(EraseConfig(method="uce", concepts=["circle"]), circle)
    return star, circle


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare-cache")


@pytest.fixture(scope="module")
def compared(artifacts, cache, tmp_path_factory):
    """``unsee eval --compare`` of both artifacts on a fresh cache, with what the sampler
    was asked to draw: (fingerprint of the weights, prompts, seeds) per call."""
    star, circle = artifacts
    drawn: list[tuple[str, list[str], list[int]]] = []
    generate = sampling.generate

    def counting(bundle, prompts, seeds, **kw):
        drawn.append((model_fingerprint(bundle), list(prompts), list(seeds)))
        return generate(bundle, prompts, seeds, **kw)

    out = tmp_path_factory.mktemp("compared") / "ev"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "generate", counting)
        res = _eval(
            cache, "--erased", str(star), "--erased", str(circle), "--compare", "--out", str(out)
        )
    return res, out, drawn


def _eval(cache: Path, *args: str):
    return CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            "toyworld",
            "--concept",
            "star",
            "--num-images",
            str(IMAGES),
            "--steps",
            str(STEPS),
            "--cache-dir",
            str(cache),
            *args,
        ],
    )


def _same(a: object, b: object) -> bool:
    """Equal JSON, floats to 1e-6 (features batched differently differ in the last bits);
    a scorecard's ``cost`` (times, cache hits) is left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) - {"cost"}
        return keys == set(b) - {"cost"} and all(_same(a[k], b[k]) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def test_compare_scores_each_artifact_beside_the_others(artifacts, cache, compared):
    star, circle = artifacts
    res, out, drawn = compared
    assert res.exit_code == 0, res.output
    data = json.loads((out / "scorecard.json").read_text())
    assert data["format"] == "unsee-comparison/1"
    cards = read_scorecards(out / "scorecard.json")
    assert [c.label for c in cards] == ["star-uce", "circle-uce"]
    assert [[e.path for e in c.erased] for c in cards] == [[str(star)], [str(circle)]]
    # on a fresh cache the sampler ran three times: the base once, then each artifact alone
    # on the base (nothing of the first stayed applied), all on the same prompts and seeds
    bundle = load_bundle("toyworld")
    weights = [model_fingerprint(bundle)]
    for art in (star, circle):
        with applied(bundle, [art]):
            weights.append(model_fingerprint(bundle))
    assert [fp for fp, _, _ in drawn] == weights
    assert all((p, s) == drawn[0][1:] for _, p, s in drawn)
    items = len(drawn[0][1])
    assert cards[0].cost.evaluation.base.images_generated == items
    assert [c.cost.evaluation.erased.images_generated for c in cards] == [items, items]
    a, b = data["scorecards"]
    assert a["concepts"]["star"]["target_rate_base"] == b["concepts"]["star"]["target_rate_base"]
    assert a["fid"]["base"] == b["fid"]["base"] and a["fid"]["erased"] != b["fid"]["erased"]
    html = (out / "report.html").read_text()
    for label in ("star-uce", "circle-uce"):
        assert f"{label}: target rate" in res.output and f"{label}</span></th>" in html
    with pytest.raises(UnseeError, match="read_scorecards"):
        read_scorecard(out / "scorecard.json")


def test_stack_is_one_model_with_every_artifact_applied(artifacts, cache, compared, tmp_path):
    star, circle = artifacts  # after `compared`: the base images come from the cache
    out = tmp_path / "ev"
    res = _eval(cache, "--erased", str(star), "--erased", str(circle), "--stack", "--out", str(out))
    assert res.exit_code == 0, res.output
    card = json.loads((out / "scorecard.json").read_text())
    assert card["format"] == "unsee-scorecard/1" and card["label"] == "star-uce+circle-uce"
    assert [e["path"] for e in card["erased"]] == [str(star), str(circle)]
    settings = EvalSettings(num_images=IMAGES, steps=STEPS, cache_dir=cache)
    both = evaluate("toyworld", [star, circle], ["star"], settings).scorecard
    assert _same(json.loads(json.dumps(both)), card)
    assert read_scorecards(out / "scorecard.json")[0].label == card["label"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [([], "add --compare (each its own model"), (["--compare", "--stack"], "exclude each other")],
)
def test_two_artifacts_need_one_choice(artifacts, tmp_path, monkeypatch, flags, words):
    import unsee.models.bundle as bundle

    def no_model(*a, **kw):
        raise AssertionError("a model was loaded before the choice was checked")

    monkeypatch.setattr(bundle, "load_bundle", no_model)
    star, circle = artifacts
    res = _eval(
        tmp_path / "cache",
        "--erased",
        str(star),
        "--erased",
        str(circle),
        *flags,
        "--out",
        str(tmp_path / "o"),
    )
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error: ") and words in res.output
    assert not (tmp_path / "o").exists()
