"""The conformance bench (``bench/conformance.py``) without the official code: a stand-in
"official" script in a throw-away git clone edits two UNet parameters with its own
optimiser, and the bench must score exactly that edit, measure its steps, and refuse bad
input with one line and exit 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

BENCH = Path(__file__).resolve().parents[1] / "bench" / "conformance.py"

#: Takes esd_sd.py's command line, loads the UNet by the hub id esd_sd.py hard-codes (so
#: the redirect shim must be at work), trains two cross-attention weights for
#: --iterations Adam steps and saves them under their parameter names, as esd_sd.py does.
FAKE_ESD = """
import argparse, torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
ap = argparse.ArgumentParser()
for a in ("erase_concept", "train_method", "save_path", "device"):
    ap.add_argument("--" + a)
for a in ("iterations", "num_inference_steps"):
    ap.add_argument("--" + a, type=int)
for a in ("lr", "negative_guidance", "guidance_scale"):
    ap.add_argument("--" + a, type=float)
args = ap.parse_args()
unet = UNet2DConditionModel.from_pretrained("CompVis/stable-diffusion-v1-4", subfolder="unet")
names = ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"]
params = dict(unet.named_parameters())
opt = torch.optim.Adam([params[n] for n in names], lr=args.lr)
for _ in range(args.iterations):
    opt.zero_grad()
    sum(params[n].square().sum() for n in names).backward()
    opt.step()
