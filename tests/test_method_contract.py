"""The engine/method contract, for every registered method: two steps on a tiny Stable
Diffusion model write an artifact for the right base that changes only tensors in the
method's scope (the methods without an end-to-end test of their own are held to it too)."""

from __future__ import annotations

from typing import Any

import pytest

from unsee.artifacts import read_card, read_delta
from unsee.erase.engine import EraseConfig, run_erasure, validate
from unsee.erase.registry import list_methods
from unsee.erase.scopes import select_parameters
from unsee.models.bundle import load_bundle

#: small sets and short trajectories, so each method runs in seconds on the CPU
SETS = {"forget_images": 2, "forget_steps": 2, "cache": False}
FAST: dict[str, dict[str, Any]] = {
    "esd": {"ddim_steps": 3},
    "kscu": {"ddim_steps": 3},
    "mim-mu": {**SETS, "ddim_steps": 3},
    "sculpt": {**SETS, "warmup": 1, "interval": 1},
    # the tiny model's character tokenizer keeps 14 characters, in which CA's template
    # captions ("a close-up photo of a cat" / "... animal") are the same text
    "ca": {**SETS, "captions": "single"},
    "salun": SETS,
    "uce": {},
}


def _params(method: str) -> dict[str, Any]:
    return FAST[method.split("-")[0] if method.startswith("esd") else method]


@pytest.mark.parametrize("method", list_methods())
def test_two_steps_write_an_artifact_that_changes_only_the_scope(tiny_sd, tmp_path, method):
    cfg = EraseConfig(
        method=method,
        concepts=["cat"],
        anchors=["animal"],
        model=str(tiny_sd),
        iterations=2,
        batch_size=1,
        params=_params(method),
    )
    plan = validate(cfg)
    base = load_bundle(tiny_sd)
    scope = set(select_parameters(base.unet, plan.scope))
    res = run_erasure(cfg, tmp_path / "art")
    card = read_card(tmp_path / "art")
    delta, _ = read_delta(tmp_path / "art")
    assert card["method"] == method and card["base"]["fingerprint"] == base.base_fingerprint
    assert delta and set(delta) <= scope, sorted(set(delta) - scope)[:5]
    assert res.card["id"] == card["id"]


@pytest.mark.parametrize("method", list_methods())
def test_every_family_has_the_methods_defaults(method):
    """A family (:mod:`unsee.models.family`) is one entry there plus one defaults entry per
    method: a method without one would silently run the generic fallback on that model."""
    from unsee.models.family import FAMILIES

    plan = validate(EraseConfig(method=method, concepts=["star", "circle"]))
    for family in FAMILIES.values():
        assert family.key in plan.method_cls.defaults, f"{method}: no {family.key} defaults"
        d = plan.method_cls.plan_defaults(plan.params, family, plan.concepts)
        assert d["iterations"] > 0 and d.get("lr", 1.0) > 0
