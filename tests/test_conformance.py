"""The conformance bench (``bench/conformance.py``) without the official code: a stand-in
"official" script in a throw-away git clone edits two UNet parameters with its own
optimiser, and the bench must score exactly that edit, measure its steps, and refuse bad
input with one line and exit 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

BENCH = Path(__file__).resolve().parents[1] / "bench" / "conformance.py"

#: Takes esd_sd.py's command line, loads the UNet by the hub id esd_sd.py hard-codes (so
#: the redirect shim must be at work), trains two cross-attention weights for
#: --iterations Adam steps and saves them under their parameter names, as esd_sd.py does.
FAKE_ESD = """
import argparse, torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
ap = argparse.ArgumentParser()
for a in ("erase_concept", "train_method", "save_path", "device"):
    ap.add_argument("--" + a)
for a in ("iterations", "num_inference_steps"):
    ap.add_argument("--" + a, type=int)
for a in ("lr", "negative_guidance", "guidance_scale"):
    ap.add_argument("--" + a, type=float)
args = ap.parse_args()
unet = UNet2DConditionModel.from_pretrained("CompVis/stable-diffusion-v1-4", subfolder="unet")
names = ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"]
params = dict(unet.named_parameters())
opt = torch.optim.Adam([params[n] for n in names], lr=args.lr)
for _ in range(args.iterations):
    opt.zero_grad()
    sum(params[n].square().sum() for n in names).backward()
    opt.step()
save_file({n: params[n].detach().contiguous() for n in names}, args.save_path + "/esd.safetensors")
"""


@pytest.fixture(scope="module")
def conformance():
    sys.path.insert(0, str(BENCH.parent))  # the script imports the harness beside it
    spec = importlib.util.spec_from_file_location("bench_conformance", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    sys.path.remove(str(BENCH.parent))
    return module


def _git_clone(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fake"], check=True)
    return folder


def test_the_scored_model_is_the_official_scripts_edit(conformance, tmp_path):
    from unsee.artifacts import apply_artifacts, read_delta
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED

    clone = _git_clone(tmp_path / "erasing", {"esd_sd.py": FAKE_ESD})
    commit = conformance.clone_commit(clone, "esd_sd.py")
    assert len(commit) == 40  # a clean clone: no +dirty
    bundle = load_bundle("toyworld-sd")
    base = {n: p.detach().clone() for n, p in bundle.unet.named_parameters()}
    budget = conformance.Budget(3, 1e-3, 1.0, 3.0, 10, 32)
    ran = conformance.run_official(
        "esd", clone, commit, "star", 0, budget, bundle, BUNDLED["toyworld-sd"], tmp_path / "w"
    )
    saved = load_file(str(tmp_path / "w" / "official-output" / "esd.safetensors"))
    delta, _ = read_delta(ran.artifact)
    assert delta.keys() == saved.keys()
    # the official run's own steps were timed, not the start-up
    assert ran.measured.steps == 3 and ran.measured.seconds_per_iteration() is not None
    assert ran.measured.peak_rss_mb > 0
    apply_artifacts(bundle, [ran.artifact])
    for name, p in bundle.unet.named_parameters():
        if name in saved:
            assert torch.allclose(p.detach(), saved[name].float(), atol=1e-7)
            assert not torch.equal(p.detach(), base[name])
        else:
            assert torch.equal(p.detach(), base[name]), name


def test_an_official_tensor_the_unet_lacks_is_refused(conformance, tmp_path):
    from unsee.models.bundle import load_bundle

    bundle = load_bundle("toyworld-sd")
    weights = tmp_path / "edit.safetensors"
    save_file({"mid_block.attn9.to_q.weight": torch.zeros(2, 2)}, str(weights))
    about = {"repo": "r", "script": "s", "commit": "c" * 40, "command": "x"}
    with pytest.raises(RuntimeError, match="not a parameter of this UNet"):
        conformance.official_artifact(bundle, weights, tmp_path / "a", "esd-x", "star", about)


def test_pooled_verdict_follows_the_difference_interval(conformance):
    same = {"erasure": (30, 32), "retain": (120, 128)}
    assert conformance.verdict(same, dict(same)) == "equivalent"
    weaker = {"erasure": (4, 32), "retain": (120, 128)}
    assert conformance.verdict(same, weaker).startswith("not equivalent (unsee erasure -0.8")
    rows = [
        {"erasure": 0.75, "erasure_images": 4, "retain_accuracy": 1.0, "retain_pairs": 8},
        {"erasure": 0.25, "erasure_images": 4, "retain_accuracy": 0.5, "retain_pairs": 8},
    ]
    assert conformance.pooled(rows, "erasure", "erasure_images") == (4, 8)
    assert conformance.pooled(rows, "retain_accuracy", "retain_pairs") == (12, 16)


def test_bad_input_is_one_line_and_exit_2(conformance, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "esd_sd.py").write_text("")
    wrong = _git_clone(tmp_path / "wrong", {"README.md": "not the repository"})
    cases = [
        (["--official", f"esd={tmp_path / 'missing'}", "--method", "esd"], "no such folder"),
        (["--official", f"esd={plain}", "--method", "esd"], "not a git clone"),
        (["--official", f"esd={wrong}", "--method", "esd"], "has no esd_sd.py"),
        (["--official", f"esd={wrong}", "--method", "esd,sld"], "unknown"),
        (["--method", "uce"], "no --official uce=PATH"),
        (["--official", "esd", "--method", "esd"], "expected NAME=PATH"),
        (["--official", f"esd={wrong}", "--method", "esd", "--seeds", "a"], "--seeds"),
    ]
    for argv, says in cases:
        assert conformance.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, (argv, err)
