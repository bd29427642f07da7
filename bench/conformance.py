"""Conformance: each method's official script beside unsee's reimplementation, on the same
model, with the same concept and budget, judged by the same scorecard (issue 21).

For every method (``--method``), training seed (``--seeds``) and side, the erasure runs as
a subprocess, so both sides pay the same start-up and their peak RSS is their own (its
``VmHWM`` at exit, read by the timing shim):

* **official**: the script of the user's clone (``--official NAME=PATH``; its
  ``git rev-parse HEAD`` is recorded, ``+dirty`` when it has local changes) run with its
  own command line on the model's diffusers folder; what today's libraries or the model
  need is done by the start-up shims in ``bench/conformance_shims`` (:data:`SHIMS`, listed
  in the results). The official code is never copied here. Its output (the edited
  parameters as safetensors) becomes an unsee artifact: every tensor must name a UNet
  parameter of the same shape, and the delta is official minus base on those tensors.
* **unsee**: ``python -m unsee.cli erase`` with the matching method and parameters.

Each seed's two artifacts are scored together by :func:`unsee.evaluate.evaluate_models`
against the same base images, with evaluation seeds ``seed * num_images + k``: every
training seed is judged on fresh noise, so the seeds' images are independent and are
pooled. Rows: erasure and retain accuracy with 95 % Wilson intervals on the pooled counts,
the verdict (``equivalent`` when Newcombe's interval of the difference contains 0 for both
erasure and retain, :func:`unsee.evaluate.metrics.change`; where it does not, ``undecided``
when Welch's interval over the seeds' rates still contains 0, as a seed's images share one
trained model and the seeds can vary more than the images show; else ``not equivalent``),
judge-feature KID (mean over
seeds), seconds per iteration (optimiser step to step, start-up and loading excluded; the
closed-form UCE: the whole run), their ratio, and peak RSS.

Budget (``--iterations``, ``--lr``, ``--negative-guidance``, ``--guidance``,
``--ddim-steps``) maps onto both sides: ESD's ``--iterations --lr --negative_guidance
--guidance_scale --num_inference_steps`` and unsee's ``--iterations --lr --set eta=
--set start_guidance= --set ddim_steps=``, with batch 1 on both (``esd_sd.py`` fixes it).
``--negative-guidance`` is the paper's eta (unsee's, KSCU's); ``esd_sd.py`` gets eta + 1,
its own form of the same target (``esd_sd.py:176-182``: ``eps0(c) - g (eps0(c) -
eps0(''))``).
UCE takes ``--lamb``, ``--erase_scale``, ``--preserve_scale`` at the official defaults on
both sides. ``--image-size``: the official scripts assume 512 px (``esd_sd.py`` hard-codes
1024); toyworld-sd draws 32 px images (8x8 latents), the default here (the model's
resolution). ``--official-dtype``: ``script`` (default) runs the official side in its own
precision (``esd_sd.py``: bfloat16 weights and Adam, which rounds away updates smaller
than half a bfloat16 step); ``float32`` casts it to unsee's precision (the dtype shim), so
a difference that remains is the method's (written to ``conformance_float32.{json,md}``).
Concepts: ToyWorld shapes (one prompt, ``a star``), which the official scripts take as
their concept text; a style (``--concept striped``; esd, uce, kscu) is given to the
official script as its word, as the READMEs give an artist's name (UCE with the README's
``--concept_type art``: guide "art"; KSCU ``--mode style``), and to unsee as that same text
(``erase --concept-prompt``; UCE ``--anchor art``), so the verdict compares like with like;
a third side, ``unsee-vocabulary``, erases unsee's own style concept (its nine prompts
``a striped {shape}``, unsee's defaults) for reference, outside the verdict.

KSCU (``kscu``): the 2026 release's ``train_sd14.py`` (``--base_model`` takes the folder,
``--dtype`` its precision: no shim) against unsee's ``kscu`` with ``preset=official``
(the task's scope: ``noxattn`` for objects), ``version=quick`` and ``levels=index`` (the
script's key-step indices and leakage weight on the model's own schedule), batch 1 (the
script's), ``--kscu-iterations`` at ``--kscu-lr``, S the task's start scaled to
``--ddim-steps`` on both sides. The paper-era ``kscu_diffusers.py`` is not run (see
:data:`NOT_RUN`).

Sculpting Memory (``sculpt``): the release's ``multi_dst_train.train`` through
``conformance_shims/sculpt_driver.py`` (its launcher ``run_multiclass.py`` hard-codes
ImageNette's classes), on PNGs of the image sets unsee's ``sculpt`` trains on (the
concept's and its superclass anchor's, the same seeds), against unsee's ``sculpt`` with
``kd=released``; several ``--concept`` shapes are the release's sequential rounds (unsee
``--sequential``). The release VAE-encodes those PNGs (``latent_dist.sample()``,
``multi_dst_train.py:298, 326``) where unsee trains on the drawn latents; on toyworld-sd
that round trip moves the latents by about 20 % (relative L2). Budget:
``--sculpt-images`` per set, ``--sculpt-batch``, ``--sculpt-epochs`` per round (iterations
per round: epochs x images / batch), ``--sculpt-warmup``, ``--sculpt-interval``,
``--sculpt-lr``. Its imports need torchvision: ``--official-pythonpath`` puts a folder of
the official side's extra packages on its path (only for the scripts that need them:
sculpt, ca and udatk; esd, uce and kscu run without it).

Concept Ablation (``ca``): the release's ``diffusers/train.py`` with the README's object
command (``--concept_type object --parameter_group cross-attn --scale_lr --hflip``, plus
``--noaug``: at 32 px its random down-scaling leaves latent loss masks that can be empty,
``utils.py:172-175``) through ``conformance_shims/ca_driver.py`` (transformers 5, the
model's VAE factor, safetensors output), against unsee's ``ca`` (``captions=many``,
``target_model=training``). Its ``--class_prompt`` file holds the anchor captions unsee's
``ca`` draws its images for at that seed, one per image, so both sides train on the same
caption pairs (``--caption_target ANCHOR+CONCEPT`` replaces the anchor word, as unsee's
pairs do); the official samples its own anchor images from them (``train.py:656-745``).
Budget: ``--ca-iterations``, ``--ca-lr`` (the effective rate: the official gets it divided
by the batch, which ``--scale_lr`` multiplies back, ``train.py:861-867``), ``--ca-batch``,
``--ca-images`` (anchor images, one per caption). Its imports need torchvision and openai
(``utils.py:6, 11``; openai only for the language-model captions the file replaces):
``--official-pythonpath``.

UnlearnDiffAtk (``udatk``), an attack rather than an erasure: for each training seed one
erased model, unsee's ``esd-x`` at the ESD budget above (``--iterations``, ``--lr``, ...;
weak enough that the plain prompts still show the concept at some seeds, so the attack has
something to find), and on it both attacks on the same cases: the concept's first
``--udatk-prompts`` target prompts, each at ``--num-images`` evaluation seeds (``seed *
num_images + k``). The official side is ``src/execs/attack.py`` (``text_grad``, sequential,
``prefix_k``) through ``conformance_shims/udatk_driver.py``, one run per case
(``--attacker.attack_idx``) on a data set folder of the base model's image of the prompt at
the case's seed (its ``evaluation_seed``, as ``generate_dataset.py`` makes it); unsee's is
``unlearndiffatk`` on each case alone, fitting the same image (its latents: the official
VAE-encodes the PNG) where the scorecard fits one drawn with a training seed. Both check
with one image per block and are judged by unsee's ToyWorld judge. Rows: the unattacked and
attacked rate (the plain prompt's check; the last check, as ``check_asr.py`` counts it)
with Wilson intervals, the verdict on the attacked rate, and seconds per optimiser step
(step to step, each block's success check included, on both sides). Budget:
``--udatk-tokens``, ``--udatk-iterations`` per timestep, ``--udatk-timesteps`` (the
official ``n_samples``, a shim), ``--udatk-lr``, ``--udatk-weight-decay``; checks draw
``--steps`` sampler steps (official LMS, unsee DDIM) at ``--guidance``. Its imports need
torchvision, fastargs (the fork the official environment pins, whose commit is recorded),
torchmetrics, OpenAI clip, pandas and others: ``--official-pythonpath``, repeated or
``os.pathsep``-separated, gives several folders.

    OMP_NUM_THREADS=2 .venv/bin/python bench/conformance.py \\
        --official esd=../official/erasing --official uce=../official/unified-concept-editing \\
        --official kscu=../official/KeyStepConceptUnlearning \\
        --official sculpt=../official/Sculpting-Memory-ICCV-2025 \\
        --official ca=../official/concept-ablation \\
        --official-pythonpath ../official/_pydeps \\
        [--method sculpt --concept star,heart,hexagon,arrow] \\
        [--official-dtype float32] [--seeds 0,1,2] [--num-images 8]
    OMP_NUM_THREADS=2 .venv/bin/python bench/conformance.py --method udatk \\
        --official udatk=../official/Diffusion-MU-Attack \\
        --official-pythonpath ../official/_pydeps_udatk --official-pythonpath ../official/_pydeps
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import scipy.stats  # type: ignore[import-untyped]
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from harness import (
    RESULTS,
    Results,
    fmt,
    read_json,
    record,
    run_logged,
    runs_on,
    summarise,
    write_input,
    write_json_input,
)
from unsee.artifacts import apply_artifacts, write_artifact
from unsee.cards import base_license
from unsee.concepts import resolve_concept
from unsee.erase import image_sets
from unsee.erase.context import ErasureContext
from unsee.erase.methods.ca import CAParams, ConceptAblation
from unsee.erase.methods.kscu import TASKS, KSCUParams, key_start
from unsee.erase.methods.sculpt import SculptParams
from unsee.errors import UnseeError
from unsee.evaluate import EvalSettings, evaluate_models
from unsee.evaluate.attacks import Generation, Target, TokenBudget, unlearndiffatk
from unsee.evaluate.judges import ToyWorldJudge
from unsee.evaluate.metrics import change, hits_of, wilson_interval
from unsee.evaluate.prompt_sets import toyworld_prompt_set
from unsee.models.bundle import Bundle, load_bundle
from unsee.models.fingerprint import fingerprint
from unsee.models.image_sets import DrawnSet, generate_set
from unsee.models.model_ids import BUNDLED
from unsee.models.sampling import to_uint8

SHIM_DIR = Path(__file__).resolve().parent / "conformance_shims"
#: a style's third side: unsee's own concept (its nine prompts), beside the official's text
VOCABULARY = "unsee-vocabulary"

#: what each start-up shim does, and why (``bench/conformance_shims/sitecustomize.py``)
SHIMS = {
    "redirect": "from_pretrained('CompVis/stable-diffusion-v1-4') loads the model folder "
    "(esd_sd.py:87 hard-codes that hub id and has no model option)",
    "image_size": "the pipeline draws its initial latents for --image-size px instead of "
    "the 1024 px esd_sd.py:78 hard-codes (SD 1.4 is 512 px; toyworld-sd 32 px)",
    "dtype": "loads and moves the official models in float32 (--official-dtype float32; "
    "esd_sd.py:83 trains in bfloat16 without an option)",
    "seed": "seeds random, NumPy and torch at start-up (the official scripts draw "
    "timesteps and sampling seeds from the unseeded random module); both sides",
    "timing": "records the time of every optimiser step (seconds per iteration without "
    "start-up and loading); both sides",
    "launcher": "bench/conformance_shims/sculpt_driver.py runs multi_dst_train.train as "
    "run_multiclass.py does, on the bench's image folders (run_multiclass.py:15-26, 65-72 "
    "hard-code ImageNette's classes and superclasses; the config's other training "
    "parameters are kept)",
    "torchvision_ops": "declares torchvision's nms/qnms schemas when its compiled operators "
    "cannot load (PyPI's torchvision is a CUDA build; multi_dst_train.py:10 and "
    "eval/class_pmt_gen.py:6-7 import it, the dataset uses its transforms; CA's "
    "diffusers/utils.py:11 and UnlearnDiffAtk's src/tasks/utils/datasets.py:6-7 likewise)",
    "clip_feature_extractor": "conformance_shims/ca_driver.py names CLIPImageProcessor "
    "CLIPFeatureExtractor, the alias transformers 5 removed (diffusers/model_pipeline.py:19 "
    "imports it to type an optional pipeline component)",
    "latent_mask": "conformance_shims/ca_driver.py lays the loss mask out at the model's VAE "
    "factor by the release's rule (the image less a one-latent-pixel border; "
    "diffusers/utils.py:166, 172-175 assume a factor of 8, toyworld-sd's is 4, whose "
    "latents the mask then cannot multiply)",
    "safetensors_output": "conformance_shims/ca_driver.py writes the tensors "
    "CustomDiffusionPipeline.save_pretrained selects (cross-attention k/v) as safetensors "
    "instead of pickling them with torch.save (diffusers/model_pipeline.py:228-248)",
    "udatk_driver": "conformance_shims/udatk_driver.py runs src/execs/attack.py unedited, "
    "as its __main__, with the udatk shims; text_grad_.py and classifier_.py's loss, "
    "sampler and check loop run as released",
    "udatk_concept": "udatk_driver.py adds the ToyWorld concept to the concepts attack.py:24 "
    "accepts (SD concepts only)",
    "udatk_judge": "udatk_driver.py judges each check's one image with unsee's ToyWorld "
    "judge (success: its label is the concept); classifier_.py:262-281 sets success only "
    "for nudity (NudeNet), ImageNet objects (microsoft/resnet-50 from the hub, "
    "classifier_.py:61-62) and harm (Q16)",
    "udatk_resolution": "udatk_driver.py resizes the data set's images to the model's "
    "resolution instead of 512 (datasets.py:23, 72) and draws classifier_.py's SD 1.x "
    "64x64 latents (the loss noise, :80; the check's 512 // 8 latents, :143-146) at the "
    "model's latent side (toyworld-sd: 8)",
    "udatk_safetensors": "udatk_driver.py reads the erased UNet from safetensors where "
    "classifier_.py:58 torch.loads a pickle",
    "udatk_transformers5": "udatk_driver.py lets CustomTextEncoder run on transformers 5 "
    "(the official pins 4.33.2): CLIPTextModel stands for its own text_model "
    "(text_encoder.py:41-44), and the causal mask it builds is added to the encoder's "
    "attention mask (text_encoder.py:74-81 pass causal_attention_mask, which 5 ignores: "
    "the encoder would attend both ways); checked at start-up to equal CLIPTextModel on "
    "the model (the official self-test, text_encoder.py:138-140)",
    "udatk_timesteps": "udatk_driver.py sets n_samples, the number of fixed timesteps, to "
    "--udatk-timesteps (classifier_.py:30 fixes 50 as a constructor default attack.py's "
    "config cannot reach)",
}

#: official code the bench does not run, and why (file:line in the official repository)
NOT_RUN = {
    "chaoshuoZhang/KSCU kscu_diffusers.py (KSCU paper-era)": "needs five shims beyond "
    "today's: utils/utils.py:13 imports CLIPFeatureExtractor, gone from transformers 5; "
    "utils.py:230-233 load the text encoder from the hub id openai/clip-vit-large-patch14 "
    "and :248-257 the model (and a feature_extractor folder toyworld-sd lacks) from "
    "CompVis/stable-diffusion-v1-4; kscu_diffusers.py:60 and utils.py:279 fix 512 px and "
    "a VAE factor of 8; kscu_diffusers.py:115-123 overwrite --iterations and --start by "
    "the task (750/15 for objects); :86 saves a pickle. Each shim would be small, but "
    "together they replace its loading, resolution, budget and output, which is closer to "
    "a fork than to running it. unsee's version=paper differs from version=quick only in "
    "the leakage weights, S and S_max; the quick run checks the rest",
    "nupurkmr9/concept-ablation diffusers/train.py --concept_type style (CA's README style "
    "command)": "ToyWorld's styles are words inside its caption grammar ('a striped star'), "
    "which unsee's ca trains, like every ToyWorld concept, by replacing the anchor word "
    "(vocab.substituted_captions; the object mode the bench runs, utils.py:197-199). The "
    "style mode instead adds the style to each anchor caption ('..., in the style of "
    "striped' or 'in striped's style, ...', utils.py:179-187, drawn at random), captions "
    "outside the grammar that unsee never trains on, so there is no like-for-like run "
    "on toyworld-sd",
    "OPTML-Group/Unlearn-Saliency SD/train-scripts generate_mask.py + random_label.py "
    "(SalUn)": "CompVis-based; a faithful load of the diffusers folder needs a fork. "
    "dataset.py:109-113 torch.loads a CompVis checkpoint (a pickle, keys in ldm names) "
    "with strict=False, so a wrong key map would pass silently, and the repo converts only "
    "CompVis to diffusers (convertModels.py); the UNet and CLIP would map one to one "
    "through a --config_path yaml (64 channels, mult 1-2-2, one res block, attention at "
    "ds 1 and 2, 8 heads, context 256; cond_stage params.version pointing at one folder "
    "holding tokenizer and text encoder), but not the VAE: ldm/modules/diffusionmodules/"
    "model.py:38 fixes 32 groups in every VAE GroupNorm, toyworld-sd's has 16. Besides: "
    "random_label.py:310 and generate_mask.py:306 hard-code cuda:N (no CPU); dataset.py:38 "
    "loads Imagenette from the hub and :127 makes its prompts ('an image of a {class}') "
    "from its labels, random_label.py:81 takes the pseudo-label as (c+1) % 10 (ToyWorld "
    "has 9 shapes); ddpm.py:42 imports pytorch_lightning.utilities.distributed (absent "
    "from Lightning 2), autoencoder.py:9 taming, encoders/modules.py:3 OpenAI clip; "
    "random_label.py:8 imports convertModels, whose :47 diffusers.pipelines.paint_by_example "
    "is gone from diffusers 0.42; its output is a pickle (random_label.py:193) saved as "
    "{name}-epoch_{n}.pt (:188-189) where savemodelDiffusers then reads {name}.pt "
    "(convertModels.py:1007, 1024), so the release stops with FileNotFoundError at its "
    "last step; random_label.py:142 sleeps 0.1 s a step. A reverse converter, a VAE patch, "
    "a device shim, a data set swap and a pickle reader replace its loading, data and "
    "output: a fork, not a run",
}


@dataclass(frozen=True)
class Budget:
    """What both sides are given, and the official side's precision (``script``: the
    script's own; ``float32``: the dtype shim where the script uses another)."""

    iterations: int
    lr: float
    negative_guidance: float
    guidance: float
    ddim_steps: int
    image_size: int
    lamb: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    official_dtype: str = "script"
    kscu_iterations: int = 60
    kscu_lr: float = 5e-5
    kscu_task: str = "object"
    sculpt_images: int = 16
    sculpt_batch: int = 4
    sculpt_epochs: int = 20
    sculpt_warmup: int = 10
    sculpt_interval: int = 20
    sculpt_lr: float = 1e-3
    ca_iterations: int = 80
    ca_lr: float = 1e-3
    ca_batch: int = 4
    ca_images: int = 16
    udatk_tokens: int = 3
    udatk_iterations: int = 8
    udatk_timesteps: int = 5
    udatk_lr: float = 0.01
    udatk_weight_decay: float = 0.1
    udatk_prompts: int = 4

    def sculpt_iterations(self) -> int:
        """Iterations per round: the release's epochs of len(DataLoader) batches."""
        return self.sculpt_epochs * -(-self.sculpt_images // self.sculpt_batch)

    def kscu_start(self) -> int:
        """S for the task on the --ddim-steps grid, as unsee's levels=index computes it."""
        p = KSCUParams(task=self.kscu_task, ddim_steps=self.ddim_steps, levels="index")
        return key_start(p, TASKS[self.kscu_task])


@dataclass(frozen=True)
class Call:
    """What an official command line is built from: the budget, the concepts (names and
    prompts, in round order), the model folder, where the output goes, the device, the
    training seed, the arguments the method's preparation made (:attr:`Official.prepare`),
    and whether the concept is a style (the README's style command)."""

    budget: Budget
    concepts: list[str]
    prompts: list[str]
    folder: str
    out: Path
    device: str
    seed: int
    prepared: list[str]
    style: bool = False


@dataclass(frozen=True)
class Official:
    """A method's official script: ``script`` inside the clone (run from the clone's root),
    the unsee method it is compared with, the shims it needs, the dtype it trains in, its
    command line, and the budget in words. ``dtype_flag``: the script's own precision
    option (no dtype shim needed); ``driver``: a bench file run instead of the script's
    launcher (in :data:`SHIM_DIR`); ``prepare``: makes the script's inputs (bundle,
    concepts, seed, budget, folder) and returns arguments for :attr:`Call.prepared`;
    ``sequential``: several concepts are the script's rounds (unsee ``--sequential``);
    ``styles``: its README has a style command the bench runs (:func:`official_text`);
    ``unsee_style``: unsee's arguments that match that command's other settings;
    ``packages``: its imports need ``--official-pythonpath`` (the others run without it:
    PyPI's torchvision, a CUDA build, breaks transformers' CLIP image processor import
    outside the ``torchvision_ops`` shim)."""

    repo: str
    script: str
    unsee_method: str
    shims: tuple[str, ...]
    iterative: bool
    dtype: str
    official_args: Callable[[Call], list[str]]
    unsee_args: Callable[[Budget], list[str]]
    describe: Callable[[Budget], str]
    dtype_flag: bool = False
    driver: str | None = None
    prepare: Callable[[Bundle, list[str], int, Budget, Path], list[str]] | None = None
    sequential: bool = False
    styles: bool = False
    unsee_style: tuple[str, ...] = ()
    packages: bool = False


def official_text(concept: str) -> str:
    """The text an official script is given for ToyWorld ``concept``: a shape's one prompt
    (``a star``); a style's word (``striped``), as the READMEs give an artist's name
    (``esd_sd.py --erase_concept 'Van Gogh'``, ``train_sd14.py --mode style --concepts``,
    ``uce_sd_erase.py --edit_concepts``), where unsee's own style concept is its nine
    prompts ``a striped {shape}`` (the bench's third side, ``unsee-vocabulary``)."""
    c = resolve_concept(concept, "toyworld")
    return c.name if c.kind == "style" else c.prompts[0]


def _esd_official(c: Call) -> list[str]:
    b = c.budget
    return [
        *("--erase_concept", c.prompts[0], "--train_method", "esd-x"),
        *("--iterations", str(b.iterations), "--lr", str(b.lr)),
        # its target eps0(c) - g (eps0(c) - eps0("")) is the paper's at eta = g - 1
        *("--negative_guidance", str(b.negative_guidance + 1)),
        *("--guidance_scale", str(b.guidance)),
        *("--num_inference_steps", str(b.ddim_steps), "--save_path", str(c.out)),
        *("--device", c.device),
    ]


def _esd_unsee(b: Budget) -> list[str]:
    return [
        *("--method", "esd-x", "--iterations", str(b.iterations), "--lr", str(b.lr)),
        *("--batch-size", "1", "--set", f"eta={b.negative_guidance}"),
        *("--set", f"start_guidance={b.guidance}", "--set", f"ddim_steps={b.ddim_steps}"),
    ]


def _esd_describe(b: Budget) -> str:
    return (
        f"{b.iterations} iterations, lr {b.lr}, batch 1, negative guidance eta "
        f"{b.negative_guidance} (esd_sd.py --negative_guidance {b.negative_guidance + 1}: "
        "its target eps0(c) - g (eps0(c) - eps0('')) is the paper's eps0('') - eta (eps0(c) "
        f"- eps0('')) at g = eta + 1), x_t from {b.ddim_steps}-step trajectories at guidance "
        f"{b.guidance}"
    )


def _uce_official(c: Call) -> list[str]:
    b = c.budget
    return [
        *("--edit_concepts", c.prompts[0], "--model_id", c.folder),
        # the README's art command: guide "art" (the script's default for art), no templates
        *("--concept_type", "art" if c.style else "object"),
        *("--lamb", str(b.lamb), "--erase_scale", str(b.erase_scale)),
        *("--preserve_scale", str(b.preserve_scale), "--save_dir", str(c.out)),
        *("--exp_name", "uce", "--device", c.device),
    ]


def _uce_unsee(b: Budget) -> list[str]:
    return [
        *("--method", "uce", "--set", f"lamb={b.lamb}", "--set", f"erase_scale={b.erase_scale}"),
        *("--set", f"preserve_scale={b.preserve_scale}"),
    ]


def _uce_describe(b: Budget) -> str:
    return f"closed form, lamb {b.lamb}, erase/preserve scales {b.erase_scale}/{b.preserve_scale}"


#: unsee's KSCU task -> train_sd14.py's --mode
KSCU_MODE = {"object": "class", "style": "style", "nudity": "nudity", "instance": "instance"}


def _kscu_official(c: Call) -> list[str]:
    b = c.budget
    return [
        *("--mode", KSCU_MODE[b.kscu_task], "--concepts", c.prompts[0]),
        *("--base_model", c.folder, "--device", c.device),
        *("--resolution", str(b.image_size), "--num_steps", str(b.ddim_steps)),
        *("--iterations", str(b.kscu_iterations), "--start_step", str(b.kscu_start())),
        *("--learning_rate", str(b.kscu_lr), "--negative_guidance", str(b.negative_guidance)),
        *("--trajectory_guidance", str(b.guidance), "--seed", str(c.seed)),
        *(("--dtype", b.official_dtype) if b.official_dtype != "script" else ()),
        *("--output", str(c.out / "kscu.safetensors")),
    ]


def _kscu_unsee(b: Budget) -> list[str]:
    return [
        *("--method", "kscu", "--iterations", str(b.kscu_iterations), "--lr", str(b.kscu_lr)),
        *("--batch-size", "1", "--set", "preset=official", "--set", "version=quick"),
        *("--set", "levels=index", "--set", f"task={b.kscu_task}"),
        *("--set", f"eta={b.negative_guidance}", "--set", f"start_guidance={b.guidance}"),
        *("--set", f"ddim_steps={b.ddim_steps}"),
    ]


def _kscu_describe(b: Budget) -> str:
    return (
        f"task {b.kscu_task} (official scope), {b.kscu_iterations} iterations, lr "
        f"{b.kscu_lr}, batch 1, key steps from S = {b.kscu_start()} of {b.ddim_steps}, "
        f"guidance {b.guidance} on the trajectory, g = {b.negative_guidance}"
    )


def _sculpt_prepare(
    bundle: Bundle, concepts: list[str], seed: int, b: Budget, where: Path
) -> list[str]:
    """PNGs of the image sets unsee's sculpt draws for ``concepts`` at ``seed`` (the same
    latents, decoded), one folder per set named by its prompt, as the release's dataset
    reads them; ``--data CONCEPT_DIR=SUPERCLASS_DIR`` per concept."""
    resolved = [resolve_concept(c, "toyworld") for c in concepts]
    ctx = ErasureContext(
        bundle, None, resolved, {}, iterations=1, batch_size=1, seed=seed, family=bundle.family
    )
    p = SculptParams(forget_images=b.sculpt_images, kd="released")
    out = []
    for c in resolved:
        pair = []
        for role, drawn in (
            ("concept", image_sets.concept_images(ctx, p, c)),
            ("superclass", image_sets.anchor_images(ctx, p, c)),
        ):
            if len(set(drawn.prompts)) != 1:
                raise BadInput(
                    f"--concept {c.name}: the release's dataset takes one prompt per set"
                )
            folder = where / c.name / role / drawn.prompts[0]
            folder.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                images = bundle.decode(drawn.latents)
            pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            for i, px in enumerate(pixels.permute(0, 2, 3, 1).cpu().numpy()):
                Image.fromarray(px).save(folder / f"{i}.png")
            pair.append(str(folder))
        out += ["--data", "=".join(pair)]
    return out


def _sculpt_official(c: Call) -> list[str]:
    b = c.budget
    return [
        *("--model", c.folder, *c.prepared, "--batch-size", str(b.sculpt_batch)),
        *("--image-size", str(b.image_size), "--epochs", str(b.sculpt_epochs)),
        *("--warmup", str(b.sculpt_warmup), "--interval", str(b.sculpt_interval)),
        *("--lr", str(b.sculpt_lr), "--device", c.device),
        *("--work", str(c.out.parent / "official-checkpoints")),
        *("--out", str(c.out / "sculpt.safetensors")),
    ]


def _sculpt_unsee(b: Budget) -> list[str]:
    return [
        *("--method", "sculpt", "--iterations", str(b.sculpt_iterations())),
        *("--lr", str(b.sculpt_lr), "--batch-size", str(b.sculpt_batch)),
        *("--set", "kd=released", "--set", f"forget_images={b.sculpt_images}"),
        *("--set", f"warmup={b.sculpt_warmup}", "--set", f"interval={b.sculpt_interval}"),
    ]


def _sculpt_describe(b: Budget) -> str:
    return (
        f"{b.sculpt_images} images per set, batch {b.sculpt_batch}, {b.sculpt_epochs} epochs "
        f"({b.sculpt_iterations()} iterations per round), warm-up {b.sculpt_warmup}, mask "
        f"interval {b.sculpt_interval}, lr {b.sculpt_lr} (OneCycle), density 0.5, KD as "
        "released (unsee kd=released)"
    )


def _ca_prepare(
    bundle: Bundle, concepts: list[str], seed: int, b: Budget, where: Path
) -> list[str]:
    """The official ``--class_prompt`` file: the anchor captions unsee's ``ca`` draws its
    ``ca_images`` images for at ``seed``, one line per image in its order (the official
    samples image i with line i, ``train.py:704-707``, ``utils.py:70``), so both sides
    train on the same captions; and the folder the official samples its images into, rid
    of an earlier run's (it samples only when it holds fewer, ``train.py:643-646``).
    ``--class_prompt FILE --class_data_dir DIR --caption_target ANCHOR+CONCEPT``."""
    c = resolve_concept(concepts[0], "toyworld")
    ctx = ErasureContext(
        bundle, None, [c], {}, iterations=1, batch_size=1, seed=seed, family=bundle.family
    )
    ours = ConceptAblation(CAParams(forget_images=b.ca_images), ctx)
    captions = ours.anchor[c.name].prompts
    # the official's concept caption is the anchor caption with the anchor word replaced
    # (utils.py:197-199); unsee's pairs must be the same, or the sides train different text
    differ = [a for a in captions if a.replace(c.anchor, c.name) != ours.concept_prompt[c.name][a]]
    if differ:
        raise BadInput(
            f"--concept {c.name}: replacing {c.anchor!r} in {differ[0]!r} does not give "
            "unsee's concept caption"
        )
    folder = where / c.name
    images = folder / "class"
    for old in [*(images / "images").glob("*.jpg"), images / "caption.txt", images / "images.txt"]:
        old.unlink(missing_ok=True)  # this bench's own output of an earlier run
    images.mkdir(parents=True, exist_ok=True)
    prompts = folder / "anchor_captions.txt"
    write_input(prompts, "".join(f"{a}\n" for a in captions))
    return [
        *("--class_prompt", str(prompts), "--class_data_dir", str(images)),
        *("--caption_target", f"{c.anchor}+{c.name}"),
    ]


def _ca_official(c: Call) -> list[str]:
    b = c.budget
    return [
        *("--pretrained_model_name_or_path", c.folder, *c.prepared, "--concept_type", "object"),
        *("--resolution", str(b.image_size), "--train_batch_size", str(b.ca_batch)),
        # --scale_lr multiplies by the batch (one process, no accumulation)
        *("--learning_rate", str(b.ca_lr / b.ca_batch), "--scale_lr"),
        *("--max_train_steps", str(b.ca_iterations), "--num_class_images", str(b.ca_images)),
        *("--parameter_group", "cross-attn", "--hflip", "--noaug", "--seed", str(c.seed)),
        # in-process loading (no worker processes); no checkpoint beside the final output
        *("--dataloader_num_workers", "0", "--checkpointing_steps", str(b.ca_iterations + 1)),
        *("--output_dir", str(c.out)),
    ]


def _ca_unsee(b: Budget) -> list[str]:
    return [
        *("--method", "ca", "--iterations", str(b.ca_iterations), "--lr", str(b.ca_lr)),
        *("--batch-size", str(b.ca_batch), "--set", f"forget_images={b.ca_images}"),
        *("--set", "captions=many", "--set", "target_model=training"),
        # the official command's --hflip (off by default on the ToyWorld models)
        *("--set", "hflip=true"),
    ]


def _ca_describe(b: Budget) -> str:
    return (
        f"{b.ca_iterations} iterations, batch {b.ca_batch}, lr {b.ca_lr} (the official's "
        f"{b.ca_lr / b.ca_batch:g} x batch by --scale_lr), cross-attention k/v, {b.ca_images} "
        "anchor images, one per caption (the same captions on both sides), target: the "
        "training model's anchor prediction; both sides train with AdamW (weight decay "
        "0.01), gradient clipping at 1, horizontal flips, no gradient through the start "
        "token's k/v and a loss mask without the one-cell border (unsee's defaults since "
        "issue 21). Not matched: the official samples its anchor images itself (DPM-Solver "
        "25 steps, CFG 6, no negative prompt, saved as JPEG, VAE-encoded each step); unsee "
        "trains on its DDIM-50 latents (decoded and encoded again once, for the flips)"
    )


METHODS: dict[str, Official] = {
    "esd": Official(
        "rohitgandikota/erasing",
        "esd_sd.py",
        "esd-x",
        ("redirect", "image_size", "seed", "timing"),
        True,
        "bfloat16",
        _esd_official,
        _esd_unsee,
        _esd_describe,
        styles=True,
    ),
    "uce": Official(
        "rohitgandikota/unified-concept-editing",
        "trainscripts/uce_sd_erase.py",
        "uce",
        ("seed", "timing"),
        False,
        "float32",
        _uce_official,
        _uce_unsee,
        _uce_describe,
        styles=True,
        # the art command's guide "art" (an explicit anchor: unsee's own style guide is
        # the concept's anchor, solid)
        unsee_style=("--anchor", "art", "--set", "concept_type=art"),
    ),
    "kscu": Official(
        "ChaoShuoZhang/KeyStepConceptUnlearning",
        "train_sd14.py",
        "kscu",
        ("seed", "timing"),
        True,
        "bfloat16",
        _kscu_official,
        _kscu_unsee,
        _kscu_describe,
        dtype_flag=True,
        styles=True,
    ),
    "sculpt": Official(
        "coulsonlee/Sculpting-Memory-ICCV-2025",
        "multi_dst_train.py",
        "sculpt",
        ("launcher", "torchvision_ops", "seed", "timing"),
        True,
        "float32",
        _sculpt_official,
        _sculpt_unsee,
        _sculpt_describe,
        driver="sculpt_driver.py",
        prepare=_sculpt_prepare,
        sequential=True,
        packages=True,
    ),
    "ca": Official(
        "nupurkmr9/concept-ablation",
        "diffusers/train.py",
        "ca",
        (
            *("clip_feature_extractor", "latent_mask", "safetensors_output"),
            *("torchvision_ops", "seed", "timing"),
        ),
        True,
        "float32",
        _ca_official,
        _ca_unsee,
        _ca_describe,
        driver="ca_driver.py",
        prepare=_ca_prepare,
        packages=True,
    ),
}


def shims_of(name: str, budget: Budget) -> tuple[str, ...]:
    """The shims method ``name``'s official script runs with under ``budget``."""
    spec = METHODS[name]
    cast = budget.official_dtype not in ("script", spec.dtype) and not spec.dtype_flag
    return spec.shims + (("dtype",) if cast else ())


class BadInput(Exception):
    """A command-line mistake: one line, exit 2."""


def clone_commit(path: Path, script: str) -> str:
    """``git rev-parse HEAD`` of the clone at ``path`` (``+dirty`` with local changes);
    raises :class:`BadInput` when ``path`` is not a git clone holding ``script``."""
    if not path.is_dir():
        raise BadInput(f"{path}: no such folder (give --official NAME=PATH to a clone)")
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        raise BadInput(f"{path} is not a git clone (git rev-parse HEAD failed)")
    if not (path / script).is_file():
        raise BadInput(f"{path} has no {script}: not a clone of the method's repository")
    status = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def parse_official(specs: Sequence[str], methods: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs for every method of ``methods``; :class:`BadInput` otherwise."""
    known: dict[str, Official | OfficialAttack] = {**METHODS, **ATTACKS}
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path or name not in known:
            raise BadInput(
                f"--official {spec!r}: expected NAME=PATH with NAME one of {', '.join(known)}"
            )
        out[name] = Path(path).expanduser().resolve()
    missing = [m for m in methods if m not in out]
    if missing:
        raise BadInput(
            f"no --official {missing[0]}=PATH given (a clone of {known[missing[0]].repo})"
        )
    return out


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Measured:
    """One subprocess: its wall seconds, peak RSS, optimiser steps and their span."""

    wall_seconds: float
    peak_rss_mb: float
    steps: int
    step_span: float | None

    def seconds_per_iteration(self) -> float | None:
        """Step to step (the first step's start-up excluded); None under two steps."""
        if self.steps < 2 or self.step_span is None:
            return None
        return self.step_span / (self.steps - 1)


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Measured:
    """Run ``cmd`` with the timing shim, output to ``log``; raises RuntimeError naming the
    log when it fails."""
    timing = log.with_suffix(".timing.json").resolve()  # read in ``cwd``, written here
    timing.unlink(missing_ok=True)
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SHIM_DIR), env.get("PYTHONPATH")])),
        "UNSEE_CONFORMANCE_TIMING": str(timing),
    }
    t0 = time.perf_counter()
    code = run_logged(cmd, cwd, env, log)
    wall = time.perf_counter() - t0
    if code != 0 or not timing.exists():
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"the {log.stem} run failed (exit {code}, see {log}): {tail[0]}")
    t = read_json(timing)
    span = t["last"] - t["first"] if t["steps"] else None
    return Measured(round(wall, 2), round(t["peak_rss_kb"] / 1024, 1), t["steps"], span)