save_file({n: params[n].detach().contiguous() for n in names}, args.save_path + "/esd.safetensors")
open(args.save_path + "/negative_guidance.txt", "w").write(str(args.negative_guidance))
"""


@pytest.fixture(scope="module")
def conformance():
    sys.path.insert(0, str(BENCH.parent))  # the script imports the harness beside it
    spec = importlib.util.spec_from_file_location("bench_conformance", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    sys.path.remove(str(BENCH.parent))
    return module


def _git_clone(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fake"], check=True)
    return folder


def test_the_scored_model_is_the_official_scripts_edit(conformance, tmp_path, monkeypatch):
    from unsee.artifacts import apply_artifacts, read_delta
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED

    clone = _git_clone(tmp_path / "erasing", {"esd_sd.py": FAKE_ESD})
    commit = conformance.clone_commit(clone, "esd_sd.py")
    assert len(commit) == 40  # a clean clone: no +dirty
    bundle = load_bundle("toyworld-sd")
    base = {n: p.detach().clone() for n, p in bundle.unet.named_parameters()}
    budget = conformance.Budget(3, 1e-3, 1.0, 3.0, 10, 32)
    # a relative work folder (the bench's default) must not land in the clone, where the
    # official script runs
    monkeypatch.chdir(tmp_path)
    # packages for the scripts that need them (sculpt, ca) stay off esd_sd.py's path: on
    # it, this diffusers would stop the run
    extra = tmp_path / "pydeps" / "diffusers"
    extra.mkdir(parents=True)
    (extra / "__init__.py").write_text("raise ImportError('not for esd_sd.py')\n")
    ran = conformance.run_official(
        *("esd", clone, commit, ["star"], 0, budget, bundle, BUNDLED["toyworld-sd"], Path("w")),
        pythonpath=str(extra.parent),
    )
    assert not (clone / "w").exists()
    # the budget's eta 1 (the paper's) reaches esd_sd.py as its own form of it, eta + 1
    assert (tmp_path / "w" / "official-output" / "negative_guidance.txt").read_text() == "2.0"
    saved = load_file(str(tmp_path / "w" / "official-output" / "esd.safetensors"))
    delta, _ = read_delta(ran.artifact)
    assert delta.keys() == saved.keys()
    # the official run's own steps were timed, not the start-up
    assert ran.measured.steps == 3 and ran.measured.seconds_per_iteration() is not None
    assert ran.measured.peak_rss_mb > 0
    apply_artifacts(bundle, [ran.artifact])
    for name, p in bundle.unet.named_parameters():
        if name in saved:
            assert torch.allclose(p.detach(), saved[name].float(), atol=1e-7)
            assert not torch.equal(p.detach(), base[name])
        else:
            assert torch.equal(p.detach(), base[name]), name


def test_an_official_tensor_the_unet_lacks_is_refused(conformance, tmp_path):
    from unsee.models.bundle import load_bundle

    bundle = load_bundle("toyworld-sd")
    weights = tmp_path / "edit.safetensors"
    save_file({"mid_block.attn9.to_q.weight": torch.zeros(2, 2)}, str(weights))
    about = {"repo": "r", "script": "s", "commit": "c" * 40, "command": "x"}
    with pytest.raises(RuntimeError, match="not a parameter of this UNet"):
        conformance.official_artifact(bundle, weights, tmp_path / "a", "esd-x", ["star"], about)


def test_pooled_verdict_follows_the_difference_interval(conformance):
    same = {"erasure": (30, 32), "retain": (120, 128)}
    assert conformance.verdict(same, dict(same)) == "equivalent"
    weaker = {"erasure": (4, 32), "retain": (120, 128)}
    assert conformance.verdict(same, weaker).startswith("not equivalent (unsee erasure -0.8")
    rows = [
        {"erasure": 0.75, "erasure_images": 4, "retain_accuracy": 1.0, "retain_pairs": 8},
        {"erasure": 0.25, "erasure_images": 4, "retain_accuracy": 0.5, "retain_pairs": 8},
    ]
    assert conformance.pooled(rows, "erasure", "erasure_images") == (4, 8)
    assert conformance.pooled(rows, "retain_accuracy", "retain_pairs") == (12, 16)


def test_a_pooled_difference_the_seeds_span_is_undecided(conformance):
    """Pooled images treat every image as independent, but a seed's images share one
    trained model: when one official seed collapses, the pooled rates differ while the
    seeds say nothing either way (CA on star: official retain per seed 0.453, 0.699,
    0.715; unsee 0.633, 0.680, 0.711)."""
    off = {"erasure": (84, 96), "retain": (478, 768)}
    ours = {"erasure": (78, 96), "retain": (518, 768)}
    seeds = {
        "erasure": ([0.875, 0.875, 0.875], [0.969, 0.688, 0.781]),
        "retain": ([0.453, 0.699, 0.715], [0.633, 0.680, 0.711]),
    }
    assert conformance.verdict(off, ours).startswith("not equivalent (unsee retain +0.05")
    assert conformance.verdict(off, ours, seeds).startswith("undecided (pooled images differ")
    # seeds that agree with each other keep a pooled difference a difference
    apart = {"erasure": seeds["erasure"], "retain": ([0.62, 0.62, 0.63], [0.67, 0.68, 0.67])}
    assert conformance.verdict(off, ours, apart).startswith("not equivalent")
    lo, hi = conformance.seed_interval([0.0, 0.0], [1.0, 1.0])  # no spread: the difference
    assert lo == hi == 1.0
    assert conformance.seed_interval([0.5], [0.5, 0.6]) is None  # one seed: no spread known


def test_bad_input_is_one_line_and_exit_2(conformance, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "esd_sd.py").write_text("")
    wrong = _git_clone(tmp_path / "wrong", {"README.md": "not the repository"})
    good = _git_clone(tmp_path / "good", {"esd_sd.py": ""})
    udatk = _git_clone(tmp_path / "udatk", {"src/execs/attack.py": ""})
    sculpt = _git_clone(tmp_path / "sculpt", {"multi_dst_train.py": ""})
    cases = [
        (["--official", f"esd={tmp_path / 'missing'}", "--method", "esd"], "no such folder"),
        (["--official", f"esd={plain}", "--method", "esd"], "not a git clone"),
        (["--official", f"esd={wrong}", "--method", "esd"], "has no esd_sd.py"),
        (["--official", f"esd={wrong}", "--method", "esd,sld"], "unknown"),
        (["--method", "uce"], "no --official uce=PATH"),
        (["--official", "esd", "--method", "esd"], "expected NAME=PATH"),
        (["--official", f"esd={wrong}", "--method", "esd", "--seeds", "a"], "--seeds"),
        (
            ["--official", f"esd={good}", "--method", "esd", "--concept", "star,heart"],
            "one concept",
        ),
        (["--official", f"esd={good}", "--method", "esd", "--concept", "red"], "shapes or styles"),
        (["--official", f"esd={good}", "--method", "esd", "--unsee-set", "frozen"], "KEY=VALUE"),
        (
            ["--official", f"sculpt={sculpt}", "--method", "sculpt", "--concept", "striped"],
            "a style runs alone, with esd, uce, kscu (not sculpt)",
        ),
        (["--method", "udatk"], "no --official udatk=PATH"),
        (["--official", f"udatk={good}", "--method", "udatk"], "has no src/execs/attack.py"),
        (
            ["--official", f"udatk={udatk}", "--method", "udatk", "--concept", "star,heart"],
            "one concept",
        ),
    ]
    for argv, says in cases:
        assert conformance.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, (argv, err)


#: Sculpting Memory's two modules as the driver imports them, without torchvision: the
#: dataset reads a folder of PNGs named by its prompt; ``train`` runs the rounds in order,
#: ``num_epochs`` passes of Adam steps on one cross-attention weight per round, and records
#: what each round was given in ``save_path``.
FAKE_DATASET = """
import os
import numpy as np, torch
from PIL import Image
class SingleFolderImageDataset(torch.utils.data.Dataset):
    def __init__(self, dataset_path, image_size=512):
        self.paths = sorted(os.path.join(dataset_path, f) for f in os.listdir(dataset_path))
        self.prompt = os.path.basename(os.path.normpath(dataset_path))
        self.size = image_size
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size))
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 127.5 - 1
        return {"image": x, "prompt": self.prompt}
"""
FAKE_SCULPT = """
import json, os, torch
HOOKED = []
def register_attention_hooks(unet, update_percent_dict, ca):
    HOOKED.append((dict(update_percent_dict), ca))
def train(pipe, mapping, loaders, update_mask, device, num_epochs, lr, save_path, **kw):
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    w = dict(pipe.unet.named_parameters())[name]
    rounds = []
    for loader in loaders:
        opt = torch.optim.Adam([w], lr=lr)
        seen = []
        for _ in range(num_epochs):
            for batch, align in zip(loader["train"], loader["align"]):
                seen.append((batch["prompt"][0], align["prompt"][0], len(batch["image"]),
                             list(batch["image"].shape[-2:])))
                opt.zero_grad()
                w.square().sum().backward()
                opt.step()
        rounds.append(seen)
    os.makedirs(save_path, exist_ok=True)
    with open(os.path.join(save_path, "rounds.json"), "w") as fh:
        json.dump({"rounds": rounds, "mapping": mapping, "hooked": HOOKED, "kw": kw}, fh)
