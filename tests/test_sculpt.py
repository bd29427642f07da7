"""Sculpting Memory, SalUn and Concept Ablation: mask guarantees (density, hard freeze with
reset optimiser state, global saliency threshold), the KD term, targets, parameter
validation, exact resume, per-round provenance, and sequential forgetting on ToyWorld."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from artifact_checks import assert_same_delta
from devices import CPU_EXACT, DEVICE, same
from toyworld_rates import shape_rates
from unsee.concepts import resolve_concept
from unsee.erase.engine import EraseConfig, Erasure, run_erasure, validate
from unsee.erase.masks import DynamicMask, StaticMask
from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle

NAMES = (
    "b.attn2.to_q.weight",
    "b.attn2.to_k.weight",
    "b.attn2.to_out.0.weight",
    "b.attn2.to_out.0.bias",
)


def _toy_params(seed: int = 0) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = ((6, 6), (6, 10), (6, 6), (6,))
    return {
        n: torch.nn.Parameter(torch.randn(s, generator=g))
        for n, s in zip(NAMES, shapes, strict=True)
    }


def _train(mask: DynamicMask, params, steps: int, lr: float = 0.05):
    """Drive ``mask`` as the engine does; yields (step, values before, values after, masks
    in force during the step) for every optimiser step."""
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    mask.attach(params, opt)
    mask.start_round(0)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        loss = sum(
            (p * torch.randn(p.shape, generator=g)).sum() + p.pow(2).sum() for p in params.values()
        )
        loss.backward()
        before = {n: p.detach().clone() for n, p in params.items()}
        in_force = {n: m.clone() for n, m in mask.masks.items()}
        if mask.should_step(step):
            opt.step()
            yield step, before, {n: p.detach().clone() for n, p in params.items()}, in_force
        opt.zero_grad(set_to_none=True)
        mask.after_step(step)


def test_dynamic_mask_keeps_density_per_matrix_and_swaps_the_scheduled_count():
    params = _toy_params()
    mask = DynamicMask(
        round_length=40, steps_per_epoch=4, density=0.5, warmup=4, interval=4, turnover=0.4
    )
    assert mask.epochs == 10 and mask.last_update_epoch == 8
    seen, changes, steps = None, [], []
    for step, _, _, in_force in _train(mask, params, 40):
        steps.append(step)
        if seen is not None and any(not torch.equal(seen[n], in_force[n]) for n in in_force):
            changes.append({n: int((seen[n] != in_force[n]).sum()) for n in in_force})
        seen = in_force
        assert set(in_force) == set(NAMES[:3])  # the bias is dense
        for n, m in in_force.items():
            assert int(m.sum()) == int(0.5 * m.numel()), n
    assert steps == list(range(4, 40))  # no optimiser step during the warm-up
    # updates at n = 8, 12, ..., 32 (epochs 1..7 < 8); each swaps 2 * max(1, floor(f |A|))
    assert len(changes) == 7
    for k, change in enumerate(changes):
        f = mask.turnover_at(k + 1)
        for n, flipped in change.items():
            active = int(0.5 * params[n].numel())
            assert flipped == 2 * min(max(1, math.floor(f * active)), active), (k, n)


def test_released_schedule_arithmetic():
    # methods.md §1.5: 10 epochs of 50 iterations, updates at iterations 100..400 (epochs
    # 1, 3, 5, 7) with turnover ~0.195, 0.159, 0.100, 0.041; none from epoch 8 on
    mask = DynamicMask(round_length=500, steps_per_epoch=50)
    assert (mask.epochs, mask.last_update_epoch, mask.warmup, mask.interval) == (10, 8, 50, 100)
    assert [round(mask.turnover_at(e), 3) for e in (1, 3, 5, 7)] == [0.195, 0.159, 0.1, 0.041]


def test_reset_optimizer_state_freezes_masked_weights():
    moved = {}
    for reset in (False, True):
        params = _toy_params()
        mask = DynamicMask(
            round_length=30,
            steps_per_epoch=1,
            density=0.5,
            warmup=2,
            interval=2,
            turnover=0.5,
            decay=False,
            update_until=1.0,
            reset_optimizer_state=reset,
        )
        moved[reset] = 0
        for _, before, after, in_force in _train(mask, params, 30):
            for n, m in in_force.items():
                moved[reset] += int((before[n] != after[n])[~m].sum())
    # a gradient mask lets Adam's momentum move just-masked weights; the reset stops it
    assert moved[False] > 0
    assert moved[True] == 0


def test_static_mask_threshold_is_global():
    params = {"a": torch.nn.Parameter(torch.zeros(4, 4)), "b": torch.nn.Parameter(torch.zeros(8))}
    mask = StaticMask()
    mask.attach(params)
    mask.collect()
    (params["a"] * torch.full((4, 4), 10.0)).sum().backward()  # large saliency everywhere
    (params["b"] * torch.arange(8.0)).sum().backward()
    mask.fix(0.5)
    # 12 of 24 entries: all 16 of "a" outrank "b" -> a top-12 cut inside "a" is impossible
    # per matrix; globally "a" keeps every entry with |g| >= the 12th largest
    assert mask.masks["a"].all() and not mask.masks["b"].any()
    assert not mask.collecting and mask.grad_sum == {}


def _method(sd, method, concepts=("cat", "dog"), **params):
    """A method on a tiny SD model as the engine builds it (no training loop)."""

    recipe = Erasure(
        EraseConfig(
            method=method,
            concepts=list(concepts),
            anchors=["animal"] * len(concepts),
            model=str(sd),
            batch_size=2,
            iterations=4,
            sequential=True,
            params={"forget_images": 2, "forget_steps": 2, "cache": False, **params},
        )
    )
    recipe.setup()
    return recipe.method


def _gradients(sd) -> dict[tuple[str, int], tuple[dict[str, torch.Tensor], dict]]:
    """Per (kd mode, round): the gradient of one step's loss, from the same parameters, a
    student moved away from the round's teacher, and the same randomness."""
    m = _method(sd, "sculpt", mask="none")
    start = {n: p.detach().clone() for n, p in m.ctx.params.items()}
    out = {}
    for kd in ("off", "described", "released"):
        for r in (0, 1):
            m.p = dataclasses.replace(m.p, kd=kd)
            with torch.no_grad():
                for n, p in m.ctx.params.items():
                    p.copy_(start[n])
            m.start_round(r)
            torch.manual_seed(0)
            with torch.no_grad():
                for p in m.ctx.params.values():
                    p.add_(0.05 * torch.randn_like(p))
                    p.grad = None
            step = r * m.ctx.iterations + 1
            loss, parts = m.loss(step, np.random.default_rng([0, step]))
            loss.backward()
            out[kd, r] = {n: p.grad.clone() for n, p in m.ctx.params.items()}, parts
    return out


