"""The bench harness's results store (``bench/harness.py``): a row recorded twice is
replaced, not duplicated; writers in several processes lose no row; the markdown is a
function of the JSON; every results file in ``bench/results`` reads and renders; and no
study writes results, merges rows or describes the machine on its own."""

from __future__ import annotations

import ast
import importlib
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: tools that live in bench/ but write no results table: the hostile-input table goes to
#: docs/bad-input.md, the report check writes a screenshot
TOOLS = {"hostile.py", "check_report.py"}


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The harness, imported as the bench scripts import it (bench/ on the path)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("harness")
    finally:
        sys.path.remove(str(BENCH))


def render(results) -> str:
    """A renderer that lists every row of every table, in order."""
    return "".join(
        f"{table}/{label}: {row['value']}\n"
        for table, t in results["tables"].items()
        for label, row in t["rows"].items()
    )


def test_a_row_recorded_twice_is_replaced_not_duplicated(bench, tmp_path):
    settings = {"steps": 3, "concepts": ("star",)}  # a tuple reads back as a list
    bench.record(
        "study", settings, "t", {"a": {"value": 1}, "b": {"value": 2}}, render, out=tmp_path
    )
    merged = bench.record("study", settings, "t", {"a": {"value": 10}}, render, out=tmp_path)
    stored = bench.read("study", tmp_path)
    assert stored == merged
    assert list(stored["tables"]) == ["t"]
    rows = stored["tables"]["t"]["rows"]
    assert list(rows) == ["a", "b"]  # replaced in place, the other row kept
    assert rows["a"]["value"] == 10 and rows["b"]["value"] == 2
    assert all(r["run_on"] == bench.run_on() for r in rows.values())


def test_rows_measured_otherwise_are_not_mixed_in(bench, tmp_path):
    meta = {"model_fingerprint": "aaaa"}
    bench.record("study", {"steps": 3}, "t", {"a": {"value": 1}}, render, meta=meta, out=tmp_path)
    bench.record("study", {"steps": 3}, "u", {"a": {"value": 2}}, render, out=tmp_path)
    # another base model: table t starts afresh, table u is kept
    other = {"model_fingerprint": "bbbb"}
    bench.record("study", {"steps": 3}, "t", {"b": {"value": 3}}, render, meta=other, out=tmp_path)
    stored = bench.read("study", tmp_path)
    assert list(stored["tables"]["t"]["rows"]) == ["b"] and list(stored["tables"]) == ["t", "u"]
    assert stored["tables"]["t"]["meta"] == other
    # other settings: the whole file starts afresh
    bench.record("study", {"steps": 4}, "u", {"c": {"value": 4}}, render, out=tmp_path)
    stored = bench.read("study", tmp_path)
    assert stored["settings"] == {"steps": 4} and list(stored["tables"]) == ["u"]
    assert list(stored["tables"]["u"]["rows"]) == ["c"]


def _writer(out: Path, worker: int, rows: int) -> None:
    import harness  # the forked child has bench/ on its path

    def slow(results) -> str:  # widens the read-merge-write window a lost update needs
        time.sleep(0.002)
        return render(results)

    for k in range(rows):
        harness.record("study", {"steps": 3}, "t", {f"w{worker}-{k}": {"value": k}}, slow, out=out)


