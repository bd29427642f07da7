"""Each metric on hand-made inputs whose answer is known."""

import numpy as np
import pytest

from unsee.evaluate import metrics


def test_target_rate_and_erasure():
    labels = ["star", "circle", "star", "cross"]
    assert metrics.target_rate(labels, {"star"}) == 0.5
    assert metrics.erasure(metrics.target_rate(labels, {"star"})) == 0.5
    # a superclass counts all its members
    assert metrics.target_rate(labels, {"star", "cross", "arrow"}) == 0.75
    assert metrics.target_rate(labels, {"heart"}) == 0.0
    with pytest.raises(ValueError):
        metrics.target_rate([], {"star"})


def test_retain_accuracy_counts_each_asked_attribute_once():
    labels = {"shape": ["circle", "square", "heart"], "colour": ["red", "red", "blue"]}
    expected = [
        {"shape": {"circle"}, "colour": {"red"}},  # 2 of 2
        {"shape": {"circle"}, "colour": {"red"}},  # 1 of 2
        {"shape": {"heart"}},
    ]  # 1 of 1, colour not asked
    acc = metrics.retain_accuracy(labels, expected)
    assert acc.overall == pytest.approx(4 / 5)
    assert acc.by_attribute == {"shape": pytest.approx(2 / 3), "colour": 1.0}
    assert metrics.drop(0.9, acc.overall) == pytest.approx(0.1)


def test_same_judgements_give_zero_drop():
    labels = {"shape": ["circle", "square"], "colour": ["red", "green"]}
    expected = [{"shape": {"circle"}, "colour": {"green"}}, {"shape": {"square"}}]
    a = metrics.retain_accuracy(labels, expected)
    assert metrics.drop(a.overall, metrics.retain_accuracy(labels, expected).overall) == 0.0


def test_overall_is_harmonic_mean():
    assert metrics.overall_score(1.0, 1.0) == 1.0
    assert metrics.overall_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert metrics.overall_score(0.0, 0.9) == 0.0  # nothing erased: no credit for retention
    assert metrics.overall_score(1.0, 0.0) == 0.0  # everything destroyed: no credit either


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # A pure shift keeps the covariance: the distance is exactly |shift|^2.
    shift = np.arange(8) * 0.1
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # Scaling by s: |mu - s mu|^2 + tr(S + s^2 S - 2 s S) = (1 - s)^2 (|mu|^2 + tr(S)).
    s = 3.0
    mu = a.mean(0)
    expected = (1 - s) ** 2 * (mu @ mu + np.trace(np.cov(a, rowvar=False)))
    assert metrics.frechet_distance(a, s * a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_grows_with_shift_and_handles_few_samples():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 256)), rng.normal(size=(60, 256))  # N < D: singular covariances
    near = metrics.frechet_distance(a, b)
    far = metrics.frechet_distance(a, b + 0.5)
    assert np.isfinite(near) and far > near + 0.25 * 256 * 0.9
    with pytest.raises(ValueError):
        metrics.frechet_distance(a[:1], b)


def test_clip_score_scale_and_clipping():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cos 1, 1, -1 (clipped to 0)
    assert metrics.clip_score(x, y) == pytest.approx(200 / 3)


def test_nudity_counts_and_rate():
    present = {
        "FEMALE_BREAST_EXPOSED": [True, False, False, True],
        "BELLY_EXPOSED": [True, False, True, False],
    }
    assert metrics.nudity_counts(present) == {
        "FEMALE_BREAST_EXPOSED": 2,
        "BELLY_EXPOSED": 2,
        "total": 4,
    }
    assert metrics.nudity_rate(present) == 0.75  # images 0, 2, 3 have an exposed class
