"""UCE: the closed form's guarantees (identity without erasure, preserved keys/values kept,
erased ones moved to the guide's, the normal equations hold), which token is used, clear
errors, and stacking with a fine-tuned artifact, on a tiny SD model and on ToyWorld-style
prompts (a randomly initialised ToyWorld-architecture model, and the trained one if present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unsee.artifacts import apply_artifacts, read_delta
from unsee.erase.engine import EraseConfig, Erasure, run_erasure, validate
from unsee.erase.methods.uce import UCE, Prompt, subject_index, uce_transform
from unsee.erase.scopes import select_parameters
from unsee.errors import UnseeError
from unsee.models.bundle import load_bundle
from unsee.models.model_ids import TOYWORLD_DIR


@pytest.fixture(scope="module")
def random_toyworld(tmp_path_factory) -> Path:
    """The ToyWorld architecture and text encoder with random UNet weights."""
    from unsee.toyworld.model import build_unet, export_model

    torch.manual_seed(0)
    return export_model(build_unet(), tmp_path_factory.mktemp("tw") / "model")


def _uce(
    bundle, model: str, concepts: list[str], anchors: list[str] | None = None, **params
) -> UCE:
    """A UCE method bound to ``bundle`` (not yet fitted), as the engine would build it."""
    recipe = Erasure(
        EraseConfig(
            method="uce", concepts=concepts, model=model, anchors=anchors or [], params=params
        )
    )
    recipe.setup(bundle)
    assert isinstance(recipe.method, UCE)
    return recipe.method


def _state(bundle, prompt: str, words: str = "") -> torch.Tensor:
    """Token state (D,) float64: the last token of ``words``, or the one before the end."""
    tok = bundle.text.tokenize([prompt])
    ids = tok["input_ids"][0].tolist()
    n = int(tok["attention_mask"][0].sum())
    i = n - 2
    if words:
        w = bundle.text.tokenizer(words, add_special_tokens=False)["input_ids"]
        i = max(s + len(w) - 1 for s in range(1, n - len(w)) if ids[s : s + len(w)] == w)
    return bundle.text.encode([prompt])[0, i].double().cpu()


def _check_edit(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    erase: list[tuple[torch.Tensor, torch.Tensor]],
    keep: list[torch.Tensor],
    lamb: float,
) -> None:
    """For every key/value weight: erased states now give (nearly) the guide's output,
    preserved states their old one, and the UCE normal equations hold."""
    assert before.keys() == after.keys() and before
    for name, w0 in before.items():
        w0, w1 = w0.double(), after[name].double()
        for c, g in erase:
            gap_before = (w0 @ c - w0 @ g).norm()
            assert (w1 @ c - w0 @ g).norm() < 0.25 * gap_before, name
        for p in keep:
            # a compromise when preserve and erase states are alike ("a striped heart" and
            # "a dotted heart"), hence a tolerance rather than equality
            assert (w1 @ p - w0 @ p).norm() < 0.05 * (w0 @ p).norm(), name
        # gradient of lamb|W'-W|^2 + sum|W'c-Wg|^2 + sum|W'p-Wp|^2 at the solution is zero
        grad = lamb * (w1 - w0)
        for c, g in erase:
            grad += torch.outer(w1 @ c - w0 @ g, c)
        for p in keep:
            grad += torch.outer(w1 @ p - w0 @ p, p)
        # relative to the size of the system: the weights are stored in float32
        scale = lamb + sum(float(c @ c) for c, _ in erase) + sum(float(p @ p) for p in keep)
        assert grad.abs().max() < 1e-6 * scale * w0.abs().max(), name


def _kv(bundle) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().cpu().clone()
        for n, p in select_parameters(bundle.unet, "kv").items()
        if n.endswith(".weight")
    }


def test_transform_is_identity_without_erasure():
    torch.manual_seed(0)
    rows, keep = torch.randn(3, 16), torch.randn(5, 16)
    none = torch.zeros(0, 16)
    for preserve in (none, keep):
        t, _ = uce_transform(none, none, preserve, lamb=0.5)
        assert torch.allclose(t, torch.eye(16, dtype=torch.float64), atol=1e-12)
    t, _ = uce_transform(rows, torch.randn(3, 16), keep, lamb=0.5, erase_scale=0.0)
    assert torch.allclose(t, torch.eye(16, dtype=torch.float64), atol=1e-12)


def test_singular_system_is_a_clear_error(tiny_sd, tmp_path):
    torch.manual_seed(0)
    with pytest.raises(UnseeError, match="singular"):
        uce_transform(torch.randn(2, 16), torch.randn(2, 16), torch.zeros(0, 16), lamb=0.0)
    cfg = EraseConfig(method="uce", concepts=["cat"], model=str(tiny_sd), params={"lamb": 0})
    with pytest.raises(UnseeError, match="singular or ill-conditioned"):
        run_erasure(cfg, tmp_path / "art")
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"token": "first"}, "uce.token"),
        ({"lamb": -1}, "uce.lamb"),
        ({"templates": "photo of"}, "uce.templates"),
        ({"alpha": 1}, "unknown parameter"),
    ],
)
def test_bad_parameters_fail_before_loading(params, match):
    with pytest.raises(UnseeError, match=match):
        validate(EraseConfig(method="uce", concepts=["cat"], model="toyworld", params=params))


def test_scope_must_be_keys_and_values(tiny_sd, tmp_path):
    cfg = EraseConfig(method="uce", concepts=["cat"], model=str(tiny_sd), scope="xattn")
    with pytest.raises(UnseeError, match="only the cross-attention keys and values"):
        run_erasure(cfg, tmp_path / "art")


def test_subject_token_per_tokenizer(tiny_sd):
    from unsee.models.text import load_minilm

    clip = load_bundle(tiny_sd).text
    for enc, prompt, words, want in [
        (clip, "photo of cat", "cat", "t</w>"),  # the concept ends the prompt: = last
        (clip, "cat photo", "cat", "t</w>"),
        (load_minilm(24), "a dotted square", "dotted", "dotted"),  # not the last word
        (load_minilm(24), "a rounded shape on a white background", "rounded shape", "shape"),
    ]:
        tok = enc.tokenize([prompt])
        ids = tok["input_ids"][0].tolist()
        n = int(tok["attention_mask"][0].sum())
        w = enc.tokenizer(words, add_special_tokens=False)["input_ids"]
        i = subject_index(ids, n, w)
        assert enc.tokenizer.convert_ids_to_tokens(ids[i]) == want
        assert subject_index(ids, n, []) == n - 2  # 'last': the token before the end token
    tok = clip.tokenize([""])
    assert subject_index(tok["input_ids"][0].tolist(), 2, []) == 0  # empty guide: BOS
    tok = clip.tokenize(["photo of cat"])
    with pytest.raises(UnseeError, match="cannot find"):
        subject_index(
            tok["input_ids"][0].tolist(),
            int(tok["attention_mask"][0].sum()),
            clip.tokenizer("dog", add_special_tokens=False)["input_ids"],
        )


def test_zero_erase_scale_is_identity(tiny_sd):
    bundle = load_bundle(tiny_sd)
    before = _kv(bundle)
    m = _uce(bundle, str(tiny_sd), ["cat"], erase_scale=0.0, preserve="dog")
    sol = m.fit()
    assert torch.allclose(sol["transform"], torch.eye(32, dtype=torch.float64), atol=1e-12)
    m.apply(sol)
    for n, w in _kv(bundle).items():
        assert torch.allclose(w, before[n], atol=1e-6), n


@pytest.mark.parametrize("token", ["subject", "last"])
def test_sd_erased_to_guide_and_preserved_kept(tiny_sd, tmp_path, token):
    before = _kv(load_bundle(tiny_sd))
    cfg = EraseConfig(
        method="uce",
        concepts=["cat"],
        model=str(tiny_sd),
        params={"preserve": "dog", "token": token},
    )
    res = run_erasure(cfg, tmp_path / "art")
    # the object's guide is the empty prompt, whose only non-end token is BOS
    erase = [(_state(res.bundle, "cat"), _state(res.bundle, ""))]
    _check_edit(before, _kv(res.bundle), erase, [_state(res.bundle, "dog")], lamb=0.5)
    card = json.loads((tmp_path / "art" / "model_card.json").read_text())
    assert card["method"] == "uce" and card["cost"]["iterations"] == 0
    assert card["hyperparameters"]["params"]["preserve"] == "dog"
    assert set(card["cost"]) >= {"fit_seconds", "apply_seconds"}
    assert all(".attn2.to_k." in n or ".attn2.to_v." in n for n in read_delta(tmp_path / "art")[0])


def test_templates_and_anchor_pairing(tiny_sd):
    bundle = load_bundle(tiny_sd)
    m = _uce(bundle, str(tiny_sd), ["cat"], templates="object")
    pairs = m.erase_pairs()
    assert [(e.text, g.text) for e, g in pairs][:3] == [
        ("cat", ""),
        ("image of cat", ""),
        ("photo of cat", ""),
    ] and len(pairs) == 6
    m = _uce(
        bundle, str(tiny_sd), ["cat"], anchors=["dog"], templates="{}; photo of {}", preserve="cow"
    )
    assert m.erase_pairs() == [
        (Prompt("cat", "cat"), Prompt("dog", "dog")),
        (Prompt("photo of cat", "cat"), Prompt("photo of dog", "dog")),
    ]
    assert m.preserve_prompts() == [Prompt("cow", "cow"), Prompt("photo of cow", "cow")]


def test_stacks_with_a_fine_tuned_artifact(tiny_sd, tmp_path):
    esd = run_erasure(
        EraseConfig(
            method="esd-x",
            concepts=["dog"],
            model=str(tiny_sd),
            iterations=2,
            params={"ddim_steps": 4},
        ),
        tmp_path / "esd",
    )
    tuned = _kv(esd.bundle)  # the fine-tuned keys/values UCE starts from
    res = run_erasure(
        EraseConfig(method="uce", concepts=["cat"], model=str(tiny_sd), on=[str(tmp_path / "esd")]),
        tmp_path / "uce",
    )
    t = _uce(load_bundle(tiny_sd), str(tiny_sd), ["cat"]).fit()["transform"]
    for n, w in _kv(res.bundle).items():
        assert torch.allclose(w.double(), tuned[n].double() @ t, atol=1e-5), n
    card = json.loads((tmp_path / "uce" / "model_card.json").read_text())
    esd_card = json.loads((tmp_path / "esd" / "model_card.json").read_text())
    assert [e["id"] for e in card["ledger"]] == [esd_card["id"]]
    fresh = load_bundle(tiny_sd)  # the cumulative delta alone reproduces the stacked model
    apply_artifacts(fresh, [tmp_path / "uce"])
    stacked = dict(res.bundle.unet.named_parameters())
    for n, p in fresh.unet.named_parameters():
        assert torch.allclose(p, stacked[n].cpu(), atol=1e-5), n
    # and the other way round: a short ESD polish on the UCE artifact
    polish = run_erasure(
        EraseConfig(
            method="esd-x",
            concepts=["cat"],
            model=str(tiny_sd),
            iterations=2,
            params={"ddim_steps": 4},
            on=[str(tmp_path / "uce")],
        ),
        tmp_path / "polish",
    )
    assert [e["method"] for e in polish.card["ledger"]] == ["esd-x", "uce"]


def _toyworld_models():
    trained = pytest.param(
        "toyworld",
        marks=pytest.mark.skipif(
            not any((TOYWORLD_DIR / "unet").glob("*.safetensors")),
            reason="the trained ToyWorld model is not there yet",
        ),
    )
    return ["random", trained]


@pytest.mark.parametrize("model", _toyworld_models())
def test_toyworld_style_to_solid_and_shape_to_empty(model, random_toyworld):
    spec = str(random_toyworld) if model == "random" else "toyworld"
    bundle = load_bundle(spec)
    before = _kv(bundle)
    m = _uce(bundle, spec, ["dotted", "star"], preserve="striped; square")
    pairs = m.erase_pairs()
    assert (Prompt("a dotted heart", "dotted"), Prompt("a solid heart", "solid")) in pairs
    assert (Prompt("a star", "star"), Prompt("", "")) in pairs and len(pairs) == 10
    m.apply(m.fit())
    erase = [(_state(bundle, e.text, e.words), _state(bundle, g.text, g.words)) for e, g in pairs]
    keep = [_state(bundle, p.text, p.words) for p in m.preserve_prompts()]
    _check_edit(before, _kv(bundle), erase, keep, lamb=0.5)
    # The preserve term can only lower the preserve error (the objective is minimised with
    # it); here it lowers the summed squared error by more than 100x (measured: ~700x).
    t = _uce(bundle, spec, ["dotted", "star"]).fit()["transform"]
    for n, w0 in before.items():
        w0, w1 = w0.double(), _kv(bundle)[n].double()
        err_with = sum(float((w1 @ p - w0 @ p).norm() ** 2) for p in keep)
        err_without = sum(float((w0 @ t @ p - w0 @ p).norm() ** 2) for p in keep)
        assert err_with < 0.01 * err_without, n


def test_toyworld_all_tokens(random_toyworld):
    spec = str(random_toyworld)
    bundle = load_bundle(spec)
    m = _uce(bundle, spec, ["star"], token="all", preserve="square")
    sol = m.fit()
    # "a star" (subject at 2) against "" (start token at 0): states 2..23 of 24;
    # the preserve prompt gives all 24
    assert sol["erase_rows"] == 22 and sol["preserve_rows"] == 24
    before = _kv(bundle)
    m.apply(sol)
    star, empty = bundle.text.encode(["a star", ""])
    c, g = star[2:].double().cpu(), empty[:22].double().cpu()
    for n, w0 in before.items():
        w0, w1 = w0.double(), _kv(bundle)[n].double()
        assert (c @ w1.T - g @ w0.T).norm() < 0.5 * (c @ w0.T - g @ w0.T).norm(), n


def test_art_concept_type_guides_to_art_as_the_official_script(tiny_sd, tmp_path):
    """``concept_type=art`` is ``uce_sd_erase.py --concept_type art``: with no guide given the
    artist is edited towards "art" (objects keep the empty guide, an anchor still wins)."""
    bundle = load_bundle(tiny_sd)
    m = _uce(bundle, str(tiny_sd), ["monet"], concept_type="art", templates="art")
    assert m.erase_pairs()[:2] == [
        (Prompt("monet", "monet"), Prompt("art", "art")),
        (Prompt("painting by monet", "monet"), Prompt("painting by art", "art")),
    ]
    assert _uce(bundle, str(tiny_sd), ["monet"]).erase_pairs()[0][1] == Prompt("", "")
    anchored = _uce(bundle, str(tiny_sd), ["monet"], ["dali"], concept_type="art")
    assert anchored.erase_pairs()[0][1] == Prompt("dali", "dali")
    before = _kv(load_bundle(tiny_sd))
    cfg = EraseConfig(
        method="uce", concepts=["monet"], model=str(tiny_sd), params={"concept_type": "art"}
    )
    res = run_erasure(cfg, tmp_path / "art")
    erase = [(_state(res.bundle, "monet", "monet"), _state(res.bundle, "art", "art"))]
    _check_edit(before, _kv(res.bundle), erase, [], lamb=0.5)
    with pytest.raises(UnseeError, match="concept_type"):
        validate(EraseConfig(method="uce", concepts=["monet"], params={"concept_type": "style"}))
