"""Engine mechanics on a tiny SD model: resume after kill -9, artifacts, export, refusal
of foreign or mismatched deltas, NaN handling, and clean CLI errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from artifact_checks import assert_same_delta, max_gap
from devices import DEVICE
from unsee.artifacts import apply_artifacts, export_merged, fingerprint, read_delta
from unsee.cli import app
from unsee.erase.engine import EraseConfig, Erasure, can_resume, run_erasure, validate
from unsee.errors import UnseeError
from unsee.io import load_state
from unsee.models.bundle import load_bundle

UNSEE = [sys.executable, "-m", "unsee.cli"]


def _cfg(sd: Path, **kw) -> EraseConfig:
    base = dict(
        method="esd-x",
        concepts=["cat"],
        model=str(sd),
        iterations=4,
        batch_size=1,
        params={"ddim_steps": 4},
    )
    base.update(kw)
    return EraseConfig(**base)


def test_artifact_contents_and_apply(tiny_sd, tmp_path):
    res = run_erasure(_cfg(tiny_sd, concepts=["cat", "dog"]), tmp_path / "art")
    card = json.loads((tmp_path / "art" / "model_card.json").read_text())
    assert card["method"] == "esd-x" and [c["name"] for c in card["concepts"]] == ["cat", "dog"]
    # SD: the paper's eta 1 (esd_sd.py's --negative_guidance 2, its own form of the target)
    assert card["hyperparameters"]["params"]["eta"] == 1.0
    assert card["base"]["fingerprint"] == fingerprint(load_bundle(tiny_sd).unet)
    assert card["cost"]["parameters_changed"] > 0 and card["cost"]["wall_seconds"] > 0
    delta, _ = read_delta(tmp_path / "art")
    assert all("attn2" in n for n in delta)  # esd-x touches cross-attention only
    fresh = load_bundle(tiny_sd)
    apply_artifacts(fresh, [tmp_path / "art"])
    for n, p in fresh.unet.named_parameters():
        assert torch.allclose(p, dict(res.bundle.unet.named_parameters())[n].cpu(), atol=1e-6)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one device and precision per process (its AcceleratorState), set by
    the first erasure a process runs; a test that asks for another precision starts from a
    fresh state and leaves one behind, so the tests before and after it keep theirs."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_mixed_precision_covers_the_trajectory(
    tiny_sd, tmp_path, monkeypatch, fresh_accelerate_state
):
    """``mixed_precision`` autocasts every UNet pass of an iteration, the x_t trajectory
    included (most of an ESD iteration's passes: it used to run in float32), and the
    run still ends with finite weights."""
    from unsee.erase import context

    calls: list[bool] = []
    real = context.ddim_sample

    def watched(bundle, *args, unet=None, **kw):
        handle = unet.register_forward_pre_hook(
            lambda *_: calls.append(torch.is_autocast_enabled("cpu"))
        )
        try:
            return real(bundle, *args, unet=unet, **kw)
        finally:
            handle.remove()

    monkeypatch.setattr(context, "ddim_sample", watched)
    cfg = _cfg(tiny_sd, mixed_precision="bf16", device="cpu", params={"ddim_steps": 8})
    res = run_erasure(cfg, tmp_path / "art")
    assert calls and all(calls), calls
    assert all(torch.isfinite(p).all() for p in res.bundle.unet.parameters())


def test_resume_after_kill_equals_uninterrupted_run(tiny_sd, tmp_path):
    args = [
        "erase",
        "--model",
        str(tiny_sd),
        "--method",
        "esd-x",
        "--concept",
        "cat",
        "--iterations",
        "40",
        "--batch-size",
        "1",
        "--set",
        "ddim_steps=4",
        "--checkpoint-every",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNSEE_PROGRESS": "0"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*UNSEE, *args, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / ".killed.ckpt" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "run finished before it could be killed"
    assert ckpt.exists() and not killed.exists()
    step = load_state(ckpt)["step"]
    assert 0 < step < 40
    # the benchmark harness resumes a stopped row only from its own plan's checkpoint
    same = _cfg(tiny_sd, iterations=40, checkpoint_every=2)
    assert can_resume(same, killed)
    assert not can_resume(dataclasses.replace(same, lr=1e-3), killed)
    assert not can_resume(same, tmp_path / "never-run")
    r = subprocess.run(
        [*UNSEE, *args, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert not ckpt.parent.exists()  # checkpoint removed once the artifact is written
    straight = tmp_path / "straight"
    r = subprocess.run(
        [*UNSEE, *args, "--out", str(straight)], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    atol = 1e-6  # bit-exact up to float printing on CPU
    if torch.cuda.is_available():
        # CUDA kernels are not reproducible run to run: the resumed run must be as close to
        # an uninterrupted one as two uninterrupted runs are to each other
        again = tmp_path / "again"
        r = subprocess.run(
            [*UNSEE, *args, "--out", str(again)], env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        atol = 10 * max_gap(straight, again) + 1e-6
    assert_same_delta(killed, straight, atol=atol)
    if not torch.cuda.is_available():  # bit-exact on the CPU: same bytes, id and final loss
        cards = [json.loads((d / "model_card.json").read_text()) for d in (killed, straight)]
        assert (killed / "delta.safetensors").read_bytes() == (
            straight / "delta.safetensors"
        ).read_bytes()
        assert cards[0]["id"] == cards[1]["id"]
        assert cards[0]["cost"]["final_loss"] == cards[1]["cost"]["final_loss"]


def test_export_loads_in_plain_diffusers_and_matches(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    res = run_erasure(_cfg(tiny_sd, method="esd-u"), tmp_path / "art")
    export_merged(res.bundle, tmp_path / "merged")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "merged")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = res.bundle.encode_prompts(["cat", "dog"])
    t = torch.tensor([10, 500])
    dev = res.bundle.device
    with torch.no_grad():
        ours = res.bundle.unet(x.to(dev), t.to(dev), ctx).sample.cpu()
        theirs = pipe.unet(x, t, ctx.cpu()).sample
    # the GPU's convolutions run in TF32
    assert torch.allclose(ours, theirs, atol=1e-5 if dev.type == "cpu" else 1e-3)
    base = load_bundle(tiny_sd)
    with torch.no_grad():
        assert not torch.allclose(base.unet(x, t, ctx.cpu()).sample, theirs, atol=1e-5)


def test_sequential_on_records_ledger_and_is_cumulative(tiny_sd, tmp_path):
    run_erasure(_cfg(tiny_sd), tmp_path / "a")
    res = run_erasure(_cfg(tiny_sd, concepts=["dog"], on=[str(tmp_path / "a")]), tmp_path / "b")
    card_a = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert [e["id"] for e in res.card["ledger"]] == [card_a["id"]]
    fresh = load_bundle(tiny_sd)
    apply_artifacts(fresh, [tmp_path / "b"])  # b alone reproduces the whole chain
    for n, p in fresh.unet.named_parameters():
        assert torch.allclose(p, dict(res.bundle.unet.named_parameters())[n].cpu(), atol=1e-6)
    with pytest.raises(UnseeError, match="already includes"):
        apply_artifacts(load_bundle(tiny_sd), [tmp_path / "a", tmp_path / "b"])


def test_a_model_passed_in_is_erased_where_it_lives(tiny_sd, tmp_path):
    bundle = load_bundle(tiny_sd, device=DEVICE)
    other = "cuda" if DEVICE == "cpu" else "cpu"
    # without a GPU, asking for one is refused before anything else is looked at
    clash = f"passed in is on {DEVICE}" if torch.cuda.is_available() else "asks for a GPU"
    with pytest.raises(UnseeError, match=clash):
        run_erasure(
            dataclasses.replace(_cfg(tiny_sd), device=other), tmp_path / "other", bundle=bundle
        )
    assert not (tmp_path / "other").exists()
    # device "auto" follows the model
    res = run_erasure(_cfg(tiny_sd), tmp_path / "art", bundle=bundle)
    assert res.card["cost"]["device"].startswith(DEVICE) and res.bundle is bundle


def test_delta_refuses_other_base(tiny_sd, tmp_path):
    from conftest import build_tiny_sd

    run_erasure(_cfg(tiny_sd), tmp_path / "art")
    other = build_tiny_sd(tmp_path / "other")
    bundle = load_bundle(other)
    with torch.no_grad():
        next(bundle.unet.parameters()).add_(0.01)  # same architecture, different weights
    with pytest.raises(UnseeError, match="different base model"):
        apply_artifacts(bundle, [tmp_path / "art"])


def test_foreign_and_truncated_safetensors(tiny_sd, tmp_path):
    run_erasure(_cfg(tiny_sd), tmp_path / "art")
    path = tmp_path / "art" / "delta.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnseeError, match="not a readable safetensors"):
        apply_artifacts(load_bundle(tiny_sd), [tmp_path / "art"])
    save_file({"w": torch.zeros(2)}, str(path))  # valid file, not an unsee delta
    with pytest.raises(UnseeError, match="not an unsee delta"):
        apply_artifacts(load_bundle(tiny_sd), [tmp_path / "art"])


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_sd, tmp_path):
    cfg = _cfg(tiny_sd, iterations=30, lr=1e30, checkpoint_every=1)
    with pytest.raises(UnseeError, match="loss became"):
        run_erasure(cfg, tmp_path / "art")
    assert not (tmp_path / "art").exists()
    assert (tmp_path / ".art.ckpt" / "checkpoint.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope", "--concept", "cat"], "unknown method"),
        (["--method", "esd-x", "--concept", " "], "empty concept"),
        (["--method", "esd-x", "--concept", "cat", "--scope", "bogus"], "unknown scope"),
        (
            ["--method", "esd-x", "--concept", "cat", "--scope", "re:nothing_matches_this"],
            "matches no parameter",
        ),
        (
            ["--method", "esd-x", "--concept", "cat", "--iterations", "0"],
            "iterations must be greater than 0",
        ),
        (["--method", "esd-x", "--concept", "cat", "--lr", "nan"], "lr must be a finite number"),
        (["--method", "esd-x", "--concept", "cat", "--lr", "inf"], "lr must be a finite number"),
        (["--method", "esd-x", "--concept", "cat", "--set", "bogus=1"], "unknown parameter"),
        (["--method", "esd-x", "--concept", "cat", "--optimizer", "sgd"], "optimizer must be"),
        (
            ["--method", "esd-x", "--concept", "cat", "--max-grad-norm", "-1"],
            "max_grad_norm must be greater than or equal to 0",
        ),
        (
            ["--method", "esd-x", "--concept", "cat", "--weight-decay", "nan"],
            "weight_decay must be a finite number",
        ),
    ],
)
def test_bad_erase_inputs_exit_2_and_write_nothing(tiny_sd, tmp_path, args, message):
    out = tmp_path / "art"
    r = CliRunner().invoke(app, ["erase", "--model", str(tiny_sd), "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.count("\n") == 1
    assert not out.exists() and not (tmp_path / ".art.ckpt").exists()


def test_existing_output_needs_overwrite(tiny_sd, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = CliRunner().invoke(
        app,
        [
            "erase",
            "--model",
            str(tiny_sd),
            "--method",
            "esd-x",
            "--concept",
            "cat",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 2 and "it is not an unsee artifact folder" in r.output
    assert (out / "keep.txt").read_text() == "mine"


def test_yaml_config_unknown_key_is_an_error(tiny_sd, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: esd-x\nconcepts: [cat]\nmodel: {tiny_sd}\niterationz: 3\n")
    r = CliRunner().invoke(app, ["erase", "--config", str(cfg), "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "unknown key(s)" in r.output and "iterationz" in r.output


def test_yaml_config_runs(tiny_sd, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"method: esd-x-strict\nconcepts: [cat]\nmodel: {tiny_sd}\niterations: 2\n"
        "params: {ddim_steps: 3}\n"
    )
    r = CliRunner().invoke(app, ["erase", "--config", str(cfg), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    delta, _ = read_delta(tmp_path / "a")
    assert delta and all(".to_k." in n or ".to_v." in n for n in delta)


def test_optimizer_defaults_are_adam_except_concept_ablation(tiny_sd, tmp_path):
    """Every method keeps plain Adam (its official code's: esd_sd.py:92, train_sd14.py:108,
    multi_dst_train.py:233, SalUn's random_label.py:56) but Concept Ablation, whose
    diffusers/train.py uses AdamW, weight decay 0.01 and clipping at norm 1; a run's
    choice wins, and the card records what ran."""
    from unsee.erase.registry import REGISTRY
    from unsee.models.family import FAMILIES

    for name, cls in REGISTRY.items():
        for family in FAMILIES.values():
            d = family.pick(cls.defaults, {})
            got = (d.get("optimizer"), d.get("weight_decay"), d.get("max_grad_norm"))
            want = ("adamw", 0.01, 1.0) if name == "ca" else (None, None, None)
            assert got == want, (name, family.key)
    ca = dict(method="ca", concepts=["cat"], anchors=["animal"], model=str(tiny_sd))
    plan = validate(EraseConfig(**ca))
    assert (plan.optimizer, plan.weight_decay, plan.max_grad_norm) == ("adamw", 0.01, 1.0)
    assert plan.params.anchor_guidance == 6.0  # and its anchor images' CFG (train.py:731)
    plan = validate(EraseConfig(**ca, optimizer="adam", weight_decay=0, max_grad_norm=0))
    assert (plan.optimizer, plan.weight_decay, plan.max_grad_norm) == ("adam", 0.0, 0.0)
    res = run_erasure(_cfg(tiny_sd, iterations=1), tmp_path / "art")
    hp = res.card["hyperparameters"]
    assert (hp["optimizer"], hp["weight_decay"], hp["max_grad_norm"]) == ("adam", 0.0, 0.0)


def _recipe(sd: Path, **kw) -> Erasure:
    recipe = Erasure(_cfg(sd, **kw))
    recipe.setup()
    return recipe


def test_adamw_decays_weights_that_get_no_gradient(tiny_sd):
    recipe = _recipe(tiny_sd, optimizer="adamw", weight_decay=0.1, lr=0.01)
    inner = recipe.opt.optimizer  # accelerate's wrapper around the torch optimiser
    assert type(inner) is torch.optim.AdamW and inner.defaults["weight_decay"] == 0.1
    start = {n: p.detach().clone() for n, p in recipe.params.items()}
    for p in recipe.params.values():
        p.grad = torch.zeros_like(p)
    recipe.opt.step()
    for n, p in recipe.params.items():  # decoupled: p <- p (1 - lr wd), Adam's step is 0
        torch.testing.assert_close(p.detach(), start[n] * (1 - 0.01 * 0.1))
    plain = _recipe(tiny_sd, lr=0.01)  # the default: Adam, no decay, and nothing moves
    assert type(plain.opt.optimizer) is torch.optim.Adam
    start = {n: p.detach().clone() for n, p in plain.params.items()}
    for p in plain.params.values():
        p.grad = torch.zeros_like(p)
    plain.opt.step()
    assert all(torch.equal(p.detach(), start[n]) for n, p in plain.params.items())


def _step_gradient_norms(recipe: Erasure) -> list[float]:
    """Runs ``recipe`` and returns the gradient's norm the optimiser saw at each step."""
    norms: list[float] = []

    def record(_opt, _args, _kwargs):
        grads = [p.grad for p in recipe.params.values() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    recipe.opt.optimizer.register_step_pre_hook(record)
    recipe.train()
    return norms


def test_clipping_bounds_the_gradient_each_step_sees(tiny_sd):
    raw = _step_gradient_norms(_recipe(tiny_sd, iterations=3))
    bound = min(raw) / 10  # every step's gradient is over it
    clipped = _step_gradient_norms(_recipe(tiny_sd, iterations=3, max_grad_norm=bound))
    assert len(clipped) == 3
    # the same first gradient, scaled down to the bound (later steps start elsewhere)
    assert clipped[0] == pytest.approx(bound, rel=1e-4) and raw[0] > bound
    assert max(clipped) <= bound * (1 + 1e-4)


def test_ca_resume_restores_adamw_state_and_the_start_token_freeze(tiny_sd, tmp_path):
    """Concept Ablation with its official defaults (AdamW, clipping, flips, the ring mask,
    the frozen start token) killed after its checkpoint and resumed ends where an
    uninterrupted run does."""
    cfg = EraseConfig(
        method="ca",
        concepts=["cat"],
        anchors=["animal"],
        model=str(tiny_sd),
        iterations=4,
        batch_size=2,
        lr=1e-2,
        checkpoint_every=2,
        params={"forget_images": 3, "forget_steps": 2, "cache": False, "captions": "single"},
    )
    killed = Erasure(cfg, tmp_path / "killed")
    killed.setup()
    loss = killed.method.loss

    def dies_at_step_3(step, rng):
        if step == 3:
            raise KeyboardInterrupt
        return loss(step, rng)

    killed.method.loss = dies_at_step_3
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    state = load_state(tmp_path / ".killed.ckpt" / "checkpoint.safetensors")
    assert state["step"] == 2 and state["opt"]["param_groups"][0]["weight_decay"] == 0.01
    resumed = Erasure(cfg, tmp_path / "killed", resume=True)
    resumed.setup()
    assert resumed.step == 2 and resumed.method.hooks  # the freeze holds after a resume
    assert type(resumed.opt.optimizer) is torch.optim.AdamW and resumed.opt.state
    resumed.train()
    assert not resumed.method.hooks  # removed once training is over
    resumed.save()
    run_erasure(cfg, tmp_path / "straight")
    assert_same_delta(tmp_path / "killed", tmp_path / "straight", atol=1e-6)