"""


def test_sculpt_rounds_run_the_release_training_on_unsee_sets(conformance, tmp_path):
    import json

    from unsee.artifacts import read_card, read_delta
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED

    clone = _git_clone(
        tmp_path / "sculpt",
        {"multi_dst_train.py": FAKE_SCULPT, "singel_dataset.py": FAKE_DATASET},
    )
    bundle = load_bundle("toyworld-sd")
    budget = conformance.Budget(
        3,
        1e-3,
        1.0,
        3.0,
        10,
        32,
        sculpt_images=2,
        sculpt_batch=1,
        sculpt_epochs=2,
        sculpt_warmup=1,
        sculpt_interval=1,
    )
    here = tmp_path / "w"
    ran = conformance.run_official(
        "sculpt",
        clone,
        "c" * 40,
        ["star", "heart"],
        0,
        budget,
        bundle,
        BUNDLED["toyworld-sd"],
        here,
    )
    got = json.loads((here / "official-checkpoints" / "rounds.json").read_text())
    # the release's rounds, in the order given, each on its concept and superclass folders
    assert [{(a, b) for a, b, _, _ in r} for r in got["rounds"]] == [
        {("a star", "a symbol")},
        {("a heart", "a rounded shape")},
    ]
    assert got["mapping"] == {"a star": "a symbol", "a heart": "a rounded shape"}
    # every image of a set is seen once per epoch, at the model's resolution
    assert all(
        len(r) == 4 and all(n == 1 and hw == [32, 32] for *_, n, hw in r) for r in got["rounds"]
    )
    assert got["hooked"] == [[{"q": 0.5, "k": 0.5, "v": 0.5, "to_out": 0.5}, True]]
    assert got["kw"]["scale_kd"] == 0.25 and got["kw"]["img_save_path"] is None
    assert ran.measured.steps == 8
    delta, _ = read_delta(ran.artifact)
    card = read_card(ran.artifact)
    assert list(delta) == ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    assert [c["name"] for c in card["concepts"]] == ["star", "heart"]
    assert "launcher" in conformance.shims_of("sculpt", budget)


def test_kscu_script_gets_the_release_key_steps_and_unsee_the_same_budget(conformance):
    # train_sd14.py's defaults (kscu_core/common.py SD14_CONFIGS) at 50 DDIM steps
    for task, start in (("object", 14), ("style", 24), ("instance", 40)):
        b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, kscu_task=task, kscu_iterations=7)
        call = conformance.Call(b, ["star"], ["a star"], "F", Path("o"), "cpu", 5, [])
        off, ours = conformance._kscu_official(call), conformance._kscu_unsee(b)
        assert off[off.index("--start_step") + 1] == str(start)
        assert off[off.index("--iterations") + 1] == ours[ours.index("--iterations") + 1] == "7"
        assert off[off.index("--seed") + 1] == "5" and "--dtype" not in off
        assert {"preset=official", "levels=index", f"task={task}"} <= set(ours)
    f32 = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, official_dtype="float32")
    call = conformance.Call(f32, ["star"], ["a star"], "F", Path("o"), "cpu", 0, [])
    assert conformance._kscu_official(call)[-4:-2] == ["--dtype", "float32"]
    assert "dtype" not in conformance.shims_of("kscu", f32)  # the script's own option


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_a_style_is_the_readmes_style_command_and_the_same_text_on_unsees_side(conformance):
    """The official scripts take a style as its word ('Van Gogh'); unsee erases that same
    text (the verdict's side) and, for reference, its own nine-prompt concept."""
    b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, kscu_task="style")
    assert conformance.official_text("striped") == "striped"
    assert conformance.official_text("arrow") == "an arrow"
    call = conformance.Call(b, ["striped"], ["striped"], "F", Path("o"), "cpu", 0, [], True)
    uce = conformance._uce_official(call)
    assert _value(uce, "--edit_concepts") == "striped" and _value(uce, "--concept_type") == "art"
    assert "--guide_concepts" not in uce  # the art default, "art", as the README runs it
    assert _value(conformance._esd_official(call), "--erase_concept") == "striped"
    kscu = conformance._kscu_official(call)
    assert _value(kscu, "--mode") == "style" and _value(kscu, "--concepts") == "striped"

    def command(name: str, side: str) -> list[str]:
        return conformance.unsee_command(name, "toyworld-sd", ["striped"], 0, b, Path("o"), side)

    ours = command("uce", "unsee")
    assert _value(ours, "--concept") == "striped" and _value(ours, "--concept-prompt") == "striped"
    assert _value(ours, "--anchor") == "art" and "concept_type=art" in ours
    assert "--anchor" not in command("esd", "unsee")  # an anchor there is erase-from
    vocabulary = command("uce", conformance.VOCABULARY)
    assert "--concept-prompt" not in vocabulary and "--anchor" not in vocabulary
    # a shape's text is its own prompt: no override, as before
    star = conformance.unsee_command("esd", "toyworld-sd", ["star"], 0, b, Path("o"), "unsee")
    assert "--concept-prompt" not in star
    # --unsee-set: a deviation's switch for unsee's side, after the matched budget
    frozen = conformance.unsee_command(
        "esd", "toyworld-sd", ["star"], 0, b, Path("o"), "unsee", ["xt_model=frozen"]
    )
    assert frozen[: len(star) - 3] == star[:-3] and _value(frozen, "--set") != "xt_model=frozen"
    assert frozen[-5:-3] == ["--set", "xt_model=frozen"]


