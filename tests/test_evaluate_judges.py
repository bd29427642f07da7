"""Judges: the ToyWorld judge through the protocol, NudeNet on a real photograph, CLIP
zero-shot and the ImageNet classifier on tiny random models built here."""

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate_fixtures import IMAGENET_LABELS, build_tiny_clip, build_tiny_resnet
from unsee.errors import UnseeError
from unsee.evaluate import metrics
from unsee.evaluate.judges import (
    EXPOSED_CLASSES,
    ClipModel,
    ClipZeroShotJudge,
    FeatureJudge,
    ImageNetJudge,
    Judge,
    NudeNetJudge,
    ToyWorldJudge,
    make_judge,
)
from unsee.toyworld.render import render_dataset
from unsee.toyworld.vocab import SHAPES, Attributes


@pytest.fixture(scope="module")
def toy_judge():
    return ToyWorldJudge()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory) -> Path:
    return build_tiny_resnet(tmp_path_factory.mktemp("resnet") / "resnet")


def _renders(shape: str, n: int, seed: int) -> np.ndarray:
    colours, styles, bgs = ("red", "blue", "green"), ("solid", "striped"), ("white", "black")
    attrs = [Attributes(shape, colours[i % 3], styles[i % 2], bgs[i % 2]) for i in range(n)]
    return render_dataset(n, seed, attrs)[0]


def test_toyworld_judge_gets_real_renders_right(toy_judge):
    images, attrs = render_dataset(300, seed=4242)
    j = toy_judge(images)
    expected = [{k: {v} for k, v in a.as_dict().items()} for a in attrs]
    acc = metrics.retain_accuracy(j.labels, expected)
    assert acc.overall >= 0.98
    for attr, a in acc.by_attribute.items():
        assert a >= 0.97, (attr, a)
    assert isinstance(toy_judge, FeatureJudge) and isinstance(toy_judge, Judge)


@pytest.mark.parametrize("other", ["circle", "cross", "square"])
def test_target_rate_near_zero_on_images_of_another_concept(toy_judge, other):
    attr, ok = toy_judge.concept_labels("star")
    rate = metrics.target_rate(toy_judge(_renders(other, 60, seed=7)).labels[attr], ok)
    assert rate <= 0.03
    own = metrics.target_rate(toy_judge(_renders("star", 60, seed=7)).labels[attr], ok)
    assert own >= 0.97


def test_toyworld_superclass_and_unknown_concepts(toy_judge):
    assert toy_judge.concept_labels("symbol") == ("shape", frozenset({"star", "cross", "arrow"}))
    assert toy_judge.concept_labels("striped") == ("style", frozenset({"striped"}))
    with pytest.raises(UnseeError):
        toy_judge.concept_labels("dragon")


def test_toyworld_judge_accepts_larger_images(toy_judge):
    small = _renders("heart", 20, seed=3)
    big = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)  # 128 x 128, same picture
    np.testing.assert_array_equal(toy_judge(big).probs["shape"], toy_judge(small).probs["shape"])
    assert metrics.target_rate(toy_judge(big).labels["shape"], {"heart"}) >= 0.9


def test_toyworld_feature_distance_separates_shapes(toy_judge):
    stars_a = toy_judge.features(_renders("star", 80, seed=1))
    stars_b = toy_judge.features(_renders("star", 80, seed=2))
    circles = toy_judge.features(_renders("circle", 80, seed=2))
    same = metrics.frechet_distance(stars_a, stars_b)
    assert metrics.frechet_distance(stars_a, circles) > 5 * same


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))[None]


def test_nudenet_runs_on_a_sample_photograph():
    judge = NudeNetJudge()
    photo = _grace_hopper()  # a clothed portrait
    found = {d["class"] for d in judge.detect(photo)[0]}
    assert "FACE_FEMALE" in found  # the detector really ran and sees the face
    j = judge(photo)
    assert j.labels["nudity"] == ["clean"]
    assert all(j.labels[c] == ["absent"] for c in EXPOSED_CLASSES)
    assert judge.concept_labels("nudity") == ("nudity", frozenset({"nude"}))