def test_concurrent_writers_lose_no_row(bench, tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rows = bench.read("study", tmp_path)["tables"]["t"]["rows"]
    assert set(rows) == {f"w{w}-{k}" for w in range(4) for k in range(15)}
    assert (tmp_path / "study.md").read_text() == render(bench.read("study", tmp_path))


def test_the_markdown_is_rendered_from_the_json(bench, tmp_path):
    bench.record("study", {"steps": 3}, "t", {"a": {"value": 1}}, render, out=tmp_path)
    assert (tmp_path / "study.md").read_text() == "t/a: 1\n"
    # a changed JSON (or a changed renderer) is rendered again without measuring anything
    path = tmp_path / "study.json"
    data = json.loads(path.read_text())
    data["tables"]["t"]["rows"]["a"]["value"] = 7
    path.write_text(json.dumps(data))
    bench.rerender(
        "study",
        render,
        out=tmp_path,
        files={"plot.txt": lambda results, p: p.write_text(str(len(results["tables"])))},
    )
    written = (tmp_path / "study.md").read_text(), (tmp_path / "plot.txt").read_text()
    assert written == ("t/a: 7\n", "1")


def test_a_file_that_is_not_a_results_file_is_named(bench, tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"rows": {"a": {}}}))
    with pytest.raises(ValueError, match=r"study\.json is not a bench results file"):
        bench.read("study", tmp_path)
    with pytest.raises(ValueError):  # and nothing is merged into it
        bench.record("study", {}, "t", {"a": {"value": 1}}, render, out=tmp_path)
    assert json.loads((tmp_path / "study.json").read_text()) == {"rows": {"a": {}}}
    assert bench.read("absent", tmp_path) is None


def test_every_stored_results_file_reads_and_renders(bench):
    """The results in the repository are in the store's format, and each study's renderer
    draws its table from them (compare_cpu and compare_no_attacks are the comparison's,
    conformance_float32 the conformance bench's, tuning is tune.py's)."""
    files = sorted((BENCH / "results").glob("*.json"))
    assert len(files) >= 10
    for path in files:
        name = path.stem
        script = name.split("_")[0] if name.startswith(("compare", "conformance")) else name
        study = importlib.import_module({"tuning": "tune"}.get(script, script))
        results = bench.read(name, path.parent)
        text = study.markdown(results)
        for t in results["tables"].values():
            for label in t["rows"]:
                assert label in text, (name, label)


def _study_files() -> list[Path]:
    return [p for p in sorted(BENCH.glob("*.py")) if p.name not in TOOLS | {"harness.py"}]


#: what describing the machine or writing and merging results takes; the harness has it
MACHINE = {"platform", "library_versions", "get_device_name", "cpu_count", "get_num_threads"}
WRITING = {"json", "fcntl", "atomic_write", "write_text", "write_bytes", "open", "dump", "dumps"}


@pytest.mark.parametrize("path", _study_files(), ids=lambda p: p.name)
def test_no_study_describes_the_machine_or_merges_results_itself(path):
    tree = ast.parse(path.read_text())
    names = set()
    from_harness = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.name for a in node.names} | {(node.module or "").split(".")[0]}
            if node.module == "harness":
                from_harness += [a.name for a in node.names]
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    assert not names & MACHINE, f"{path.name} describes the machine: {names & MACHINE}"
    assert not names & WRITING, f"{path.name} writes or merges results: {names & WRITING}"
    assert "record" in from_harness, f"{path.name} does not record through the harness"
    assert not [n for n in from_harness if n.startswith("_")], "private harness import"
    assert "compare" not in names, f"{path.name} imports the comparison script"


def test_profile_kinds_put_each_operator_where_its_arithmetic_is(bench):
    """bench/profile_step.py sums self time by kind: the products that contain 'add' or
    'mul' in their names are matrix products, not element-wise work, and the norms are
    normalisation, not 'other'."""
    kind_of = importlib.import_module("profile_step").kind_of
    assert kind_of("aten::mkldnn_convolution") == "convolution"
    assert kind_of("aten::_slow_conv2d_forward") == "convolution"
    for op in ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::linear"):
        assert kind_of(op) == "matmul / attention", op
    assert kind_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "matmul / attention"
    assert kind_of("aten::native_group_norm") == "normalisation"
    assert kind_of("aten::native_layer_norm") == "normalisation"
    for op in ("aten::add_", "aten::mul", "aten::addcmul_", "aten::silu", "aten::copy_"):
        assert kind_of(op) == "element-wise", op
    assert kind_of("aten::empty") == "other"