def test_ca_script_gets_the_readme_object_command_at_unsees_budget(conformance):
    b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, ca_iterations=7, ca_lr=1e-3, ca_batch=4)
    prepared = ["--class_prompt", "P", "--class_data_dir", "D", "--caption_target", "symbol+star"]
    call = conformance.Call(b, ["star"], ["a star"], "F", Path("o"), "cpu", 5, prepared)
    off, ours = conformance._ca_official(call), conformance._ca_unsee(b)
    assert _value(off, "--max_train_steps") == _value(ours, "--iterations") == "7"
    # --scale_lr multiplies the rate given by the batch (train.py:861-867): unsee's rate
    assert "--scale_lr" in off
    assert float(_value(off, "--learning_rate")) * 4 == pytest.approx(float(_value(ours, "--lr")))
    assert _value(off, "--train_batch_size") == _value(ours, "--batch-size") == "4"
    assert _value(off, "--num_class_images") == "16" and "forget_images=16" in ours
    assert _value(off, "--resolution") == "32" and _value(off, "--seed") == "5"
    assert _value(off, "--parameter_group") == "cross-attn"
    assert _value(off, "--concept_type") == "object" and "--noaug" in off
    assert int(_value(off, "--checkpointing_steps")) > 7  # the final parameters only
    assert off[off.index("--class_prompt") :][:6] == prepared
    assert {"captions=many", "target_model=training"} <= set(ours)
    # the official command mirrors its images; unsee's ToyWorld default does not
    assert "--hflip" in off and "hflip=true" in ours
    f32 = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, official_dtype="float32")
    assert "dtype" not in conformance.shims_of("ca", f32)  # the release trains in float32


def test_ca_official_side_trains_on_the_captions_unsee_draws_for(
    conformance, tmp_path, monkeypatch
):
    from unsee.concepts import resolve_concept
    from unsee.erase.context import ErasureContext
    from unsee.erase.methods.ca import CAParams, ConceptAblation
    from unsee.models.bundle import load_bundle

    monkeypatch.setenv("UNSEE_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle("toyworld-sd")
    b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, ca_images=3)
    where = tmp_path / "data"
    earlier = where / "star" / "class"
    (earlier / "images").mkdir(parents=True)
    (earlier / "images" / "0-abc.jpg").write_bytes(b"an earlier run's image")
    (earlier / "caption.txt").write_text("a symbol\n")
    (earlier / "notes.md").write_text("not the bench's")
    args = conformance._ca_prepare(bundle, ["star"], 0, b, where)
    lines = Path(_value(args, "--class_prompt")).read_text().splitlines()
    anchor, concept = _value(args, "--caption_target").split("+")
    star = [resolve_concept("star", "toyworld")]
    ctx = ErasureContext(
        bundle, None, star, {}, iterations=1, batch_size=1, seed=0, family=bundle.family
    )
    ours = ConceptAblation(CAParams(forget_images=3), ctx)
    # one line per image unsee trains on, in its order: the official samples image i with
    # line i (train.py:704-707), so both sides see the same three distinct captions ...
    assert lines == ours.anchor["star"].prompts and len(set(lines)) == 3
    assert all(anchor in line for line in lines)
    # ... and the official's concept caption (the anchor word replaced, utils.py:197-199)
    # is the one unsee trains towards the anchor's prediction
    assert [q.replace(anchor, concept) for q in lines] == [
        ours.concept_prompt["star"][q] for q in lines
    ]
    # the official samples only into a folder short of images: an earlier run's are gone,
    # what the bench did not write stays
    assert Path(_value(args, "--class_data_dir")) == earlier
    assert not list((earlier / "images").iterdir()) and not (earlier / "caption.txt").exists()
    assert (earlier / "notes.md").read_text() == "not the bench's"
    other = conformance._ca_prepare(bundle, ["star"], 1, b, tmp_path / "seed1")
    assert Path(_value(other, "--class_prompt")).read_text().splitlines() != lines


#: Concept Ablation's three modules as the driver imports them: train.py takes the
#: release's command line, asks the dataset for one image's loss mask, trains two
#: cross-attention weights with AdamW and saves through the pipeline, which pickles
#: (model_pipeline.py imports the name transformers 5 dropped).
FAKE_CA_TRAIN = """
import argparse, json, os, torch
from PIL import Image
from diffusers import UNet2DConditionModel
from model_pipeline import CustomDiffusionPipeline
from utils import CustomDiffusionDataset
def parse_args():
    ap = argparse.ArgumentParser()
    for a in ("pretrained_model_name_or_path", "output_dir", "class_prompt", "class_data_dir",
              "caption_target", "concept_type", "parameter_group"):
        ap.add_argument("--" + a)
    for a in ("resolution", "train_batch_size", "max_train_steps", "num_class_images", "seed",
              "dataloader_num_workers", "checkpointing_steps"):
        ap.add_argument("--" + a, type=int)
    ap.add_argument("--learning_rate", type=float)
    for a in ("scale_lr", "hflip", "noaug"):
        ap.add_argument("--" + a, action="store_true")
    return ap.parse_args()
def main(args):
    unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path,
                                                subfolder="unet")
    size = args.resolution
    _, mask = CustomDiffusionDataset(size).preprocess(Image.new("RGB", (size, size)), size, 1)
    lr = args.learning_rate * args.train_batch_size if args.scale_lr else args.learning_rate
    params = dict(unet.named_parameters())
    names = [n for n in params if "attn2.to_k" in n or "attn2.to_v" in n][:2]
    opt = torch.optim.AdamW([params[n] for n in names], lr=lr)
    for _ in range(args.max_train_steps):
        opt.zero_grad()
        sum(params[n].square().sum() for n in names).backward()
        opt.step()
    with open(os.path.join(args.output_dir, "seen.json"), "w") as fh:
        json.dump({"mask": mask.tolist(), "lr": lr, "trained": names,
                   "captions": open(args.class_prompt).read().splitlines()}, fh)
    pipe = CustomDiffusionPipeline(unet)
    pipe.save_pretrained(os.path.join(args.output_dir, "delta.bin"), args.parameter_group)
"""
FAKE_CA_PIPELINE = """
import torch
from transformers import CLIPFeatureExtractor
class CustomDiffusionPipeline:
    def __init__(self, unet):
        self.unet = unet
    def save_pretrained(self, save_path, parameter_group="cross-attn", all=False):
        torch.save({"unet": dict(self.unet.named_parameters())}, save_path)
"""
FAKE_CA_UTILS = """
import numpy as np
class CustomDiffusionDataset:
    def __init__(self, size):
        self.size = size
    def preprocess(self, image, scale, resample):  # a mask laid out at 1/8 of the image
        return np.zeros((self.size, self.size, 3), np.float32), np.zeros((self.size // 8,) * 2)
"""


