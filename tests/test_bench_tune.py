"""Fair tuning (``bench/tune.py``): the selection rule picks by retain kept within noise,
then erasure within noise, then cost; the tuning concepts are never benchmark concepts; the
grid scales each method's own defaults; and a reduced run records every point and the
pick."""

from __future__ import annotations

import importlib
import json
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from unsee.erase.config import EraseConfig, validate
from unsee.errors import UnseeError

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def tune():
    sys.path.insert(0, str(BENCH))  # the script imports the harness beside it
    try:
        yield importlib.import_module("tune")
    finally:
        sys.path.remove(str(BENCH))


def row(
    steps: int, scale: float = 1.0, is_default: bool = False, **concepts: tuple[int, int, int]
) -> dict:
    """A hand-made grid row: per concept (erased images of 32, retain hits of 48, base
    retain hits of 48)."""
    return {
        "optimizer_steps": steps,
        "scale": scale,
        "is_default": is_default,
        "concepts": {
            c: {
                "erasure": e / 32,
                "erasure_images": 32,
                "retain": r / 48,
                "retain_pairs": 48,
                "retain_base": b / 48,
            }
            for c, (e, r, b) in concepts.items()
        },
    }


def test_a_point_that_loses_retain_beyond_noise_on_any_concept_is_not_admissible(tune):
    rows = {
        # erases everything but costs dotted 24 of 46 retained pairs: beyond noise
        "strong": row(120, cross=(32, 46, 46), dotted=(32, 22, 46)),
        # a 3-pair retain drop on each concept is within noise
        "mild": row(120, cross=(20, 43, 46), dotted=(20, 43, 46)),
    }
    assert not tune.retain_kept(rows["strong"])
    assert tune.retain_kept(rows["mild"])
    pick = tune.select(rows)
    assert (pick.label, pick.admissible) == ("mild", True)


def test_ties_within_noise_of_the_best_go_to_fewer_steps_then_smaller_scale(tune):
    kept = (46, 46)
    rows = {
        "best": row(480, 3.0, cross=(32, *kept), dotted=(32, *kept)),
        # 61 of 64 erased vs 64 of 64: within noise; cheaper
        "cheap-big-lr": row(240, 3.0, cross=(31, *kept), dotted=(30, *kept)),
        "cheap-small-lr": row(240, 1.0, cross=(30, *kept), dotted=(31, *kept)),
        # cheapest, but 40 of 64 is below the best beyond noise: no tie
        "cheapest": row(80, 1 / 3, cross=(20, *kept), dotted=(20, *kept)),
    }
    pick = tune.select(rows)
    assert pick.best == "best"
    assert set(pick.tied) == {"best", "cheap-big-lr", "cheap-small-lr"}
    assert pick.label == "cheap-small-lr"


def test_a_tie_at_equal_cost_keeps_the_default(tune):
    """A default changes only on evidence beyond noise: a smaller lr that ties with the
    best at the same number of steps does not displace it."""
    kept = (46, 46)
    rows = {
        "default": row(240, 1.0, True, cross=(29, *kept), dotted=(29, *kept)),
        "small-lr": row(240, 1 / 3, cross=(28, *kept), dotted=(28, *kept)),
        "big-lr": row(240, 3.0, cross=(30, *kept), dotted=(30, *kept)),
    }
    pick = tune.select(rows)
    assert pick.best == "big-lr" and set(pick.tied) == set(rows)
    assert pick.label == "default"
    # without the default among the ties, the smaller scale wins as before
    del rows["default"]
    assert tune.select(rows).label == "small-lr"


def test_with_no_admissible_point_the_pick_is_the_highest_retain(tune):
    rows = {
        "erases": row(120, cross=(32, 10, 46), dotted=(32, 10, 46)),
        "keeps-more": row(240, cross=(25, 30, 46), dotted=(25, 30, 46)),
    }
    pick = tune.select(rows)
    assert (pick.label, pick.admissible) == ("keeps-more", False)


