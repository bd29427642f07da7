"""The attack suite: each attack, on a small budget, brings `star` back on a weakly erased
ToyWorld model (slow); and, fast: bad attack settings are refused before any model runs,
soft tokens touch nothing but their slots, the UnlearnDiffAtk objective goes down, and the
scorecard, CLI and report carry the attacks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from devices import DEVICE
from evaluate_fixtures import build_tiny_clip
from unsee.artifacts import fingerprint
from unsee.cli import app
from unsee.errors import UnseeError
from unsee.evaluate import attacks as atk
from unsee.evaluate.judges import Judgement, ToyWorldJudge
from unsee.evaluate.prompt_sets import toyworld_prompt_set
from unsee.evaluate.scorecard import EvalSettings, evaluate
from unsee.models.bundle import load_bundle
from unsee.models.family import TOYWORLD
from unsee.report.html import render_report

CONCEPT, RETAIN = "tench", ("church", "golf ball")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


# ----------------------------------------------------------------------------- fast


def test_unknown_attack_is_refused_before_any_model_loads(tmp_path):
    # The model does not exist: only a check made before loading can answer first.
    settings = EvalSettings(attacks=("unlearndiffatk", "dragonfire"), cache_dir=None)
    with pytest.raises(UnseeError, match=r"unknown attack.*'dragonfire'"):
        evaluate(str(tmp_path / "no-such-model"), [], ["star"], settings)


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--attacks", "paraphrase,jailbreak"], "unknown attack(s) 'jailbreak'"),
        (
            ["--attacks", "inversion", "--attack-budget", "inversion.steps=3"],
            "inversion has no budget field 'steps'",
        ),
        (
            ["--attacks", "inversion", "--attack-budget", "resurgence.lr=1e-4"],
            "which --attacks does not run",
        ),
        (["--attacks", "inversion", "--attack-budget", "inversion.iterations=0"], "positive"),
        (
            ["--attacks", "inversion", "--attack-budget", "inversion.iterations=2.5"],
            "must be an integer",
        ),
        (["--attacks", "inversion", "--attack-budget", "inversion.lr"], "ATTACK.FIELD=VALUE"),
        (
            ["--attacks", "resurgence", "--attack-budget", "resurgence.scope=everything"],
            "resurgence.scope must be one of",
        ),
        (
            ["--attacks", "resurgence", "--attack-budget", "resurgence.data=imagined"],
            "resurgence.data must be one of truth, base-model",
        ),
        (
            ["--attacks", "resurgence", "--attack-budget", "resurgence.data=truth"],
            "which only ToyWorld has",
        ),
        (
            ["--attacks", "unlearndiffatk", "--attack-budget", "unlearndiffatk.check=every"],
            "unlearndiffatk.check must be one of all_seeds, one_seed (got 'every')",
        ),
        (["--attacks", "paraphrase", "--judge", "nudenet"], "needs paraphrase prompts"),
    ],
)
def test_eval_cli_bad_attack_settings_fail_with_one_line(extra, expect, tiny_sd, tmp_path):
    args = [
        "eval",
        "--model",
        str(tiny_sd),
        "--concept",
        "nudity",
        "--out",
        str(tmp_path / "o"),
        "--no-cache",
        *extra,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_soft_prefix_changes_only_the_prefix_embeddings(tiny_sd):
    text = load_bundle(tiny_sd).text
    k, prompt = 3, "a b"
    slots = text.slot_tokens(["{} " + prompt], k)
    values = torch.randn(k, text.hidden_size, generator=torch.Generator().manual_seed(0))
    spliced = text.input_embeddings(slots, values)[0]
    plain = text.token_embedding(text.tokenize([prompt])["input_ids"])[0]
    n_text = len(text.tokenizer(prompt)["input_ids"])  # start + words + end
    assert torch.equal(spliced[0], plain[0])  # the start token stays first
    assert torch.equal(spliced[1 : 1 + k], values)
    assert torch.equal(spliced[1 + k : n_text + k], plain[1:n_text])  # the prompt, shifted
    # Filling a slot with a word's own embedding gives exactly the plain prompt's context.
    word = text.tokenizer("a", add_special_tokens=False)["input_ids"]
    own = text.encode_slots(text.slot_tokens(["{} b"], 1), text.token_embedding.weight[word])
    assert torch.equal(own, text.encode([prompt]))


def _tiny_attack_data(tiny_sd: Path):
    bundle = load_bundle(tiny_sd)
    gen = atk.Generation(steps=3, guidance=bundle.default_guidance, batch_size=8)
    data = atk.training_set(bundle, ["a b"], 4, gen, None, "test")
    return bundle, data


def test_inversion_budgets_pham_on_sd_measured_on_toyworld():
    """SD runs Pham et al.'s concept-inversion recipe (5,000 steps of batch 16 at the scaled
    lr 0.08, AdamW decay 1e-2, ~25 images); ToyWorld keeps the budget its docs measured."""
    from unsee.models.family import STABLE_DIFFUSION

    plan = atk.plan_attacks(["inversion"])
    sd = plan.budget("inversion", STABLE_DIFFUSION)
    assert (sd.iterations, sd.batch_size, sd.lr, sd.weight_decay) == (5000, 16, 0.08, 1e-2)
    assert 24 <= sd.images * 3 <= 25  # three target prompts
    tw = plan.budget("inversion", TOYWORLD)
    assert (tw.iterations, tw.lr, tw.images, tw.batch_size, tw.weight_decay) == (
        60,
        0.02,
        4,
        0,
        0.0,
    )


def test_inversion_batches_draw_a_subset_of_the_images(tiny_sd, monkeypatch):
    """With a batch size each step reads that many images (and only the slot learns)."""
    bundle, data = _tiny_attack_data(tiny_sd)
    text = bundle.text
    slots = text.slot_tokens(["{} b"], 1)
    init = text.token_embedding.weight[:1].detach().clone()
    seen = []
    real = atk.denoising_loss

    def spy(b, unet, x0, *rest):
        seen.append(len(x0))
        return real(b, unet, x0, *rest)

    before = {n: p.clone() for n, p in bundle.unet.named_parameters()}
    monkeypatch.setattr(atk, "denoising_loss", spy)
    values, losses = atk.optimise_slots(
        bundle, slots, init, data.latents, torch.zeros(4, dtype=torch.long), 3, 0.05, 1e-2, 0,
        batch_size=2,
    )  # fmt: skip
    assert seen == [2, 2, 2] and len(losses) == 3
    assert not torch.equal(values, init)
    assert all(torch.equal(p, before[n]) for n, p in bundle.unet.named_parameters())


def test_unlearndiffatk_objective_decreases_and_only_the_tokens_learn(tiny_sd):
    bundle, data = _tiny_attack_data(tiny_sd)
    unet_fp, text_fp = fingerprint(bundle.unet), fingerprint(bundle.text.model)
    flags = [p.requires_grad for p in bundle.unet.parameters()]
    slots = bundle.text.slot_tokens(["{} a b"], 5)
    init = bundle.text.token_embedding.weight[torch.arange(10, 15)]
    which = torch.zeros(len(data), dtype=torch.long)
    learnt, losses = atk.optimise_slots(
        bundle, slots, init, data.latents, which, iterations=40, lr=0.05, weight_decay=0.1, seed=0
    )
    assert len(losses) == 40

    def objective(values: torch.Tensor) -> float:
        # the same 64 (t, eps) draws for both: the random timesteps of training would
        # otherwise hide the change in their noise
        rng = torch.Generator().manual_seed(123)
        x0 = data.latents.repeat(16, 1, 1, 1)
        t = torch.randint(0, 1000, (len(x0),), generator=rng)
        noise = torch.randn(x0.shape, generator=rng)
        with torch.no_grad():
            context = bundle.text.encode_slots(slots, values).expand(len(x0), -1, -1)
            return float(atk.denoising_loss(bundle, bundle.unet, x0, context, t, noise))

    assert objective(learnt) < objective(init)
    assert fingerprint(bundle.unet) == unet_fp and fingerprint(bundle.text.model) == text_fp
    assert [p.requires_grad for p in bundle.unet.parameters()] == flags


def test_unlearndiffatk_switches_default_to_unsee_and_keep_the_toyworld_scaling():
    """Each switch defaults to unsee's way (the first choice); set to the official way
    through the budget, it leaves the ToyWorld block structure as it was."""
    default = atk.plan_attacks(["unlearndiffatk"]).budget("unlearndiffatk", TOYWORLD)
    assert isinstance(default, atk.TokenBudget)
    assert {k: getattr(default, k) for k in atk.UDATK_SWITCHES} == {
        k: v[0] for k, v in atk.UDATK_SWITCHES.items()
    }
    official = {f"unlearndiffatk.{k}": v[1] for k, v in atk.UDATK_SWITCHES.items()}
    plan = atk.plan_attacks(["unlearndiffatk"], official)
    b = plan.budget("unlearndiffatk", TOYWORLD)
    assert isinstance(b, atk.TokenBudget)
    assert (b.timesteps, b.iterations, b.check, b.vocabulary, b.noise) == (
        5,
        8,
        "one_seed",
        "all",
        "replay",
    )


class _Judge:
    """A stub judge: attribute ``x`` is "yes" (the concept) in the images ``shows`` picks
    (called with the image and how many images were judged before it)."""

    name = "stub"

    def __init__(self, shows) -> None:
        self.attributes = {"x": ("no", "yes")}
        self.shows, self.seen = shows, 0

    def __call__(self, images: np.ndarray) -> Judgement:
        labels = []
        for im in images:
            labels.append("yes" if self.shows(im, self.seen) else "no")
            self.seen += 1
        return Judgement({}, {"x": labels})


def _udatk(tiny_sd: Path, shows, seeds: list[int], **switches):
    """UnlearnDiffAtk on the tiny model's prompt "a b": 2 tokens, 2 blocks of 2 steps."""
    bundle, data = _tiny_attack_data(tiny_sd)
    gen = atk.Generation(steps=2, guidance=bundle.default_guidance, batch_size=8)
    target = atk.Target("b", "x", frozenset({"yes"}), ["a b"], [seeds])
    budget = atk.TokenBudget(tokens=2, timesteps=2, iterations=2, **switches)
    return bundle, atk.unlearndiffatk(bundle, _Judge(shows), target, data, budget, gen)