def test_nudenet_threshold_and_class_list_decide_the_labels(monkeypatch):
    judge = NudeNetJudge(threshold=0.6, classes=["FEMALE_BREAST_EXPOSED", "BELLY_EXPOSED"])
    fake = [
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]}],
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.5, "box": [0, 0, 1, 1]}],
        [{"class": "FEET_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}],  # not counted
        [
            {"class": "BELLY_EXPOSED", "score": 0.65, "box": [0, 0, 1, 1]},
            {"class": "BELLY_EXPOSED", "score": 0.61, "box": [0, 0, 1, 1]},
        ],
    ]
    monkeypatch.setattr(judge, "detect", lambda images: fake)
    j = judge(np.zeros((4, 8, 8, 3), np.uint8))
    assert j.labels["nudity"] == ["nude", "clean", "clean", "nude"]
    present = {c: [lab == "present" for lab in j.labels[c]] for c in judge.classes}
    assert metrics.nudity_counts(present) == {
        "FEMALE_BREAST_EXPOSED": 1,
        "BELLY_EXPOSED": 1,
        "total": 2,
    }
    assert j.probs["BELLY_EXPOSED"][3, 1] == pytest.approx(0.65)  # the best box's score
    with pytest.raises(UnseeError, match="unknown NudeNet classes"):
        NudeNetJudge(classes=["ELBOW_EXPOSED"])
    with pytest.raises(UnseeError, match="threshold"):
        NudeNetJudge(threshold=0.1)


def test_clip_zero_shot_agrees_with_transformers_forward(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    labels = ["tench", "church", "golf ball"]
    judge = ClipZeroShotJudge(ClipModel(tiny_clip), labels)
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    j = judge(images)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip)
    inputs = proc(
        text=[f"a photo of {lab}" for lab in labels],
        images=list(images),
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        ref = model(**inputs).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(j.probs["concept"], ref, atol=1e-5)
    assert j.labels["concept"] == [labels[i] for i in ref.argmax(1)]
    with pytest.raises(UnseeError, match="not one of"):
        judge.concept_labels("parachute")
    with pytest.raises(UnseeError, match="at least two labels"):
        ClipZeroShotJudge(judge.clip, ["tench"])


def test_clip_score_is_the_cosine_clip_computes(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    clip = ClipModel(tiny_clip)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    prompts = ["a red star", "a blue circle", "a cat"]
    ours = metrics.clip_score(clip.image_embeds(images), clip.text_embeds(prompts))
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        out = model(**proc(text=prompts, images=list(images), return_tensors="pt", padding=True))
        cos = (out.logits_per_image / model.logit_scale.exp()).diagonal().numpy()
    assert ours == pytest.approx(float(np.mean(100 * np.clip(cos, 0, None))), abs=1e-3)


def test_imagenet_judge_uses_the_substring_rule_and_the_model_argmax(tiny_resnet):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    judge = ImageNetJudge(tiny_resnet)
    assert judge.concept_labels("chain saw") == ("imagenet", frozenset({"chain saw, chainsaw"}))
    assert judge.concept_labels("English springer") == (
        "imagenet",
        frozenset({"English springer, English springer spaniel"}),
    )
    with pytest.raises(UnseeError, match="matches no label"):
        judge.concept_labels("parachute")
    images = np.random.default_rng(2).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    model = AutoModelForImageClassification.from_pretrained(tiny_resnet).eval()
    proc = AutoImageProcessor.from_pretrained(tiny_resnet)
    with torch.no_grad():
        logits = model(**proc(images=list(images), return_tensors="pt")).logits
    assert judge(images).labels["imagenet"] == [IMAGENET_LABELS[i] for i in logits.argmax(1)]
    feats = judge.features(images)
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-5)


def test_unavailable_weights_fail_with_a_clear_message(tmp_path):
    with pytest.raises(UnseeError, match="could not load ImageNet classifier"):
        ImageNetJudge(tmp_path / "no-such-folder-" / "x")
    with pytest.raises(UnseeError, match="could not load ImageNet classifier"):
        ImageNetJudge("microsoft/resnet-50")  # offline in tests: no hub, no cache
    with pytest.raises(UnseeError, match="could not load CLIP model"):
        ClipModel("openai/clip-vit-base-patch32")
    with pytest.raises(UnseeError, match=r"torchvision|ResNet-50 weights"):
        ImageNetJudge("torchvision")
    with pytest.raises(UnseeError, match="unknown judge"):
        make_judge("resnet")


def test_make_judge_specs(tiny_clip):
    assert isinstance(make_judge("toyworld"), ToyWorldJudge)
    assert make_judge("nudenet", nudenet_threshold=0.45).threshold == 0.45
    clip_judge = make_judge(f"clip:{tiny_clip}", labels=SHAPES[:3])
    assert clip_judge.attributes["concept"] == SHAPES[:3]
