"""KSCU: the Key Step Table, trajectory reuse, its plan presets, resume, and its guarantee
on ToyWorld (star erased at key steps only, other shapes kept)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from artifact_checks import assert_same_delta
from devices import CPU_EXACT, DEVICE
from toyworld_rates import shape_rates
from unsee.erase.engine import EraseConfig, run_erasure, validate
from unsee.erase.methods.kscu import KSCU, augmented_prompts, build_schedule
from unsee.errors import UnseeError
from unsee.io import load_state
from unsee.models.bundle import load_bundle
from unsee.models.sampling import ddim_sample
from unsee.toyworld.vocab import SHAPES


def test_key_step_table_matches_the_spec_arithmetic():
    # methods.md §2.4: nudity, S=14, N=750, S_max=44: 8 traversals of 36 steps (288
    # iterations) at S=14, 8 of 35 (280) at S=15, the remaining 182 at S=16.
    table = build_schedule(14, 50, 750, loops_before_shift=8, max_start=44)
    assert len(table) == 750
    assert all(s >= 14 for _, s in table)
    assert table[0] == (0, 14) and table[35] == (0, 49) and table[36] == (0, 14)
    assert table[287] == (0, 49) and table[288] == (0, 15)
    assert table[567] == (0, 49) and table[568] == (0, 16)
    assert sum(s == 14 for _, s in table) == 8 and min(s for _, s in table[568:]) == 16
    # the start never passes S_max
    assert min(s for _, s in build_schedule(40, 50, 2000, max_start=44)[-10:]) <= 44


def test_key_step_table_interleaves_concepts_per_traversal():
    table = build_schedule(45, 50, 20, n_concepts=2)
    assert table[:5] == [(0, s) for s in range(45, 50)]
    assert table[5:10] == [(1, s) for s in range(45, 50)]


def test_continuing_a_trajectory_equals_sampling_it_in_one_go(toyworld):
    # Trajectory reuse is exact while the model does not change: x at index s, advanced one
    # DDIM step, is x at index s+1.
    prompts, seeds = ["a star", "a circle"], [3, 4]
    x_s, t_s = ddim_sample(toyworld, prompts, seeds, steps=10, guidance=3.0, stop_at=6)
    step, t_next = ddim_sample(
        toyworld, prompts, seeds, steps=10, guidance=3.0, stop_at=7, latents=x_s, start_at=6
    )
    whole, t_whole = ddim_sample(toyworld, prompts, seeds, steps=10, guidance=3.0, stop_at=7)
    assert t_next == t_whole and t_s > t_next
    assert torch.allclose(step, whole, atol=1e-5)


def test_augmented_prompts_are_deterministic_and_keep_the_concept():
    a = augmented_prompts("a star", "star", "object", seed=3)
    assert a == augmented_prompts("a star", "star", "object", seed=3)
    assert len(a) == 10 and len(set(a)) >= 8
    assert all("star" in p for p in a)
    assert a != augmented_prompts("a star", "star", "object", seed=4)


def test_task_presets_choose_scope_and_budget():
    official = {"preset": "official"}
    obj = validate(EraseConfig(method="kscu", concepts=["star"], params=official))
    style = validate(EraseConfig(method="kscu", concepts=["striped"], params=official))
    assert obj.scope == "noxattn-linear" and style.scope == "xattn"
    # the style preset trains the smaller cross-attention scope at ESD-x's ToyWorld lr
    assert (obj.lr, style.lr) == (5e-5, 3e-4)
    assert validate(EraseConfig(method="kscu", concepts=["striped"], lr=1e-4)).lr == 1e-4
    sd = validate(
        EraseConfig(
            method="kscu", concepts=["nudity"], model="some/hub-id", params={"task": "nudity"}
        )
    )
    assert (sd.iterations, sd.lr, sd.batch_size) == (750, 1e-5, 1)
    with pytest.raises(UnseeError, match="mix tasks"):
        validate(EraseConfig(method="kscu", concepts=["star", "striped"]))
    with pytest.raises(UnseeError, match=r"kscu\.task"):
        validate(EraseConfig(method="kscu", concepts=["star"], params={"task": "shape"}))
    with pytest.raises(UnseeError, match="below ddim_steps"):
        validate(EraseConfig(method="kscu", concepts=["star"], params={"start": 50}))
    with pytest.raises(UnseeError, match="are empty"):  # preset S = 14 >= end
        validate(
            EraseConfig(method="kscu", concepts=["star"], params={"end": 10, "levels": "index"})
        )


def _cfg(sd, **kw):
    base = dict(
        method="kscu",
        concepts=["cat"],
        model=str(sd),
        iterations=6,
        batch_size=1,
        checkpoint_every=3,
        params={"ddim_steps": 6, "start": 2, "task": "object"},
    )
    base.update(kw)
    return EraseConfig(**base)


@CPU_EXACT
def test_reuse_resamples_once_per_traversal_and_resume_continues_the_walk(
    tiny_sd, tmp_path, monkeypatch
):
    straight = run_erasure(_cfg(tiny_sd), tmp_path / "straight")
    assert straight.card["cost"]["optimizer_steps"] == 6

    calls = []
    real_loss = KSCU.loss

    def crash_at_4(self, step, rng):
        calls.append(step)
        if step == 4 and len(calls) == 5:
            raise KeyboardInterrupt  # a crash after the checkpoint at step 3
        return real_loss(self, step, rng)

    monkeypatch.setattr(KSCU, "loss", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        run_erasure(_cfg(tiny_sd), tmp_path / "killed")
    ckpt = load_state(tmp_path / ".killed.ckpt" / "checkpoint.safetensors")
    # 4 key steps (2..5) per traversal: one sample from noise for steps 0-3
    assert ckpt["step"] == 3 and ckpt["method"]["resampled"] == 1
    run_erasure(_cfg(tiny_sd), tmp_path / "killed", resume=True)
    assert_same_delta(tmp_path / "killed", tmp_path / "straight")


@pytest.mark.slow
def test_kscu_erases_star_at_key_steps_and_keeps_other_shapes(judge, tmp_path):
    base = load_bundle("toyworld", device=DEVICE)
    before = shape_rates(base, judge, 8)
    res = run_erasure(EraseConfig(method="kscu", concepts=["star"]), tmp_path / "art", bundle=base)
    after = shape_rates(res.bundle, judge, 8)
    assert res.card["hyperparameters"]["iterations"] < 120  # fewer than ESD's default
    assert before["star"] >= 0.5
    assert after["star"] <= 0.25, after
    others = [s for s in SHAPES if s != "star"]
    drop = np.mean([before[s] for s in others]) - np.mean([after[s] for s in others])
    assert drop <= 0.12, (before, after)