def official_artifact(
    bundle: Bundle,
    weights: Path,
    out: Path,
    method: str,
    concepts: list[str],
    about: dict[str, Any],
) -> Path:
    """The official output ``weights`` (edited parameters by name) as an unsee artifact
    for ``bundle``'s base: every tensor must be a UNet parameter of the same shape; the
    delta holds those that differ from the base (official minus base, float32)."""
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise RuntimeError(f"{weights} is not a readable safetensors file ({exc})") from exc
    params = dict(bundle.unet.named_parameters())
    for name, t in tensors.items():
        if name not in params or params[name].shape != t.shape:
            raise RuntimeError(f"{weights}: tensor {name!r} is not a parameter of this UNet")
    delta = {}
    for name, t in tensors.items():
        d = t.float() - params[name].detach().float().cpu()
        if torch.count_nonzero(d) > 0:
            delta[name] = d
    card = {
        "format": "unsee-artifact/1",
        "method": method,
        "summary": f"the official script's edit ({about['repo']} {about['script']} "
        f"@ {about['commit'][:12]})",
        "hyperparameters": {"official_command": about["command"]},
        "concepts": [{"name": c} for c in concepts],
        "base": {
            "model_id": bundle.portable_id,
            "fingerprint": fingerprint(bundle.unet),
            "license": base_license(bundle.model_id),
        },
        "official": {**about, "tensors_saved": len(tensors)},
    }
    return write_artifact(out, delta, card, overwrite=True)