def test_kd_acts_only_when_earlier_concepts_exist(tiny_sd):
    g = _gradients(tiny_sd)
    (off0, _), (described0, parts0) = g["off", 0], g["described", 0]
    assert "kd" not in parts0
    assert all(same(off0[n], described0[n]) for n in off0)
    (off1, _), (described1, parts1) = g["off", 1], g["described", 1]
    assert parts1["kd"] > 0
    assert any(
        not torch.allclose(off1[n], described1[n]) and not same(off1[n], described1[n])
        for n in off1
    )
    released1, parts_r = g["released", 1]
    assert parts_r["kd_inert"] > 0  # computed as released ...
    assert all(same(off1[n], released1[n]) for n in off1)  # ... and never applied


def test_ca_reads_concept_and_anchor_and_targets_the_frozen_anchor(tiny_sd):
    # the single pair and the frozen target (unsee's before issue 21; the official ones:
    # tests/test_ca_official.py)
    m = _method(tiny_sd, "ca", concepts=("cat",), captions="single", target_model="frozen")
    seen: list[str] = []
    real = m.ctx.encode
    m.ctx.encode = lambda prompts: (seen.extend(prompts), real(prompts))[1]
    assert m.loss(0, np.random.default_rng(0))[0].item() > 1e-6
    assert set(seen) == {"cat", "animal"}
    # once the model ignores the text, the concept's prediction *is* the frozen anchor
    # prediction: zero loss, whatever the trainable model later becomes
    with torch.no_grad():
        for p in m.ctx.params.values():
            p.zero_()
    m.ctx.start_values = {n: p.detach().clone() for n, p in m.ctx.params.items()}
    assert m.loss(1, np.random.default_rng(1))[0].item() < 1e-10


def test_salun_mask_is_a_global_top_half_of_the_saliency(tiny_sd):
    m = _method(tiny_sd, "salun", concepts=("cat",))
    m.mask.attach(m.ctx.params)
    m.mask.start_round(0)
    m.start_round(0)
    sizes = {n: p.numel() for n, p in m.ctx.params.items()}
    kept = sum(int(mk.sum()) for mk in m.mask.masks.values())
    assert set(m.mask.masks) == set(m.ctx.params)  # scope "full": every tensor
    assert abs(kept / sum(sizes.values()) - 0.5) < 0.01
    per_tensor = [float(mk.float().mean()) for mk in m.mask.masks.values()]
    assert max(per_tensor) - min(per_tensor) > 0.3  # one threshold, not 50 % of each
    assert all(p.grad is None for p in m.ctx.params.values())


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("sculpt", {"mask": "rigl"}, r"sculpt\.mask"),
        ("sculpt", {"kd": "yes"}, r"sculpt\.kd"),
        ("sculpt", {"target": "anchor"}, r"sculpt\.target"),
        ("sculpt", {"density": 0}, r"sculpt\.density"),
        ("sculpt", {"template": "a photo"}, r"sculpt\.template"),
        ("sculpt", {"set_guidance": -1.0}, r"sculpt\.set_guidance"),
        ("salun", {"anchor_guidance": -1.0}, r"salun\.anchor_guidance"),
        ("salun", {"mask_fraction": 1.5}, r"salun\.mask_fraction"),
        ("ca", {"target": "frozen"}, r"ca\.target"),
    ],
)
def test_bad_params_are_refused_before_loading(method, params, message):
    with pytest.raises(UnseeError, match=message):
        validate(EraseConfig(method=method, concepts=["star"], params=params))


