"""report.html: self-contained, compares several erased models (each in one colour
throughout), captions and enlarges every thumbnail, writes attack prompts as words,
refuses mixed bases, and renders in headless Chromium (skipped where Chromium is not
installed)."""

import base64
import copy
import io
import re
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate_fixtures import build_tiny_clip
from unsee.artifacts import fingerprint, write_artifact
from unsee.errors import UnseeError
from unsee.evaluate.attacks import _soft
from unsee.evaluate.grids import AttackGrid
from unsee.evaluate.scorecard import EvalResult, EvalSettings, evaluate_models
from unsee.models.bundle import load_bundle
from unsee.report.html import BASE_COLOUR, MODEL_COLOURS, render_report, write_report

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "check_report.py"
sys.path.insert(0, str(CHECK.parent))
from check_report import external_references, find_chromium  # noqa: E402


def _artifact(tiny_sd: Path, folder: Path, scale: float, method: str) -> Path:
    bundle = load_bundle(tiny_sd)
    g = torch.Generator().manual_seed(1)
    delta = {
        n: scale * torch.randn(p.shape, generator=g)
        for n, p in bundle.unet.named_parameters()
        if "attn2.to_v" in n
    }
    card = {
        "method": method,
        "summary": "test delta",
        "scope": "attn2.to_v",
        "concepts": [{"name": "tench", "anchor": "fish"}],
        "base": {"model_id": str(tiny_sd), "fingerprint": fingerprint(bundle.unet)},
        "hyperparameters": {"iterations": 1, "lr": 1.0, "batch_size": 1},
        "cost": {"wall_seconds": 2.0, "device": "cpu", "peak_rss_mb": 1.0},
    }
    return write_artifact(folder, delta, card)


@pytest.fixture(scope="module")
def results(tiny_sd, tmp_path_factory) -> list[EvalResult]:
    tmp = tmp_path_factory.mktemp("report")
    clip = build_tiny_clip(tmp / "clip")
    arts = {
        "small": [_artifact(tiny_sd, tmp / "a", 0.2, "method-small")],
        "large": [_artifact(tiny_sd, tmp / "b", 2.0, "method-<large>")],
    }
    settings = EvalSettings(
        num_images=2,
        steps=3,
        judge=f"clip:{clip}",
        clip=str(clip),
        retain=("church", "golf ball"),
        cache_dir=tmp / "cache",
    )
    return evaluate_models(str(tiny_sd), arts, ["tench"], settings)


def test_report_is_self_contained_and_shows_every_model(results, tmp_path):
    path = write_report(tmp_path / "report.html", results, title="comparison")
    html = path.read_text()
    assert external_references(html) == []
    assert "<script" not in html
    # each grid row: one strip for the base and one per erased model; plus the charts
    rows = sum(len(g.prompts) for g in results[0].grids)
    strips = html.count('<td class="strip"><label class="thumb">')
    attack_rows = sum(len(g.prompts) for r in results for g in r.attack_grids)
    assert strips == rows * (1 + len(results)) + 2 * attack_rows
    assert html.count('alt="target rate (lower = erased)"') == 1
    for label in ("small", "large", "method-small"):
        assert label in html
    assert "method-&lt;large&gt;" in html and "method-<large>" not in html  # escaped
    # every thumbnail is its own image, captioned with the judge's label (red when it
    # counts as the concept) and wrapped in the checkbox that enlarges it on click
    thumbs = re.findall(
        r'<label class="thumb"><input type="checkbox"><span class="fig">'
        r'<img src="data:image/png;base64,[^"]+" width="\d+" alt="([^"]*)">'
        r'<span class="(cap(?: hit)?)">([^<]*)</span>',
        html,
    )
    grids = sum(g.base.shape[0] * g.base.shape[1] for g in results[0].grids)
    attacked = sum(
        2 * g.before.shape[0] * g.before.shape[1] for r in results for g in r.attack_grids
    )
    assert len(thumbs) == html.count('class="thumb"') == grids * (1 + len(results)) + attacked
    grid = results[0].grids[0]
    for (alt, cls, label), (want, hit), seed in zip(
        thumbs[: grid.base.shape[1]], grid.base_captions[0], grid.seeds[0], strict=True
    ):
        assert label == want and (cls == "cap hit") == hit
        assert alt == f"base: {grid.prompts[0]}, seed {seed}, judged {want}"
    tench = results[0].scorecard["concepts"]["tench"]
    lo, hi = tench["target_rate_ci95"]
    assert f"[{100 * lo:.0f}–{100 * hi:.0f}] n={tench['images']}" in html
    assert "Wilson" in html and "KID" in html


