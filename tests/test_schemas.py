"""The model card and the scorecard are validated when read: a malformed file is one clear
error naming the file and the field, and files written before the format field existed
(or with keys this version does not know) still read."""

import json
from pathlib import Path

import pytest
import torch

from unsee.artifacts import read_card, read_model_card, write_artifact
from unsee.errors import UnseeError
from unsee.evaluate.schema import read_scorecard

CARD = {
    "method": "esd-x",
    "concepts": [{"name": "star", "anchor": ""}],
    "scope": "xattn",
    "base": {"model_id": "toyworld", "fingerprint": "0123456789abcdef"},
    "cost": {"wall_seconds": 2.0, "device": "cpu"},
    "rounds": [{"concepts": ["star"]}],  # a key the schema does not declare
}


def _artifact(tmp_path: Path, card: dict) -> Path:
    return write_artifact(tmp_path / "art", {"w": torch.ones(2)}, card)


def _rewrite_card(art: Path, **changes: object) -> None:
    card = json.loads((art / "model_card.json").read_text())
    card.update(changes)
    (art / "model_card.json").write_text(json.dumps(card))


def test_a_card_from_before_the_format_field_reads_as_version_1(tmp_path):
    art = _artifact(tmp_path, dict(CARD))  # no "format", as cards made by hand or long ago
    card = read_model_card(art)
    assert card.version == 1 and card.method == "esd-x" and card.concept_names == ["star"]
    assert card.base.fingerprint == "0123456789abcdef" and card.cost.wall_seconds == 2.0
    # read back as written: no key added, unknown keys kept
    written = json.loads((art / "model_card.json").read_text())
    assert read_card(art) == written and "format" not in read_card(art)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": 3}, "(method: Input should be a valid string)"),
        ({"base": {"model_id": "toyworld"}}, "(no base fingerprint)"),
        ({"concepts": [{"anchor": "x"}]}, "(no concepts 0 name)"),
        ({"format": "unsee-artifact/2"}, "(format: Input should be 'unsee-artifact/1')"),
    ],
)
def test_a_malformed_card_names_the_file_and_the_field(tmp_path, change, message):
    art = _artifact(tmp_path, dict(CARD))
    _rewrite_card(art, **change)
    with pytest.raises(UnseeError) as err:
        read_model_card(art)
    assert str(err.value) == f"{art}/model_card.json is not a model card {message}"


def _scorecard() -> dict:
    """A small scorecard as unsee-scorecard/1 writes it (one concept, no retain prompts)."""
    change = {"difference": -0.5, "ci95": [-0.8, -0.1], "beyond_noise": True}
    part = {
        "images_generated": 4,
        "images_from_cache": 0,
        "generate_seconds": 1.0,
        "judge_seconds": 0.1,
    }
    return {
        "format": "unsee-scorecard/1",
        "label": "esd-x",
        "model": "toyworld",
        "model_fingerprint": "0123456789abcdef",
        "erased": [
            {
                "path": "a",
                "id": "x",
                "method": "esd-x",
                "concepts": ["star"],
                "card": {**CARD, "id": "x"},
            }
        ],
        "judge": "toyworld-judge",
        "num_images": 2,
        "seed": 0,
        "steps": 5,
        "guidance": 3.0,
        "concepts": {
            "star": {
                "attribute": "shape",
                "labels": ["star"],
                "prompts": ["a star", "a red star"],
                "target_rate_base": 1.0,
                "target_rate": 0.5,
                "images": 4,
                "change": change,
                "erasure_base": 0.0,
                "erasure": 0.5,
                "probe": {"valid": True, "reason": None},
                "paraphrase": None,
            }
        },
        "erasure": 0.5,
        "retain": {"accuracy_base": None, "accuracy": None, "by_attribute": {}},
        "overall": None,
        "cost": {
            "erasure": [CARD["cost"]],
            "evaluation": {
                "wall_seconds": 3.0,
                "base": part,
                "erased": part,
                "processes": 1,
                "device": "cpu",
            },
        },
    }


def test_a_scorecard_from_before_the_format_field_reads(tmp_path):
    card = _scorecard()
    del card["format"]
    card["written_by"] = "an older unsee"  # unknown keys are kept
    (tmp_path / "scorecard.json").write_text(json.dumps(card))
    sc = read_scorecard(tmp_path / "scorecard.json")
    assert sc.version == 1 and sc.concepts["star"].change.beyond_noise
    assert sc.erased[0].card.method == "esd-x" and sc.cost.erasure[0].wall_seconds == 2.0
    assert sc.as_json()["written_by"] == "an older unsee"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("concepts"), "(no concepts)"),
        (lambda c: c.update(num_images="many"), "(num_images: Input should be a valid integer"),
        (
            lambda c: c["concepts"]["star"].update(target_rate=None),
            "(concepts.star.target_rate: Input should be a valid number)",
        ),
        (lambda c: c["erased"][0]["card"].pop("method"), "(no erased 0 card method)"),
        (lambda c: c.update(format="unsee-scorecard/2"), "(format: Input should be"),
    ],
)
def test_a_malformed_scorecard_names_the_file_and_the_field(tmp_path, edit, message):
    card = _scorecard()
    edit(card)
    path = tmp_path / "scorecard.json"
    path.write_text(json.dumps(card))
    with pytest.raises(UnseeError) as err:
        read_scorecard(path)
    assert str(err.value).startswith(f"{path} is not an unsee scorecard {message}")


def test_a_scorecard_that_is_not_json_is_one_clear_error(tmp_path):
    path = tmp_path / "scorecard.json"
    path.write_text("[1, 2")
    with pytest.raises(UnseeError, match="is not valid JSON"):
        read_scorecard(path)
    path.write_text("[1, 2]")
    with pytest.raises(UnseeError, match=r"is not an unsee scorecard \(not a JSON object\)"):
        read_scorecard(path)
