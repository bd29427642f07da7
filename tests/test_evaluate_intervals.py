"""Uncertainty and honesty guarantees of the scorecard: Wilson intervals and Newcombe
differences on known counts, KID's unbiasedness, the seed ranges that keep training and
judged images apart, the probe validity rule and the NudeNet floor."""

import numpy as np
import pytest
from typer.testing import CliRunner

from unsee.cli import app
from unsee.errors import UnseeError
from unsee.evaluate import metrics
from unsee.evaluate.judges import NUDENET_FLOOR, NudeNetJudge
from unsee.evaluate.sections import MIN_PROBE_RATE, probe_check
from unsee.seeds import TRAINING_SEED_BASE, check_seeds, training_seeds

# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    "hits, n, lo, hi",
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(hits, n, lo, hi):
    got = metrics.wilson_interval(hits, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_interval_agrees_with_scipy_and_is_symmetric():
    from scipy.stats import binomtest

    for n in (1, 4, 16, 32, 100):
        for k in range(n + 1):
            ci = binomtest(k, n).proportion_ci(method="wilson")
            lo, hi = metrics.wilson_interval(k, n)
            assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
            assert lo <= k / n <= hi
            mirror = metrics.wilson_interval(n - k, n)
            assert (1 - mirror[1], 1 - mirror[0]) == pytest.approx((lo, hi), abs=1e-12)
    with pytest.raises(ValueError):
        metrics.wilson_interval(3, 2)
    with pytest.raises(ValueError):
        metrics.wilson_interval(0, 0)


def test_difference_interval_matches_newcombes_example_and_decides_noise():
    # Newcombe (1998), "Interval estimation for the difference between independent
    # proportions", example (a): 56/70 - 48/80, method 10 gives 0.0524 to 0.3339
    assert metrics.difference_interval((48, 80), (56, 70)) == pytest.approx(
        (0.0524, 0.3339), abs=5e-5
    )
    assert metrics.change((48, 80), (56, 70))["beyond_noise"]
    # the README's "0.31 vs 0.50" on 16 images each: 5 vs 8 images, well within noise
    c = metrics.change((5, 16), (8, 16))
    assert c["difference"] == pytest.approx(3 / 16)
    assert c["ci95"][0] < 0 < c["ci95"][1] and not c["beyond_noise"]
    # 0/16 -> 16/16 is beyond any doubt; a difference of nothing is not
    assert metrics.change((0, 16), (16, 16))["beyond_noise"]
    assert not metrics.change((7, 16), (7, 16))["beyond_noise"]


def test_proportion_record_carries_count_and_interval():
    rec = metrics.proportion(3, 16)
    assert rec["rate"] == 3 / 16 and rec["hits"] == 3 and rec["images"] == 16
    assert rec["ci95"] == list(metrics.wilson_interval(3, 16))


# ----------------------------------------------------------------------------- KID


def test_kid_is_unbiased_where_the_frechet_distance_is_not():
    rng = np.random.default_rng(0)
    same = [(rng.normal(size=(40, 64)), rng.normal(size=(40, 64))) for _ in range(5)]
    kids = [metrics.kernel_distance(a, b, seed=i) for i, (a, b) in enumerate(same)]
    fds = [metrics.frechet_distance(a, b) for a, b in same]
    # one distribution: the Frechet distance is far from 0 at 40 images, KID is not
    assert min(fds) > 10 * max(abs(k.value) for k in kids)
    assert all(k.ci95[0] <= 0 <= k.ci95[1] for k in kids)
    assert abs(np.mean([k.value for k in kids])) < 3 * np.std([k.value for k in kids])
    shifted = metrics.kernel_distance(same[0][0], same[0][1] + 0.5)
    assert shifted.ci95[0] > 0 and shifted.value > max(k.ci95[1] for k in kids)
    assert shifted.subset_size == 20 and shifted.subsets == 100


def test_kid_polynomial_mmd_matches_its_definition():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = metrics.kernel_distance(x, y, subsets=3, subset_size=6)  # every subset: the sets
    assert got.value == pytest.approx(xx + yy - 2 * xy) and got.std == pytest.approx(0)
    with pytest.raises(ValueError):
        metrics.kernel_distance(x[:3], y[:3])  # a subset of 1 cannot be unbiased


# ----------------------------------------------------------------------------- seeds


def test_training_and_evaluation_seeds_never_meet():
    train = training_seeds(0, 100)
    assert train[0] == TRAINING_SEED_BASE and len(set(train)) == 100
    check_seeds(train, training=True)
    check_seeds([0, 7, 1867756129, 2**32 + 63], training=False)  # I2P seeds are 32-bit
    with pytest.raises(UnseeError, match="training and evaluation seeds must never meet"):
        check_seeds(train[:1], training=False)
    with pytest.raises(UnseeError, match="outside"):
        check_seeds([0], training=True)
    with pytest.raises(UnseeError):
        check_seeds([-1], training=False)
    with pytest.raises(UnseeError):
        training_seeds(-5, 2)


def test_forget_and_anchor_sets_use_training_seeds(monkeypatch):
    """The image-set builders draw every image with a training seed (generation stubbed)."""
    import torch

    from unsee.models import image_sets as fs_mod

    drawn: list[int] = []

    def fake(bundle, prompts, seeds, **kw):
        drawn.extend(seeds)
        return fs_mod.DrawnSet(torch.zeros(len(seeds), 1), list(prompts), list(seeds))

    monkeypatch.setattr(fs_mod, "generate_set", fake)
    fs = fs_mod.forget_set(None, "star", ["a star"], 16, 0)
    check_seeds(fs.seeds, training=True)
    assert set(drawn) == set(fs.seeds) and not set(range(0, 1000)) & set(fs.seeds)


def test_scorecard_refuses_an_evaluation_seed_in_the_training_range(tiny_sd, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_sd),
            "--concept",
            "nudity",
            "--num-images",
            "1",
            "--steps",
            "2",
            "--seed",
            str(TRAINING_SEED_BASE),
            "--no-cache",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "must never meet" in lines[0], lines


# ----------------------------------------------------------------------------- probes


def test_a_probe_the_base_model_cannot_draw_is_flagged():
    ok = probe_check(MIN_PROBE_RATE, "target-prompt")
    assert ok == {"valid": True, "reason": None}
    bad = probe_check(0.0, "paraphrase")
    assert not bad["valid"] and "measures nothing" in bad["reason"]
    assert "0 %" in bad["reason"] and "paraphrase" in bad["reason"]


# ----------------------------------------------------------------------------- NudeNet


def test_nudenet_refuses_thresholds_below_its_floor(tiny_sd, tmp_path):
    with pytest.raises(UnseeError, match=r"silently act as 0\.25"):
        NudeNetJudge(threshold=0.1)
    NudeNetJudge(threshold=NUDENET_FLOOR)  # the floor itself is what nudenet can report
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_sd),
            "--concept",
            "nudity",
            "--nudenet-threshold",
            "0.1",
            "--no-cache",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "[0.25, 1]" in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_nudenet_counts_boxes_beside_images(monkeypatch):
    judge = NudeNetJudge(threshold=0.6, classes=["BELLY_EXPOSED", "FEET_EXPOSED"])
    box = [0, 0, 1, 1]
    fake = [
        [
            {"class": "BELLY_EXPOSED", "score": 0.65, "box": box},
            {"class": "BELLY_EXPOSED", "score": 0.61, "box": box},
            {"class": "BELLY_EXPOSED", "score": 0.3, "box": box},
        ],  # under the threshold
        [{"class": "FEET_EXPOSED", "score": 0.9, "box": box}],
        [],
    ]
    monkeypatch.setattr(judge, "detect", lambda images: fake)
    j = judge(np.zeros((3, 8, 8, 3), np.uint8))
    assert metrics.box_counts(j.boxes) == {"BELLY_EXPOSED": 2, "FEET_EXPOSED": 1, "total": 3}
    present = {c: [lab == "present" for lab in j.labels[c]] for c in judge.classes}
    assert metrics.nudity_counts(present) == {"BELLY_EXPOSED": 1, "FEET_EXPOSED": 1, "total": 2}
    assert judge.version.count(".") >= 1  # the installed nudenet's version is recorded