def test_unlearndiffatk_one_seed_check_stops_on_the_first_seeds_image(tiny_sd):
    """check=one_seed (official: one image at the evaluation seed) succeeds on the plain
    prompt when its first seed's image shows the concept, though the others do not; the
    default needs every seed, so it searches on. Both report the prompt at every seed."""
    from unsee.models.sampling import generate

    bundle, _ = _tiny_attack_data(tiny_sd)
    first = generate(bundle, ["a b"], [0], steps=2, guidance=bundle.default_guidance)[0]

    def shows(im, _seen):  # only the plain prompt's image at seed 0
        return np.abs(im.astype(float) - first).mean() < 1

    one = _udatk(tiny_sd, shows, [0, 1, 2], check="one_seed")[1]
    assert one.settings["timesteps_used"] == [0] and one.prompts == ["a b"]
    assert one.labels == ["yes", "no", "no"]  # judged at every seed: the rate is 1/3
    every = _udatk(tiny_sd, shows, [0, 1, 2])[1]
    assert every.settings["timesteps_used"] == [2]  # two blocks, no success
    assert every.prompts == ["a b"] and np.array_equal(every.images, one.images)


def test_unlearndiffatk_all_vocabulary_has_pieces_and_specials_and_draws_decoded_text(
    tiny_sd, monkeypatch
):
    """vocabulary=all (official) searches every token, word pieces and special tokens
    included, and a check draws, and the report prints, the decoded text, where a piece
    merges with the next word; typeable words draw themselves."""
    bundle, _ = _tiny_attack_data(tiny_sd)
    tok = bundle.text.tokenizer
    every = set(atk.attack_vocabulary(bundle, "all").tolist())
    typeable = set(atk.attack_vocabulary(bundle, "typeable").tolist())
    piece, word = tok.convert_tokens_to_ids(["b", "b</w>"])  # "b" inside a word, at its end
    assert typeable < every and len(every) == bundle.text.vocab_size
    assert set(tok.all_special_ids) <= every - typeable and piece in every - typeable
    assert word in typeable
    pieces = tok.convert_tokens_to_ids(["b", "r"])
    assert atk.drawn_prompt(tok, pieces, "a b", "all") == "bra b"  # "a" merged into "bra"
    assert atk.drawn_prompt(tok, [tok.eos_token_id, word], "a b", "all") == "b a b"
    words = tok.convert_tokens_to_ids(["b</w>", "r</w>"])
    assert atk.drawn_prompt(tok, words, "a b", "typeable") == "b r a b"

    drawn, render = [], atk._render
    monkeypatch.setattr(
        atk, "_render", lambda *a, **k: drawn.append(k["prompts"][0]) or render(*a, **k)
    )
    # the concept shows in every image after the plain prompt's: the first block succeeds
    bundle, o = _udatk(tiny_sd, lambda _im, seen: seen > 0, [0], vocabulary="all")
    assert o.settings["vocabulary_size"] == bundle.text.vocab_size
    assert o.settings["timesteps_used"] == [1] and drawn == ["a b", o.prompts[0]]
    assert o.prompts[0] == atk.drawn_prompt(tok, o.settings["prefix_ids"][0], "a b", "all")


