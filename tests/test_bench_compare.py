"""The method comparison benchmark (``bench/compare.py`` on ``bench/harness.py``) runs end
to end on a reduced scenario: it erases, scores and attacks every variant it is given,
merges each row into one table as it finishes, and names the command that reproduces the
table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(BENCH.parent))  # the script imports the harness beside it
    spec = importlib.util.spec_from_file_location("bench_compare", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH.parent))


def reduced(tmp: Path, variants: str) -> list[str]:
    """Star, 1 image per prompt, DDIM-6, 3 erasure iterations, a 3-iteration attack."""
    return [
        "--scenario",
        "star",
        "--variants",
        variants,
        "--iterations",
        "3",
        "--num-images",
        "1",
        "--steps",
        "6",
        "--attack-budget",
        "unlearndiffatk.iterations=3",
        "--attack-budget",
        "unlearndiffatk.timesteps=1",
        "--attack-budget",
        "softprompt.iterations=3",
        "--attack-budget",
        "softprompt.images=1",
        "--work",
        str(tmp / "work"),
        "--out",
        str(tmp / "out"),
    ]


@pytest.mark.slow
def test_reduced_benchmark_runs_end_to_end_and_merges_rows(compare, tmp_path):
    compare.main(reduced(tmp_path, "uce,esd-x"))
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    ((name, sc),) = report["tables"].items()
    assert name == "star" and list(sc["rows"]) == ["uce", "esd-x"]
    for label, row in sc["rows"].items():
        for key in (
            "erasure",
            "paraphrase_rate",
            "post_attack_erasure",
            "retain_accuracy",
            "neighbour_accuracy",
            "overall",
        ):
            assert 0.0 <= row[key] <= 1.0, (label, key, row[key])
        assert row["fid"] > 0 and row["seconds"] > 0 and row["attack_seconds"] > 0
        assert row["peak_rss_mb"] > 0 and row["parameters_changed"] > 0
    # UCE's closed form erases star even in this reduced run; the base model draws it
    assert sc["rows"]["uce"]["erasure"] > sc["rows"]["uce"]["erasure_base"]
    assert sc["rows"]["esd-x"]["optimizer_steps"] == 3
    assert report["settings"]["attacks"] == ["unlearndiffatk", "softprompt"]
    for row in sc["rows"].values():  # each attack has its column, every rate its count
        assert set(row["post_attack_by_attack"]) == {"unlearndiffatk", "softprompt"}
        assert row["erasure_images"] == 4 and row["retain_pairs"] > row["retain_images"]

    # a later run of one variant, on "another machine", replaces its row and keeps the other's
    before = sc["rows"]["uce"]
    compare.main([*reduced(tmp_path, "esd-x"), "--machine-note", "the second machine"])
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    ((_, sc),) = report["tables"].items()
    assert sc["rows"]["uce"] == before and set(sc["rows"]) == {"uce", "esd-x"}
    assert "(the second machine)" in sc["rows"]["esd-x"]["run_on"]
    assert "(the second machine)" not in sc["rows"]["uce"]["run_on"]

    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| uce |" in md and "| esd-x |" in md and "post-attack" in md
    assert "erasure (n=4)" in md and "softprompt (n=4)" in md and "Wilson" in md
    # each row says where it ran once rows come from different machines
    assert "rows ran on several machines" in md
    where = [ln for ln in md.splitlines() if ln.startswith("Run on ")]
    assert len(where) == 2 and where[1].endswith(": esd-x.") and "second machine" in where[1]
    # the named command reproduces the whole table: both variants, the reduced budgets
    assert (
        "Reproduce: `OMP_NUM_THREADS=1 .venv/bin/python bench/compare.py --scenario star "
        "--variants uce,esd-x --num-images 1 --steps 6 --seed 0"
    ) in md
    assert "--attack-budget unlearndiffatk.iterations=3" in md and "--iterations 3" in md
    assert (tmp_path / "out" / "compare_pareto.png").stat().st_size > 0

    # the README's headline is rewritten from the results between its markers, text around
    # it kept; without the markers the file is left as it was
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{compare.HEADLINE_START}\nold table\n{compare.HEADLINE_END}\nrest\n")
    compare.main(["--headline", str(readme), "--out", str(tmp_path / "out")])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old table" not in text
    uce = next(ln for ln in text.splitlines() if ln.startswith("| UCE |"))
    erased = sc["rows"]["uce"]["erasure"]
    assert uce.startswith(f"| UCE | {erased:.3f} [") and "after UnlearnDiffAtk (n=4)" in text
    assert "| ESD-x |" in text and "Wilson" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit):
        compare.main(["--headline", str(plain), "--out", str(tmp_path / "out")])
    assert plain.read_text() == "no markers\n"


def test_bad_variant_or_attack_budget_stops_before_any_model_runs(compare, tmp_path):
    with pytest.raises(SystemExit):
        compare.main(reduced(tmp_path, "uce,no-such-method"))
    with pytest.raises(SystemExit):
        compare.main([*reduced(tmp_path, "uce"), "--attack-budget", "inversion.lr=0.1"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def _results(model: str, rows: dict[str, tuple[float, float]]) -> dict:
    """A one-scenario comparison on ``model``: each variant's (erasure, retain) over 16
    target images and 128 retain pairs, base retain 0.95."""
    common = {"target_images": 16, "erasure_images": 16, "retain_pairs": 128}
    return {
        "settings": {"model": model, "num_images": 4, "steps": 25},
        "tables": {
            "star": {
                "meta": {"concepts": ["star"], "sequential": False},
                "rows": {
                    v: {**common, "erasure": e, "retain_accuracy": r, "retain_base": 0.953125}
                    for v, (e, r) in rows.items()
                },
            }
        },
    }


def test_rows_beside_another_model_differ_only_beyond_noise(compare, tmp_path):
    mine = _results(
        "toyworld-sd",
        {"a": (0.25, 0.953125), "b": (0.9375, 0.953125), "c": (1.0, 0.6), "d": (1.0, 0.875)},
    )
    theirs = _results(
        "toyworld",
        {"a": (1.0, 0.953125), "b": (1.0, 0.953125), "c": (1.0, 0.953125), "d": (1.0, 0.90625)},
    )
    theirs["tables"]["star"]["rows"]["only-there"] = theirs["tables"]["star"]["rows"]["a"]
    text = compare.beside(mine, theirs, "x/compare.md", "y/compare.md")
    rows = {ln.split(" | ")[0][2:]: ln for ln in text.splitlines() if ln.startswith("| ")}
    # 4 of 16 against 16 of 16 is beyond noise; 15 of 16 against 16 of 16 is not
    assert rows["a"].endswith("| differ |") and "-0.750 [" in rows["a"]
    assert rows["b"].endswith("| within noise |")
    # same erasure; retain fell by 0.35 on one model and not at all on the other
    assert rows["c"].endswith("| differ |") and "| -0.352 [" in rows["c"]
    # retain fell by 10 of 128 pairs on one (beyond noise) and by 6 on the other (within):
    # a difference in significance, not a significant difference
    assert "| -0.078 [" in rows["d"] and " * |" in rows["d"]
    assert rows["d"].endswith("| within noise |")
    assert "only-there" not in text  # a variant run on one model only has no row

    # the command line writes it beside the results, from the two folders
    for name, res in (("sd", mine), ("tw", theirs)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps(res))
    compare.main(["--out", str(tmp_path / "sd"), "--beside", str(tmp_path / "tw")])
    assert "| a | 0.250 [" in (tmp_path / "sd" / "beside_tw.md").read_text()