def test_ca_driver_runs_the_release_training_with_its_three_replacements(
    conformance, tmp_path, monkeypatch
):
    import json

    from unsee.artifacts import read_delta
    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED

    monkeypatch.setenv("UNSEE_CACHE", str(tmp_path / "cache"))
    clone = _git_clone(
        tmp_path / "concept-ablation",
        {
            "diffusers/train.py": FAKE_CA_TRAIN,
            "diffusers/model_pipeline.py": FAKE_CA_PIPELINE,
            "diffusers/utils.py": FAKE_CA_UTILS,
        },
    )
    bundle = load_bundle("toyworld-sd")
    budget = conformance.Budget(3, 1e-4, 1.0, 3.0, 10, 32, ca_iterations=3, ca_images=2)
    here = tmp_path / "w"
    ran = conformance.run_official(
        "ca", clone, "c" * 40, ["star"], 0, budget, bundle, BUNDLED["toyworld-sd"], here
    )
    raw = here / "official-output"
    seen = json.loads((raw / "seen.json").read_text())
    # toyworld-sd's VAE factor is 4: an 8x8 mask at 32 px, the release's one-latent-pixel
    # border dropped, not the 4x4 one its factor of 8 lays out
    mask = torch.tensor(seen["mask"])
    assert mask.shape == (8, 8) and mask[1:7, 1:7].all() and mask.sum() == 36
    assert seen["lr"] == pytest.approx(budget.ca_lr)
    assert len(seen["captions"]) == 2
    assert ran.measured.steps == 3
    # the selection save_pretrained makes, as safetensors; nothing pickled
    assert not list(raw.glob("*.bin"))
    saved = load_file(str(raw / "delta.safetensors"))
    assert all("attn2.to_k" in n or "attn2.to_v" in n for n in saved)
    delta, _ = read_delta(ran.artifact)
    assert sorted(delta) == sorted(seen["trained"])


def test_udatk_budget_maps_onto_both_sides(conformance, tmp_path):
    from types import SimpleNamespace

    b = conformance.Budget(
        3,
        1e-4,
        1.0,
        2.5,
        50,
        32,
        udatk_tokens=4,
        udatk_iterations=6,
        udatk_timesteps=7,
        udatk_lr=0.02,
        udatk_weight_decay=0.05,
    )
    ckpt, data = tmp_path / "erased.safetensors", tmp_path / "data"
    cfg = conformance.udatk_config("star", "F", b, 20, ckpt, data, tmp_path)
    ours = conformance.token_budget(b)
    attacker = cfg["attacker"]
    assert attacker["k"] == ours.tokens == 4
    assert attacker["iteration"] == ours.iterations == 6
    assert attacker["text_grad"] == {"lr": ours.lr, "weight_decay": ours.weight_decay}
    assert ours.lr == 0.02 and ours.weight_decay == 0.05
    # the official loss fits one image (classifier_.py:79), as unsee's with images=1
    assert ours.images == 1 and ours.timesteps == 7
    # the attack unsee reimplements: text_grad, sequential blocks, prefix, per prompt
    assert cfg["overall"]["attacker"] == "text_grad" and cfg["overall"]["task"] == "classifier"
    assert attacker["insertion_location"] == "prefix_k"
    assert attacker["sequential"] is True and attacker["universal"] is False
    assert cfg["task"]["sampling_step_num"] == 20 and cfg["task"]["criterion"] == "l2"
    assert cfg["task"]["target_ckpt"] == str(ckpt) and cfg["task"]["dataset_path"] == str(data)
    # n_samples is not in the config (attack.py cannot set it): the timesteps shim carries it
    env = conformance.udatk_env(
        "star", SimpleNamespace(resolution=32, latent_shape=(4, 8, 8)), "F", b
    )
    assert env["UDATK_TIMESTEPS"] == "7" and env["UDATK_LATENT_SIZE"] == "8"
    assert env["UDATK_IMAGE_SIZE"] == "32" and env["UDATK_ATTRIBUTE"] == "shape"
    assert set(conformance.ATTACKS["udatk"].shims) <= set(conformance.SHIMS)