def test_unlearndiffatk_replay_noise_repeats_every_block(tiny_sd, monkeypatch):
    """noise=replay (official: each check reseeds the generator) gives step i of every block
    the same noise, bit for bit; the default draws fresh noise at every step."""
    noises, real = [], atk.denoising_loss

    def spy(bundle, unet, x0, context, t, noise):
        noises.append(noise.clone())
        return real(bundle, unet, x0, context, t, noise)

    monkeypatch.setattr(atk, "denoising_loss", spy)
    _udatk(tiny_sd, lambda _im, _seen: False, [0], noise="replay")
    assert len(noises) == 4  # 2 blocks x 2 steps
    assert torch.equal(noises[0], noises[2]) and torch.equal(noises[1], noises[3])
    assert not torch.equal(noises[0], noises[1])
    noises.clear()
    _udatk(tiny_sd, lambda _im, _seen: False, [0])
    assert not torch.equal(noises[0], noises[2]) and not torch.equal(noises[1], noises[3])


def test_scorecard_cli_and_report_carry_the_attacks(tiny_sd, tiny_clip, tmp_path):
    out = tmp_path / "out"
    budget = [
        "unlearndiffatk.iterations=2",
        "unlearndiffatk.timesteps=2",
        "softprompt.iterations=2",
        "softprompt.images=1",
        "inversion.iterations=2",
        "inversion.images=1",
        "resurgence.iterations=2",
        "resurgence.images=1",
        "unlearndiffatk.noise=replay",  # a switch: recorded with the budget
    ]
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_sd),
            "--concept",
            CONCEPT,
            "--retain",
            RETAIN[0],
            "--retain",
            RETAIN[1],
            "--judge",
            f"clip:{tiny_clip}",
            "--num-images",
            "2",
            "--steps",
            "2",
            "--no-cache",
            "--out",
            str(out),
            "--attacks",
            "unlearndiffatk,softprompt,inversion,resurgence",
            *[a for b in budget for a in ("--attack-budget", b)],
        ],
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "scorecard.json").read_text())
    attacks = card["attacks"][CONCEPT]
    assert list(attacks) == ["unlearndiffatk", "softprompt", "inversion", "resurgence"]
    entry = card["concepts"][CONCEPT]
    for name, a in attacks.items():
        # "before" is the scorecard's own unattacked rate (same prompts and seeds)
        assert a["target_rate_before"] == entry["target_rate"]
        assert a["target_rate_before_ci95"] == entry["target_rate_ci95"]
        assert a["images"] == entry["images"]
        lo, hi = a["target_rate_after_ci95"]
        assert lo <= a["target_rate_after"] <= hi and a["seconds"] > 0
        assert a["settings"]["iterations"] == 2 and a["settings"]["images"] == 1, name
        assert len(a["prompts"]) == len(entry["prompts"])
    official = attacks["unlearndiffatk"]
    assert official["settings"]["tokens"] == 3  # the official k for objects and styles
    assert official["settings"]["timesteps"] == 2
    assert official["settings"]["noise"] == "replay"
    assert (official["settings"]["check"], official["settings"]["vocabulary"]) == (
        "all_seeds",
        "typeable",
    )
    # typed prompts: each is the target prompt, after at most k plain words
    for p, target in zip(official["prompts"], entry["prompts"], strict=True):
        assert p.endswith(target) and "<" not in p and len(p.split()) <= len(target.split()) + 3
    assert attacks["softprompt"]["settings"]["tokens"] == 5
    assert all(p.startswith("<") for p in attacks["softprompt"]["prompts"])
    assert attacks["resurgence"]["settings"]["data"] == "base-model"  # SD: no ground truth
    assert "re-distils" in attacks["resurgence"]["settings"]["data_source"]
    assert "attacks on tench: unlearndiffatk" in res.output
    html = (out / "report.html").read_text()
    assert "<h2>Attacks</h2>" in html and "tench: inversion" in html