class _BlindToStars:
    """The ToyWorld judge, except that it never sees a star (a probe that cannot work)."""

    def __init__(self) -> None:
        from unsee.evaluate.judges import ToyWorldJudge

        self.inner = ToyWorldJudge()
        self.name, self.attributes = "blind-to-stars", self.inner.attributes

    def __call__(self, images):
        from unsee.evaluate.judges import Judgement

        j = self.inner(images)
        shapes = ["circle" if s == "star" else s for s in j.labels["shape"]]
        return Judgement(j.probs, {**j.labels, "shape": shapes})

    def concept_labels(self, concept):
        return self.inner.concept_labels(concept)


def test_a_concept_the_base_model_never_shows_is_left_out_of_the_overall_score(toyworld):
    from unsee.evaluate.scorecard import EvalSettings, evaluate
    from unsee.report.html import render_report

    settings = EvalSettings(num_images=1, steps=2, cache_dir=None, judge=_BlindToStars())
    r = evaluate(toyworld, [], ["star"], settings)
    card = r.scorecard
    star = card["concepts"]["star"]
    assert star["target_rate_base"] == 0.0 and not star["probe"]["valid"]
    assert not star["paraphrase"]["probe"]["valid"]
    assert card["erasure"] is None and card["overall"] is None
    assert "measures nothing" in card["excluded_from_overall"]["star"]
    assert card["retain"]["accuracy"] is not None  # the rest is still scored
    html = render_report([r])
    assert "Probes that measure nothing" in html and "excluded from overall" in html
