"""Loss space (issue 19): on an epsilon model ``native`` and ``epsilon`` runs are bit-identical
for every fine-tuning method; on a v-prediction model native losses compare v and its
target, and the epsilon space weighs the same errors by alphabar_t; the card records it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build_tiny_sd
from devices import DEVICE
from unsee.artifacts import read_delta
from unsee.erase.context import ErasureContext
from unsee.erase.engine import EraseConfig, Erasure, run_erasure, validate
from unsee.errors import UnseeError
from unsee.evaluate.attacks import denoising_loss
from unsee.models.bundle import load_bundle
from unsee.models.sampling import to_eps

SETS = {"forget_images": 2, "forget_steps": 2, "cache": False}
#: every fine-tuning method with the parameters that keep a run to a few tiny steps
RUNS = {
    "esd-x": {"ddim_steps": 3},
    "kscu": {"ddim_steps": 4, "start": 1, "task": "object"},
    "mim-mu": {**SETS, "weighting": "score-matching"},
    "salun": SETS,
    "ca": {**SETS, "prior_weight": 0.5},
    "sculpt": {**SETS, "warmup": 1, "interval": 1},
}


@pytest.fixture(scope="module")
def tiny_v(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_v") / "sd", prediction_type="v_prediction")


@pytest.mark.parametrize("method", sorted(RUNS))
def test_native_equals_epsilon_bit_for_bit_on_an_epsilon_model(tiny_sd, tmp_path, method):
    deltas = {}
    for space in ("native", "epsilon"):
        cfg = EraseConfig(
            method=method,
            concepts=["cat"],
            anchors=["animal"],
            model=str(tiny_sd),
            iterations=3,
            batch_size=2,
            loss_space=space,
            params=RUNS[method],
        )
        res = run_erasure(cfg, tmp_path / space)
        assert res.card["hyperparameters"]["loss_space"] == space
        deltas[space] = read_delta(tmp_path / space)[0]
    assert deltas["native"].keys() == deltas["epsilon"].keys()
    assert any(float(d.abs().max()) > 0 for d in deltas["native"].values())
    for name, d in deltas["native"].items():
        assert torch.equal(d, deltas["epsilon"][name]), name


def test_unknown_loss_space_is_refused_before_loading():
    with pytest.raises(UnseeError, match="loss_space"):
        validate(EraseConfig(method="esd-x", concepts=["star"], loss_space="v"))


def _ctx(sd, space: str) -> ErasureContext:
    recipe = Erasure(
        EraseConfig(method="esd-x", concepts=["cat"], model=str(sd), batch_size=3, loss_space=space)
    )
    recipe.setup()
    return recipe.ctx


def test_v_model_native_targets_are_v_and_epsilon_errors_are_alphabar_weighted(tiny_v):
    native, eps = _ctx(tiny_v, "native"), _ctx(tiny_v, "epsilon")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g).to(native.device)
    noise = torch.randn(3, 4, 8, 8, generator=g).to(native.device)
    t = torch.tensor([100, 500, 900], device=native.device)
    x_t = native.noised(x0, t, noise)
    c, u = native.encode(["cat"] * 3), native.encode([""] * 3)
    ab = native.alphas_cumprod[t].view(-1, 1, 1, 1)
    # predictions: native is the raw v output, epsilon its conversion
    v_c, v_u = native.frozen_pred(x_t, t, c), native.frozen_pred(x_t, t, u)
    e_c, e_u = eps.frozen_pred(x_t, t, c), eps.frozen_pred(x_t, t, u)
    raw = native.raw_unet(x_t, t, c).sample.float()
    assert torch.equal(v_c, raw)
    assert torch.allclose(e_c, to_eps(raw, x_t, ab, "v_prediction"))
    # a negative-guidance target (weights summing to one) is the same combination in both
    # spaces: converting the native target gives the epsilon target
    eta = 2.0
    v_target, e_target = v_u - eta * (v_c - v_u), e_u - eta * (e_c - e_u)
    assert torch.allclose(to_eps(v_target, x_t, ab, "v_prediction"), e_target, atol=1e-5)
    # the data target: v natively, the noise in epsilon space; both describe the same x0
    v_data = native.denoising_target(x0, noise, t)
    assert torch.allclose(v_data, ab.sqrt() * noise - (1 - ab).sqrt() * x0)
    assert torch.equal(eps.denoising_target(x0, noise, t), noise)
    assert torch.allclose(to_eps(v_data, x_t, ab, "v_prediction"), noise, atol=1e-5)
    # epsilon-space squared errors are the native ones times alphabar_t (eps_error_scale)
    pred_v, pred_e = native.current_pred(x_t, t, c), eps.current_pred(x_t, t, c)
    err_v = (pred_v - v_target).pow(2).mean(dim=(1, 2, 3))
    err_e = (pred_e - e_target).pow(2).mean(dim=(1, 2, 3))
    assert torch.allclose(err_e, native.eps_error_scale(t) * err_v, rtol=1e-4)
    assert torch.allclose(native.eps_error_scale(t), ab.flatten())
    assert torch.equal(eps.eps_error_scale(t), torch.ones(3, device=eps.device))


def test_attack_loss_is_native_and_its_epsilon_form_is_alphabar_weighted(tiny_v):
    bundle = load_bundle(tiny_v, device=DEVICE)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 8, 8, generator=g).to(bundle.device)
    noise = torch.randn(1, 4, 8, 8, generator=g).to(bundle.device)
    context = bundle.encode_prompts(["cat"])
    for t_int in (200, 800):
        t = torch.tensor([t_int], device=bundle.device)
        ab = float(bundle.alphas_cumprod()[t_int])
        with torch.no_grad():
            native = denoising_loss(bundle, bundle.unet, x0, context, t, noise)
            eps = denoising_loss(bundle, bundle.unet, x0, context, t, noise, space="epsilon")
            x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * noise
            v = bundle.unet(x_t, t, context).sample.float()
        v_target = ab**0.5 * noise - (1 - ab) ** 0.5 * x0
        assert np.isclose(native.item(), (v - v_target).pow(2).mean().item(), rtol=1e-5)
        assert np.isclose(eps.item(), ab * native.item(), rtol=1e-4)