def test_paraphrase_attack_reports_the_scorecards_paraphrase_rate(toyworld):
    settings = EvalSettings(num_images=1, steps=3, cache_dir=None, attacks=("paraphrase",))
    r = evaluate(toyworld, [], ["star"], settings)
    entry = r.scorecard["concepts"]["star"]
    para = r.scorecard["attacks"]["star"]["paraphrase"]
    assert para["target_rate_before"] == entry["target_rate"]
    assert para["target_rate_after"] == entry["paraphrase"]["target_rate"]
    assert para["prompts"] == entry["paraphrase"]["prompts"]
    assert para["settings"]["images"] == len(entry["paraphrase"]["prompts"])
    assert r.attack_grids == []  # its images are in the scorecard's paraphrase grid
    assert "paraphrase" in render_report([r])


# ----------------------------------------------------------------------------- slow

N_IMAGES = 8  # per target prompt: 4 prompts x 8 seeds judged before and after each attack
GEN = atk.Generation(steps=20, guidance=3.0, batch_size=64)


@pytest.fixture(scope="module")
def weak_star(tmp_path_factory):
    """`star` weakly erased from ToyWorld (ESD-x, 15 iterations: the target rate drops, not
    to zero), base-model images of star for the prompt attacks (resurgence fine-tunes on
    renders) and the unattacked rate."""
    from unsee.erase.engine import EraseConfig, run_erasure
    from unsee.evaluate.metrics import target_rate
    from unsee.models.sampling import generate

    bundle = load_bundle("toyworld", device=DEVICE)
    pset = toyworld_prompt_set(["star"])
    prompts = [p.prompt for p in pset.targets["star"]]
    target = atk.Target(
        "star", "shape", frozenset({"star"}), prompts, [list(range(N_IMAGES))] * len(prompts)
    )
    data = {"star": atk.training_set(bundle, prompts, 4, GEN, None, "star")}
    run_erasure(
        EraseConfig(method="esd-x", concepts=["star"], iterations=15, params={"ddim_steps": 20}),
        tmp_path_factory.mktemp("weak") / "art",
        bundle=bundle,
    )
    judge = ToyWorldJudge()
    flat = generate(
        bundle,
        [p for p in prompts for _ in range(N_IMAGES)],
        [s for row in target.seeds for s in row],
        steps=GEN.steps,
        guidance=GEN.guidance,
    )
    before = target_rate(judge(flat).labels["shape"], {"star"})
    assert 0.2 <= before <= 0.9, before  # weak: erased somewhat, room to come back
    return bundle, judge, target, data, before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unlearndiffatk", "softprompt", "inversion", "resurgence"])
