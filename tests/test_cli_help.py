"""A new user's `unsee --help` answers which methods and judges exist; `--version` works."""

from __future__ import annotations

from typer.testing import CliRunner

import unsee
from unsee.cli import JUDGES, METHODS, app

runner = CliRunner()
WIDE = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"unsee {unsee.__version__}"


def test_listed_methods_are_the_registry():
    from unsee.erase.registry import REGISTRY

    assert sorted(METHODS) == sorted(REGISTRY)


def test_help_lists_methods_judges_and_export_formats():
    top = runner.invoke(app, ["--help"], env=WIDE).output
    erase = runner.invoke(app, ["erase", "--help"], env=WIDE).output
    for name in METHODS:
        assert name in top and name in erase
    for form in ("toyworld", "nudenet", "clip:MODEL", "imagenet[:MODEL"):
        assert form in JUDGES and form in top
    export = runner.invoke(app, ["export", "--help"], env=WIDE).output
    assert "merged" in export and "lora" in export and "kohya" in export
