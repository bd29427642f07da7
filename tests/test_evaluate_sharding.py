"""Two launched processes split the (prompt, seed) list and gather the judgements: the
scorecard equals the single-process one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluate_fixtures import build_tiny_clip

pytestmark = pytest.mark.slow


def test_two_processes_give_the_single_process_scorecard(tiny_sd, tmp_path):
    clip = build_tiny_clip(tmp_path / "clip")
    common = [
        "eval",
        "--model",
        str(tiny_sd),
        "--concept",
        "tench",
        "--retain",
        "church",
        "--retain",
        "golf ball",
        "--judge",
        f"clip:{clip}",
        "--clip",
        str(clip),
        "--num-images",
        "3",
        "--steps",
        "3",
        "--no-cache",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNSEE_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "unsee.cli", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    # torchrun sets RANK / WORLD_SIZE as `accelerate launch` does; on CPUs accelerate's own
    # launcher needs MPI, so this is how CPU-only machines shard.
    sharded = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "unsee.cli",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    one = json.loads(Path(tmp_path / "one" / "scorecard.json").read_text())
    two = json.loads(Path(tmp_path / "two" / "scorecard.json").read_text())
    assert two["cost"]["evaluation"]["processes"] == 2
    assert one["cost"]["evaluation"]["processes"] == 1
    assert {k: v for k, v in one.items() if k != "cost"} == {
        k: v for k, v in two.items() if k != "cost"
    }