def test_image_sets_are_drawn_at_their_guidance(tiny_sd):
    from unsee.models.sampling import ddim_sample

    m = _method(tiny_sd, "sculpt", mask="none", set_guidance=1.0, anchor_guidance=2.0)
    bundle, fs, an = m.ctx.bundle, m.forget["cat"], m.anchor["cat"]
    assert bundle.default_guidance not in (1.0, 2.0)
    concept, _ = ddim_sample(bundle, fs.prompts, fs.seeds, steps=2, guidance=1.0)
    assert same(fs.latents, concept)
    assert not same(fs.latents, ddim_sample(bundle, fs.prompts, fs.seeds, steps=2)[0])
    # anchor images keep the concept as negative prompt at their own scale
    anchor, _ = ddim_sample(
        bundle, an.prompts, an.seeds, steps=2, guidance=2.0, negative_prompts=["cat"] * len(an)
    )
    assert same(an.latents, anchor)


def test_anchors_superclass_map_and_overrides():
    with pytest.raises(UnseeError, match="give one with --anchor"):
        validate(EraseConfig(method="sculpt", concepts=["cat"], model="some/hub-id"))
    validate(EraseConfig(method="sculpt", concepts=["tench"], model="some/hub-id"))
    assert resolve_concept("tench", None).anchor == "fish"
    assert resolve_concept("tench", None, "animal").anchor == "animal"
    assert resolve_concept("star", "toyworld").anchor == "symbol"
    assert resolve_concept("star", "toyworld", "shape").anchor_prompts == ("a shape",)


def _sequential(sd, **kw):
    base = dict(
        method="sculpt",
        concepts=["cat", "dog"],
        anchors=["animal", "animal"],
        model=str(sd),
        iterations=6,
        batch_size=2,
        sequential=True,
        checkpoint_every=3,
        params={
            "forget_images": 4,
            "forget_steps": 2,
            "cache": False,
            "warmup": 2,
            "interval": 2,
            "kd": "described",
        },
    )
    base.update(kw)
    return EraseConfig(**base)


@CPU_EXACT
def test_sequential_resume_is_exact_and_the_card_records_rounds(tiny_sd, tmp_path, monkeypatch):

    from unsee.erase.methods.sculpt import Sculpt

    straight = run_erasure(_sequential(tiny_sd), tmp_path / "straight")
    rounds = straight.card["rounds"]
    assert [(r["round"], r["concepts"]) for r in rounds] == [(0, ["cat"]), (1, ["dog"])]
    assert all(r["mask_density"] == 0.5 and "best_epoch" in r for r in rounds)
    real_loss = Sculpt.loss

    def dying(self, step, rng):
        if step == 10:  # mid round 1, after the checkpoint at step 9
            raise KeyboardInterrupt
        return real_loss(self, step, rng)

    monkeypatch.setattr(Sculpt, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        run_erasure(_sequential(tiny_sd), tmp_path / "killed")
    monkeypatch.setattr(Sculpt, "loss", real_loss)
    resumed = run_erasure(_sequential(tiny_sd), tmp_path / "killed", resume=True)
    assert resumed.card["rounds"] == rounds
    assert_same_delta(tmp_path / "killed", tmp_path / "straight")


@pytest.mark.slow
def test_sequential_sculpt_forgets_both_shapes(judge, tmp_path):
    base = load_bundle("toyworld", device=DEVICE)
    shapes = ("star", "hexagon")
    before = shape_rates(base, judge, 8, shapes=shapes)
    cfg = EraseConfig(
        method="sculpt",
        concepts=list(shapes),
        sequential=True,
        iterations=50,
        params={"forget_images": 8, "forget_steps": 10},
    )
    res = run_erasure(cfg, tmp_path / "art", bundle=base)
    after = shape_rates(res.bundle, judge, 8, shapes=shapes)
    assert [r["concepts"] for r in res.card["rounds"]] == [["star"], ["hexagon"]]
    for s in shapes:
        assert before[s] >= 0.75 and after[s] <= before[s] - 0.5, (before, after)
