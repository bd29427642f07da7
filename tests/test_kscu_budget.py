"""KSCU's budget and tables (issue 19): every concept gets its own key-step traversals with
several concepts at once, each sequential round trains its own concept, the presets are one
switch apart, and the key steps are placed by noise level."""

from __future__ import annotations

import pytest

from unsee.erase.engine import EraseConfig, Erasure, run_erasure, validate
from unsee.erase.methods.esd import ESD
from unsee.erase.methods.kscu import KSCU, TASKS, build_schedule, build_table
from unsee.erase.timesteps import NoiseLevel, log_snr
from unsee.models.sampling import ddim_timesteps


def _kscu(bundle, concepts, **kw) -> KSCU:
    """KSCU as the engine builds it on ``bundle`` (no training)."""
    recipe = Erasure(EraseConfig(method="kscu", concepts=list(concepts), **kw))
    recipe.setup(bundle)
    assert isinstance(recipe.method, KSCU)
    return recipe.method


def _counts(table, n):
    return [sum(k == c for k, _, _ in table) for c in range(n)]


def test_several_concepts_each_get_the_per_concept_budget_and_a_full_traversal(toyworld):
    shapes = ["star", "circle", "square"]
    one = validate(EraseConfig(method="kscu", concepts=["star"]))
    m = _kscu(toyworld, shapes)
    assert m.ctx.iterations == len(shapes) * one.iterations
    assert _counts(m.table, 3) == [one.iterations] * 3
    for k in range(3):
        assert {s for c, s, _ in m.table if c == k} >= set(range(m.start, m.end)), k
        # each concept's entries are its own table, in order (j counts them)
        assert [j for c, _, j in m.table if c == k] == list(range(one.iterations))
    # an explicit budget is shared evenly
    m = _kscu(toyworld, shapes, iterations=100)
    assert _counts(m.table, 3) == [34, 33, 33]


def test_sequential_builds_one_table_per_round(toyworld):
    shapes = ["star", "heart", "hexagon", "arrow"]
    m = _kscu(toyworld, shapes, sequential=True)
    ctx, it = m.ctx, m.ctx.iterations
    assert it == validate(EraseConfig(method="kscu", concepts=["star"])).iterations
    assert len(m.table) == ctx.total_steps == 4 * it
    for step, (k, _, _) in enumerate(m.table):
        assert ctx.concepts[k] == ctx.concept_for(step)
    own = build_schedule(m.start, m.end, it, 1, m.p.loops_before_shift, m.max_start)
    for r in range(4):
        assert [(0, s) for _, s, _ in m.table[r * it : (r + 1) * it]] == own


@pytest.mark.parametrize("sequential", [False, True])
def test_a_run_updates_every_concept_its_share(tiny_sd, tmp_path, monkeypatch, sequential):
    seen = []
    real = KSCU.loss

    def spy(self, step, rng):
        seen.append(self.ctx.concepts[self.table[step][0]].name)
        return real(self, step, rng)

    monkeypatch.setattr(KSCU, "loss", spy)
    cfg = EraseConfig(
        method="kscu",
        concepts=["cat", "dog"],
        model=str(tiny_sd),
        iterations=6,
        batch_size=1,
        sequential=sequential,
        params={"ddim_steps": 6, "start": 3, "task": "object"},
    )
    res = run_erasure(cfg, tmp_path / "art")
    rounds = 2 if sequential else 1
    assert res.card["cost"]["optimizer_steps"] == 6 * rounds
    assert seen.count("cat") == seen.count("dog") == 3 * rounds
    if sequential:
        assert seen == ["cat"] * 6 + ["dog"] * 6


def test_equal_budgets_interleave_like_the_official_table():
    # whole traversals (10 + 10 at start 30, 9 + 9 at 31): the official multi-concept table
    whole = build_table(30, 40, [38, 38, 38], loops_before_shift=2, max_start=35)
    assert [(k, s) for k, s, _ in whole] == build_schedule(
        30, 40, 114, n_concepts=3, loops_before_shift=2, max_start=35
    )
    # otherwise the official table cuts the last concepts short, ours each concept's own
    # last traversal: the same entries until then, and every concept its 25
    official = build_schedule(30, 40, 75, n_concepts=3, loops_before_shift=2, max_start=35)
    ours = build_table(30, 40, [25, 25, 25], loops_before_shift=2, max_start=35)
    assert [(k, s) for k, s, _ in ours[:60]] == official[:60]
    assert _counts(ours, 3) == [25, 25, 25]
    assert _counts([(k, s, 0) for k, s in official], 3) != [25, 25, 25]


def test_presets_are_one_switch_apart():
    matched = validate(EraseConfig(method="kscu", concepts=["star"]))
    official = validate(
        EraseConfig(method="kscu", concepts=["star"], params={"preset": "official"})
    )
    assert (matched.scope, matched.lr) == (ESD.scope, ESD.defaults["toyworld"]["lr"])
    assert (official.scope, official.lr) == (TASKS["object"].scope, KSCU.defaults["toyworld"]["lr"])
    assert matched.iterations == official.iterations == TASKS["object"].iterations["toyworld"]
    sd = validate(
        EraseConfig(
            method="kscu", concepts=["nudity"], model="some/hub-id", params={"task": "nudity"}
        )
    )
    assert (sd.scope, sd.lr) == (TASKS["nudity"].scope, KSCU.defaults["sd"]["lr"])


def test_key_steps_keep_sd_indices_on_sd_and_follow_noise_level_elsewhere(tiny_sd, toyworld):
    from unsee.models.bundle import load_bundle

    sd = _kscu(load_bundle(tiny_sd), ["cat"], model=str(tiny_sd), params={"task": "object"})
    assert sd.start == TASKS["object"].start[1]  # quick code's S on SD 1.x's own schedule
    tw = _kscu(toyworld, ["star"])
    grid = ddim_timesteps(toyworld, tw.p.ddim_steps)
    levels = log_snr(toyworld.alphas_cumprod())[grid]
    target = NoiseLevel.from_sd1_ddim_index(TASKS["object"].start[1]).log_snr
    # ToyWorld's start is the grid index nearest SD's noise level at S, not the scaled index
    assert int((levels - target).abs().argmin()) == tw.start
    old = _kscu(toyworld, ["star"], params={"levels": "index"})
    assert old.start == TASKS["object"].start[1] * tw.p.ddim_steps // 50


def test_index_levels_reproduce_the_table_before_issue_19(toyworld):
    # one concept, levels=index: S scaled with E and S_max = ceil(0.9 E) - 1, as before
    m = _kscu(toyworld, ["star"], params={"levels": "index", "ddim_steps": 10})
    start = round(TASKS["object"].start[1] * 10 / 50)
    assert [(k, s) for k, s, _ in m.table] == build_schedule(
        start, 10, m.ctx.iterations, 1, m.p.loops_before_shift, max_start=8
    )