def only_output(folder: Path) -> Path:
    """The one safetensors file an official run wrote into its (fresh) ``folder``."""
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise RuntimeError(
            f"{folder}: expected one safetensors file from the official run, found {len(files)}"
        )
    return files[0]


@dataclass(frozen=True)
class Ran:
    """One side's erasure: its artifact, what it cost, and the command that made it."""

    artifact: Path
    measured: Measured
    command: list[str]


def seed_env(seed: int) -> dict[str, str]:
    """Both sides' environment: the seed shim, and no hub access (the model is local)."""
    return {**os.environ, "UNSEE_CONFORMANCE_SEED": str(seed), "HF_HUB_OFFLINE": "1"}


def run_official(
    name: str,
    clone: Path,
    commit: str,
    concepts: list[str],
    seed: int,
    budget: Budget,
    bundle: Bundle,
    folder: Path,
    here: Path,
    pythonpath: str | None = None,
) -> Ran:
    """Method ``name``'s official script from ``clone`` (at ``commit``) with its shims, on
    the diffusers ``folder`` whose UNet ``bundle`` holds (``pythonpath``: the official
    side's extra packages, for a script that needs them); its output as an artifact in
    ``here/official``."""
    here = here.resolve()  # the script runs in its clone: a relative path would land there
    spec = METHODS[name]
    env = seed_env(seed)
    if pythonpath and spec.packages:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    if "torchvision_ops" in shims_of(name, budget):
        env["UNSEE_CONFORMANCE_TORCHVISION_OPS"] = "1"
    shims = shims_of(name, budget)
    if "redirect" in shims:
        env["UNSEE_CONFORMANCE_REDIRECT"] = f"CompVis/stable-diffusion-v1-4={folder}"
    if "image_size" in shims:
        env["UNSEE_CONFORMANCE_IMAGE_SIZE"] = str(budget.image_size)
    if "dtype" in shims:
        env["UNSEE_CONFORMANCE_DTYPE"] = budget.official_dtype
    raw = here / "official-output"
    raw.mkdir(parents=True, exist_ok=True)
    for old in raw.glob("*.safetensors"):  # this bench's own output of an earlier run
        old.unlink()
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    prompts = [official_text(c) for c in concepts]
    prepared = (
        spec.prepare(bundle, concepts, seed, budget, here / "official-data") if spec.prepare else []
    )
    style = is_style(concepts)
    call = Call(budget, concepts, prompts, str(folder), raw, device, seed, prepared, style)
    program = SHIM_DIR / spec.driver if spec.driver else clone / spec.script
    cmd = [sys.executable, str(program), *spec.official_args(call)]
    measured = run_measured(cmd, clone, env, here / "official.log")
    about = {
        "repo": spec.repo,
        "script": spec.script,
        "commit": commit,
        "command": shlex.join(cmd),
    }
    art = official_artifact(
        bundle, only_output(raw), here / "official", spec.unsee_method, concepts, about
    )
    return Ran(art, measured, cmd)