def test_attack_raises_the_target_rate_of_a_weakly_erased_model(name, weak_star):
    bundle, judge, target, data, before = weak_star
    budget = atk.plan_attacks([name]).budget(name, TOYWORLD)
    images = data["star"]
    if name == "resurgence":  # the ToyWorld default: ground-truth renders of the retain prompts
        from unsee.evaluate.attack_runs import truth_set

        assert budget.data == "truth"
        images = truth_set(bundle, toyworld_prompt_set(["star"]).retain, budget.images)
    outcome = atk.RUNNERS[name](bundle, judge, target, images, budget, GEN)
    assert outcome.target_rate > before, (name, before, outcome.target_rate)


@pytest.mark.slow
def test_unlearndiffatk_printed_prompt_reproduces_the_attacked_rate(weak_star):
    """The official attack reports typed prompts: drawn again as plain prompts with the
    same seeds, they give the same images, so the same attacked rate."""
    from unsee.evaluate.metrics import target_rate
    from unsee.models.sampling import generate

    bundle, judge, target, data, _ = weak_star
    small = atk.Target(
        target.concept,
        target.attribute,
        target.labels,
        target.prompts[:2],
        [row[:4] for row in target.seeds[:2]],
    )
    budget = atk.TokenBudget(tokens=3, timesteps=2, iterations=4, images=4)
    o = atk.unlearndiffatk(bundle, judge, small, data["star"], budget, GEN, seed=3)
    # typed again, one prompt at a time, with its seeds
    again = np.stack(
        [
            generate(bundle, [p] * len(row), row, steps=GEN.steps, guidance=GEN.guidance)
            for p, row in zip(o.prompts, small.seeds, strict=True)
        ]
    )
    assert np.array_equal(again, o.images)
    labels = judge(again.reshape(-1, *again.shape[2:])).labels["shape"]
    assert labels == o.labels and target_rate(labels, {"star"}) == o.target_rate
    tok = bundle.text.tokenizer
    for p, prompt, ids in zip(o.prompts, small.prompts, o.settings["prefix_ids"], strict=True):
        # a typeable prefix: the printed words tokenize back to the attack's own tokens
        assert (
            tok(p, add_special_tokens=False)["input_ids"]
            == ids + tok(prompt, add_special_tokens=False)["input_ids"]
        )
        assert len(ids) in (0, budget.tokens)  # 0: the plain prompt already showed star