def test_udatk_data_set_is_the_base_models_image_at_each_cases_seed(
    conformance, tmp_path, monkeypatch
):
    import csv

    import numpy as np
    from PIL import Image

    from unsee.models.bundle import load_bundle
    from unsee.models.sampling import generate

    monkeypatch.setenv("UNSEE_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle("toyworld-sd")
    b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32)
    cases = [("a star", 3), ('a red star, "quoted"', 5)]
    drawn = conformance.udatk_dataset(bundle, cases, b, 4, tmp_path / "d")
    with open(tmp_path / "d" / "prompts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["prompt"], int(r["evaluation_seed"])) for r in rows] == cases
    assert all(float(r["evaluation_guidance"]) == 3.0 for r in rows)
    assert (tmp_path / "d" / "ignore.json").read_text() == "[]"
    # image i is what the base model draws for prompt i at its seed; unsee fits its latents
    drawn_now = generate(
        bundle, [p for p, _ in cases], [s for _, s in cases], steps=4, guidance=3.0
    )
    for i in range(len(cases)):
        png = np.asarray(Image.open(tmp_path / "d" / "imgs" / f"{i}_0.png"))
        assert np.array_equal(png, drawn_now[i])
    assert drawn.latents.shape == (2, *bundle.latent_shape)


def _load_driver(monkeypatch):
    path = BENCH.parent / "conformance_shims" / "udatk_driver.py"
    spec = importlib.util.spec_from_file_location("udatk_driver", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks it up
    spec.loader.exec_module(module)
    return module


def _toyworld_image(shape: str):
    import numpy as np
    from PIL import Image

    from unsee.toyworld.render import render
    from unsee.toyworld.vocab import Attributes

    attrs = Attributes(shape, "red", "solid", "white")
    return Image.fromarray(render(attrs, np.random.default_rng(0)))


#: CustomTextEncoder as text_encoder.py:35-81 builds it: CLIPTextModel.text_model's parts,
#: the causal mask made by hand and passed to the encoder as ``causal_attention_mask``
#: (transformers 4's argument), a tuple back.
FAKE_TEXT_ENCODER = """
import torch
class CustomTextEncoder(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder
        self.embedding = text_encoder.text_model.embeddings
        self.encoder = text_encoder.text_model.encoder
        self.final_layer_norm = text_encoder.text_model.final_layer_norm
    def get_all_embedding(self):
        return self.embedding.token_embedding.weight
    def forward(self, input_ids=None, inputs_embeds=None):
        hidden = self.embedding(inputs_embeds=inputs_embeds)
        n = input_ids.shape[1]
        causal = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
        out = self.encoder(inputs_embeds=hidden, attention_mask=None,
                           causal_attention_mask=causal, output_attentions=False,
                           output_hidden_states=False, return_dict=False)
        return (self.final_layer_norm(out[0]),)
"""


def test_udatk_driver_shims_on_tiny_fakes(tmp_path, monkeypatch):
    import types

    from safetensors.torch import save_file

    from unsee.models.model_ids import BUNDLED

    driver = _load_driver(monkeypatch)
    # attack.py:24's concept list (recognised by "church") gains the concept; others do not
    validation = types.ModuleType("fastargs.validation")

    class OneOf:
        def __init__(self, values):
            self.values = list(values)

    validation.OneOf = OneOf
    monkeypatch.setitem(sys.modules, "fastargs", types.ModuleType("fastargs"))
    monkeypatch.setitem(sys.modules, "fastargs.validation", validation)
    driver.accept_concept("star")
    assert OneOf(["vangogh", "church"]).values == ["vangogh", "church", "star"]
    assert OneOf(["l1", "l2"]).values == ["l1", "l2"]

    # each check's image is judged by the ToyWorld judge for the concept, for it only
    class Task:
        def __init__(self, concept, shape, n_samples=50, classifier_dir=None):
            self.concept, self.shape, self.n_samples = concept, shape, n_samples

        def eval(self, input_ids, prompt, seed=0):
            return {"image": _toyworld_image(self.shape)}

    driver.judge_checks(Task, "star", "shape")
    hit, miss = Task("star", "star").eval(None, "p"), Task("star", "circle").eval(None, "p")
    assert hit["success"] is True and hit["label"] == "star"
    assert miss["success"] is False and miss["label"] == "circle"
    assert "success" not in Task("church", "star").eval(None, "p")
    driver.fixed_timesteps(Task, 7)
    assert Task("star", "star").n_samples == 7
    assert Task("star", "star", n_samples=3).n_samples == 3

    # SD 1.x's 64x64 latents at the model's side, from the same generator; others untouched
    t = driver.ClassifierTorch(8)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(t.randn((1, 4, 64, 64), generator=g1), torch.randn(1, 4, 8, 8, generator=g2))
    assert t.randn(2, 4, 64, 64).shape == (2, 4, 8, 8) and t.randn(3, 5).shape == (3, 5)
    assert t.manual_seed is torch.manual_seed  # the official reseeding is kept
    saved = {"w": torch.arange(6.0).view(2, 3)}
    save_file(saved, str(tmp_path / "u.safetensors"))
    assert torch.equal(t.load(tmp_path / "u.safetensors", map_location="cpu")["w"], saved["w"])

    datasets = types.SimpleNamespace(get_transform=lambda interpolation=None, size=512: size)
    driver.model_resolution(datasets, 32)
    assert datasets.get_transform() == 32

    # CustomTextEncoder cannot be built on transformers 5 as released; shimmed, it is
    # CLIPTextModel exactly (the official self-test) on toyworld-sd's text encoder
    fake = types.ModuleType("fake_text_encoder")
    exec(FAKE_TEXT_ENCODER, fake.__dict__)
    folder = str(BUNDLED["toyworld-sd"])
    with pytest.raises(AttributeError, match="text_model"):
        driver.check_encoder(fake.CustomTextEncoder, folder)
    driver.transformers5(fake.CustomTextEncoder)
    assert driver.check_encoder(fake.CustomTextEncoder, folder) == 0.0


#: attack.py as the driver runs it, cut down: fastargs' OneOf names the concepts it takes
#: (attack.py:24), the config file and command line give the rest; the classifier task is
#: built from the config's task section, its data set row ``attack_idx`` is checked plain,
#: then ``n_samples`` blocks of ``iteration`` Adam steps each end in a check of a prefixed
#: prompt, stopping at the first success, each check logged as the JSON logger does.
FAKE_ATTACK = """
import argparse, json, os, sys
import torch
sys.path.append("src")
from fastargs.validation import OneOf
from tasks import classifier_
ap = argparse.ArgumentParser()
for a in ("config-file", "attacker.attack_idx", "overall.seed", "logger.name"):
    ap.add_argument("--" + a)
args = vars(ap.parse_args())
cfg = json.load(open(args["config_file"]))
if cfg["task"]["concept"] not in OneOf(["vangogh", "nudity", "church"]).values:
    raise SystemExit("concept not accepted")
task = classifier_.get(**cfg["task"])
image, prompt, seed, guidance = task.dataset[int(args["attacker.attack_idx"])]
log_dir = os.path.join(cfg["logger"]["json"]["root"], args["logger.name"])
os.makedirs(log_dir, exist_ok=True)
log = []
def check(text):
    results = task.eval(None, text, seed=seed)
    results.pop("image")
    log.append({**results, "prompt": text})
    return results.get("success")
w = torch.nn.Parameter(torch.zeros(3))
opt = torch.optim.Adam([w], lr=cfg["attacker"]["text_grad"]["lr"])
if not check(prompt):
    for t in task.sampled_t:
        for _ in range(cfg["attacker"]["iteration"]):
            opt.zero_grad()
            task.get_loss(w).backward()
            opt.step()
        if check(f"word{t} {prompt}"):
            break
path = os.path.join(log_dir, "log.json")
earlier = json.load(open(path)) if os.path.exists(path) else []  # the logger appends
json.dump(earlier + log, open(path, "w"))
json.dump({**task.seen, "seed": seed, "guidance": float(guidance), "image": list(image.shape),
           "k": cfg["attacker"]["k"]}, open(os.path.join(log_dir, "seen.json"), "w"))
"""
#: classifier_.py cut down: the erased UNet by torch.load, n_samples timesteps, SD 1.x's
#: 64x64 loss noise, the data set through datasets.get; a check draws a ToyWorld circle for
#: the plain prompt and a star for a prefixed one (no judging of its own, as for a concept
#: that is not NudeNet's, ImageNet's or Q16's).
FAKE_CLASSIFIER = """
import numpy as np, torch
from PIL import Image
from unsee.toyworld.render import render
from unsee.toyworld.vocab import Attributes
from .utils.datasets import get as get_dataset
from .utils.text_encoder import CustomTextEncoder
class ClassifierTask:
    def __init__(self, concept, model_name_or_path, target_ckpt, cache_path, dataset_path,
                 criterion, sampling_step_num, n_samples=50, classifier_dir=None):
        self.concept = concept
        self.dataset = get_dataset(dataset_path)
        state = torch.load(target_ckpt, map_location="cpu")
        T = 1000
        self.sampled_t = list(range(T // n_samples // 2, T, T // n_samples))[:n_samples]
        self.seen = {"n_samples": n_samples, "steps": sampling_step_num,
                     "ckpt_sum": float(sum(v.double().sum() for v in state.values())),
                     "ckpt_tensors": len(state)}
    def get_loss(self, w):
        noise = torch.randn((1, 4, 64, 64))
        self.seen["noise"] = list(noise.shape)
        return (w - noise.mean()).square().sum()
    def eval(self, input_ids, prompt, seed=0):
        shape = "circle" if prompt.startswith("a ") else "star"
        image = render(Attributes(shape, "red", "solid", "white"), np.random.default_rng(seed))
        return {"image": Image.fromarray(image)}
def get(**kwargs):
    return ClassifierTask(**kwargs)
"""
FAKE_DATASETS = """
import csv, os
import numpy as np
from PIL import Image
def get_transform(interpolation=None, size=512):
    return size
class PNGImageDataset:
    def __init__(self, root_dir, size):
        self.root, self.size = root_dir, size
        self.rows = list(csv.DictReader(open(os.path.join(root_dir, "prompts.csv"))))
    def __getitem__(self, i):
        r = self.rows[i]
        image = Image.open(os.path.join(self.root, "imgs", f"{i}_0.png")).resize((self.size,) * 2)
        return (np.asarray(image), r["prompt"], int(r["evaluation_seed"]),
                float(r["evaluation_guidance"]))
def get(root_dir):
    return PNGImageDataset(root_dir, get_transform())
"""
FAKE_FASTARGS = """
class OneOf:
    def __init__(self, values):
        self.values = list(values)
"""


def test_udatk_official_runs_through_the_driver_on_the_bench_data(
    conformance, tmp_path, monkeypatch
):
    import json

    from unsee.models.bundle import load_bundle
    from unsee.models.model_ids import BUNDLED

    monkeypatch.setenv("UNSEE_CACHE", str(tmp_path / "cache"))
    clone = _git_clone(
        tmp_path / "Diffusion-MU-Attack",
        {
            "src/execs/attack.py": FAKE_ATTACK,
            "src/tasks/__init__.py": "",
            "src/tasks/classifier_.py": FAKE_CLASSIFIER,
            "src/tasks/utils/__init__.py": "",
            "src/tasks/utils/datasets.py": FAKE_DATASETS,
            "src/tasks/utils/text_encoder.py": FAKE_TEXT_ENCODER,
        },
    )
    deps = tmp_path / "deps" / "fastargs"
    deps.mkdir(parents=True)
    (deps / "__init__.py").write_text("")
    (deps / "validation.py").write_text(FAKE_FASTARGS)
    bundle = load_bundle("toyworld-sd")
    b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, udatk_iterations=2, udatk_timesteps=4)
    here = tmp_path / "w"
    cases = [("a star", 6)]
    conformance.udatk_dataset(bundle, cases, b, 4, here / "data")
    (here / "logs" / "case0").mkdir(parents=True)
    (here / "logs" / "case0" / "log.json").write_text('[{"success": true, "prompt": "old"}]')
    got, cmd = conformance.run_udatk_official(
        clone,
        "star",
        cases,
        0,
        b,
        4,
        bundle,
        BUNDLED["toyworld-sd"],
        here / "data",
        here,
        str(tmp_path / "deps"),
    )
    seen = json.loads((here / "logs" / "case0" / "seen.json").read_text())
    # the plain prompt's circle missed, the first block's star hit: judged by the ToyWorld
    # judge (the fake task sets no success), and the earlier run's log was not appended to
    assert len(got) == 1
    case = got[0]
    assert (case.before, case.after, case.printed) == (False, True, "word125 a star")
    assert case.steps == 2 and case.step_span is not None
    assert (case.prompt, case.evaluation_seed) == cases[0]
    # the shims: concept accepted, n_samples from the budget, the model's sizes, the
    # erased UNet read from safetensors, the case's seed and guidance from the data set
    assert seen["n_samples"] == 4 and seen["steps"] == 4 and seen["k"] == 3
    assert seen["noise"] == [1, 4, 8, 8] and seen["image"] == [32, 32, 3]
    assert seen["ckpt_tensors"] == len(bundle.unet.state_dict())
    assert seen["seed"] == 6 and seen["guidance"] == 3.0
    assert cmd[cmd.index("--attacker.attack_idx") + 1] == "0"
    assert "--config-file" in cmd and cmd[1].endswith("udatk_driver.py")
    assert conformance.package_commit(str(tmp_path / "deps"), "fastargs").endswith(
        "(no git clone: commit unknown)"
    )


def test_a_styles_table_keeps_the_vocabulary_side_out_of_the_verdict(conformance):
    def row(side: str, erased: float) -> dict:
        return {
            "side": side,
            "seed": 0,
            "erasure": erased,
            "erasure_base": 0.9,
            "erasure_images": 72,
            "retain_accuracy": 0.9,
            "retain_base": 0.95,
            "retain_pairs": 128,
            "kid": 0.01,
            "weights_changed": 10,
            "seconds_per_iteration": 1.0,
            "optimizer_steps": 3,
            "wall_seconds": 9.0,
            "peak_rss_mb": 500.0,
            "run_on": "here",
        }

    meta = {
        "repo": "r",
        "script": "s",
        "commit": "c" * 40,
        "unsee_method": "uce",
        "budget": "b",
        "shims": [],
        "official_dtype": "float32",
        "model_fingerprint": "f",
    }
    rows = {
        "official seed 0": row("official", 0.5),
        "unsee seed 0": row("unsee", 0.5),
        f"{conformance.VOCABULARY} seed 0": row(conformance.VOCABULARY, 1.0),
    }
    results = {
        "settings": {"model": "toyworld-sd", "image_size": 32, "num_images": 8, "steps": 50},
        "tables": {"uce striped": {"meta": meta, "rows": rows}},
    }
    text = conformance.markdown(results)
    assert "Verdict: **equivalent**" in text  # official vs the same text
    assert f"| {conformance.VOCABULARY} | 0 |" in text
    assert "outside the verdict: against the official, not equivalent" in text


def test_an_object_run_and_a_style_run_share_the_results_file(conformance, tmp_path):
    """KSCU's task follows the concept (object for star, style for striped); recorded as
    resolved, it made a style run's settings differ and start the file afresh, dropping
    every object table. Recorded as given, both tables stay; an explicit task still
    separates."""
    harness = sys.modules["harness"]

    def settings(task: str, given: str | None) -> dict:
        b = conformance.Budget(3, 1e-4, 1.0, 3.0, 50, 32, kscu_task=task)
        return conformance.results_settings("toyworld-sd", b, given, 8, 50)

    for table, task in (("esd star", "object"), ("esd striped", "style")):
        harness.record("c", settings(task, None), table, {"unsee": {"x": 1}}, str, out=tmp_path)
    assert list(harness.read("c", tmp_path)["tables"]) == ["esd star", "esd striped"]
    assert settings("style", "style") != settings("style", None)