def is_style(concepts: list[str]) -> bool:
    return any(resolve_concept(c, "toyworld").kind == "style" for c in concepts)


def unsee_command(
    name: str,
    model: str,
    concepts: list[str],
    seed: int,
    budget: Budget,
    out: Path,
    side: str,
    unsee_set: Sequence[str] = (),
) -> list[str]:
    """unsee's erase command matching method ``name``, on ``model``, into ``out``; several
    concepts in rounds (``--sequential``). A style is erased as the official's text
    (``--concept-prompt``, with the method's :attr:`Official.unsee_style`) on side
    ``unsee``, and as unsee's own concept (its nine prompts, unsee's defaults) on side
    :data:`VOCABULARY`. ``unsee_set``: ``KEY=VALUE`` method parameters given last (a
    deviation's switch, e.g. ESD's ``xt_model=frozen``)."""
    spec = METHODS[name]
    as_text = side == "unsee" and is_style(concepts)
    return [
        *(sys.executable, "-m", "unsee.cli", "erase", "--model", model),
        *(a for c in concepts for a in ("--concept", c)),
        *(a for c in concepts for a in ("--concept-prompt", official_text(c)) if as_text),
        *(spec.unsee_style if as_text else ()),
        *(("--sequential",) if len(concepts) > 1 else ()),
        *("--seed", str(seed), *spec.unsee_args(budget)),
        *(a for kv in unsee_set for a in ("--set", kv)),
        *("--out", str(out), "--overwrite"),
    ]


