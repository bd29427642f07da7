"""CLI conventions: every option explains itself, required ones say so, every command shows
examples, -v/-q set the `unsee` logger, and `generate` takes a negative prompt, a size and
a dtype and records in index.json the artifacts it applied."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import unsee
from unsee.cli import app

runner = CliRunner()


def _commands() -> list[tuple[str, Any]]:
    """(name, command) of every command, subcommands of groups included (typer's own
    click: groups are told by their ``commands``)."""
    root: Any = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


def test_every_option_has_help_and_every_command_examples():
    commands = _commands()
    assert {"erase", "eval", "generate", "export", "toyworld render"} <= {n for n, _ in commands}
    for name, cmd in commands:
        assert cmd.epilog and "Examples" in cmd.epilog and "unsee" in cmd.epilog, name
        for p in cmd.params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help and p.help.strip(), f"{name} {p.opts[0]} has no help"
    erase = dict(commands)["erase"]
    for opt in ("method", "concept"):  # needed unless --config: the help says so
        (p,) = [q for q in erase.params if q.name == opt]
        assert "required unless --config" in (p.help or "")
    generate = dict(commands)["generate"]
    assert {p.name for p in generate.params if getattr(p, "required", False)} == {"model", "out"}


def test_verbosity_sets_the_unsee_logger():
    log = logging.getLogger("unsee")
    for flags, level in (([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG)):
        r = runner.invoke(app, [*flags, "methods"])
        assert r.exit_code == 0 and log.level == level
    r = runner.invoke(app, ["-q", "methods"])
    assert r.exit_code == 0 and log.level == logging.ERROR and "esd-x" in r.output
    r = runner.invoke(app, ["-v", "-q", "methods"])
    assert r.exit_code == 2 and "not both" in r.output


@pytest.fixture(scope="module")
def artifact(tiny_sd, tmp_path_factory) -> unsee.Artifact:
    out = tmp_path_factory.mktemp("gen") / "art"
    return unsee.erase(str(tiny_sd), method="uce", concepts=["a cat"], out=out, device="cpu")


def _gen(
    tiny_sd: Path, out: Path, *extra: str, verbose: bool = False
) -> tuple[dict, list[np.ndarray], str]:
    args = ["generate", "--model", str(tiny_sd), "--prompt", "a cat", "--num-images", "2"]
    args += ["--steps", "3", "--guidance", "5", "--out", str(out), *extra]
    r = runner.invoke(app, ["-v", *args] if verbose else args)
    assert r.exit_code == 0, r.output
    index = json.loads((out / "index.json").read_text())
    return index, [np.asarray(Image.open(out / e["file"])) for e in index["images"]], r.output


def test_generate_records_artifacts_and_settings(tiny_sd, artifact, tmp_path):
    base_index, base, said = _gen(tiny_sd, tmp_path / "base")
    assert "INFO" not in said
    assert base_index["artifacts"] == [] and base_index["negative_prompt"] is None
    assert base_index["base_fingerprint"] == artifact.base_fingerprint

    index, erased, said = _gen(
        tiny_sd, tmp_path / "erased", "--erased", str(artifact.path), verbose=True
    )
    assert f"applied {artifact.path} (uce, {artifact.id})" in said  # -v: the unsee logger
    (entry,) = index["artifacts"]
    assert entry["id"] == artifact.id and entry["path"] == str(artifact.path)
    assert entry["base_fingerprint"] == artifact.base_fingerprint == index["base_fingerprint"]
    assert entry["method"] == "uce" and entry["concepts"] == ["a cat"]
    assert any(not np.array_equal(a, b) for a, b in zip(base, erased, strict=True))

    neg_index, neg, _ = _gen(tiny_sd, tmp_path / "neg", "--negative-prompt", "a dog")
    assert neg_index["negative_prompt"] == "a dog"
    assert any(not np.array_equal(a, b) for a, b in zip(base, neg, strict=True))


def test_generate_size_and_dtype(tiny_sd, artifact, tmp_path):
    index, images, _ = _gen(
        tiny_sd,
        tmp_path / "sized",
        *("--height", "16", "--width", "24", "--dtype", "bf16"),
        *("--erased", str(artifact.path)),  # applied in fp32, then cast: not refused
    )
    assert (index["height"], index["width"], index["dtype"]) == (16, 24, "bf16")
    assert all(im.shape == (16, 24, 3) for im in images)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--height", "15"], "--height must be a positive multiple of 2"),
        (["--width", "0"], "--width must be positive"),
        (["--dtype", "fp8"], "unknown --dtype 'fp8'"),
    ],
)
def test_generate_bad_size_or_dtype(tiny_sd, tmp_path, extra, words):
    args = ["generate", "--model", str(tiny_sd), "--prompt", "x", "--out", str(tmp_path / "o")]
    r = runner.invoke(app, [*args, *extra])
    assert r.exit_code == 2 and words in r.output
    assert not (tmp_path / "o").exists()
