"""The top-level Python API: the README's example runs as written on ToyWorld, an artifact
applies only to its base (fingerprint), and a diffusers pipeline in memory is erased and
patched like a model on disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import unsee
from unsee.artifacts import read_delta
from unsee.errors import UnseeError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def _unet_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.unet.named_parameters()}


def test_readme_example(tmp_path, monkeypatch, toyworld):
    code = _readme_example()
    assert len(code.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNSEE_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)

    art, result, model = scope["art"], scope["result"], scope["model"]
    assert isinstance(art, unsee.Artifact) and art.path == Path("runs/api-star")
    assert unsee.load(art.path).card == art.card
    # the scorecard is of this artifact, made for the base it was scored against
    card = result.scorecard
    assert [(e["id"], e["path"]) for e in card["erased"]] == [(art.id, str(art.path))]
    assert card["model_fingerprint"] == art.base_fingerprint
    assert 0 <= card["concepts"]["star"]["target_rate"] <= 1

    # the applied model is the base plus the delta, and differs only in UCE's scope (k, v)
    delta, _ = read_delta(art.path)
    base = _unet_state(toyworld)
    erased = _unet_state(model)
    changed = {n for n in base if not torch.equal(base[n], erased[n])}
    assert changed == set(delta)
    assert all(re.search(r"attn2\.to_[kv]\.weight$", n) for n in changed)
    for n in changed:
        assert torch.equal(erased[n], base[n] + delta[n])

    # applying it again (the model is no longer its base) is refused and changes nothing
    with pytest.raises(UnseeError, match="different base model"):
        art.apply(model)
    assert all(torch.equal(erased[n], p) for n, p in model.unet.named_parameters())


def test_pipeline_in_memory(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    base = _unet_state(pipe)
    art = unsee.erase(pipe, method="uce", concepts=["a cat"], out=tmp_path / "art", device="cpu")
    assert art.card["base"]["model_id"] == f"local:{tiny_sd.name}"  # no path as typed
    erased = _unet_state(pipe)  # erased in place
    assert {n for n in base if not torch.equal(base[n], erased[n])} == set(read_delta(art.path)[0])

    fresh = StableDiffusionPipeline.from_pretrained(tiny_sd)
    assert art.apply(fresh) is fresh
    for n, p in fresh.unet.named_parameters():  # base + (erased - base): float rounding only
        torch.testing.assert_close(p.detach(), erased[n], rtol=1e-6, atol=1e-7)

    half = StableDiffusionPipeline.from_pretrained(tiny_sd, torch_dtype=torch.float16)
    with pytest.raises(UnseeError, match=r"in float16: load it in float32, apply"):
        art.apply(half)

    other = StableDiffusionPipeline.from_pretrained(tiny_sd)
    with torch.no_grad():
        next(other.unet.parameters()).add_(1e-3)  # another base: one weight differs
    before = _unet_state(other)
    with pytest.raises(UnseeError, match="different base model"):
        art.apply(other)
    assert all(torch.equal(before[n], p) for n, p in other.unet.named_parameters())


def test_bad_arguments_are_one_clear_error(tmp_path):
    with pytest.raises(UnseeError, match=r"unknown setting.*iteration"):
        unsee.erase("toyworld", method="uce", concepts=["star"], iteration=3)
    with pytest.raises(UnseeError, match=r"unknown setting.*images"):
        unsee.evaluate("toyworld", [], concepts=["star"], images=3)
    with pytest.raises(UnseeError, match="cannot use an int object as a model"):
        unsee.erase(3, method="uce", concepts=["star"], out=tmp_path / "a")
    with pytest.raises(UnseeError, match="not an unsee artifact"):
        unsee.load(tmp_path)