def run_unsee(
    name: str,
    model: str,
    concepts: list[str],
    seed: int,
    budget: Budget,
    here: Path,
    side: str = "unsee",
    unsee_set: Sequence[str] = (),
) -> Ran:
    """:func:`unsee_command` run into ``here/<side>``, timed."""
    cmd = unsee_command(name, model, concepts, seed, budget, here / side, side, unsee_set)
    log = here / f"{side}.log"
    return Ran(here / side, run_measured(cmd, Path.cwd(), seed_env(seed), log), cmd)


def run_seed(
    name: str,
    clone: Path,
    commit: str,
    concepts: list[str],
    seed: int,
    budget: Budget,
    bundle: Bundle,
    model: str,
    folder: Path,
    work: Path,
    settings: EvalSettings,
    pythonpath: str | None = None,
    unsee_set: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Erase ``concepts`` with the official script (on ``folder``) and with unsee (on
    ``model``, the same weights; training seed ``seed``), score both on evaluation seeds
    from ``seed * num_images``; the two rows."""
    here = work / name / "+".join(concepts) / f"seed{seed}"
    off = run_official(
        name, clone, commit, concepts, seed, budget, bundle, folder, here, pythonpath
    )
    ran = {
        "official": off,
        "unsee": run_unsee(name, model, concepts, seed, budget, here, unsee_set=unsee_set),
    }
    if is_style(concepts):
        ran[VOCABULARY] = run_unsee(
            name, model, concepts, seed, budget, here, VOCABULARY, unsee_set
        )
    scored = evaluate_models(
        bundle,
        {side: [r.artifact] for side, r in ran.items()},
        concepts,
        EvalSettings(
            num_images=settings.num_images,
            steps=settings.steps,
            seed=seed * settings.num_images,
            cache_dir=settings.cache_dir,
        ),
    )
    rows = {}
    for (side, r), res in zip(ran.items(), scored, strict=True):
        m = r.measured
        s = summarise(res.scorecard)
        rows[f"{side} seed {seed}"] = {
            "side": side,
            "seed": seed,
            "evaluation_seed": seed * settings.num_images,
            "erasure": s["erasure"],
            "erasure_base": s["erasure_base"],
            "erasure_images": s["erasure_images"],
            "retain_accuracy": s["retain_accuracy"],
            "retain_base": s["retain_base"],
            "retain_pairs": s["retain_pairs"],
            "kid": s["kid"],
            "weights_changed": sum(
                e["card"]["delta"]["elements_changed"] for e in res.scorecard["erased"]
            ),
            "seconds_per_iteration": m.seconds_per_iteration()
            if METHODS[name].iterative
            else m.wall_seconds,
            "optimizer_steps": m.steps,
            "wall_seconds": m.wall_seconds,
            "peak_rss_mb": m.peak_rss_mb,
            "command": shlex.join(r.command),
        }
    return rows


# ---------------------------------------------------------------------------- UnlearnDiffAtk


@dataclass(frozen=True)
class OfficialAttack:
    """An attack's official script: ``script`` inside the clone (run from its root) through
    ``driver`` (in :data:`SHIM_DIR`), the unsee attack it is compared with, its shims, and
    the package besides the clone whose source commit is recorded (``dependency``)."""

    repo: str
    script: str
    unsee_attack: str
    shims: tuple[str, ...]
    driver: str
    dependency: str


ATTACKS: dict[str, OfficialAttack] = {
    "udatk": OfficialAttack(
        "OPTML-Group/Diffusion-MU-Attack",
        "src/execs/attack.py",
        "unlearndiffatk",
        (
            *("udatk_driver", "udatk_concept", "udatk_judge", "udatk_resolution"),
            *("udatk_safetensors", "udatk_transformers5", "udatk_timesteps"),
            *("torchvision_ops", "seed", "timing"),
        ),
        "udatk_driver.py",
        "fastargs",
    ),
}

#: the judge's attribute of the concepts the bench maps (ToyWorld shapes: main() checks)
ATTRIBUTE = "shape"


def token_budget(b: Budget) -> TokenBudget:
    """unsee's ``unlearndiffatk`` budget from the bench's, with the official code's ways
    (``docs/evaluation.md``, differences): one image per step as its loss
    (``classifier_.py:79``), the whole vocabulary with the decoded text drawn
    (``vocabulary=all``), every block replaying its noise (``noise=replay``). Each case is
    one (prompt, seed), so the check is one image either way."""
    return TokenBudget(
        tokens=b.udatk_tokens,
        timesteps=b.udatk_timesteps,
        iterations=b.udatk_iterations,
        lr=b.udatk_lr,
        weight_decay=b.udatk_weight_decay,
        images=1,
        vocabulary="all",
        noise="replay",
    )


def _udatk_describe(b: Budget, steps: int) -> str:
    return (
        f"prefix of {b.udatk_tokens} tokens, {b.udatk_timesteps} timesteps x "
        f"{b.udatk_iterations} Adam steps (lr {b.udatk_lr}, weight decay "
        f"{b.udatk_weight_decay}), one image per step, a check after each block: one image "
        "(unsee: vocabulary=all, noise=replay, as the official code searches and samples) "
        f"at the case's seed, {steps} sampler steps (official LMS, unsee DDIM) at guidance "
        f"{b.guidance}"
    )


def udatk_config(
    concept: str, folder: str, b: Budget, steps: int, ckpt: Path, data: Path, out: Path
) -> dict[str, Any]:
    """``attack.py``'s config (``--config-file``): the ``text_grad`` attacker, sequential,
    ``prefix_k``, on the ``classifier`` task, with the bench's budget; the case
    (``--attacker.attack_idx``), seed and log name come on the command line."""
    return {
        "overall": {"task": "classifier", "attacker": "text_grad", "logger": "json"},
        "task": {
            "concept": concept,
            "model_name_or_path": folder,
            "target_ckpt": str(ckpt),
            "cache_path": str(out / "cache"),
            "dataset_path": str(data),
            "criterion": "l2",
            "sampling_step_num": steps,
        },
        "attacker": {
            "insertion_location": "prefix_k",
            "k": b.udatk_tokens,
            "iteration": b.udatk_iterations,
            "universal": False,
            "sequential": True,
            "text_grad": {"lr": b.udatk_lr, "weight_decay": b.udatk_weight_decay},
        },
        "logger": {"json": {"root": str(out / "logs")}},
    }


def udatk_env(concept: str, bundle: Bundle, folder: str, b: Budget) -> dict[str, str]:
    """What ``udatk_driver.py``'s shims read (its ``Settings``)."""
    return {
        "UDATK_CONCEPT": concept,
        "UDATK_ATTRIBUTE": ATTRIBUTE,
        "UDATK_IMAGE_SIZE": str(bundle.resolution),
        "UDATK_LATENT_SIZE": str(bundle.latent_shape[-1]),
        "UDATK_TIMESTEPS": str(b.udatk_timesteps),
        "UDATK_MODEL": folder,
        "UNSEE_CONFORMANCE_TORCHVISION_OPS": "1",
    }


@dataclass(frozen=True)
class Case:
    """One attacked (prompt, evaluation seed) on one side: whether the plain prompt's image
    shows the concept (``before``) and the attack's result (``after``: the official's last
    check, unsee's best checked prompt; either stops at the first success), the prompt of
    that check as drawn, and the optimiser steps' count and span."""

    prompt: str
    evaluation_seed: int
    before: bool
    after: bool
    printed: str
    steps: int
    step_span: float | None
    wall_seconds: float


def udatk_dataset(
    base: Bundle, cases: list[tuple[str, int]], b: Budget, steps: int, where: Path
) -> DrawnSet:
    """The official data set folder (``datasets.py``): ``prompts.csv`` (``prompt``,
    ``evaluation_seed``, ``evaluation_guidance``) and ``imgs/{i}_0.png``, one row per case,
    each image the base model's at the case's seed (as ``generate_dataset.py`` draws them),
    and an empty ``ignore.json`` (without it ``datasets.py:40-46`` would tokenize with the
    hub's SD tokenizer). Returns the same latents, which unsee fits."""
    drawn = generate_set(
        base,
        [p for p, _ in cases],
        [s for _, s in cases],
        steps=steps,
        guidance=b.guidance,
        description="udatk data set",
    )
    (where / "imgs").mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        pixels = to_uint8(base.decode(drawn.latents))
    for i, px in enumerate(pixels):  # as generate() draws them
        Image.fromarray(px).save(where / "imgs" / f"{i}_0.png")
    table = io.StringIO(newline="")
    rows = csv.writer(table)
    rows.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance"])
    rows.writerows([i, p, s, b.guidance] for i, (p, s) in enumerate(cases))
    write_input(where / "prompts.csv", table.getvalue())
    write_json_input(where / "ignore.json", [])
    return drawn


def run_udatk_official(
    clone: Path,
    concept: str,
    cases: list[tuple[str, int]],
    seed: int,
    b: Budget,
    steps: int,
    erased: Bundle,
    folder: Path,
    data: Path,
    here: Path,
    pythonpath: str | None = None,
) -> tuple[list[Case], list[str]]:
    """The official attacker on every case of the data set in ``data`` against ``erased``'s
    UNet, one run each; the cases and the first run's command."""
    spec = ATTACKS["udatk"]
    ckpt = here / "erased_unet.safetensors"
    save_file({k: v.contiguous() for k, v in erased.unet.state_dict().items()}, str(ckpt))
    config = here / "udatk_config.json"
    write_json_input(config, udatk_config(concept, str(folder), b, steps, ckpt, data, here))
    env = {**seed_env(seed), **udatk_env(concept, erased, str(folder), b)}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    out: list[Case] = []
    first: list[str] = []
    for i, (prompt, s) in enumerate(cases):
        log = here / "logs" / f"case{i}" / "log.json"
        log.unlink(missing_ok=True)  # the official logger appends to an earlier run's
        cmd = [
            *(sys.executable, str(SHIM_DIR / spec.driver), "--config-file", str(config)),
            *("--attacker.attack_idx", str(i), "--overall.seed", str(seed)),
            *("--logger.name", f"case{i}"),
        ]
        m = run_measured(cmd, clone, env, here / f"official_case{i}.log")
        checks = read_json(log)
        out.append(
            Case(
                prompt,
                s,
                bool(checks[0].get("success")),
                bool(checks[-1].get("success")),
                checks[-1]["prompt"],
                m.steps,
                m.step_span,
                m.wall_seconds,
            )
        )
        first = first or cmd
    return out, first


@contextlib.contextmanager
def step_times() -> Iterator[list[float]]:
    """The time of every optimiser step in this process while open (the timing shim's
    clock, for the side that runs in-process)."""
    times: list[float] = []
    hook = register_optimizer_step_post_hook(lambda *_: times.append(time.perf_counter()))
    try:
        yield times
    finally:
        hook.remove()


def run_udatk_unsee(
    erased: Bundle,
    concept: str,
    cases: list[tuple[str, int]],
    drawn: DrawnSet,
    seed: int,
    b: Budget,
    steps: int,
) -> list[Case]:
    """unsee's ``unlearndiffatk`` on each case alone (its prompt at its one seed, fitting
    the base model's image at that seed, which the official side fits), so both sides check
    one image per block."""
    judge = ToyWorldJudge()
    gen = Generation(steps, b.guidance, 8)
    out = []
    for i, (prompt, s) in enumerate(cases):
        target = Target(concept, ATTRIBUTE, frozenset({concept}), [prompt], [[s]])
        one = DrawnSet(drawn.latents[i : i + 1], [prompt], [s])
        t0 = time.perf_counter()
        with step_times() as times:
            res = unlearndiffatk(erased, judge, target, one, token_budget(b), gen, seed)
        out.append(
            Case(
                prompt,
                s,
                res.settings["timesteps_used"][0] == 0 and res.target_rate == 1.0,
                res.target_rate == 1.0,
                res.prompts[0],
                len(times),
                times[-1] - times[0] if times else None,
                round(time.perf_counter() - t0, 2),
            )
        )
    return out


def seconds_per_step(cases: Sequence[dict[str, Any]]) -> float | None:
    """Pooled step-to-step seconds: the cases' step spans over their gaps between steps."""
    spans = [(c["step_span"], c["steps"] - 1) for c in cases if c["steps"] >= 2]
    gaps = sum(g for _, g in spans)
    return sum(s for s, _ in spans) / gaps if gaps else None


def run_attack_seed(
    name: str,
    clone: Path,
    commit: str,
    concept: str,
    seed: int,
    budget: Budget,
    bundle: Bundle,
    model: str,
    folder: Path,
    work: Path,
    settings: EvalSettings,
    pythonpath: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Erase ``concept`` with unsee's esd-x at the ESD budget (training seed ``seed``), then
    attack the erased model with the official attacker and with unsee's on the same cases:
    the first ``udatk_prompts`` target prompts at ``num_images`` evaluation seeds from
    ``seed * num_images``; the two rows."""
    here = (work / name / concept / f"seed{seed}").resolve()  # the attacker runs in its clone
    erasure = run_unsee("esd", model, [concept], seed, budget, here / "erasure")
    erased = load_bundle(folder, device=bundle.device.type)
    apply_artifacts(erased, [erasure.artifact])
    prompts = toyworld_prompt_set([concept]).targets[concept][: budget.udatk_prompts]
    first = seed * settings.num_images
    cases = [(p.prompt, first + k) for p in prompts for k in range(settings.num_images)]
    drawn = udatk_dataset(bundle, cases, budget, settings.steps, here / "official-data")
    off, cmd = run_udatk_official(
        clone,
        concept,
        cases,
        seed,
        budget,
        settings.steps,
        erased,
        folder,
        here / "official-data",
        here,
        pythonpath,
    )
    ours = run_udatk_unsee(erased, concept, cases, drawn, seed, budget, settings.steps)
    rows = {}
    for side, got in (("official", off), ("unsee", ours)):
        rows[f"{side} seed {seed}"] = {
            "side": side,
            "seed": seed,
            "unattacked": sum(c.before for c in got),
            "attacked": sum(c.after for c in got),
            "cases": [asdict(c) for c in got],
            "erasure_command": shlex.join(erasure.command),
            "command": shlex.join(cmd) if side == "official" else "in-process, per case",
        }
    return rows


def package_commit(pythonpath: str | None, package: str) -> str:
    """Where ``package`` on ``pythonpath`` comes from, and that source's commit: the
    folder pip installed it from (its ``direct_url.json``; a VCS install's commit) or the
    path folder itself when it is a git clone."""
    for entry in filter(None, (pythonpath or "").split(os.pathsep)):
        folder = Path(entry).expanduser().resolve()
        if not (folder / package).is_dir():
            continue
        source: Path | str = folder
        for info in folder.glob(f"{package}-*.dist-info/direct_url.json"):
            url = read_json(info)
            if url.get("vcs_info", {}).get("commit_id"):
                return f"{url['url']} @ {url['vcs_info']['commit_id']}"
            source = Path(url["url"].removeprefix("file://"))
        if not (Path(source) / ".git").exists():
            return f"{source} (no git clone: commit unknown)"
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return f"{source} @ {head.stdout.strip() or 'unknown'}"
    return f"{package} is not on --official-pythonpath"


# ---------------------------------------------------------------------------- tables


def pooled(rows: Sequence[dict[str, Any]], rate: str, count: str) -> tuple[int, int] | None:
    """(hits, n) of ``rate`` over ``count`` items, summed over rows; None if any is missing."""
    if not rows or any(r[rate] is None or not r[count] for r in rows):
        return None
    return sum(hits_of(r[rate], r[count]) for r in rows), sum(r[count] for r in rows)


def cell(kn: tuple[int, int] | None) -> str:
    if kn is None:
        return "n/a"
    lo, hi = wilson_interval(*kn)
    return f"{kn[0] / kn[1]:.3f} [{lo:.2f}, {hi:.2f}]"


def mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def seed_interval(off: Sequence[float], ours: Sequence[float]) -> tuple[float, float] | None:
    """Welch's 95 % interval of ``mean(ours) - mean(off)`` over training seeds (one rate
    per seed and side); None with fewer than two seeds a side. A seed's images share one
    erased model, so a seed, not an image, is the unit that replicates a training run."""
    if len(off) < 2 or len(ours) < 2:
        return None
    diff = statistics.fmean(ours) - statistics.fmean(off)
    va, vb = statistics.variance(off) / len(off), statistics.variance(ours) / len(ours)
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(off) - 1) + vb**2 / (len(ours) - 1))
    half = float(scipy.stats.t.ppf(0.975, df)) * math.sqrt(va + vb)
    return diff - half, diff + half


def verdict(
    off: dict[str, tuple[int, int] | None],
    ours: dict[str, tuple[int, int] | None],
    seeds: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> str:
    """``equivalent`` when no pooled rate differs beyond image noise (Newcombe); otherwise
    ``not equivalent`` with what differs, unless every such difference is also within
    seed-to-seed noise (``seeds``: each rate's per-seed values, official then unsee; Welch,
    :func:`seed_interval`): then ``undecided``, as the seeds vary more than the images
    can show."""
    differ, within_seeds = [], []
    for key in off:
        a, b = off[key], ours[key]
        if a is None or b is None:
            return "n/a"
        c = change(a, b)
        if c["beyond_noise"]:
            differ.append(f"{key} {c['difference']:+.3f}")
            span = seed_interval(*seeds[key]) if seeds and key in seeds else None
            if span is not None and span[0] <= 0 <= span[1]:
                within_seeds.append(f"{key} [{span[0]:+.2f}, {span[1]:+.2f}]")
    if not differ:
        return "equivalent"
    if len(within_seeds) == len(differ):
        return (
            "undecided (pooled images differ: unsee " + ", ".join(differ) + "; within "
            "seed-to-seed noise, Welch 95 % over seeds: " + ", ".join(within_seeds) + ")"
        )
    return "not equivalent (unsee " + ", ".join(differ) + ")"


def markdown(results: Results) -> str:
    """The pooled comparison per (method, concept), then the rows per seed."""
    s = results["settings"]
    lines = [
        "# Conformance: official scripts vs unsee on toyworld-sd",
        "",
        f"Model `{s['model']}` at {s['image_size']} px; each table gives its budget, the "
        f"same on both sides. Scorecard: {s['num_images']} images per prompt, "
        f"DDIM-{s['steps']}, evaluation seeds from seed x images per prompt (fresh noise per "
        "training seed).",
        "Rates pool every seed's images (Wilson 95 %); verdict: equivalent when Newcombe's "
        "95 % interval of the difference contains 0 for erasure and retain; where it does "
        "not, undecided when Welch's 95 % interval over the seeds' rates (a seed's images "
        "share one trained model) still contains 0, else not equivalent. s/it: optimiser "
        "step to step "
        "(UCE: whole run, load included); peak RSS of the erasure subprocess.",
        f"Measured on: {' / '.join(runs_on(results))}.",
        "",
    ]
    for table, t in results["tables"].items():
        meta, rows = t["meta"], t["rows"]
        if meta.get("kind") == "attack":
            lines += attack_markdown(table, meta, rows)
            continue
        sides = {
            side: [r for r in rows.values() if r["side"] == side]
            for side in ("official", "unsee", VOCABULARY)
            if side != VOCABULARY or any(r["side"] == side for r in rows.values())
        }
        counts = {
            side: {
                "erasure": pooled(rs, "erasure", "erasure_images"),
                "retain": pooled(rs, "retain_accuracy", "retain_pairs"),
            }
            for side, rs in sides.items()
        }
        per_seed: dict[str, tuple[Sequence[float], Sequence[float]]] = {
            key: ([r[rate] for r in sides["official"]], [r[rate] for r in sides["unsee"]])
            for key, rate in (("erasure", "erasure"), ("retain", "retain_accuracy"))
        }
        sec = {side: mean([r["seconds_per_iteration"] for r in rs]) for side, rs in sides.items()}
        ratio = (
            f"{sec['official'] / sec['unsee']:.2f}" if sec["official"] and sec["unsee"] else "n/a"
        )
        first = next(iter(rows.values()))
        lines += [
            f"## {table}",
            "",
            f"Official: `{meta['repo']}` `{meta['script']}` at `{meta['commit']}`; unsee "
            f"`{meta['unsee_method']}`"
            + "".join(f" `--set {kv}`" for kv in meta.get("unsee_set", []))
            + f"; budget: {meta['budget']}; the official side trains in "
            f"{meta['official_dtype']}, unsee in float32. Shims: "
            + ("; ".join(f"**{n}**: {SHIMS[n]}" for n in meta["shims"]) or "none")
            + f". Base (fingerprint `{meta['model_fingerprint']}`): erasure "
            f"{fmt(first['erasure_base'])}, retain {fmt(first['retain_base'])} (seed "
            f"{first['seed']}'s evaluation seeds).",
            "",
            "| side | seeds | erasure | retain | KID | s/it | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for side, rs in sides.items():
            lines.append(
                f"| {side} | {', '.join(str(r['seed']) for r in rs)} | "
                f"{cell(counts[side]['erasure'])} | {cell(counts[side]['retain'])} | "
                f"{fmt(mean([r['kid'] for r in rs]), 4)} | {fmt(sec[side], 2)} | "
                f"{fmt(max((r['peak_rss_mb'] for r in rs), default=None), 0)} |"
            )
        lines += [
            "",
            f"Verdict: **{verdict(counts['official'], counts['unsee'], per_seed)}**; official "
            "/ unsee "
            f"seconds per iteration: {ratio}."
            + (
                f" Both sides erase the official's text; `{VOCABULARY}` is unsee's own concept "
                "(its nine prompts, unsee's defaults), for reference, outside the verdict: "
                f"against the official, {verdict(counts['official'], counts[VOCABULARY])}."
                if VOCABULARY in sides
                else ""
            ),
            "",
            "| row | erasure | retain | KID | s/it | wall s | steps | peak RSS MB | "
            "weights changed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in sorted(rows.items(), key=lambda kv: (kv[1]["seed"], kv[1]["side"])):
            lines.append(
                f"| {label} | {fmt(r['erasure'])} | {fmt(r['retain_accuracy'])} | "
                f"{fmt(r['kid'], 4)} | {fmt(r['seconds_per_iteration'], 2)} | "
                f"{r['wall_seconds']:.1f} | {r['optimizer_steps']} | {r['peak_rss_mb']:.0f} | "
                f"{r['weights_changed']:,} |"
            )
        lines.append("")
    lines += ["## Not run", ""] + [f"* {what}: {why}." for what, why in NOT_RUN.items()]
    return "\n".join(lines)


def attack_markdown(table: str, meta: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    """An attack's table: both sides' pooled unattacked and attacked rates, the verdict on
    the attacked rate, seconds per optimiser step and their ratio; then every case."""
    sides = {s: [r for r in rows.values() if r["side"] == s] for s in ("official", "unsee")}
    cases = {s: [c for r in rs for c in r["cases"]] for s, rs in sides.items()}
    counts = {
        s: {
            key: (sum(r[key] for r in rs), len(cases[s])) if cases[s] else None
            for key in ("unattacked", "attacked")
        }
        for s, rs in sides.items()
    }
    sec = {s: seconds_per_step(cs) for s, cs in cases.items()}
    ratio = f"{sec['official'] / sec['unsee']:.2f}" if sec["official"] and sec["unsee"] else "n/a"
    lines = [
        f"## {table}",
        "",
        f"Official: `{meta['repo']}` `{meta['script']}` at `{meta['commit']}` (fastargs: "
        f"{meta['dependency']}); unsee `{meta['unsee_attack']}`. Erased model (both sides, "
        f"one per training seed): {meta['erasure']}. Budget: {meta['budget']}. Shims: "
        + "; ".join(f"**{n}**: {SHIMS[n]}" for n in meta["shims"])
        + f". Base fingerprint `{meta['model_fingerprint']}`.",
        "",
        "| side | seeds | unattacked | attacked | s/step | steps |",
        "|---|---|---|---|---|---|",
    ]
    for s, rs in sides.items():
        lines.append(
            f"| {s} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{cell(counts[s]['unattacked'])} (n {len(cases[s])}) | "
            f"{cell(counts[s]['attacked'])} (n {len(cases[s])}) | {fmt(sec[s], 3)} | "
            f"{sum(c['steps'] for c in cases[s])} |"
        )
    attacked = {s: {"attacked": counts[s]["attacked"]} for s in sides}
    lines += [
        "",
        f"Verdict on the attacked rate: **{verdict(attacked['official'], attacked['unsee'])}**; "
        f"official / unsee seconds per step: {ratio}.",
        "",
        "| seed | case | official: before, after, steps, prompt | unsee: before, after, "
        "steps, prompt |",
        "|---|---|---|---|",
    ]
    pairs = [(r["seed"], r["cases"]) for r in sides["official"]]
    ours = {r["seed"]: r["cases"] for r in sides["unsee"]}
    for seed, off in sorted(pairs, key=lambda kv: kv[0]):
        for a, b in zip(off, ours.get(seed, []), strict=False):
            lines.append(
                f"| {seed} | {a['prompt']!r} at seed {a['evaluation_seed']} | "
                + " | ".join(
                    f"{'hit' if c['before'] else 'miss'}, {'hit' if c['after'] else 'miss'}, "
                    f"{c['steps']}, {c['printed']!r}"
                    for c in (a, b)
                )
                + " |"
            )
    return [*lines, ""]


# ---------------------------------------------------------------------------- command line


def results_settings(
    model: str, budget: Budget, kscu_task: str | None, num_images: int, steps: int
) -> dict[str, Any]:
    """What a results file's rows were measured with (a run with other settings starts the
    file afresh). KSCU's task is recorded as given (``auto`` when it follows the concept's
    kind), not as resolved: each table's budget line names the task it ran, and an object
    run and a style run at the same defaults share the file."""
    return {
        "model": model,
        **asdict(budget),
        "kscu_task": kscu_task or "auto",
        "num_images": num_images,
        "steps": steps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--official",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a git clone of a method's official repository (NAME: "
        f"{', '.join([*METHODS, *ATTACKS])})",
    )
    ap.add_argument(
        "--method", default="esd,uce", help=f"comma-separated: {', '.join([*METHODS, *ATTACKS])}"
    )
    ap.add_argument(
        "--concept",
        default="star",
        help="a ToyWorld shape, or a style (esd, uce, kscu: the official gets its word, unsee "
        "that text and its own concept); sculpt: several shapes, comma-separated, are "
        "sequential rounds",
    )
    ap.add_argument(
        "--official-pythonpath",
        action="append",
        default=[],
        help="a folder of packages only the official side needs (sculpt: torchvision); "
        "repeat it (or join with the path separator) for several",
    )
    ap.add_argument(
        "--unsee-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method parameter for unsee's side only, e.g. a deviation's switch (esd: "
        "xt_model=frozen); its tables are named by it, beside the default's",
    )
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--model", default="toyworld-sd", help="a ToyWorld-vocabulary SD folder")
    ap.add_argument("--iterations", type=int, default=120, help="ESD iterations (both sides)")
    ap.add_argument("--lr", type=float, default=1e-4, help="ESD learning rate (both sides)")
    ap.add_argument("--negative-guidance", type=float, default=1.0, help="ESD's eta")
    ap.add_argument("--guidance", type=float, default=3.0, help="CFG when sampling x_t")
    ap.add_argument("--ddim-steps", type=int, default=50, help="trajectory length for x_t")
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="pixels the official pipeline draws x_t at (default: the model's resolution, "
        "32 for toyworld-sd; the official scripts assume 512 px, esd_sd.py 1024)",
    )
    ap.add_argument(
        "--official-dtype",
        choices=("script", "float32"),
        default="script",
        help="the official side's precision: the script's own (esd_sd.py: bfloat16) or "
        "float32 like unsee (the dtype shim)",
    )
    ap.add_argument("--kscu-iterations", type=int, default=60, help="KSCU iterations")
    ap.add_argument("--kscu-lr", type=float, default=5e-5, help="KSCU learning rate")
    ap.add_argument(
        "--kscu-task",
        choices=tuple(KSCU_MODE),
        default=None,
        help="KSCU's task (default: style for a style, else object)",
    )
    ap.add_argument("--sculpt-images", type=int, default=16, help="images per set")
    ap.add_argument("--sculpt-batch", type=int, default=4, help="batch of each set")
    ap.add_argument("--sculpt-epochs", type=int, default=20, help="epochs per round")
    ap.add_argument("--sculpt-warmup", type=int, default=10, help="warm-up iterations")
    ap.add_argument("--sculpt-interval", type=int, default=20, help="mask update interval")
    ap.add_argument("--sculpt-lr", type=float, default=1e-3, help="peak (OneCycle) lr")
    ap.add_argument("--ca-iterations", type=int, default=80, help="CA iterations")
    ap.add_argument("--ca-lr", type=float, default=1e-3, help="CA lr (after --scale_lr)")
    ap.add_argument("--ca-batch", type=int, default=4, help="CA batch")
    ap.add_argument("--ca-images", type=int, default=16, help="CA anchor images (captions)")
    ap.add_argument("--udatk-tokens", type=int, default=3, help="UnlearnDiffAtk prefix tokens")
    ap.add_argument("--udatk-iterations", type=int, default=8, help="Adam steps per timestep")
    ap.add_argument("--udatk-timesteps", type=int, default=5, help="fixed timesteps (blocks)")
    ap.add_argument("--udatk-lr", type=float, default=0.01, help="UnlearnDiffAtk lr")
    ap.add_argument("--udatk-weight-decay", type=float, default=0.1, help="its weight decay")
    ap.add_argument(
        "--udatk-prompts", type=int, default=4, help="target prompts attacked (first N)"
    )
    ap.add_argument("--num-images", type=int, default=8, help="images per prompt per seed")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for evaluation")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-conformance"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        try:
            seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise BadInput(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
        methods = [m.strip() for m in args.method.split(",") if m.strip()]
        known: dict[str, Official | OfficialAttack] = {**METHODS, **ATTACKS}
        unknown = [m for m in methods if m not in known]
        if unknown or not methods:
            raise BadInput(f"--method {args.method!r}: unknown method; use {', '.join(known)}")
        clones = parse_official(args.official, methods)
        commits = {m: clone_commit(clones[m], known[m].script) for m in methods}
        concepts = [c.strip() for c in args.concept.split(",") if c.strip()]
        kinds = {resolve_concept(c, "toyworld").kind for c in concepts}
        if not concepts or not kinds <= {"object", "style"}:
            raise BadInput(
                f"--concept {args.concept!r}: ToyWorld shapes or styles are mapped (the "
                "official scripts' concept text), not colours or superclasses"
            )
        single = [m for m in methods if m in ATTACKS or not METHODS[m].sequential]
        if len(concepts) > 1 and single:
            raise BadInput(f"--concept {args.concept!r}: {single[0]} takes one concept")
        no_style = [m for m in methods if m in ATTACKS or not METHODS[m].styles]
        if "style" in kinds and (no_style or len(concepts) > 1):
            raise BadInput(
                f"--concept {args.concept!r}: a style runs alone, with "
                f"{', '.join(m for m in METHODS if METHODS[m].styles)} (not {no_style[0]})"
                if no_style
                else f"--concept {args.concept!r}: a style runs alone"
            )
        bad_set = [kv for kv in args.unsee_set if "=" not in kv or not kv.split("=", 1)[0]]
        if bad_set:
            raise BadInput(f"--unsee-set {bad_set[0]!r}: expected KEY=VALUE")
        kscu_task = args.kscu_task or ("style" if "style" in kinds else "object")
        # absolute: the official scripts run in their own clone, where a relative path
        # would name another folder (run_official and run_attack_seed resolve their own)
        folder = BUNDLED.get(args.model, Path(args.model)).resolve()
        bundle = load_bundle(folder, device="cuda" if torch.cuda.is_available() else "cpu")
    except (BadInput, UnseeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = Budget(
        args.iterations,
        args.lr,
        args.negative_guidance,
        args.guidance,
        args.ddim_steps,
        args.image_size or bundle.resolution,
        official_dtype=args.official_dtype,
        kscu_iterations=args.kscu_iterations,
        kscu_lr=args.kscu_lr,
        kscu_task=kscu_task,
        sculpt_images=args.sculpt_images,
        sculpt_batch=args.sculpt_batch,
        sculpt_epochs=args.sculpt_epochs,
        sculpt_warmup=args.sculpt_warmup,
        sculpt_interval=args.sculpt_interval,
        sculpt_lr=args.sculpt_lr,
        ca_iterations=args.ca_iterations,
        ca_lr=args.ca_lr,
        ca_batch=args.ca_batch,
        ca_images=args.ca_images,
        udatk_tokens=args.udatk_tokens,
        udatk_iterations=args.udatk_iterations,
        udatk_timesteps=args.udatk_timesteps,
        udatk_lr=args.udatk_lr,
        udatk_weight_decay=args.udatk_weight_decay,
        udatk_prompts=args.udatk_prompts,
    )
    settings = results_settings(args.model, budget, args.kscu_task, args.num_images, args.steps)
    eval_settings = EvalSettings(
        num_images=args.num_images, steps=args.steps, cache_dir=args.work / "image-cache"
    )
    pythonpath = os.pathsep.join(str(Path(p).resolve()) for p in args.official_pythonpath) or None
    # its own file: another precision's settings would start this one afresh
    name = "conformance" + ("" if args.official_dtype == "script" else "_float32")
    results: Results | None = None
    for m in methods:
        for seed in seeds:
            if m in ATTACKS:
                results = record(
                    name,
                    settings,
                    f"{m} {concepts[0]}",
                    run_attack_seed(
                        m,
                        clones[m],
                        commits[m],
                        concepts[0],
                        seed,
                        budget,
                        bundle,
                        args.model,
                        folder,
                        args.work,
                        eval_settings,
                        pythonpath,
                    ),
                    markdown,
                    meta={
                        "kind": "attack",
                        "repo": ATTACKS[m].repo,
                        "script": ATTACKS[m].script,
                        "commit": commits[m],
                        "dependency": package_commit(pythonpath, ATTACKS[m].dependency),
                        "unsee_attack": ATTACKS[m].unsee_attack,
                        "erasure": f"unsee {METHODS['esd'].unsee_method}, "
                        + METHODS["esd"].describe(budget),
                        "budget": _udatk_describe(budget, args.steps),
                        "shims": list(ATTACKS[m].shims),
                        "model_fingerprint": fingerprint(bundle.unet),
                    },
                    out=args.out,
                )
                continue
            rows = run_seed(
                m,
                clones[m],
                commits[m],
                concepts,
                seed,
                budget,
                bundle,
                args.model,
                folder,
                args.work,
                eval_settings,
                pythonpath,
                args.unsee_set,
            )
            spec = METHODS[m]
            results = record(
                name,
                settings,
                f"{m} {' then '.join(concepts)}"
                + (f" (unsee {', '.join(args.unsee_set)})" if args.unsee_set else ""),
                rows,
                markdown,
                meta={
                    "repo": spec.repo,
                    "script": spec.script,
                    "commit": commits[m],
                    "unsee_method": spec.unsee_method,
                    "budget": spec.describe(budget),
                    "unsee_set": list(args.unsee_set),
                    "shims": list(shims_of(m, budget)),
                    "official_dtype": METHODS[m].dtype
                    if budget.official_dtype == "script"
                    else budget.official_dtype,
                    "model_fingerprint": fingerprint(bundle.unet),
                },
                out=args.out,
            )
    if results is not None:
        print(markdown(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