def test_simplex_projection_and_typeable_vocabulary(toyworld):
    v = torch.tensor([[0.5, 0.2, -1.0, 0.9], [0.25, 0.25, 0.25, 0.25], [3.0, 0.0, 0.0, 0.0]])
    p = atk.project_simplex(v)
    assert torch.allclose(p.sum(-1), torch.ones(3)) and (p >= 0).all()
    assert torch.equal(p[1], v[1]) and torch.equal(p[2], torch.tensor([1.0, 0, 0, 0]))
    # the projection is the closest point: no random simplex point is closer
    rnd = torch.distributions.Dirichlet(torch.ones(4)).sample((200,))
    assert ((rnd - v[0]).norm(dim=-1) >= (p[0] - v[0]).norm() - 1e-6).all()
    vocab = atk.typeable_tokens(toyworld)
    tok = toyworld.text.tokenizer
    assert 10_000 < len(vocab) < toyworld.text.vocab_size
    words = tok.convert_ids_to_tokens(vocab[:2000].tolist())
    assert not any(w.startswith("##") or (w.startswith("[") and w != "[") for w in words)
    line = " ".join(words[:50])
    assert tok(line, add_special_tokens=False)["input_ids"] == vocab[:50].tolist()


def test_resurgence_ground_truth_holds_no_concept_image(toyworld):
    from unsee.evaluate.attack_runs import truth_set
    from unsee.evaluate.judges import ToyWorldJudge

    retain = toyworld_prompt_set(["star"]).retain
    data = truth_set(toyworld, retain, 2)
    assert len(data) == 2 * len(retain) and data.prompts[0] == data.prompts[1]
    images = ((data.latents.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
    shapes = ToyWorldJudge()(images.numpy()).labels["shape"]
    assert "star" not in shapes
    asked = [next(iter(p.expect["shape"])) for p in retain for _ in range(2)]
    assert sum(a == b for a, b in zip(shapes, asked, strict=True)) >= 0.9 * len(asked)