def _chart_pixels(html: str, title: str) -> set[tuple[int, int, int]]:
    """The RGB colours drawn in the chart titled ``title``."""
    b64 = re.search(rf'<img src="data:image/png;base64,([^"]+)" alt="{re.escape(title)}">', html)
    assert b64, title
    png = Image.open(io.BytesIO(base64.b64decode(b64.group(1)))).convert("RGB")
    return {tuple(int(v) for v in p) for p in np.asarray(png).reshape(-1, 3)}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_each_model_keeps_one_colour_in_every_chart_and_table(results):
    html = render_report(results)
    colours = {"base": BASE_COLOUR, "small": MODEL_COLOURS[0], "large": MODEL_COLOURS[1]}
    for title in ("target rate (lower = erased)", "retain accuracy by attribute (higher = kept)"):
        drawn = _chart_pixels(html, title)
        assert all(_rgb(c) in drawn for c in colours.values()), title
    # bars and legend: the base has no overall score, each model its own colour
    overall = _chart_pixels(html, "overall score (higher = better)")
    assert _rgb(MODEL_COLOURS[0]) in overall and _rgb(MODEL_COLOURS[1]) in overall
    for label, colour in colours.items():
        swatch = f'<span class="sw" style="background:{colour}"></span>{label}</span>'
        # summary, before/after headers, concept table, retain tables, cards: one colour each
        assert html.count(swatch) >= 4, label
        others = [c for c in colours.values() if c != colour]
        assert not any(f'style="background:{c}"></span>{label}<' in html for c in others)


def _prefix(bundle, pieces: list[str]) -> str:
    """How :func:`_soft` writes a soft prefix that sits exactly on these vocabulary pieces."""
    ids = bundle.text.tokenizer.convert_tokens_to_ids(pieces)
    return _soft(bundle.text.token_embedding.weight[ids], bundle)


def test_attack_prompts_are_words_not_bpe_pieces(results, tiny_sd, toyworld):
    # joined as the tokenizer decodes them: no CLIP "</w>" word ends, no BERT "##" pieces
    assert _prefix(toyworld, ["star", "##ry", "night"]) == "<starry night>"
    tiny = load_bundle(tiny_sd)
    assert _prefix(tiny, ["c", "a", "t</w>", "s</w>"]) == "<cat s>"
    prefix = _prefix(tiny, ["f", "i", "s", "h</w>"])
    attacked = copy.deepcopy(results[0])
    g = attacked.grids[0]
    prompts = [f"{prefix} {p}" for p in g.prompts]
    attacked.attack_grids = [AttackGrid("tench: softprompt", prompts, g.seeds, g.erased, g.base)]
    attacked.scorecard["attacks"] = {
        "tench": {
            "softprompt": {
                "target_rate_before": 0.0,
                "target_rate_after": 0.5,
                "images": 2,
                "seconds": 1.0,
                "prompts": prompts,
            }
        }
    }
    html = render_report([attacked])
    assert all(f"<td>{html_escape(p)}<br>" in html for p in prompts)
    assert prefix == "<fish>" and "&lt;/w&gt;" not in html and "</w>" not in html


def test_report_refuses_scorecards_of_different_bases(results):
    other = copy.deepcopy(results[1])
    other.scorecard["model_fingerprint"] = "0" * 16
    with pytest.raises(UnseeError, match="model_fingerprint"):
        render_report([results[0], other])
    with pytest.raises(UnseeError, match="nothing to report"):
        render_report([])


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(results, tmp_path):
    report = write_report(tmp_path / "report.html", results)
    png = tmp_path / "shot.png"
    run = subprocess.run(
        [sys.executable, str(CHECK), str(report), str(png), "--height", "2500"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert png.stat().st_size > 10_000