def test_tuning_concepts_are_disjoint_from_every_benchmark_scenario(tune):
    import harness

    tuning = tune.concepts_of(tune.TUNING)
    assert tuning == {"cross", "dotted"}
    assert not tuning & tune.concepts_of(harness.SCENARIOS.values())
    tune.check_disjoint(tune.TUNING, harness.SCENARIOS.values())
    leaky = [*harness.SCENARIOS.values(), harness.Scenario("leak", ("square", "cross"))]
    with pytest.raises(UnseeError, match="cross"):
        tune.check_disjoint(tune.TUNING, leaky)


def test_the_grid_scales_each_methods_own_defaults(tune):
    points, _ = tune.grid("sculpt")
    assert len(points) == 6 and sum(p.is_default for p in points) == 1
    for scenario in tune.TUNING:
        plan = validate(EraseConfig(method="sculpt", concepts=list(scenario.concepts)))
        default = tune.defaults("sculpt", scenario)
        v = tune.variant(tune.Point("sculpt", "lr", Fraction(1, 3), 2), default)
        assert v.lr == pytest.approx(plan.lr / 3)
        assert v.iterations == 2 * plan.iterations
    uce, what = tune.grid("uce")  # closed form: no lr, its erase weight instead
    assert [p.knob for p in uce] == ["erase_scale"] * 3 and "erase_scale" in what
    v = tune.variant(uce[2], tune.defaults("uce", tune.TUNING[0]))
    assert v.params == {"erase_scale": 3.0} and v.lr is None


@pytest.mark.slow
def test_reduced_tuning_run_records_every_point_and_the_rules_pick(tune, tmp_path, capsys):
    out = tmp_path / "out"
    reduced = ["--methods", "uce", "--num-images", "1", "--steps", "2"]
    tune.main([*reduced, "--work", str(tmp_path / "work"), "--out", str(out)])
    first = (out / "tuning.json").read_text()
    # a second run with the same settings resumes: every point is kept, none is run again
    capsys.readouterr()
    tune.main([*reduced, "--work", str(tmp_path / "work"), "--out", str(out)])
    assert capsys.readouterr().out.count("already recorded") == len(tune.grid("uce")[0])
    assert (
        json.loads((out / "tuning.json").read_text())["tables"]["uce"]
        == json.loads(first)["tables"]["uce"]
    )
    results = json.loads((out / "tuning.json").read_text())
    rows = results["tables"]["uce"]["rows"]
    assert set(rows) == {p.label for p in tune.grid("uce")[0]}
    for r in rows.values():
        assert set(r["concepts"]) == {"cross", "dotted"}
        for c in r["concepts"].values():
            assert c["erasure_images"] > 0 and c["retain_pairs"] > 0
            assert 0 <= c["erasure"] <= 1 and 0 <= c["retain"] <= 1
    pick = results["tables"]["picks"]["rows"]["uce"]
    assert pick["label"] == tune.select(rows).label
    assert pick["is_default"] == rows[pick["label"]]["is_default"]
    text = (out / "tuning.md").read_text()
    assert "**pick**" in text and "--methods uce" in text
    with pytest.raises(SystemExit) as err:
        tune.main(["--methods", "no-such-method", "--out", str(out)])
    assert err.value.code == 2


def test_toyworld_sd_is_tuned_around_its_own_family_defaults(tune):
    """The same concepts and grid on the SD-format model, centred on its defaults (ESD-x's
    lr there is a third of ToyWorld's)."""
    sd = tune.tuning_on("toyworld-sd")
    assert [s.concepts for s in sd] == [s.concepts for s in tune.TUNING]
    assert {s.model for s in sd} == {"toyworld-sd"}
    on_sd, on_tw = tune.defaults("esd-x", sd[0]), tune.defaults("esd-x", tune.TUNING[0])
    assert on_sd["lr"] == pytest.approx(on_tw["lr"] / 3)
