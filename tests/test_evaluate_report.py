"""report.html: self-contained, compares several erased models, refuses mixed bases, and
renders in headless Chromium (skipped where Chromium is not installed)."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluate_fixtures import build_tiny_clip
from unsee.artifacts import fingerprint, write_artifact
from unsee.errors import UnseeError
from unsee.evaluate.scorecard import EvalResult, EvalSettings, evaluate_models
from unsee.models.bundle import load_bundle
from unsee.report.html import render_report, write_report

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
    strips = len(re.findall(r'<td class="strip"><img src="data:image/png;base64,', html))
    assert strips == rows * (1 + len(results))
    assert html.count('alt="target rate (lower = erased)"') == 1
    for label in ("small", "large", "method-small"):
        assert label in html
    assert "method-&lt;large&gt;" in html and "method-<large>" not in html  # escaped
    # every thumbnail strip carries the judge's label of each image; rates carry intervals
    grid = results[0].grids[0]
    labels = ", ".join(label for label, _ in grid.base_captions[0])
    assert f"(judged: {labels})" in html and len(grid.base_captions[0]) == grid.base.shape[1]
    tench = results[0].scorecard["concepts"]["tench"]
    lo, hi = tench["target_rate_ci95"]
    assert f"[{100 * lo:.0f}–{100 * hi:.0f}] n={tench['images']}" in html
    assert "Wilson" in html and "KID" in html


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
